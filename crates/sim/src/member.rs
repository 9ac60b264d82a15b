//! One cluster member: `cairn-raft`'s `RaftCore` and `RaftLogStore`, the very code Cairn's
//! Ready loop runs (crates/raft/src/core.rs, log_store.rs), over the simulated disk, with its
//! apply loop beside it.
//!
//! A turn does what node.rs's thread does: hand every request that arrived since the last
//! turn to the core (ticks, peer messages, proposals, reads, reports from the apply loop and
//! the transport), let it issue waiting reads, then start one `Ready`. The sync between
//! `start_ready` and `finish_ready` takes simulated time, during which the member may crash,
//! and the core is not touched (node.rs's thread is blocked in fdatasync meanwhile).

use std::collections::VecDeque;
use std::time::Duration;

use cairn_linearizability::KvOutput;
use cairn_raft::{
    CoreRequest, CoreSettings, MembershipChange, RaftCore, RaftError, RaftLogStore, ReadyEffects,
};
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, Ready};
use raft::{SnapshotStatus, StateRole};

use crate::apply::{ApplyFaults, ApplyItem, ApplyLoop};
use crate::disk::{Backend, Disk, SimWal};
use crate::invariants::Invariants;
use crate::outcome::{Report, Violation};
use crate::rng::SimRng;

/// Ticks per election timeout: Cairn's default `--election-timeout` over
/// `--heartbeat-interval` (1000 ms / 100 ms).
pub const ELECTION_TICKS: usize = 10;

/// One raft tick: Cairn's default `--heartbeat-interval`.
pub const TICK_US: u64 = 100_000;

/// A client operation waiting for an answer: which client, which of its operations, and
/// which attempt at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRef {
    pub client: usize,
    pub op: u64,
    pub attempt: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Output(KvOutput),
    /// The request certainly had no effect (no leader, member down, read not served).
    Failed(&'static str),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Output(KvOutput::Put) => write!(f, "ok"),
            Reply::Output(KvOutput::Get(Some(value))) => {
                write!(f, "value {}", String::from_utf8_lossy(value))
            }
            Reply::Output(KvOutput::Get(None)) => write!(f, "absent"),
            Reply::Output(KvOutput::Delete { deleted }) => write!(f, "deleted {deleted}"),
            Reply::Output(KvOutput::Txn { succeeded }) => write!(f, "succeeded {succeeded}"),
            Reply::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// What reaches a member's Ready loop, in arrival order (node.rs's `NodeRequest`).
#[derive(Debug)]
pub enum Input {
    Tick,
    Message(Message),
    Propose {
        id: u64,
        data: Vec<u8>,
        client: ClientRef,
    },
    Read {
        key: Vec<u8>,
        client: ClientRef,
    },
    /// A membership change (`propose_membership`), proposed through the log.
    ProposeMembership {
        change: ConfChangeType,
        member: u64,
    },
    SnapshotStatus {
        to: u64,
        status: SnapshotStatus,
    },
    Unreachable {
        to: u64,
    },
    /// An operator's `MoveLeader`: hand leadership to `to`.
    TransferLeader {
        to: u64,
    },
    /// From the apply loop: how far it got, so the in-memory log can be trimmed.
    Applied {
        index: u64,
    },
    /// From the apply loop: the backend holds everything up to `index` durably.
    Persisted {
        index: u64,
    },
}

/// A member's own future events, scheduled by the world for this incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    Turn,
    SyncDone,
    Apply,
}

/// Effects of a member's work that the world carries out.
#[derive(Default)]
pub struct Outbox {
    pub messages: Vec<Message>,
    pub replies: Vec<(ClientRef, Reply)>,
    pub wakeups: Vec<(u64, Wakeup)>,
    /// Client requests applied (id, log index), for telling unknown outcomes from no effect.
    pub applied_requests: Vec<(u64, u64)>,
    /// Committed membership changes handed over: (log index, change, member).
    pub membership_changes: Vec<(u64, ConfChangeType, u64)>,
}

/// What a member's work can touch outside itself.
pub struct Io<'a> {
    pub now: u64,
    pub rng: &'a mut SimRng,
    pub invariants: &'a mut Invariants,
    pub report: &'a mut Report,
    pub out: &'a mut Outbox,
    pub trace: bool,
}

