//! Deterministic simulation of a multi-member Cairn cluster: raft members, their apply
//! loops and their disks under a simulated network, with crashes, restarts, pauses,
//! partitions, message loss, duplication and reordering, and membership changes, all drawn
//! from one seed. A run checks raft's safety as it goes (one leader per term, committed
//! entries never change, equal state at equal applied index, each member's membership is
//! the one the log says), then that the cluster settles once faults stop, then that the
//! clients' history is linearizable. A failing seed replays exactly.
//!
//! It runs cairn-raft's own Ready loop core and log store (see below), and must never
//! depend on cairn-server, cairn-api or the binary: it is the first place a cluster bug is
//! found, so it has to build and run without them. It keeps no clock, starts no thread and
//! never lets hash-map order decide anything (raft-rs's own maps use a fixed hasher; its
//! one random draw, the election timeout, is replaced from the seed).
//!
//! Shared with Cairn, as code: `cairn-raft`'s `RaftCore`, the Ready loop's rules that
//! node.rs runs on its thread (how requests reach raft-rs with node.rs's `Config`, read
//! batching, the order in which a `Ready` is written, synced, sent and handed over,
//! membership changes recorded and synced before the apply loop sees them), and its
//! `RaftLogStore` (replaying, checking, trimming, snapshotting and installing the log), here
//! over a simulated record log instead of cairn-wal's files; raft-rs 0.7 underneath; the
//! entry format (`cairnpb::InternalRequest` carrying etcd requests); the linearizability
//! checker (`cairn-linearizability`). Restated, because the real ones are bound to redb and
//! the server's threads: `Server::start`'s install of a received backend the WAL already
//! points at, and the apply loop's skip of entries the backend holds and its once-a-second
//! persist. Those must follow when Cairn's change.
//!
//! Modelled here: the WAL (records, sync that may stall, crash keeping a prefix of what was
//! not synced), the backend (a key-value map, durable at persists and installs; no
//! revisions, leases or watches), the peer transport (delays, loss, duplication except of
//! proposals, reordering, partitions, unreachable and snapshot reports), the snapshot stream
//! (the leader's backend exported once it reaches the snapshot's index, written on the
//! receiver before raft sees the message), processes (kill -9 and restart, SIGSTOP and
//! resume), and an operator changing membership (a new member joins as a learner, is
//! promoted once it holds nearly all of the log; voters are removed and stop) and moving
//! the leader (`MoveLeader`). Not modelled: leases, the members table, request size limits.

mod apply;
mod disk;
mod history;
mod invariants;
mod member;
mod network;
mod outcome;
mod rng;
mod state_machine;
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use outcome::{Failure, Report, Violation};

/// A bug planted in the simulated cluster, to prove the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// A crash also loses the last few records the disk claimed to have synced.
    DiskForgetsSyncedWrites,
    /// Members send votes and append acknowledgements before syncing what they vouch for.
    AcknowledgeBeforeSync,
    /// Followers answer reads from their own state machine instead of by ReadIndex.
    StaleFollowerReads,
    /// Member 1 applies every put with a different value.
    StateMachineDivergence,
    /// The history handed to the checker gains a read of a value nobody wrote.
    ForgedReadInHistory,
}

impl InjectedBug {
    pub const ALL: [InjectedBug; 5] = [
        InjectedBug::DiskForgetsSyncedWrites,
        InjectedBug::AcknowledgeBeforeSync,
        InjectedBug::StaleFollowerReads,
        InjectedBug::StateMachineDivergence,
        InjectedBug::ForgedReadInHistory,
    ];

    /// The name `cairn-sim --inject` takes.
    pub fn name(self) -> &'static str {
        match self {
            InjectedBug::DiskForgetsSyncedWrites => "forget-synced",
            InjectedBug::AcknowledgeBeforeSync => "ack-before-sync",
            InjectedBug::StaleFollowerReads => "stale-reads",
            InjectedBug::StateMachineDivergence => "diverge",
            InjectedBug::ForgedReadInHistory => "forged-history",
        }
    }

    pub fn from_name(name: &str) -> Option<InjectedBug> {
        InjectedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// Bugs the simulation found in Cairn, fixed there since (tests/known_bugs.rs). Each switch
/// brings the old behaviour back, to show the checks still catch it; off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KnownBugs {
    /// Leave the membership a committed change produces unsynced in the WAL when node.rs
    /// records it after the Ready's sync, so the backend can be persisted past the change
    /// first. Off: the record is synced at once, as the proposed fix does.
    pub unsynced_membership: bool,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Members in the cluster; `None` lets the seed choose 3 or 5.
    pub members: Option<usize>,
    /// Print what happens to stderr.
    pub trace: bool,
    /// Client operations per run at most: the history check's cost grows with them.
    pub operations_max: u64,
    /// While faults last, crash members inside every install of a received backend, just
    /// after the file moved into place. Off by default, so that seeds keep the runs they
    /// were found with; tests/install_crashes.rs turns it on.
    pub crash_inside_installs: bool,
    /// Bugs of Cairn's to reproduce; none by default, so that runs look for new ones.
    pub known_bugs: KnownBugs,
    pub injected_bug: Option<InjectedBug>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            members: None,
            trace: false,
            operations_max: 150,
            crash_inside_installs: false,
            known_bugs: KnownBugs::default(),
            injected_bug: None,
        }
    }
}

/// Runs the simulation for `seed`.
pub fn run(seed: u64, options: &Options) -> Result<Report, Failure> {
    let mut world = world::World::new(seed, options);
    let outcome = catch_unwind(AssertUnwindSafe(|| world.run()));
    let violation = match outcome {
        Ok(Ok(report)) => return Ok(report),
        Ok(Err(violation)) => violation,
        Err(panic) => Violation::RaftPanicked {
            message: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned()),
        },
    };
    Err(Failure {
        seed,
        step: world.step(),
        time_us: world.now(),
        violation,
    })
}

/// The command that replays `seed` with `options`, verbosely.
pub fn reproduce_command(seed: u64, options: &Options) -> String {
    let mut command = format!("cargo run --release -p cairn-sim -- --seed {seed}");
    if let Some(members) = options.members {
        command.push_str(&format!(" --nodes {members}"));
    }
    if options.operations_max != Options::default().operations_max {
        command.push_str(&format!(" --ops {}", options.operations_max));
    }
    if options.crash_inside_installs {
        command.push_str(" --install-crashes");
    }
    if options.known_bugs.unsynced_membership {
        command.push_str(" --known-bug unsynced-membership");
    }
    if let Some(bug) = options.injected_bug {
        command.push_str(&format!(" --inject {}", bug.name()));
    }
    command.push_str(" --trace");
    command
}
