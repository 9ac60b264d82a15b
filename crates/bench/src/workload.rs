//! What one request of each workload looks like, and how keys are chosen.
//!
//! Keys follow etcd's benchmark: a `key_size`-byte buffer, zero-filled, that
//! starts with the zig-zag varint of the key's index in `0..key_space_size`.
//! The index is the request's sequence number modulo the space
//! (`--sequential-keys`) or uniformly random within it.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest, request_op};
use tonic::transport::Channel;

/// How keys are picked for write workloads.
#[derive(Clone, Debug)]
pub struct Keys {
    pub size: usize,
    pub space: u64,
    pub sequential: bool,
}

impl Keys {
    /// Checks that every index of the space fits in a key.
    pub fn validate(&self) -> Result<(), String> {
        if self.space == 0 {
            return Err("--key-space-size must be at least 1".into());
        }
        let need = varint_len(zigzag(self.space - 1));
        if self.size < need {
            return Err(format!(
                "--key-size {} cannot hold {} distinct keys (needs at least {need} bytes)",
                self.size, self.space
            ));
        }
        Ok(())
    }

    /// The key for the `seq`-th request of the run.
    pub fn key(&self, seq: u64, rng: &mut Rng) -> Vec<u8> {
        let index = if self.sequential {
            seq % self.space
        } else {
            rng.below(self.space)
        };
        self.key_at(index)
    }

    /// The key for index `i` (modulo the space).
    pub fn key_at(&self, i: u64) -> Vec<u8> {
        let mut key = vec![0u8; self.size];
        put_varint(&mut key, zigzag(i % self.space));
        key
    }
}

/// One kind of request, repeated `--total` times.
#[derive(Clone, Debug)]
pub enum Workload {
    Put {
        keys: Keys,
        value: Vec<u8>,
    },
    Range {
        key: Vec<u8>,
        range_end: Vec<u8>,
        serializable: bool,
    },
    TxnPut {
        keys: Keys,
        value: Vec<u8>,
        ops: usize,
    },
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put { .. } => "put",
            Workload::Range {
                serializable: false,
                ..
            } => "range-linearizable",
            Workload::Range {
                serializable: true, ..
            } => "range-serializable",
            Workload::TxnPut { .. } => "txn-put",
        }
    }

    /// Sends the `seq`-th request of the run and waits for its response.
    pub async fn issue(
        &self,
        kv: &mut KvClient<Channel>,
        seq: u64,
        rng: &mut Rng,
    ) -> Result<(), tonic::Status> {
        match self {
            Workload::Put { keys, value } => {
                let put = PutRequest {
                    key: keys.key(seq, rng),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(put).await?;
            }
            Workload::Range {
                key,
                range_end,
                serializable,
            } => {
                let range = RangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    serializable: *serializable,
                    ..Default::default()
                };
                kv.range(range).await?;
            }
            Workload::TxnPut { keys, value, ops } => {
                // Consecutive indexes, so no txn names a key twice (etcd
                // rejects that); `ops <= keys.space` is checked up front.
                let first = seq.wrapping_mul(*ops as u64);
                let success = (0..*ops as u64)
                    .map(|j| RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: keys.key_at(first.wrapping_add(j)),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let txn = TxnRequest {
                    success,
                    ..Default::default()
                };
                kv.txn(txn).await?;
            }
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast, and good enough to spread keys over a space.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn zigzag(v: u64) -> u64 {
    // Go's binary.PutVarint encodes a non-negative i64 n as 2n.
    v << 1
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut [u8], mut v: u64) {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn keys_match_go_put_varint() {
        let keys = Keys {
            size: 8,
            space: 1000,
            sequential: true,
        };
        let mut rng = Rng::new(1);
        assert_eq!(keys.key(0, &mut rng), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(keys.key(1, &mut rng), [2, 0, 0, 0, 0, 0, 0, 0]);
        // 300 -> zig-zag 600 = 0b100_1011000 -> [0xd8, 0x04]
        assert_eq!(keys.key(300, &mut rng), [0xd8, 0x04, 0, 0, 0, 0, 0, 0]);
        assert_eq!(keys.key(1300, &mut rng), keys.key(300, &mut rng));
    }

    #[test]
    fn key_size_must_hold_the_space() {
        let keys = |size, space| Keys {
            size,
            space,
            sequential: false,
        };
        assert!(keys(1, 64).validate().is_ok());
        assert!(keys(1, 65).validate().is_err());
        assert!(keys(2, 65).validate().is_ok());
        assert!(keys(8, 0).validate().is_err());
    }

    #[test]
    fn random_keys_stay_in_the_space_and_cover_it() {
        let random = Keys {
            size: 2,
            space: 10,
            sequential: false,
        };
        let sequential = Keys {
            sequential: true,
            ..random.clone()
        };
        let mut rng = Rng::new(42);
        let seen: BTreeSet<_> = (0..1000).map(|seq| random.key(seq, &mut rng)).collect();
        let space: BTreeSet<_> = (0..10).map(|seq| sequential.key(seq, &mut rng)).collect();
        assert_eq!(seen, space);
    }
}