impl Io<'_> {
    pub fn trace(&self, member: u64, what: std::fmt::Arguments) {
        if self.trace {
            eprintln!(
                "{:>12.3} ms  member {member}: {what}",
                self.now as f64 / 1000.0
            );
        }
    }
}

/// Behaviour that differs from Cairn's on purpose, so tests can prove the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberFaults {
    /// Send votes and acknowledgements before the sync that makes them true: the disk is
    /// asked to sync, says it did, and does so only after the simulated sync time.
    pub acknowledges_before_sync: bool,
    /// Followers answer reads from their own state, skipping ReadIndex.
    pub serves_stale_reads: bool,
    pub apply: ApplyFaults,
}

/// Per-run settings of every member, chosen from the seed.
#[derive(Clone, Debug)]
pub struct MemberSettings {
    pub voters: Vec<u64>,
    /// Applied entries between log snapshots (`--snapshot-count`).
    pub snapshot_entries: u64,
    /// Applied entries between reports that let the Ready loop trim its in-memory log.
    pub applied_report_entries: u64,
    pub sync_min_us: u64,
    pub sync_max_us: u64,
    /// Syncs that stall (a busy or failing disk), and for how long at most.
    pub sync_stall_per_mille: u64,
    pub sync_stall_max_us: u64,
    pub apply_max_us: u64,
    /// How long a read may wait for a leader before it fails (`read_index_timeout`).
    pub read_timeout_us: u64,
    /// Sync the WAL as soon as a committed membership change is recorded, so the apply
    /// loop can never persist the backend past a change the WAL could still lose, as the
    /// core does. Off: `KnownBugs::unsynced_membership`.
    pub syncs_membership_at_once: bool,
    pub faults: MemberFaults,
}

/// A linearizable read waiting for its read index.
pub struct SimRead {
    key: Vec<u8>,
    client: ClientRef,
}

pub struct Member {
    id: u64,
    core: RaftCore<SimRead>,
    log: RaftLogStore<SimWal>,
    /// The backend files; the WAL's records are in `log` while the member runs.
    disk: Disk,
    settings: MemberSettings,
    inbox: VecDeque<Input>,
    /// The Ready whose sync is under way; the core must not be touched until it finishes.
    syncing: Option<Ready>,
    /// A sync the disk claimed but has yet to do (`acknowledges_before_sync`).
    deferred_sync: bool,
    turn_scheduled: bool,
    apply_scheduled: bool,
    /// Crash at the next sync with something to make durable.
    crash_at_next_sync: bool,
    /// Crash inside every install of a received backend.
    crash_inside_backend_install: bool,
    /// (term, role) after the last raft-rs call, to see when raft-rs drew a new timeout.
    term_and_role: (u64, StateRole),
    apply: ApplyLoop,
}

/// A moment inside a member's work where it may be made to crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The next sync with something to make durable: the leader's messages went out, the
    /// entries and hard state are written but not synced.
    Sync,
    /// An install of a received backend: renamed into place, before `set_meta`.
    BackendInstall,
}

/// How a member's piece of work ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnEnd {
    Done,
    Crashed(CrashPoint),
}

fn raft_error<E: std::fmt::Display>(member: u64) -> impl Fn(E) -> Violation {
    move |e| Violation::RaftError {
        member,
        error: e.to_string(),
    }
}

/// Where the core's work goes in the simulation: the world's network, the apply loop, the
/// invariants. A violation found on the way is kept and returned once the core's call ends.
struct SimEffects<'m, 'w> {
    member: u64,
    apply: &'m mut ApplyLoop,
    apply_scheduled: &'m mut bool,
    apply_max_us: u64,
    io: &'m mut Io<'w>,
    violation: Option<Violation>,
}

impl SimEffects<'_, '_> {
    fn check(&mut self, result: Result<(), Violation>) {
        if let Err(violation) = result {
            self.violation.get_or_insert(violation);
        }
    }

    fn schedule_apply(&mut self) {
        schedule_apply(self.apply_scheduled, self.apply_max_us, self.io);
    }

