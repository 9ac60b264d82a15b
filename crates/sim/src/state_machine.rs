//! The replicated state machine: a key-value map, changed only by committed entries.
//!
//! Entries carry what Cairn replicates, a `cairnpb::InternalRequest` (a request id and an
//! etcd Put, DeleteRange or Txn request), encoded with prost. Applying one yields the
//! output the client is told, in the linearizability checker's terms. Revisions, leases and
//! watches are Cairn's mvcc layer and not modelled: the checker judges values.

use std::collections::BTreeMap;

use cairn_linearizability::KvOutput;
use cairn_proto::cairnpb::{InternalRequest, internal_request};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as TxnOp;
use cairn_proto::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use prost::Message;

use crate::history::ClientOp;

/// The entry data for a write; None for a read, which is never replicated.
pub fn encode_request(id: u64, op: &ClientOp) -> Option<Vec<u8>> {
    let request = match op {
        ClientOp::Get { .. } => return None,
        ClientOp::Put { key, value } => internal_request::Request::Put(PutRequest {
            key: key.clone(),
            value: value.clone(),
            ..PutRequest::default()
        }),
        ClientOp::Delete { key } => internal_request::Request::DeleteRange(DeleteRangeRequest {
            key: key.clone(),
            ..DeleteRangeRequest::default()
        }),
        ClientOp::CompareAndSet {
            key,
            expected,
            value,
        } => {
            let compare = match expected {
                Some(expected) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Value(expected.clone())),
                    ..Compare::default()
                },
                // etcd's idiom for "the key does not exist": its version is 0.
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Version(0)),
                    ..Compare::default()
                },
            };
            internal_request::Request::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp {
                    request: Some(TxnOp::RequestPut(PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..PutRequest::default()
                    })),
                }],
                failure: Vec::new(),
            })
        }
    };
    Some(
        InternalRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec(),
    )
}

/// The entry data with a put's value changed, for the test that proves divergence is caught.
pub fn corrupt_put(data: &[u8]) -> Vec<u8> {
    match InternalRequest::decode(data) {
        Ok(InternalRequest {
            id,
            request: Some(internal_request::Request::Put(mut put)),
        }) => {
            put.value.push(b'!');
            InternalRequest {
                id,
                request: Some(internal_request::Request::Put(put)),
            }
            .encode_to_vec()
        }
        _ => data.to_vec(),
    }
}

/// A request this state machine cannot apply: the log holds something no client wrote.
#[derive(Debug, thiserror::Error)]
#[error("unappliable entry: {0}")]
pub struct UnappliableEntry(String);

/// A committed request's id and what applying it answered.
#[derive(Debug)]
pub struct AppliedRequest {
    pub id: u64,
    pub output: KvOutput,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    store: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StateMachine {
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(key).cloned()
    }

    /// Applies one committed entry's data.
    pub fn apply(&mut self, data: &[u8]) -> Result<AppliedRequest, UnappliableEntry> {
        let request = InternalRequest::decode(data)
            .map_err(|e| UnappliableEntry(format!("not an InternalRequest: {e}")))?;
        let output = match request.request {
            Some(internal_request::Request::Put(put)) => {
                self.store.insert(put.key, put.value);
                KvOutput::Put
            }
            Some(internal_request::Request::DeleteRange(delete)) => {
                if !delete.range_end.is_empty() {
                    return Err(UnappliableEntry("a ranged delete".into()));
                }
                KvOutput::Delete {
                    deleted: i64::from(self.store.remove(&delete.key).is_some()),
                }
            }
            Some(internal_request::Request::Txn(txn)) => {
                let mut succeeded = true;
                for compare in &txn.compare {
                    succeeded &= self.holds(compare)?;
                }
                let branch = if succeeded { txn.success } else { txn.failure };
                for op in branch {
                    match op.request {
                        Some(TxnOp::RequestPut(put)) => {
                            self.store.insert(put.key, put.value);
                        }
                        other => {
                            return Err(UnappliableEntry(format!("txn operation {other:?}")));
                        }
                    }
                }
                KvOutput::Txn { succeeded }
            }
            other => return Err(UnappliableEntry(format!("request {other:?}"))),
        };
        Ok(AppliedRequest {
            id: request.id,
            output,
        })
    }

    fn holds(&self, compare: &Compare) -> Result<bool, UnappliableEntry> {
        let current = self.store.get(&compare.key);
        match (&compare.target_union, compare.result()) {
            (Some(TargetUnion::Value(expected)), CompareResult::Equal) => {
                Ok(current == Some(expected))
            }
            (Some(TargetUnion::Version(0)), CompareResult::Equal) => Ok(current.is_none()),
            _ => Err(UnappliableEntry(format!("compare {compare:?}"))),
        }
    }

    /// Every key and value, length-prefixed, in key order: what the digest covers.
    fn image(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.store.len() as u32).to_be_bytes());
        for (key, value) in &self.store {
            for part in [key, value] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    /// A digest of the whole state (FNV-1a over the image), compared across members.
    pub fn digest(&self) -> u64 {
        self.image()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
                (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(sm: &mut StateMachine, id: u64, op: ClientOp) -> KvOutput {
        let data = encode_request(id, &op).expect("a write");
        let applied = sm.apply(&data).expect("appliable");
        assert_eq!(applied.id, id);
        applied.output
    }

    #[test]
    fn writes_apply_with_etcd_semantics() {
        let mut sm = StateMachine::default();
        let key = b"k".to_vec();
        let cas = |expected: Option<&str>, value: &str| ClientOp::CompareAndSet {
            key: b"k".to_vec(),
            expected: expected.map(Into::into),
            value: value.into(),
        };
        assert_eq!(
            apply(&mut sm, 1, cas(None, "a")),
            KvOutput::Txn { succeeded: true }
        );
        assert_eq!(
            apply(&mut sm, 2, cas(None, "b")),
            KvOutput::Txn { succeeded: false }
        );
        assert_eq!(
            apply(&mut sm, 3, cas(Some("a"), "c")),
            KvOutput::Txn { succeeded: true }
        );
        assert_eq!(sm.get(&key), Some(b"c".to_vec()));
        let put = ClientOp::Put {
            key: key.clone(),
            value: b"d".to_vec(),
        };
        assert_eq!(apply(&mut sm, 4, put), KvOutput::Put);
        let delete = ClientOp::Delete { key: key.clone() };
        assert_eq!(
            apply(&mut sm, 5, delete.clone()),
            KvOutput::Delete { deleted: 1 }
        );
        assert_eq!(apply(&mut sm, 6, delete), KvOutput::Delete { deleted: 0 });
        assert_eq!(encode_request(7, &ClientOp::Get { key }), None);
    }

    #[test]
    fn the_digest_tells_states_apart() {
        let mut sm = StateMachine::default();
        let empty = sm.digest();
        let mut digests = vec![empty];
        for (k, v) in [("a", "1"), ("b", ""), ("", "x"), ("a", "2")] {
            let op = ClientOp::Put {
                key: k.into(),
                value: v.into(),
            };
            sm.apply(&encode_request(1, &op).expect("write"))
                .expect("apply");
            assert!(!digests.contains(&sm.digest()), "{sm:?}");
            digests.push(sm.digest());
        }
        assert_eq!(sm.clone().digest(), sm.digest());
    }
}
