//! The key-value model: etcd's puts, gets, deletes and transactions, judged on values.

use std::collections::BTreeMap;

use crate::check::Model;

/// A write inside a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvWrite {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// If `key` holds `expected` (None: the key is absent), apply `success`, else `failure`.
    Txn {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        success: Vec<KvWrite>,
        failure: Vec<KvWrite>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    Put,
    Get(Option<Vec<u8>>),
    Delete { deleted: i64 },
    Txn { succeeded: bool },
}

/// The whole store as a map; each operation sees and changes it atomically.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

type Store = BTreeMap<Vec<u8>, Vec<u8>>;

fn write(store: &mut Store, w: &KvWrite) {
    match w {
        KvWrite::Put { key, value } => {
            store.insert(key.clone(), value.clone());
        }
        KvWrite::Delete { key } => {
            store.remove(key);
        }
    }
}

/// Applies `input`, returning what the store answers.
fn apply(store: &mut Store, input: &KvInput) -> KvOutput {
    match input {
        KvInput::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            KvOutput::Put
        }
        KvInput::Get { key } => KvOutput::Get(store.get(key).cloned()),
        KvInput::Delete { key } => KvOutput::Delete {
            deleted: i64::from(store.remove(key).is_some()),
        },
        KvInput::Txn {
            key,
            expected,
            success,
            failure,
        } => {
            let succeeded = store.get(key) == expected.as_ref();
            for w in if succeeded { success } else { failure } {
                write(store, w);
            }
            KvOutput::Txn { succeeded }
        }
    }
}

impl Model for KvModel {
    type State = Store;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Store {
        Store::new()
    }

    fn step(&self, state: &Store, input: &KvInput, output: &KvOutput) -> Option<Store> {
        let mut next = state.clone();
        (apply(&mut next, input) == *output).then_some(next)
    }

    fn indeterminate(&self, state: &Store, input: &KvInput) -> Store {
        let mut next = state.clone();
        apply(&mut next, input);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Operation, check};

    fn op(
        input: KvInput,
        output: Option<KvOutput>,
        called: u64,
        returned: Option<u64>,
    ) -> Operation<KvInput, KvOutput> {
        Operation {
            input,
            output,
            called,
            returned,
        }
    }

    fn put(v: &str, called: u64, returned: u64) -> Operation<KvInput, KvOutput> {
        op(
            KvInput::Put {
                key: b"k".to_vec(),
                value: v.into(),
            },
            Some(KvOutput::Put),
            called,
            Some(returned),
        )
    }

    fn get(v: Option<&str>, called: u64, returned: u64) -> Operation<KvInput, KvOutput> {
        op(
            KvInput::Get { key: b"k".to_vec() },
            Some(KvOutput::Get(v.map(Into::into))),
            called,
            Some(returned),
        )
    }

    fn cas(
        expected: Option<&str>,
        new: &str,
        succeeded: bool,
        called: u64,
        returned: u64,
    ) -> Operation<KvInput, KvOutput> {
        op(
            KvInput::Txn {
                key: b"k".to_vec(),
                expected: expected.map(Into::into),
                success: vec![KvWrite::Put {
                    key: b"k".to_vec(),
                    value: new.into(),
                }],
                failure: vec![],
            },
            Some(KvOutput::Txn { succeeded }),
            called,
            Some(returned),
        )
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = [get(None, 0, 1), put("a", 2, 3), get(Some("a"), 4, 5)];
        assert!(check(&KvModel, &history));
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_value() {
        assert!(check(&KvModel, &[put("a", 0, 10), get(Some("a"), 1, 2)]));
        assert!(check(&KvModel, &[put("a", 0, 10), get(None, 1, 2)]));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let history = [put("a", 0, 1), get(None, 2, 3)];
        assert!(!check(&KvModel, &history));
    }

    #[test]
    fn readers_cannot_see_two_concurrent_writes_in_opposite_orders() {
        // a and b are written concurrently; one reader then sees a-then-b, another b-then-a.
        let history = [
            put("a", 0, 10),
            put("b", 0, 10),
            get(Some("a"), 11, 12),
            get(Some("b"), 13, 14),
            get(Some("a"), 15, 16),
        ];
        assert!(
            !check(&KvModel, &history),
            "b was visible at 13, so a cannot return at 15"
        );
        let fine = [
            put("a", 0, 10),
            put("b", 0, 10),
            get(Some("a"), 1, 2),
            get(Some("b"), 11, 12),
        ];
        assert!(check(&KvModel, &fine));
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_have_happened_but_not_both() {
        let lost = op(
            KvInput::Put {
                key: b"k".to_vec(),
                value: b"a".to_vec(),
            },
            None,
            0,
            None,
        );
        assert!(check(&KvModel, &[lost.clone(), get(None, 5, 6)]));
        assert!(check(&KvModel, &[lost.clone(), get(Some("a"), 5, 6)]));
        assert!(
            check(
                &KvModel,
                &[lost.clone(), get(None, 5, 6), get(Some("a"), 7, 8)]
            ),
            "it took effect late"
        );
        assert!(
            !check(&KvModel, &[lost, get(Some("a"), 5, 6), get(None, 7, 8)]),
            "it cannot be undone"
        );
    }

    #[test]
    fn two_compare_and_sets_on_the_same_value_cannot_both_succeed() {
        let both = [cas(None, "a", true, 0, 10), cas(None, "b", true, 0, 10)];
        assert!(!check(&KvModel, &both));
        let one = [
            cas(None, "a", true, 0, 10),
            cas(None, "b", false, 0, 10),
            get(Some("a"), 11, 12),
        ];
        assert!(check(&KvModel, &one));
    }

    #[test]
    fn many_clients_replaying_a_real_order_are_linearizable_and_a_forged_read_is_not() {
        // A ground-truth sequence, each operation given an interval around its true instant
        // that overlaps its neighbours: a real execution must check out.
        let mut history = Vec::new();
        let mut store = Store::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for step in 0..200u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let key = vec![b'a' + (seed % 3) as u8];
            let input = match seed % 4 {
                0 => KvInput::Get { key },
                1 => KvInput::Delete { key },
                _ => KvInput::Put {
                    key,
                    value: step.to_be_bytes().to_vec(),
                },
            };
            let output = apply(&mut store, &input);
            let at = step * 10;
            history.push(op(
                input,
                Some(output),
                at.saturating_sub(15),
                Some(at + 15),
            ));
        }
        assert!(check(&KvModel, &history));
        let forged = history
            .iter()
            .rposition(|o| matches!(o.output, Some(KvOutput::Get(Some(_)))))
            .expect("some read saw a value");
        history[forged].output = Some(KvOutput::Get(Some(b"never written".to_vec())));
        assert!(!check(&KvModel, &history));
    }
}
