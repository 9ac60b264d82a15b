//! Simulated clients: one operation at a time each, retried on another member when it
//! certainly failed, recorded in the history the linearizability checker judges.

use std::collections::BTreeMap;

use cairn_linearizability::KvOutput;

use super::{Event, Phase, World};
use crate::InjectedBug;
use crate::history::{ClientOp, HistoryOp, is_linearizable};
use crate::member::{ClientRef, Input, Reply};
use crate::outcome::Violation;
use crate::state_machine::encode_request;

/// How long a client waits before it tries a certainly failed request on another member.
const CLIENT_RETRY_MIN_US: u64 = 20_000;
const CLIENT_RETRY_MAX_US: u64 = 200_000;

/// An operation a client is waiting on.
pub(super) struct Pending {
    pub(super) op: u64,
    pub(super) input: ClientOp,
    /// Attempts so far; a request that certainly failed is tried again on another member.
    pub(super) attempt: u64,
    /// The request id of every attempt.
    pub(super) request_ids: Vec<u64>,
    pub(super) called: u64,
}

pub(super) struct Client {
    pub(super) pending: Option<Pending>,
    pub(super) next_op: u64,
    /// The last value this client saw for each key, for compare-and-set guesses.
    pub(super) seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A history entry with the request ids of a write, to tell "unknown" from "no effect".
pub(super) struct Recorded {
    pub(super) op: HistoryOp,
    pub(super) request_ids: Vec<u64>,
}

impl World {
    pub(super) fn client_next(&mut self, client: usize) {
        if self.phase != Phase::Faults || self.report.operations_issued >= self.operations_max {
            return;
        }
        let key = self.rng.pick(&self.keys).clone();
        let c = &mut self.clients[client];
        let op = c.next_op;
        c.next_op += 1;
        let value = format!("{client}.{op}").into_bytes();
        let input = match self.rng.below(100) {
            0..=34 => ClientOp::Get { key },
            35..=64 => ClientOp::Put { key, value },
            65..=74 => ClientOp::Delete { key },
            _ => {
                let expected = self.clients[client].seen.get(&key).cloned().flatten();
                ClientOp::CompareAndSet {
                    key,
                    expected,
                    value,
                }
            }
        };
        self.clients[client].pending = Some(Pending {
            op,
            input,
            attempt: 0,
            request_ids: Vec::new(),
            called: self.now,
        });
        self.report.operations_issued += 1;
        let timeout = self.now + self.op_timeout_us;
        self.schedule(timeout, Event::ClientTimeout { client, op });
        self.send_attempt(client);
    }

    /// Sends the client's pending operation, as its next attempt, to a member picked at
    /// random.
    pub(super) fn send_attempt(&mut self, client: usize) {
        let member = self.rng.below(self.member_count() as u64) as usize;
        let Some(pending) = self.clients[client].pending.as_mut() else {
            return;
        };
        pending.attempt += 1;
        let client_ref = ClientRef {
            client,
            op: pending.op,
            attempt: pending.attempt,
        };
        let request_id = ((client as u64 + 1) << 32) | (pending.op << 8) | pending.attempt;
        let node_input = match &pending.input {
            ClientOp::Get { key } => Input::Read {
                key: key.clone(),
                client: client_ref,
            },
            write => {
                pending.request_ids.push(request_id);
                Input::Propose {
                    id: request_id,
                    data: encode_request(request_id, write).expect("a write has entry data"),
                    client: client_ref,
                }
            }
        };
        if self.trace {
            eprintln!(
                "{:>12.3} ms  client {client} op {} attempt {} -> member {}: {}",
                self.now as f64 / 1000.0,
                client_ref.op,
                client_ref.attempt,
                member + 1,
                pending.input
            );
        }
        let arrives = self.now + self.network.client_delay(&mut self.rng);
        self.schedule(
            arrives,
            Event::ClientArrives {
                member,
                input: node_input,
                client: client_ref,
            },
        );
    }

