//! Recording what clients did, for the linearizability checker.
//!
//! Every attempt is kept as an [`Entry`]: which client, what it asked, when it called and when
//! it got its answer (nanoseconds on one monotonic clock, from the history's creation), and the
//! outcome. [`History::check`] turns entries into the checker's operations by one rule:
//!
//! - an answer is an operation with its output;
//! - a failed read is left out: a read changes nothing, so leaving it out explains any failure;
//! - a failed write whose outcome is unknown is an operation with no output and no return: it
//!   may have taken effect at any time after its call, or never;
//! - a failed write that etcd guarantees had no effect is left out.
//!
//! Only two kinds of failure count as "no effect" ([`failure_effect`]): the request never left
//! the client (the connection to the member could not be made), or the member refused it in
//! an interceptor before any proposal (etcd's learner and rate guards). Everything else —
//! timeouts, a connection lost mid-request, `etcdserver: request timed out`, `leader
//! changed`, even `etcdserver: no leader` (etcd's own client does not retry writes on it) — is
//! unknown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_linearizability::{KvInput, KvModel, KvOutput, KvWrite, Operation};

/// An operation of the key-value model, as the checker takes it.
pub type KvOperation = Operation<KvInput, KvOutput>;

/// How long the checker may search before the history is declared too hard to judge.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// What became of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The member answered.
    Ok(KvOutput),
    /// The client got an error (or gave up waiting); `effect` says what that implies.
    Failed { error: String, effect: Effect },
}

/// What a failure implies about the operation's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Guaranteed not to have happened.
    None,
    /// May have happened, at any time after the call, or not at all.
    Unknown,
}

/// One client attempt.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Who made it (a workload client's index, or any tag a test picks).
    pub client: usize,
    pub input: KvInput,
    /// Nanoseconds since the history was created.
    pub called: u64,
    /// When the client got its answer or gave up.
    pub returned: u64,
    pub outcome: Outcome,
}

impl Entry {
    /// The member answered (the operation took effect, or the read returned data).
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    pub fn is_read(&self) -> bool {
        matches!(self.input, KvInput::Get { .. })
    }
}

/// A concurrent log of client attempts.
pub struct History {
    origin: Instant,
    entries: Mutex<Vec<Entry>>,
}

/// An attempt in flight: made by [`History::call`], finished by one of its methods.
#[must_use = "a call is recorded only when it is finished"]
pub struct Call<'a> {
    history: &'a History,
    client: usize,
    input: KvInput,
    called: u64,
}

impl Call<'_> {
    /// The member answered with `output`.
    pub fn returned(self, output: KvOutput) {
        self.finish(Outcome::Ok(output));
    }

    /// The client got `error`.
    pub fn failed(self, error: &etcd_client::Error) {
        let effect = failure_effect(error);
        self.finish(Outcome::Failed {
            error: error.to_string(),
            effect,
        });
    }

    /// The client stopped waiting after `waited`: the request may still be applied.
    pub fn timed_out(self, waited: Duration) {
        self.finish(Outcome::Failed {
            error: format!("no answer within {waited:?}"),
            effect: Effect::Unknown,
        });
    }

    fn finish(self, outcome: Outcome) {
        let returned = self.history.now();
        self.history.lock().push(Entry {
            client: self.client,
            input: self.input,
            called: self.called,
            returned,
            outcome,
        });
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            origin: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the history was created (the clock of every entry).
    pub fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).expect("a test lasts less than 584 years")
    }

    /// Starts an attempt by `client`; the call time is taken now.
    pub fn call(&self, client: usize, input: KvInput) -> Call<'_> {
        Call {
            history: self,
            client,
            input,
            called: self.now(),
        }
    }

    /// Every attempt finished so far, in the order they finished.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the history for linearizability under the key-value model, one key at a time
    /// when every operation touches a single key (linearizability is local: a history is
    /// linearizable iff each object's sub-history is), else as a whole.
    pub fn check(&self) -> Result<CheckSummary, String> {
        let entries = self.entries();
        let operations: Vec<(usize, KvOperation)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| operation_of(e).map(|op| (i, op)))
            .collect();
        // Key (None: the whole history) → (entry index, operation).
        let mut groups: BTreeMap<Option<Vec<u8>>, Vec<(usize, KvOperation)>> = BTreeMap::new();
        let per_key = operations
            .iter()
            .all(|(_, op)| single_key(&op.input).is_some());
        for (index, operation) in operations {
            let key = if per_key {
                single_key(&operation.input).map(<[u8]>::to_vec)
            } else {
                None
            };
            groups.entry(key).or_default().push((index, operation));
        }
        let started = Instant::now();
        let mut summary = CheckSummary {
            entries: entries.len(),
            operations: 0,
            unknown: 0,
            groups: groups.len(),
            took: Duration::ZERO,
        };
        for (key, group) in groups {
            summary.operations += group.len();
            summary.unknown += group.iter().filter(|(_, op)| op.returned.is_none()).count();
            let operations: Vec<KvOperation> = group.iter().map(|(_, op)| op.clone()).collect();
            if !check_with_timeout(operations)? {
                let what = key.map_or("the whole history".to_owned(), |k| {
                    format!("key {:?}", String::from_utf8_lossy(&k))
                });
                let mut report = format!(
                    "history is NOT linearizable: {what} ({} operations) has no valid order; \
                     its attempts, by call time (ms since start):\n",
                    group.len()
                );
                let mut involved: Vec<&Entry> = group.iter().map(|(i, _)| &entries[*i]).collect();
                involved.sort_by_key(|e| e.called);
                for entry in involved {
                    let _ = writeln!(report, "  {}", describe_entry(entry));
                }
                return Err(report);
            }
        }
        summary.took = started.elapsed();
        Ok(summary)
    }

    /// Panics with the offending sub-history unless the history is linearizable.
    #[track_caller]
    pub fn assert_linearizable(&self) -> CheckSummary {
        match self.check() {
            Ok(summary) => summary,
            Err(report) => panic!("{report}"),
        }
    }
}