    /// The outcome of the core's call: the first violation seen, else the call's own error.
    fn outcome<T>(self, result: Result<T, RaftError>) -> Result<T, Violation> {
        if let Some(violation) = self.violation {
            return Err(violation);
        }
        result.map_err(raft_error(self.member))
    }
}

fn schedule_apply(apply_scheduled: &mut bool, apply_max_us: u64, io: &mut Io) {
    if !*apply_scheduled {
        *apply_scheduled = true;
        let delay = io.rng.between(0, apply_max_us);
        io.out.wakeups.push((io.now + delay, Wakeup::Apply));
    }
}

impl ReadyEffects<SimRead> for SimEffects<'_, '_> {
    fn send(&mut self, messages: Vec<Message>) {
        self.io.out.messages.extend(messages);
    }

    fn snapshot_installed(&mut self, index: u64, term: u64) {
        let result = self
            .io
            .invariants
            .snapshot_committed(self.member, index, term);
        self.check(result);
        self.apply.push(ApplyItem::Snapshot { index });
        self.schedule_apply();
        self.io.report.snapshots_installed += 1;
        self.io.trace(
            self.member,
            format_args!("installing the leader's snapshot at {index} (term {term})"),
        );
    }

    fn committed(&mut self, entries: Vec<Entry>) {
        for entry in &entries {
            let result = self.io.invariants.committed(self.member, entry);
            self.check(result);
            if entry.get_entry_type() != EntryType::EntryConfChange {
                continue;
            }
            // The core decoded it already, or it would not have handed it over.
            let cc: ConfChange = protobuf::Message::parse_from_bytes(&entry.data)
                .expect("a membership change the core handed over decodes");
            self.io
                .out
                .membership_changes
                .push((entry.index, cc.get_change_type(), cc.node_id));
        }
        self.apply.push(ApplyItem::Entries(entries));
        self.schedule_apply();
    }

    fn dropped(&mut self, id: u64, error: RaftError) {
        match error {
            RaftError::NoLeader => {
                // A membership proposal has no client waiting (id 0).
                if let Some(client) = self.apply.forget(id) {
                    self.io
                        .out
                        .replies
                        .push((client, Reply::Failed("no leader")));
                }
            }
            other => self.check(Err(raft_error(self.member)(other))),
        }
    }

    fn read_index(&mut self, read: SimRead, result: Result<u64, RaftError>) {
        match result {
            Ok(index) => self.apply.read_at(index, read.key, read.client, self.io),
            Err(_) => self
                .io
                .out
                .replies
                .push((read.client, Reply::Failed("no leader"))),
        }
    }
}

impl Member {
    /// Starts a member as `Server::start` does: open the log against the backend; if the WAL
    /// starts from a snapshot whose backend was never installed, install the received one
    /// and open again; then start raft as `RaftNode::start` does.
    pub fn start(
        id: u64,
        mut disk: Disk,
        settings: MemberSettings,
        io: &mut Io,
    ) -> Result<Member, Violation> {
        let corrupt = |e: RaftError| Violation::CorruptLog {
            member: id,
            reason: e.to_string(),
        };
        disk.wal.skips_membership_sync = !settings.syncs_membership_at_once;
        let replay = |disk: &Disk| {
            let records = disk.wal.durable_records();
            RaftLogStore::replay(
                disk.wal.clone(),
                records
                    .iter()
                    .map(|(kind, payload, segment)| (*kind, payload.as_slice(), *segment)),
                &settings.voters,
                disk.backend.applied,
                disk.backend.installed_snapshot,
            )
        };
        let log = match replay(&disk) {
            Ok(log) => log,
            Err(RaftError::SnapshotNotInstalled { index, .. }) => {
                let Some(incoming) = disk.incoming.clone() else {
                    return Err(Violation::SnapshotNotInstallable {
                        member: id,
                        index,
                        reason: "restarted without the received backend".into(),
                    });
                };
                disk.backend = Backend {
                    installed_snapshot: index,
                    ..incoming
                };
                replay(&disk).map_err(corrupt)?
            }
            Err(e) => return Err(corrupt(e)),
        };
        disk.wal = SimWal::default();
        let applied = disk.backend.applied;
        let core = RaftCore::start(
            id,
            ELECTION_TICKS,
            applied,
            log.memory(),
            CoreSettings {
                tick_interval: Duration::from_micros(TICK_US),
                read_index_timeout: Duration::from_micros(settings.read_timeout_us),
                snapshot_entries: settings.snapshot_entries,
            },
        )
        .map_err(raft_error(id))?;
        // The snapshot at index 1 that starts every new log stands for the empty state.
        let mut backend = disk.backend.clone();
        backend.applied = backend.applied.max(1);
        io.invariants
            .applied(id, backend.applied, backend.state.digest())?;
        let apply = ApplyLoop::new(
            id,
            backend,
            io.now,
            settings.applied_report_entries,
            settings.faults.apply,
        );
        let mut member = Member {
            id,
            term_and_role: (core.raw().raft.term, core.raw().raft.state),
            core,
            log,
            disk,
            settings,
            inbox: VecDeque::new(),
            syncing: None,
            deferred_sync: false,
            turn_scheduled: false,
            apply_scheduled: false,
            crash_at_next_sync: false,
            crash_inside_backend_install: false,
            apply,
        };
        member.draw_election_timeout(io);
        let raft = &member.core.raw().raft;
        io.trace(
            id,
            format_args!(
                "started: term {}, commit {}, applied {applied}, log {}..={}",
                raft.term,
                raft.raft_log.committed,
                raft.raft_log.first_index(),
                raft.raft_log.last_index()
            ),
        );
        Ok(member)
    }

