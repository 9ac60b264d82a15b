//! One cluster member: a raft-rs `RawNode<MemStorage>` driven the way `cairn-raft`'s Ready
//! loop (crates/raft/src/node.rs) drives it, its log kept as `RaftLogStore` keeps it
//! (crates/raft/src/log_store.rs), over a simulated disk, with its apply loop beside it.
//!
//! A turn of the loop takes every request that arrived since the last turn (ticks, peer
//! messages, proposals, reads, reports from the apply loop and the transport), hands waiting
//! reads to raft, then handles one `Ready` in node.rs's order: send messages, install a
//! snapshot, answer read states, hand committed entries over, append entries and hard state,
//! sync, send the persisted messages, advance, then the light ready. The sync takes simulated
//! time, during which the member may crash, and raft-rs is not touched (node.rs's thread is
//! blocked in fdatasync meanwhile).

use std::collections::{BTreeMap, VecDeque};

use cairn_linearizability::KvOutput;
use raft::prelude::{
    ConfChange, ConfChangeType, Entry, EntryType, Message, Ready, Snapshot, SnapshotMetadata,
};
use raft::storage::MemStorage;
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};

use crate::apply::{ApplyFaults, ApplyItem, ApplyLoop};
use crate::disk::{Backend, Disk, OpenError, WalRecord};
use crate::invariants::Invariants;
use crate::outcome::{Report, Violation};
use crate::rng::SimRng;

/// Ticks per election timeout: Cairn's default `--election-timeout` over
/// `--heartbeat-interval` (1000 ms / 100 ms).
pub const ELECTION_TICKS: usize = 10;

/// One raft tick: Cairn's default `--heartbeat-interval`.
pub const TICK_US: u64 = 100_000;

/// Entries kept in memory behind the applied index at most (`RETAINED_APPLIED_ENTRIES`).
const RETAINED_APPLIED_ENTRIES: u64 = 10_000;

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
    /// Send votes and acknowledgements before the sync that makes them true.
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
    /// loop can never persist the backend past a change the WAL could still lose. node.rs
    /// does not yet (`KnownBugs::unsynced_membership`).
    pub syncs_membership_at_once: bool,
    pub faults: MemberFaults,
}

struct WaitingRead {
    key: Vec<u8>,
    client: ClientRef,
    since: u64,
}

/// Reads handed to raft under one context number, asked again if raft loses them.
struct ReadsInFlight {
    reads: Vec<WaitingRead>,
    issued: u64,
}