/// What a successful check looked at.
#[derive(Clone, Debug)]
pub struct CheckSummary {
    /// Attempts recorded.
    pub entries: usize,
    /// Operations handed to the checker.
    pub operations: usize,
    /// Of those, writes whose outcome is unknown.
    pub unknown: usize,
    /// Sub-histories checked separately (keys, or 1).
    pub groups: usize,
    pub took: Duration,
}

fn operation_of(entry: &Entry) -> Option<KvOperation> {
    match &entry.outcome {
        Outcome::Ok(output) => Some(Operation {
            input: entry.input.clone(),
            output: Some(output.clone()),
            called: entry.called,
            returned: Some(entry.returned),
        }),
        Outcome::Failed { .. } if entry.is_read() => None,
        Outcome::Failed {
            effect: Effect::None,
            ..
        } => None,
        Outcome::Failed {
            effect: Effect::Unknown,
            ..
        } => Some(Operation {
            input: entry.input.clone(),
            output: None,
            called: entry.called,
            returned: None,
        }),
    }
}

/// The only key `input` reads or writes, if it touches exactly one.
fn single_key(input: &KvInput) -> Option<&[u8]> {
    match input {
        KvInput::Put { key, .. } | KvInput::Get { key } | KvInput::Delete { key } => Some(key),
        KvInput::Txn {
            key,
            success,
            failure,
            ..
        } => success
            .iter()
            .chain(failure)
            .all(|w| match w {
                KvWrite::Put { key: k, .. } | KvWrite::Delete { key: k } => k == key,
            })
            .then_some(key.as_slice()),
    }
}

/// Runs the checker on a thread of its own so that a history too hard to judge fails the
/// test with a message instead of hanging it.
fn check_with_timeout(operations: Vec<KvOperation>) -> Result<bool, String> {
    let count = operations.len();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("linearizability-check".to_owned())
        .spawn(move || {
            let _ = sender.send(cairn_linearizability::check(&KvModel, &operations));
        })
        .expect("spawn the checker thread");
    receiver.recv_timeout(CHECK_TIMEOUT).map_err(|_| {
        format!(
            "the checker did not finish within {CHECK_TIMEOUT:?} on {count} operations: \
             record fewer operations or fewer unknown outcomes"
        )
    })
}

/// What a failure implies about a write's effect (see the module header).
pub fn failure_effect(error: &etcd_client::Error) -> Effect {
    /// Refused by etcd's gRPC interceptors or before a proposal is made.
    const REFUSED_BEFORE_PROPOSAL: [&str; 2] = [
        "etcdserver: rpc not supported for learner",
        "etcdserver: too many requests",
    ];
    /// The connection to the member could not be made: the request was never sent.
    const NOT_SENT: [&str; 2] = ["tcp connect error", "Connection refused"];
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if REFUSED_BEFORE_PROPOSAL.contains(&message)
                || NOT_SENT.iter().any(|m| message.contains(m))
            {
                Effect::None
            } else {
                Effect::Unknown
            }
        }
        // Raised while building a channel, before any request goes out.
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => Effect::None,
        _ => Effect::Unknown,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe_write(write: &KvWrite) -> String {
    match write {
        KvWrite::Put { key, value } => format!("put {}={}", text(key), text(value)),
        KvWrite::Delete { key } => format!("delete {}", text(key)),
    }
}

