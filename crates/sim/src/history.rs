//! Client histories and their judge: the in-repo linearizability checker's `KvModel`, with a
//! compare-and-set judged as a `KvInput::Txn` with one put in its success branch.

use std::fmt;

use cairn_linearizability::{KvInput, KvModel, KvOutput, KvWrite, Operation};

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

    fn as_kv_input(&self) -> KvInput {
        match self {
            ClientOp::Put { key, value } => KvInput::Put {
                key: key.clone(),
                value: value.clone(),
            },
            ClientOp::Get { key } => KvInput::Get { key: key.clone() },
            ClientOp::Delete { key } => KvInput::Delete { key: key.clone() },
            ClientOp::CompareAndSet {
                key,
                expected,
                value,
            } => KvInput::Txn {
                key: key.clone(),
                expected: expected.clone(),
                success: vec![KvWrite::Put {
                    key: key.clone(),
                    value: value.clone(),
                }],
                failure: Vec::new(),
            },
        }
    }
}

pub type HistoryOp = Operation<ClientOp, KvOutput>;

/// True when some order of `history` that respects real time explains every result.
pub fn is_linearizable(history: &[HistoryOp]) -> bool {
    let judged: Vec<Operation<KvInput, KvOutput>> = history
        .iter()
        .map(|op| Operation {
            input: op.input.as_kv_input(),
            output: op.output.clone(),
            called: op.called,
            returned: op.returned,
        })
        .collect();
    cairn_linearizability::check(&KvModel, &judged)
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