pub struct Member {
    id: u64,
    raw: RawNode<MemStorage>,
    /// The storage raft reads; clones share it (`RaftLogStore::memory`).
    memory: MemStorage,
    disk: Disk,
    settings: MemberSettings,
    inbox: VecDeque<Input>,
    /// The Ready whose sync is under way; raft-rs must not be touched until it finishes.
    syncing: Option<Ready>,
    turn_scheduled: bool,
    apply_scheduled: bool,
    /// Crash at the next sync with something to make durable.
    crash_at_next_sync: bool,
    /// Crash inside every install of a received backend.
    crash_inside_backend_install: bool,
    /// (term, role) after the last raft-rs call, to see when raft-rs drew a new timeout.
    term_and_role: (u64, StateRole),
    /// Index of the last snapshot in the WAL (`RaftLogStore::snapshot_index`).
    snapshot_index: u64,
    waiting_reads: VecDeque<WaitingRead>,
    reads_in_flight: BTreeMap<u64, ReadsInFlight>,
    read_seq: u64,
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

fn raft_error(member: u64) -> impl Fn(raft::Error) -> Violation {
    move |e| Violation::RaftError {
        member,
        error: e.to_string(),
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
        let corrupt = |reason: String| Violation::CorruptLog { member: id, reason };
        let log = match disk.open(
            &settings.voters,
            disk.backend.applied,
            disk.backend.installed_snapshot,
        ) {
            Ok(log) => log,
            Err(OpenError::SnapshotNotInstalled { index }) => {
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
                disk.open(
                    &settings.voters,
                    disk.backend.applied,
                    disk.backend.installed_snapshot,
                )
                .map_err(|e| corrupt(format!("{e:?}")))?
            }
            Err(OpenError::Corrupt(reason)) => return Err(corrupt(reason)),
        };
        let memory = MemStorage::new();
        {
            let mut core = memory.wl();
            if let Some(meta) = &log.snapshot {
                let mut snapshot = Snapshot::default();
                snapshot.set_metadata(meta.clone());
                core.apply_snapshot(snapshot).map_err(raft_error(id))?;
            }
            core.set_conf_state(log.conf_state.clone());
            core.append(&log.entries).map_err(raft_error(id))?;
            core.set_hardstate(log.hard_state.clone());
        }
        let applied = disk.backend.applied;
        compact_memory(&memory, applied, RETAINED_APPLIED_ENTRIES).map_err(raft_error(id))?;
        let config = Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: 1,
            applied: applied.min(log.last_index()),
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        };
        config.validate().map_err(raft_error(id))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, memory.clone(), &logger).map_err(raft_error(id))?;
        // The snapshot at index 1 that starts every new log stands for the empty state.
        let mut backend = disk.backend.clone();
        backend.applied = backend.applied.max(1);
        io.invariants
            .applied(id, backend.applied, backend.state.digest())?;
        let snapshot_index = log.snapshot.as_ref().map_or(0, |s| s.index);
        let apply = ApplyLoop::new(
            id,
            backend,
            io.now,
            settings.applied_report_entries,
            settings.faults.apply,
        );
        let mut member = Member {
            id,
            term_and_role: (raw.raft.term, raw.raft.state),
            raw,
            memory,
            disk,
            settings,
            inbox: VecDeque::new(),
            syncing: None,
            turn_scheduled: false,
            apply_scheduled: false,
            crash_at_next_sync: false,
            crash_inside_backend_install: false,
            snapshot_index,
            waiting_reads: VecDeque::new(),
            reads_in_flight: BTreeMap::new(),
            read_seq: 0,
            apply,
        };
        member.draw_election_timeout(io);
        io.trace(
            id,
            format_args!(
                "started: term {}, commit {}, applied {applied}, log {}..={}",
                member.raw.raft.term,
                member.raw.raft.raft_log.committed,
                member.raw.raft.raft_log.first_index(),
                member.raw.raft.raft_log.last_index()
            ),
        );
        Ok(member)
    }

    /// kill -9: everything in memory is gone; the disk keeps what it keeps.
    pub fn crash(self, rng: &mut SimRng) -> Disk {
        let mut disk = self.disk;
        disk.crash(rng);
        disk
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether raft counts this member as a learner; the server refuses it writes and
    /// linearizable reads.
    pub fn is_learner(&self) -> bool {
        self.raw.raft.prs().conf().learners().contains(&self.id)
    }

    /// The voters and learners this member's raft knows of.
    pub fn membership(&self) -> (Vec<u64>, Vec<u64>) {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        (conf.voters, conf.learners)
    }

    /// On a leader: whether `member` holds at least `percent` of the leader's log, the
    /// server's condition for promoting a learner (`LearnerInSync`).
    pub fn holds_log_share(&self, member: u64, percent: u64) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && raft.prs().get(member).is_some_and(|progress| {
                progress.matched * 100 >= raft.raft_log.last_index() * percent
            })
    }

    pub fn applied(&self) -> u64 {
        self.apply.applied()
    }

    pub fn committed(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The last entry handed over to the apply loop (raft's applied index).
    pub fn handed_over(&self) -> u64 {
        self.raw.raft.raft_log.applied
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
        self.raw
            .raft
            .set_randomized_election_timeout(ticks as usize);
    }

    /// After every raft-rs call: reseed the election timeout if raft-rs reset it, and
    /// check that this member is the only leader of its term.
    fn after_raft_call(&mut self, io: &mut Io) -> Result<(), Violation> {
        let now = (self.raw.raft.term, self.raw.raft.state);
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

    /// One turn of node.rs's loop: handle what arrived, hand reads to raft, handle a Ready.
    pub fn turn(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        self.turn_scheduled = false;
        if self.syncing.is_some() {
            return Ok(TurnEnd::Done);
        }
        while let Some(input) = self.inbox.pop_front() {
            self.handle(input, io)?;
            self.after_raft_call(io)?;
        }
        self.issue_reads(io);
        self.after_raft_call(io)?;
        self.start_ready(io)
    }

    fn handle(&mut self, input: Input, io: &mut Io) -> Result<(), Violation> {
        match input {
            Input::Tick => {
                self.raw.tick();
            }
            // node.rs logs a refused message and goes on: stale or from an unknown member.
            Input::Message(message) => {
                let _ = self.raw.step(message);
            }
            Input::Propose { client, .. } | Input::Read { client, .. } if self.is_learner() => {
                io.out.replies.push((client, Reply::Failed("learner")));
            }
            Input::Propose { id, data, client } => {
                self.apply.wait_for(id, client);
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {}
                    Err(raft::Error::ProposalDropped) => {
                        self.apply.forget(id);
                        io.out.replies.push((client, Reply::Failed("no leader")));
                    }
                    Err(other) => return Err(raft_error(self.id)(other)),
                }
            }
            Input::Read { key, client } => {
                if self.settings.faults.serves_stale_reads
                    && self.raw.raft.state == StateRole::Follower
                {
                    let value = self.apply.state().get(&key);
                    io.out
                        .replies
                        .push((client, Reply::Output(KvOutput::Get(value))));
                } else {
                    self.waiting_reads.push_back(WaitingRead {
                        key,
                        client,
                        since: io.now,
                    });
                }
            }
            Input::ProposeMembership { change, member } => {
                let mut cc = ConfChange::default();
                cc.set_change_type(change);
                cc.node_id = member;
                // A refused change is dropped, as node.rs reports it to no one waiting here.
                let _ = self.raw.propose_conf_change(Vec::new(), cc);
            }
            Input::SnapshotStatus { to, status } => self.raw.report_snapshot(to, status),
            Input::Unreachable { to } => self.raw.report_unreachable(to),
            Input::Applied { index } => {
                compact_memory(&self.memory, index, self.settings.snapshot_entries)
                    .map_err(raft_error(self.id))?;
            }
            Input::Persisted { index } => {
                if index >= self.snapshot_index + self.settings.snapshot_entries {
                    self.snapshot_log(index, io)?;
                }
            }
        }
        Ok(())
    }

    /// `RaftLogStore::snapshot`: record that the backend holds `index` durably, sync, and
    /// delete the WAL it covers.
    fn snapshot_log(&mut self, index: u64, io: &mut Io) -> Result<(), Violation> {
        if index <= self.snapshot_index {
            return Ok(());
        }
        let Ok(term) = self.memory.term(index) else {
            // Already trimmed from memory: the next, later snapshot will do.
            return Ok(());
        };
        let state = self.memory.initial_state().map_err(raft_error(self.id))?;
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.set_conf_state(state.conf_state);
        self.disk.append(WalRecord::Snapshot(meta));
        self.disk.append(WalRecord::HardState(state.hard_state));
        self.disk.sync();
        self.snapshot_index = index;
        self.disk.purge_before_snapshot(index);
        io.report.snapshots_taken += 1;
        io.trace(
            self.id,
            format_args!("log snapshot at {index} (term {term})"),
        );
        Ok(())
    }

    /// node.rs `issue_reads`: hands every waiting read to raft as one batch when this
    /// member can get a read index (a leader that has committed in its term, or any member
    /// that knows a leader: raft-rs forwards the request); asks again for batches raft lost;
    /// fails those that waited too long for a leader.
    fn issue_reads(&mut self, io: &mut Io) {
        let raft = &self.raw.raft;
        let leader_known = raft.leader_id != raft::INVALID_ID;
        let can_serve = match raft.state {
            StateRole::Leader => raft.commit_to_current_term(),
            _ => leader_known,
        };
        let now = io.now;
        let retry_after = TICK_US * self.raw.raft.election_timeout() as u64;
        let lost: Vec<u64> = self
            .reads_in_flight
            .iter()
            .filter(|(_, batch)| now >= batch.issued + retry_after)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in lost {
            let batch = self.reads_in_flight.remove(&seq).expect("listed above");
            self.waiting_reads.extend(batch.reads);
        }
        if self.waiting_reads.is_empty() {
            return;
        }
        if can_serve {
            self.read_seq += 1;
            let reads: Vec<WaitingRead> = self.waiting_reads.drain(..).collect();
            self.reads_in_flight
                .insert(self.read_seq, ReadsInFlight { reads, issued: now });
            self.raw.read_index(self.read_seq.to_be_bytes().to_vec());
            return;
        }
        let timeout = self.settings.read_timeout_us;
        let mut kept = VecDeque::with_capacity(self.waiting_reads.len());
        for read in self.waiting_reads.drain(..) {
            if now >= read.since + timeout {
                io.out
                    .replies
                    .push((read.client, Reply::Failed("no leader")));
            } else {
                kept.push_back(read);
            }
        }
        self.waiting_reads = kept;
    }

    fn answer_reads(&mut self, states: Vec<raft::ReadState>, io: &mut Io) {
        for state in states {
            let Ok(seq) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(batch) = self.reads_in_flight.remove(&u64::from_be_bytes(seq)) {
                for read in batch.reads {
                    self.apply.read_at(state.index, read.key, read.client, io);
                }
            }
        }
    }

    fn send(&mut self, messages: Vec<Message>, io: &mut Io) {
        io.out.messages.extend(messages);
    }

    /// node.rs `hand_over`: committed entries go to the apply loop, and membership changes
    /// are applied to raft on the way (raft must know the new membership before it counts
    /// the next votes) and recorded in the WAL.
    fn hand_over(&mut self, entries: Vec<Entry>, io: &mut Io) -> Result<(), Violation> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            io.invariants.committed(self.id, entry)?;
            if entry.get_entry_type() != EntryType::EntryConfChange {
                continue;
            }
            let cc: ConfChange = protobuf::Message::parse_from_bytes(&entry.data).map_err(|e| {
                Violation::UnappliableEntry {
                    member: self.id,
                    index: entry.index,
                    reason: format!("undecodable membership change: {e}"),
                }
            })?;
            // Replayed after a restart, or refused by raft: raft's view stands (node.rs logs).
            if let Ok(conf_state) = self.raw.apply_conf_change(&cc) {
                self.disk.append(WalRecord::ConfState(conf_state.clone()));
                self.memory.wl().set_conf_state(conf_state);
                if self.settings.syncs_membership_at_once {
                    self.disk.sync();
                }
            }
            io.out
                .membership_changes
                .push((entry.index, cc.get_change_type(), cc.node_id));
        }
        self.apply.push(ApplyItem::Entries(entries));
        self.schedule_apply(io);
        Ok(())
    }

    fn schedule_apply(&mut self, io: &mut Io) {
        if !self.apply_scheduled {
            self.apply_scheduled = true;
            let delay = io.rng.between(0, self.settings.apply_max_us);
            io.out.wakeups.push((io.now + delay, Wakeup::Apply));
        }
    }

    /// node.rs `on_ready` up to the sync; the rest happens in `finish_ready`.
    fn start_ready(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        if !self.raw.has_ready() {
            return Ok(TurnEnd::Done);
        }
        let mut ready = self.raw.ready();
        let messages = ready.take_messages();
        self.send(messages, io);
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone(), io)?;
        }
        self.answer_reads(ready.take_read_states(), io);
        self.hand_over(ready.take_committed_entries(), io)?;
        if !ready.entries().is_empty() {
            for entry in ready.entries() {
                self.disk.append(WalRecord::Entry(entry.clone()));
            }
            self.memory
                .wl()
                .append(ready.entries())
                .map_err(raft_error(self.id))?;
        }
        if let Some(hard_state) = ready.hs() {
            self.disk.append(WalRecord::HardState(hard_state.clone()));
            self.memory.wl().set_hardstate(hard_state.clone());
        }
        if self.settings.faults.acknowledges_before_sync {
            let persisted = ready.take_persisted_messages();
            self.send(persisted, io);
        }
        if self.crash_at_next_sync && self.disk.has_unsynced() {
            return Ok(TurnEnd::Crashed(CrashPoint::Sync));
        }
        self.syncing = Some(ready);
        if self.disk.has_unsynced() {
            let mut took = io
                .rng
                .between(self.settings.sync_min_us, self.settings.sync_max_us);
            if io.rng.chance(self.settings.sync_stall_per_mille) {
                took += io.rng.between(0, self.settings.sync_stall_max_us);
            }
            io.out.wakeups.push((io.now + took, Wakeup::SyncDone));
        } else {
            self.finish_ready(io)?;
        }
        Ok(TurnEnd::Done)
    }

    /// The sync finished: the rest of node.rs `on_ready`.
    pub fn finish_ready(&mut self, io: &mut Io) -> Result<TurnEnd, Violation> {
        let Some(mut ready) = self.syncing.take() else {
            return Ok(TurnEnd::Done);
        };
        self.disk.sync();
        let persisted = ready.take_persisted_messages();
        self.send(persisted, io);
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            // `RaftLogStore::set_commit`: rides along with the next sync.
            let hard_state = {
                let mut core = self.memory.wl();
                core.mut_hard_state().commit = commit;
                core.hard_state().clone()
            };
            self.disk.append(WalRecord::HardState(hard_state));
        }
        let messages = light.take_messages();
        self.send(messages, io);
        self.hand_over(light.take_committed_entries(), io)?;
        self.raw.advance_apply();
        self.after_raft_call(io)?;
        if !self.inbox.is_empty() && !self.turn_scheduled {
            self.turn_scheduled = true;
            io.out.wakeups.push((io.now, Wakeup::Turn));
        }
        Ok(TurnEnd::Done)
    }

    /// node.rs `install_snapshot` with `RaftLogStore::install_snapshot`: the leader's
    /// snapshot replaces the whole log (synced at once), and the apply loop is told to
    /// replace the state machine with the backend that came with it.
    fn install_snapshot(&mut self, snapshot: Snapshot, io: &mut Io) -> Result<(), Violation> {
        let meta = snapshot.get_metadata().clone();
        io.invariants
            .snapshot_committed(self.id, meta.index, meta.term)?;
        let mut hard_state = self
            .memory
            .initial_state()
            .map_err(raft_error(self.id))?
            .hard_state;
        hard_state.commit = hard_state.commit.max(meta.index);
        hard_state.term = hard_state.term.max(meta.term);
        self.disk.append(WalRecord::Snapshot(meta.clone()));
        self.disk.append(WalRecord::HardState(hard_state.clone()));
        self.disk.sync();
        {
            let mut core = self.memory.wl();
            core.apply_snapshot(snapshot).map_err(raft_error(self.id))?;
            core.set_hardstate(hard_state);
        }
        self.snapshot_index = meta.index;
        self.disk.purge_before_snapshot(meta.index);
        self.apply.push(ApplyItem::Snapshot { index: meta.index });
        self.schedule_apply(io);
        io.report.snapshots_installed += 1;
        io.trace(
            self.id,
            format_args!(
                "installing the leader's snapshot at {} (term {})",
                meta.index, meta.term
            ),
        );
        Ok(())
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
            self.schedule_apply(io);
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

/// `RaftLogStore::compact_memory`: drops in-memory entries well behind `applied`, keeping
/// at most `retained` for a slow follower; one further behind gets a snapshot instead.
fn compact_memory(memory: &MemStorage, applied: u64, retained: u64) -> raft::Result<()> {
    let retained = retained.clamp(1, RETAINED_APPLIED_ENTRIES);
    let applied = applied.min(memory.last_index()?);
    let first = memory.first_index()?;
    if applied >= first + 2 * retained {
        memory.wl().compact(applied - retained)?;
    }
    Ok(())
}
