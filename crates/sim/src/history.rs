//! Client histories and their judge: the in-repo linearizability checker.
//!
//! Puts, gets and deletes are judged by `cairn_linearizability::KvModel` itself. A
//! compare-and-set is a `KvInput::Txn` with one put in its success branch, but that crate
//! does not export `KvWrite`, so a Txn with writes cannot be built from outside it; until it
//! does (issue #4), `HistoryModel` judges compare-and-set here, on the same state, with the
//! same rule as `KvModel`'s Txn: succeed and write when the key holds `expected`.

use std::fmt;

use cairn_linearizability::{KvInput, KvModel, KvOutput, Model, Operation};

/// What a simulated client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
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
    /// If `key` holds `expected` (None: absent), write `value`.
    CompareAndSet {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

impl fmt::Display for ClientOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        match self {
            ClientOp::Put { key, value } => write!(f, "put {} = {}", text(key), text(value)),
            ClientOp::Get { key } => write!(f, "get {}", text(key)),
            ClientOp::Delete { key } => write!(f, "delete {}", text(key)),
            ClientOp::CompareAndSet {
                key,
                expected,
                value,
            } => write!(
                f,
                "if {} == {} then put {}",
                text(key),
                expected.as_deref().map_or("(absent)".into(), text),
                text(value)
            ),
        }
    }
}

impl ClientOp {
    pub fn is_read(&self) -> bool {
        matches!(self, ClientOp::Get { .. })
    }

    fn as_kv_input(&self) -> Option<KvInput> {
        match self {
            ClientOp::Put { key, value } => Some(KvInput::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            ClientOp::Get { key } => Some(KvInput::Get { key: key.clone() }),
            ClientOp::Delete { key } => Some(KvInput::Delete { key: key.clone() }),
            ClientOp::CompareAndSet { .. } => None,
        }
    }
}

pub type HistoryOp = Operation<ClientOp, KvOutput>;

type Store = <KvModel as Model>::State;

/// `KvModel`, plus compare-and-set.
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryModel;

/// The state after a compare-and-set in `state`, and whether it succeeded.
fn compare_and_set(
    state: &Store,
    key: &[u8],
    expected: &Option<Vec<u8>>,
    value: &[u8],
) -> (Store, bool) {
    let mut next = state.clone();
    let succeeded = state.get(key) == expected.as_ref();
    if succeeded {
        next.insert(key.to_vec(), value.to_vec());
    }
    (next, succeeded)
}

impl Model for HistoryModel {
    type State = Store;
    type Input = ClientOp;
    type Output = KvOutput;

    fn init(&self) -> Store {
        KvModel.init()
    }

    fn step(&self, state: &Store, input: &ClientOp, output: &KvOutput) -> Option<Store> {
        match input {
            ClientOp::CompareAndSet {
                key,
                expected,
                value,
            } => {
                let (next, succeeded) = compare_and_set(state, key, expected, value);
                (*output == KvOutput::Txn { succeeded }).then_some(next)
            }
            other => {
                let kv = other.as_kv_input().expect("not a compare-and-set");
                KvModel.step(state, &kv, output)
            }
        }
    }

    fn indeterminate(&self, state: &Store, input: &ClientOp) -> Store {
        match input {
            ClientOp::CompareAndSet {
                key,
                expected,
                value,
            } => compare_and_set(state, key, expected, value).0,
            other => {
                let kv = other.as_kv_input().expect("not a compare-and-set");
                KvModel.indeterminate(state, &kv)
            }
        }
    }
}

/// True when some order of `history` that respects real time explains every result.
pub fn is_linearizable(history: &[HistoryOp]) -> bool {
    cairn_linearizability::check(&HistoryModel, history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(input: ClientOp, output: KvOutput, called: u64, returned: u64) -> HistoryOp {
        Operation {
            input,
            output: Some(output),
            called,
            returned: Some(returned),
        }
    }

    fn put(value: &str) -> ClientOp {
        ClientOp::Put {
            key: b"k".to_vec(),
            value: value.into(),
        }
    }

    fn get() -> ClientOp {
        ClientOp::Get { key: b"k".to_vec() }
    }

    fn cas(expected: Option<&str>, value: &str) -> ClientOp {
        ClientOp::CompareAndSet {
            key: b"k".to_vec(),
            expected: expected.map(Into::into),
            value: value.into(),
        }
    }

    #[test]
    fn a_read_of_a_completed_write_is_linearizable_and_a_stale_one_is_not() {
        let fresh = [
            done(put("a"), KvOutput::Put, 0, 1),
            done(get(), KvOutput::Get(Some(b"a".to_vec())), 2, 3),
        ];
        assert!(is_linearizable(&fresh));
        let stale = [
            done(put("a"), KvOutput::Put, 0, 1),
            done(get(), KvOutput::Get(None), 2, 3),
        ];
        assert!(!is_linearizable(&stale));
    }

    #[test]
    fn two_compare_and_sets_from_absent_cannot_both_succeed() {
        let both = [
            done(cas(None, "a"), KvOutput::Txn { succeeded: true }, 0, 10),
            done(cas(None, "b"), KvOutput::Txn { succeeded: true }, 0, 10),
        ];
        assert!(!is_linearizable(&both));
        let one = [
            done(cas(None, "a"), KvOutput::Txn { succeeded: true }, 0, 10),
            done(cas(None, "b"), KvOutput::Txn { succeeded: false }, 0, 10),
            done(
                cas(Some("a"), "c"),
                KvOutput::Txn { succeeded: true },
                11,
                12,
            ),
            done(get(), KvOutput::Get(Some(b"c".to_vec())), 13, 14),
        ];
        assert!(is_linearizable(&one));
    }

    #[test]
    fn an_unacknowledged_compare_and_set_may_take_effect_late() {
        let history = [
            Operation {
                input: cas(None, "a"),
                output: None,
                called: 0,
                returned: None,
            },
            done(get(), KvOutput::Get(None), 5, 6),
            done(get(), KvOutput::Get(Some(b"a".to_vec())), 7, 8),
        ];
        assert!(is_linearizable(&history));
    }
}