fn describe_input(input: &KvInput) -> String {
    match input {
        KvInput::Put { key, value } => format!("put {}={}", text(key), text(value)),
        KvInput::Get { key } => format!("get {}", text(key)),
        KvInput::Delete { key } => format!("delete {}", text(key)),
        KvInput::Txn {
            key,
            expected,
            success,
            failure,
        } => format!(
            "txn if {}=={} then [{}] else [{}]",
            text(key),
            expected.as_deref().map_or("<absent>".to_owned(), text),
            success
                .iter()
                .map(describe_write)
                .collect::<Vec<_>>()
                .join(", "),
            failure
                .iter()
                .map(describe_write)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One line per attempt: times, client, request, outcome.
pub fn describe_entry(entry: &Entry) -> String {
    let outcome = match &entry.outcome {
        Outcome::Ok(KvOutput::Put) => "ok".to_owned(),
        Outcome::Ok(KvOutput::Get(value)) => value.as_deref().map_or("<absent>".to_owned(), text),
        Outcome::Ok(KvOutput::Delete { deleted }) => format!("deleted {deleted}"),
        Outcome::Ok(KvOutput::Txn { succeeded }) => format!("succeeded {succeeded}"),
        Outcome::Failed { error, effect } => format!("FAILED ({effect:?} effect): {error}"),
    };
    format!(
        "[{:>10.3} .. {:>10.3}] client {:>3}: {} -> {}",
        entry.called as f64 / 1e6,
        entry.returned as f64 / 1e6,
        entry.client,
        describe_input(&entry.input),
        outcome
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvInput {
        KvInput::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn get(key: &str) -> KvInput {
        KvInput::Get { key: key.into() }
    }

    fn unavailable(message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::unavailable(message))
    }

    #[test]
    fn a_stale_read_on_one_key_is_reported_with_that_keys_attempts() {
        let history = History::new();
        history.call(0, put("a", "1")).returned(KvOutput::Put);
        history.call(1, put("b", "1")).returned(KvOutput::Put);
        history.call(1, get("a")).returned(KvOutput::Get(None));
        let report = history.check().expect_err("the read of a is stale");
        assert!(report.contains("key \"a\""), "{report}");
        assert!(!report.contains("put b=1"), "only a's attempts: {report}");
    }

    #[test]
    fn failed_reads_are_left_out_and_unknown_writes_may_have_happened() {
        let history = History::new();
        history
            .call(0, put("a", "1"))
            .timed_out(Duration::from_secs(1));
        history
            .call(1, get("a"))
            .failed(&unavailable("etcdserver: no leader"));
        history
            .call(1, get("a"))
            .returned(KvOutput::Get(Some("1".into())));
        let summary = history.assert_linearizable();
        assert_eq!(summary.entries, 3);
        assert_eq!(summary.operations, 2, "the failed read is left out");
        assert_eq!(summary.unknown, 1);
    }

    #[test]
    fn a_write_that_was_never_sent_cannot_explain_a_read() {
        let history = History::new();
        history.call(0, put("a", "1")).failed(&unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        ));
        history
            .call(1, get("a"))
            .returned(KvOutput::Get(Some("1".into())));
        assert!(history.check().is_err());
    }

    #[test]
    fn only_refusals_before_a_proposal_have_no_effect() {
        assert_eq!(
            failure_effect(&unavailable("etcdserver: rpc not supported for learner")),
            Effect::None
        );
        for message in [
            "etcdserver: request timed out",
            "etcdserver: no leader",
            "etcdserver: leader changed",
            "transport error",
        ] {
            assert_eq!(
                failure_effect(&unavailable(message)),
                Effect::Unknown,
                "{message}"
            );
        }
    }

    #[test]
    fn multi_key_transactions_are_checked_as_one_history() {
        let history = History::new();
        history
            .call(
                0,
                KvInput::Txn {
                    key: "a".into(),
                    expected: None,
                    success: vec![KvWrite::Put {
                        key: "b".into(),
                        value: "x".into(),
                    }],
                    failure: vec![],
                },
            )
            .returned(KvOutput::Txn { succeeded: true });
        history
            .call(1, get("b"))
            .returned(KvOutput::Get(Some("x".into())));
        let summary = history.assert_linearizable();
        assert_eq!(summary.groups, 1);
    }
}