    /// Takes the client's pending operation `op`, and plans its next one.
    fn finish_pending(&mut self, client: usize, op: u64) -> Option<Pending> {
        let c = self.clients.get_mut(client)?;
        if c.pending.as_ref().is_none_or(|p| p.op != op) {
            return None;
        }
        let pending = c.pending.take();
        let next = self.now + self.rng.between(0, self.think_max_us);
        self.schedule(next, Event::ClientNext { client });
        pending
    }

    pub(super) fn client_reply(&mut self, client: ClientRef, reply: Reply) {
        let current = self
            .clients
            .get(client.client)
            .and_then(|c| c.pending.as_ref())
            .is_some_and(|p| p.op == client.op && p.attempt == client.attempt);
        if !current {
            return;
        }
        self.trace_line(format_args!(
            "client {} op {} attempt {} <- {reply}",
            client.client, client.op, client.attempt
        ));
        let Reply::Output(output) = reply else {
            // Certainly no effect: try another member after a moment, as clientv3 does.
            let retry = self.now + self.rng.between(CLIENT_RETRY_MIN_US, CLIENT_RETRY_MAX_US);
            let op = client.op;
            self.schedule(
                retry,
                Event::ClientRetry {
                    client: client.client,
                    op,
                },
            );
            return;
        };
        let Some(pending) = self.finish_pending(client.client, client.op) else {
            return;
        };
        let seen = &mut self.clients[client.client].seen;
        match (&pending.input, &output) {
            (ClientOp::Get { key }, KvOutput::Get(value)) => {
                seen.insert(key.clone(), value.clone());
            }
            (ClientOp::Put { key, value }, _)
            | (ClientOp::CompareAndSet { key, value, .. }, KvOutput::Txn { succeeded: true }) => {
                seen.insert(key.clone(), Some(value.clone()));
            }
            (ClientOp::Delete { key }, _) => {
                seen.insert(key.clone(), None);
            }
            _ => {}
        }
        self.history.push(Recorded {
            op: HistoryOp {
                input: pending.input,
                output: Some(output),
                called: pending.called,
                returned: Some(self.now),
            },
            request_ids: pending.request_ids,
        });
    }

    pub(super) fn client_timeout(&mut self, client: usize, op: u64) {
        let Some(pending) = self.finish_pending(client, op) else {
            return;
        };
        self.trace_line(format_args!("client {client} op {op} timed out"));
        // A read that never answered changed nothing; a write may have happened.
        if !pending.input.is_read() {
            self.history.push(Recorded {
                op: HistoryOp {
                    input: pending.input,
                    output: None,
                    called: pending.called,
                    returned: None,
                },
                request_ids: pending.request_ids,
            });
        }
    }

    /// The history, judged. Writes whose outcome the client never learned stay in as
    /// "unknown" only if some member applied them: after settling, the rest never will.
    pub(super) fn check_history(&mut self) -> Result<(), Violation> {
        let mut ops: Vec<HistoryOp> = self
            .history
            .iter()
            .filter(|r| {
                r.op.output.is_some()
                    || r.request_ids
                        .iter()
                        .any(|id| self.applied_requests.contains(id))
            })
            .map(|r| r.op.clone())
            .collect();
        if self.injected_bug == Some(InjectedBug::ForgedReadInHistory) {
            ops.push(HistoryOp {
                input: ClientOp::Get {
                    key: self.keys[0].clone(),
                },
                output: Some(KvOutput::Get(Some(b"never written".to_vec()))),
                called: self.now,
                returned: Some(self.now + 1),
            });
        }
        self.report.operations_checked = ops.len() as u64;
        self.report.operations_unknown = ops.iter().filter(|o| o.output.is_none()).count() as u64;
        if is_linearizable(&ops) {
            return Ok(());
        }
        if self.trace {
            for op in &ops {
                eprintln!("history: {op:?}");
            }
        }
        Err(Violation::NotLinearizable {
            operations: ops.len(),
        })
    }
}