    /// kill -9: everything in memory is gone; the disk keeps what it keeps.
    pub fn crash(self, rng: &mut SimRng) -> Disk {
        let mut disk = self.disk;
        disk.wal = self.log.into_record_log();
        disk.wal.crash(rng);
        disk
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_leader(&self) -> bool {
        self.core.raw().raft.state == StateRole::Leader
    }

    /// Whether raft counts this member as a learner; the server refuses it writes and
    /// linearizable reads.
    pub fn is_learner(&self) -> bool {
        self.core
            .raw()
            .raft
            .prs()
            .conf()
            .learners()
            .contains(&self.id)
    }

    /// The voters and learners this member's raft knows of.
    pub fn membership(&self) -> (Vec<u64>, Vec<u64>) {
        let conf = self.core.raw().raft.prs().conf().to_conf_state();
        (conf.voters, conf.learners)
    }

    /// On a leader: whether `member` holds at least `percent` of the leader's log, the
    /// server's condition for promoting a learner (`LearnerInSync`).
    pub fn holds_log_share(&self, member: u64, percent: u64) -> bool {
        self.core.learner_in_sync(member, percent) == Some(true)
    }

    pub fn applied(&self) -> u64 {
        self.apply.applied()
    }

    pub fn committed(&self) -> u64 {
        self.core.raw().raft.raft_log.committed
    }

    /// The last entry handed over to the apply loop (raft's applied index).
    pub fn handed_over(&self) -> u64 {
        self.core.raw().raft.raft_log.applied
    }

    pub fn digest(&self) -> u64 {
        self.apply.state().digest()
    }

    /// A consistent copy of the backend, for a snapshot to a lagging member.
    pub fn export_backend(&self) -> Backend {
        self.apply.export()
    }

    /// The transport wrote a received snapshot's backend, synced, before stepping the message.
    pub fn receive_backend(&mut self, backend: Backend) {
        self.disk.incoming = Some(backend);
    }

    pub fn arm_crash_at_next_sync(&mut self, armed: bool) {
        self.crash_at_next_sync = armed;
    }

    pub fn arm_crash_inside_backend_install(&mut self, armed: bool) {
        self.crash_inside_backend_install = armed;
    }

    /// Queues `input` for the next turn of the Ready loop.
    pub fn deliver(&mut self, input: Input, io: &mut Io) {
        self.inbox.push_back(input);
        if !self.turn_scheduled && self.syncing.is_none() {
            self.turn_scheduled = true;
            io.out.wakeups.push((io.now, Wakeup::Turn));
        }
    }

    /// raft-rs draws each election timeout from a thread-local RNG, which would make runs
    /// irreproducible. Whenever it may have drawn one (every change of term or role resets
    /// it), replace it with one from the run's seed, in raft-rs's range for Cairn's config:
    /// [election_tick, 2 * election_tick).
    fn draw_election_timeout(&mut self, io: &mut Io) {
        let ticks = io
            .rng
            .between(ELECTION_TICKS as u64, 2 * ELECTION_TICKS as u64 - 1);
        self.core
            .raw_mut()
            .raft
            .set_randomized_election_timeout(ticks as usize);
    }

    /// After every raft-rs call: reseed the election timeout if raft-rs reset it, and
    /// check that this member is the only leader of its term.
    fn after_raft_call(&mut self, io: &mut Io) -> Result<(), Violation> {
        let raft = &self.core.raw().raft;
        let now = (raft.term, raft.state);
        if now != self.term_and_role {
            self.term_and_role = now;
            self.draw_election_timeout(io);
            io.trace(self.id, format_args!("term {} as {:?}", now.0, now.1));
        }
        if self.is_leader() && io.invariants.leader(now.0, self.id)? {
            io.report.elections += 1;
        }
        Ok(())
    }

    /// Splits the member into its core, its log, and the effects the core's work has.
    fn parts<'m, 'w>(
        &'m mut self,
        io: &'m mut Io<'w>,
    ) -> (
        &'m mut RaftCore<SimRead>,
        &'m mut RaftLogStore<SimWal>,
        SimEffects<'m, 'w>,
    ) {
        (
            &mut self.core,
            &mut self.log,
            SimEffects {
                member: self.id,
                apply: &mut self.apply,
                apply_scheduled: &mut self.apply_scheduled,
                apply_max_us: self.settings.apply_max_us,
                io,
                violation: None,
            },
        )
    }

    /// One turn of node.rs's loop: handle what arrived, hand reads to raft, start a Ready.
    pub fn turn(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        self.turn_scheduled = false;
        if self.syncing.is_some() {
            return Ok(TurnEnd::Done);
        }
        while let Some(input) = self.inbox.pop_front() {
            self.handle(input, io)?;
            self.after_raft_call(io)?;
        }
        let now = Duration::from_micros(io.now);
        let (core, _, mut effects) = self.parts(io);
        core.issue_reads(now, &mut effects);
        effects.outcome(Ok(()))?;
        self.after_raft_call(io)?;
        self.start_ready(io)
    }

    fn handle(&mut self, input: Input, io: &mut Io) -> Result<(), Violation> {
        let request = match input {
            Input::Tick => {
                self.core.tick();
                return Ok(());
            }
            Input::Message(message) => CoreRequest::Step(Box::new(message)),
            Input::Propose { client, .. } | Input::Read { client, .. } if self.is_learner() => {
                io.out.replies.push((client, Reply::Failed("learner")));
                return Ok(());
            }
            Input::Propose { id, data, client } => {
                self.apply.wait_for(id, client);
                CoreRequest::Propose { id, data }
            }
            Input::Read { key, client } => {
                if self.settings.faults.serves_stale_reads
                    && self.core.raw().raft.state == StateRole::Follower
                {
                    let value = self.apply.state().get(&key);
                    io.out
                        .replies
                        .push((client, Reply::Output(KvOutput::Get(value))));
                    return Ok(());
                }
                CoreRequest::ReadIndex(SimRead { key, client })
            }
            // No client waits on a membership change here: id 0.
            Input::ProposeMembership { change, member } => CoreRequest::ProposeMembership {
                id: 0,
                change: match change {
                    ConfChangeType::AddNode => MembershipChange::AddVoter,
                    ConfChangeType::AddLearnerNode => MembershipChange::AddLearner,
                    ConfChangeType::RemoveNode => MembershipChange::Remove,
                },
                member,
                context: Vec::new(),
            },
            Input::SnapshotStatus { to, status } => CoreRequest::SnapshotSent {
                to,
                delivered: status == SnapshotStatus::Finish,
            },
            Input::Unreachable { to } => CoreRequest::Unreachable(to),
            Input::TransferLeader { to } => CoreRequest::TransferLeader(to),
            Input::Applied { index } => CoreRequest::Applied(index),
            Input::Persisted { index } => CoreRequest::Persisted(index),
        };
        let now = Duration::from_micros(io.now);
        let snapshot_before = self.log.snapshot_index();
        let (core, log, mut effects) = self.parts(io);
        let result = core.handle(request, now, log, &mut effects);
        effects.outcome(result)?;
        if self.log.snapshot_index() > snapshot_before {
            io.report.snapshots_taken += 1;
            io.trace(
                self.id,
                format_args!("log snapshot at {}", self.log.snapshot_index()),
            );
        }
        Ok(())
    }

    /// The core's `start_ready`, then the sync, which takes simulated time.
    fn start_ready(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        let (core, log, mut effects) = self.parts(io);
        let result = core.start_ready(log, &mut effects);
        let Some(ready) = effects.outcome(result)? else {
            return Ok(TurnEnd::Done);
        };
        if self.settings.faults.acknowledges_before_sync {
            // The whole Ready goes through while the disk only pretends to sync, so the
            // acknowledgements are out when the crash comes.
            self.log.record_log_mut().defers_syncs = true;
            let finished = self.finish(ready, io);
            self.log.record_log_mut().defers_syncs = false;
            finished?;
            if self.crash_at_next_sync && self.log.record_log().has_unsynced() {
                return Ok(TurnEnd::Crashed(CrashPoint::Sync));
            }
            if self.log.record_log().has_unsynced() && !self.deferred_sync {
                self.deferred_sync = true;
                let took = self.sync_time(io);
                io.out.wakeups.push((io.now + took, Wakeup::SyncDone));
            }
            return Ok(TurnEnd::Done);
        }
        if self.crash_at_next_sync && self.log.record_log().has_unsynced() {
            return Ok(TurnEnd::Crashed(CrashPoint::Sync));
        }
        self.syncing = Some(ready);
        if self.log.record_log().has_unsynced() {
            let took = self.sync_time(io);
            io.out.wakeups.push((io.now + took, Wakeup::SyncDone));
        } else {
            self.finish_ready(io)?;
        }
        Ok(TurnEnd::Done)
    }

    fn sync_time(&self, io: &mut Io) -> u64 {
        let mut took = io
            .rng
            .between(self.settings.sync_min_us, self.settings.sync_max_us);
        if io.rng.chance(self.settings.sync_stall_per_mille) {
            took += io.rng.between(0, self.settings.sync_stall_max_us);
        }
        took
    }

    /// The sync finished: the core's `finish_ready`.
    pub fn finish_ready(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        if std::mem::take(&mut self.deferred_sync) {
            self.log.record_log_mut().sync_now();
        }
        let Some(ready) = self.syncing.take() else {
            return Ok(TurnEnd::Done);
        };
        self.finish(ready, io)?;
        if !self.inbox.is_empty() && !self.turn_scheduled {
            self.turn_scheduled = true;
            io.out.wakeups.push((io.now, Wakeup::Turn));
        }
        Ok(TurnEnd::Done)
    }

    fn finish(&mut self, ready: Ready, io: &mut Io) -> Result<(), Violation> {
        let (core, log, mut effects) = self.parts(io);
        let result = core.finish_ready(ready, log, &mut effects);
        effects.outcome(result)?;
        self.after_raft_call(io)
    }

    /// The apply loop's turn: apply what was handed over, and report progress.
    pub fn run_apply(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        self.apply_scheduled = false;
        let crash = self.crash_inside_backend_install;
        let Some(reports) = self.apply.run(&mut self.disk, crash, io)? else {
            return Ok(TurnEnd::Crashed(CrashPoint::BackendInstall));
        };
        for report in reports {
            self.deliver(report, io);
        }
        if self.apply.has_work() {
            schedule_apply(&mut self.apply_scheduled, self.settings.apply_max_us, io);
        }
        Ok(TurnEnd::Done)
    }

    /// The apply loop's idle wake-up: persist the backend once a second.
    pub fn apply_idle(&mut self, io: &mut Io) {
        if let Some(report) = self.apply.persist_if_due(&mut self.disk, io.now) {
            self.deliver(report, io);
        }
    }
}
