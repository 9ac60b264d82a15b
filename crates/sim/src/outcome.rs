//! What a run ends with: a report of what happened, or the first violation found.

use std::fmt;

/// A property of the cluster that a run found broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("two leaders in term {term}: member {first} and member {second}")]
    TwoLeaders { term: u64, first: u64, second: u64 },
    #[error(
        "committed entry {index} changed: member {first_member} committed {first}, member {member} now commits {now}"
    )]
    CommittedEntryChanged {
        index: u64,
        first_member: u64,
        first: String,
        member: u64,
        now: String,
    },
    #[error(
        "state machines diverged at applied index {index}: member {first_member} has digest {first_digest:016x}, member {member} has {digest:016x}"
    )]
    StateMachinesDiverged {
        index: u64,
        first_member: u64,
        first_digest: u64,
        member: u64,
        digest: u64,
    },
    #[error("member {member} applied index {index} after {applied}: entries must apply in order")]
    AppliedOutOfOrder {
        member: u64,
        applied: u64,
        index: u64,
    },
    #[error("member {member} cannot apply entry {index}: {reason}")]
    UnappliableEntry {
        member: u64,
        index: u64,
        reason: String,
    },
    #[error("member {member} cannot install snapshot {index}: {reason}")]
    SnapshotNotInstallable {
        member: u64,
        index: u64,
        reason: String,
    },
    #[error(
        "member {member} has handed over every committed entry up to {index} but its raft knows {known}; the log says {log}"
    )]
    MembershipDiverged {
        member: u64,
        index: u64,
        known: String,
        log: String,
    },
    #[error("member {member} cannot replay its WAL: {reason}")]
    CorruptLog { member: u64, reason: String },
    #[error("member {member}: raft-rs returned an error: {error}")]
    RaftError { member: u64, error: String },
    #[error("raft-rs panicked: {message}")]
    RaftPanicked { message: String },
    #[error("the client history ({operations} operations) is not linearizable")]
    NotLinearizable { operations: usize },
    #[error("liveness: {0}")]
    NotLive(String),
}

/// A failed run: the seed to replay it and where it went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub seed: u64,
    /// Events processed before the violation was found.
    pub step: u64,
    pub time_us: u64,
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {} (simulated {:.1} ms): {}",
            self.seed,
            self.step,
            self.time_us as f64 / 1000.0,
            self.violation
        )
    }
}

impl std::error::Error for Failure {}

/// What a successful run did: enough to see that the faults really happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub members: usize,
    pub steps: u64,
    pub simulated_us: u64,
    /// Distinct (term, leader) pairs seen.
    pub elections: u64,
    pub crashes: u64,
    /// Members stopped for a while (SIGSTOP) and resumed.
    pub pauses: u64,
    pub partitions: u64,
    /// Membership changes committed: learners added, promoted, voters removed.
    pub membership_changes: u64,
    /// Leader transfers asked of a leader (`MoveLeader`).
    pub leader_transfers: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    /// Client operations issued, and how many the linearizability checker judged.
    pub operations_issued: u64,
    pub operations_checked: u64,
    /// Judged operations whose outcome the client never learned.
    pub operations_unknown: u64,
    pub last_applied_index: u64,
}

impl Report {
    /// Adds another run's counts to this one, for a summary over many seeds.
    pub fn accumulate(&mut self, other: &Report) {
        self.steps += other.steps;
        self.simulated_us += other.simulated_us;
        self.elections += other.elections;
        self.crashes += other.crashes;
        self.pauses += other.pauses;
        self.partitions += other.partitions;
        self.membership_changes += other.membership_changes;
        self.leader_transfers += other.leader_transfers;
        self.snapshots_taken += other.snapshots_taken;
        self.snapshots_installed += other.snapshots_installed;
        self.messages_sent += other.messages_sent;
        self.messages_dropped += other.messages_dropped;
        self.operations_issued += other.operations_issued;
        self.operations_checked += other.operations_checked;
        self.operations_unknown += other.operations_unknown;
        self.last_applied_index = self.last_applied_index.max(other.last_applied_index);
    }
}
