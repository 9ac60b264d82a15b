//! The Ready loop's rules, without its thread, clock or disk: how each request reaches
//! raft-rs, when waiting reads are handed to raft, and the order in which one `Ready` is
//! persisted, sent and handed on. node.rs runs it on a thread over the WAL; the simulator
//! (cairn-sim) runs this same code under simulated time, network and disk, so what the
//! simulation shows holds for the code Cairn runs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, HardState, Message, Snapshot};
use raft::storage::MemStorage;
use raft::{Config, RawNode, Ready, SnapshotStatus, StateRole, Storage};

use crate::RaftError;
use crate::node::{MembershipChange, conf_change_of};

/// The durable log under raft-rs's `MemStorage`: `RaftLogStore` on the WAL, or the
/// simulator's disk. Every write is buffered until `sync`, which makes all of them durable.
pub trait LogStorage {
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), RaftError>;
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftError>;
    /// Records a new commit index; it rides along with the next sync.
    fn set_commit(&mut self, commit: u64) -> Result<(), RaftError>;
    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), RaftError>;
    /// Replaces the whole log with the leader's snapshot, durably before it returns.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftError>;
    fn sync(&mut self) -> Result<(), RaftError>;
    /// Index of the last log snapshot.
    fn snapshot_index(&self) -> u64;
    /// Records that the state machine holds `index` durably, and drops the log it covers.
    fn snapshot(&mut self, index: u64) -> Result<(), RaftError>;
    /// Drops in-memory entries well behind `applied`, keeping up to `retained`.
    fn compact_memory(&mut self, applied: u64, retained: u64) -> Result<(), RaftError>;
}

/// Where the work of a Ready goes: the other members, the apply loop, and waiting readers.
/// `R` is whatever stands for one waiting read (a reply callback, a simulated client).
pub trait ReadyEffects<R> {
    /// Messages for other members; may be empty.
    fn send(&mut self, messages: Vec<Message>);
    /// The leader's snapshot replaced the log; the state machine must follow.
    fn snapshot_installed(&mut self, index: u64, term: u64);
    /// Entries committed and durable, membership changes among them already applied to raft.
    fn committed(&mut self, entries: Vec<Entry>);
    /// A proposal raft refused.
    fn dropped(&mut self, id: u64, error: RaftError);
    /// A read's index, or why it cannot have one.
    fn read_index(&mut self, read: R, result: Result<u64, RaftError>);
}

/// A request for the Ready loop; `R` as in [`ReadyEffects`].
pub enum CoreRequest<R> {
    Propose {
        id: u64,
        data: Vec<u8>,
    },
    ProposeMembership {
        id: u64,
        change: MembershipChange,
        member: u64,
        context: Vec<u8>,
    },
    ReadIndex(R),
    /// The state machine got this far: the in-memory log behind it may be trimmed.
    Applied(u64),
    /// The state machine holds everything up to here durably: the log may be snapshotted.
    Persisted(u64),
    Step(Box<Message>),
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        delivered: bool,
    },
    TransferLeader(u64),
}

pub struct CoreSettings {
    /// One raft tick: etcd's `--heartbeat-interval`.
    pub tick_interval: Duration,
    /// How long a read may wait for a leader before it fails.
    pub read_index_timeout: Duration,
    /// Entries between log snapshots (etcd's `--snapshot-count`).
    pub snapshot_entries: u64,
}

struct WaitingRead<R> {
    read: R,
    since: Duration,
}

/// Reads handed to raft under one context number. raft-rs drops a read-index request that
/// is lost on the way to the leader or reaches a leader not yet ready, so it is asked again.
struct ReadsInFlight<R> {
    reads: Vec<WaitingRead<R>>,
    issued: Duration,
}

/// One member's raft-rs node and the reads waiting on it. Time is whatever the caller says it
/// is: a `Duration` since some fixed start.
pub struct RaftCore<R> {
    raw: RawNode<MemStorage>,
    settings: CoreSettings,
    /// Reads not yet handed to raft: it drops read-index requests until the leader has
    /// committed an entry in its term, so they wait here instead.
    waiting_reads: VecDeque<WaitingRead<R>>,
    /// Batches handed to raft, by context number; ordered so that runs are reproducible.
    reads_in_flight: BTreeMap<u64, ReadsInFlight<R>>,
    read_seq: u64,
}

impl<R> RaftCore<R> {
    /// Starts raft over `memory`, the log as replayed from durable storage; `applied` is
    /// the last entry the state machine already holds.
    pub fn start(
        id: u64,
        election_ticks: usize,
        applied: u64,
        memory: MemStorage,
        settings: CoreSettings,
    ) -> Result<Self, RaftError> {
        let config = Config {
            id,
            election_tick: election_ticks,
            heartbeat_tick: 1,
            applied: applied.min(memory.last_index()?),
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&config, memory, &logger)?;
        if raw.raft.prs().is_singleton() && raw.raft.prs().conf().voters().contains(id) {
            // Alone in the cluster: no one to wait for, so do not sit out an election timeout.
            raw.campaign()?;
        }
        Ok(RaftCore {
            raw,
            settings: CoreSettings {
                snapshot_entries: settings.snapshot_entries.max(1),
                ..settings
            },
            waiting_reads: VecDeque::new(),
            reads_in_flight: BTreeMap::new(),
            read_seq: 0,
        })
    }

    /// raft-rs's node, to read its state.
    pub fn raw(&self) -> &RawNode<MemStorage> {
        &self.raw
    }

    /// raft-rs's node, for the simulator to draw election timeouts from its seed.
    pub fn raw_mut(&mut self) -> &mut RawNode<MemStorage> {
        &mut self.raw
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Hands one request to raft. An error is the log's: trimming or snapshotting failed.
    pub fn handle(
        &mut self,
        request: CoreRequest<R>,
        now: Duration,
        log: &mut impl LogStorage,
        effects: &mut impl ReadyEffects<R>,
    ) -> Result<(), RaftError> {
        match request {
            CoreRequest::Propose { id, data } => {
                let result = self.raw.propose(Vec::new(), data);
                report_dropped(id, result, effects);
            }
            CoreRequest::ProposeMembership {
                id,
                change,
                member,
                context,
            } => {
                let mut cc = ConfChange::default();
                cc.set_change_type(match change {
                    MembershipChange::AddVoter => ConfChangeType::AddNode,
                    MembershipChange::AddLearner => ConfChangeType::AddLearnerNode,
                    MembershipChange::Remove => ConfChangeType::RemoveNode,
                });
                cc.node_id = member;
                cc.context = context.into();
                let result = self.raw.propose_conf_change(Vec::new(), cc);
                report_dropped(id, result, effects);
            }
            CoreRequest::ReadIndex(read) => self
                .waiting_reads
                .push_back(WaitingRead { read, since: now }),
            CoreRequest::Applied(index) => {
                log.compact_memory(index, self.settings.snapshot_entries)?;
            }
            CoreRequest::Persisted(index) => {
                if index >= log.snapshot_index() + self.settings.snapshot_entries {
                    log.snapshot(index)?;
                }
            }
            CoreRequest::Step(message) => {
                // Messages from members raft no longer knows, or stale ones, are refused;
                // that is expected during membership changes.
                if let Err(e) = self.raw.step(*message) {
                    tracing::debug!(error = %e, "raft message refused");
                }
            }
            CoreRequest::Unreachable(member) => self.raw.report_unreachable(member),
            CoreRequest::SnapshotSent { to, delivered } => self.raw.report_snapshot(
                to,
                if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                },
            ),
            CoreRequest::TransferLeader(member) => self.raw.transfer_leader(member),
        }
        Ok(())
    }

    /// On the leader: whether `member` holds at least `ready_percent` of the leader's log
    /// (etcd's condition for promoting a learner). None on any other member.
    pub fn learner_in_sync(&self, member: u64, ready_percent: u64) -> Option<bool> {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return None;
        }
        let leader_matched = raft.raft_log.last_index();
        Some(
            raft.prs()
                .get(member)
                .is_some_and(|progress| progress.matched * 100 >= leader_matched * ready_percent),
        )
    }

    /// Hands every waiting read to raft as one batch when this member can get a read index
    /// (a leader that has committed in its term, or any member that knows a leader: raft
    /// forwards the request); asks again for batches raft lost; fails those that waited too
    /// long for a leader.
    pub fn issue_reads(&mut self, now: Duration, effects: &mut impl ReadyEffects<R>) {
        let raft = &self.raw.raft;
        let leader_known = raft.leader_id != raft::INVALID_ID;
        let can_serve = match raft.state {
            StateRole::Leader => raft.commit_to_current_term(),
            _ => leader_known,
        };
        let retry_after = self.settings.tick_interval * raft.election_timeout() as u32;
        let lost: Vec<u64> = self
            .reads_in_flight
            .iter()
            .filter(|(_, batch)| now.saturating_sub(batch.issued) >= retry_after)
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
            let reads: Vec<WaitingRead<R>> = self.waiting_reads.drain(..).collect();
            self.reads_in_flight
                .insert(self.read_seq, ReadsInFlight { reads, issued: now });
            self.raw
                .read_index(read_context(self.raw.raft.id, self.read_seq));
            return;
        }
        let timeout = self.settings.read_index_timeout;
        let mut kept = VecDeque::with_capacity(self.waiting_reads.len());
        for waiting in self.waiting_reads.drain(..) {
            if now.saturating_sub(waiting.since) >= timeout {
                effects.read_index(waiting.read, Err(RaftError::NoLeader));
            } else {
                kept.push_back(waiting);
            }
        }
        self.waiting_reads = kept;
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// The first half of a Ready, up to the sync: the leader's messages go out at once (they
    /// need not wait for its own disk), a received snapshot is installed, read indexes and
    /// committed entries are handed on, and new entries and the hard state are written. The
    /// returned Ready goes to [`RaftCore::finish_ready`], which syncs them; raft-rs must not
    /// be touched in between.
    pub fn start_ready(
        &mut self,
        log: &mut impl LogStorage,
        effects: &mut impl ReadyEffects<R>,
    ) -> Result<Option<Ready>, RaftError> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut ready = self.raw.ready();
        effects.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            log.install_snapshot(&snapshot)?;
            let meta = snapshot.get_metadata();
            tracing::info!(index = meta.index, "installed the leader's snapshot");
            effects.snapshot_installed(meta.index, meta.term);
        }
        self.answer_reads(ready.take_read_states(), effects);
        self.hand_over(ready.take_committed_entries(), log, effects)?;
        log.append_entries(ready.entries())?;
        if let Some(hard_state) = ready.hs() {
            log.set_hard_state(hard_state)?;
        }
        Ok(Some(ready))
    }

    /// The second half: sync, then the messages that vouch for what was synced (votes,
    /// append acknowledgements), then what the light ready brings.
    pub fn finish_ready(
        &mut self,
        mut ready: Ready,
        log: &mut impl LogStorage,
        effects: &mut impl ReadyEffects<R>,
    ) -> Result<(), RaftError> {
        log.sync()?;
        effects.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            log.set_commit(commit)?;
        }
        effects.send(light.take_messages());
        self.hand_over(light.take_committed_entries(), log, effects)?;
        self.raw.advance_apply();
        Ok(())
    }

    fn answer_reads(&mut self, states: Vec<raft::ReadState>, effects: &mut impl ReadyEffects<R>) {
        for state in states {
            let Some(seq) = read_seq_of(&state.request_ctx, self.raw.raft.id) else {
                continue;
            };
            if let Some(batch) = self.reads_in_flight.remove(&seq) {
                for waiting in batch.reads {
                    effects.read_index(waiting.read, Ok(state.index));
                }
            }
        }
    }

    /// Hands committed entries on, applying membership changes to raft on the way: raft
    /// must know the new membership before it counts the next votes.
    fn hand_over(
        &mut self,
        entries: Vec<Entry>,
        log: &mut impl LogStorage,
        effects: &mut impl ReadyEffects<R>,
    ) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            let Some(cc) = conf_change_of(entry)? else {
                continue;
            };
            match self.raw.apply_conf_change(&cc) {
                Ok(conf_state) => {
                    // Durable before the apply loop sees the entry: once the backend records
                    // it as applied, raft never hands it over again after a restart.
                    log.set_conf_state(&conf_state)?;
                    log.sync()?;
                }
                // Replayed after a restart, or refused by raft: raft's view stands.
                Err(e) => {
                    tracing::warn!(index = entry.index, error = %e, "membership change not applied to raft")
                }
            }
        }
        effects.committed(entries);
        Ok(())
    }
}

/// The context a batch of reads goes to raft under: this member's ID, then the batch's
/// number. The leader keeps pending read-index requests by context and ignores a second one
/// with a context it already holds, so contexts must differ across members: with the number
/// alone, two members' batches collided and one waited an election timeout to be asked again.
fn read_context(member: u64, seq: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&member.to_be_bytes());
    context.extend_from_slice(&seq.to_be_bytes());
    context
}

/// The batch number in a read state's context, if the context is this member's.
fn read_seq_of(context: &[u8], member: u64) -> Option<u64> {
    let (id, seq) = context.split_at_checked(8)?;
    let id = u64::from_be_bytes(id.try_into().ok()?);
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    (id == member).then_some(seq)
}

fn report_dropped<R>(id: u64, result: raft::Result<()>, effects: &mut impl ReadyEffects<R>) {
    if let Err(e) = result {
        let error = match e {
            raft::Error::ProposalDropped => RaftError::NoLeader,
            other => RaftError::Raft(other),
        };
        effects.dropped(id, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log kept in raft-rs's memory alone: enough to drive cores against each other.
    struct MemoryLog(MemStorage);

    impl LogStorage for MemoryLog {
        fn append_entries(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
            Ok(self.0.wl().append(entries)?)
        }

        fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftError> {
            self.0.wl().set_hardstate(hard_state.clone());
            Ok(())
        }

        fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
            self.0.wl().mut_hard_state().commit = commit;
            Ok(())
        }

        fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), RaftError> {
            self.0.wl().set_conf_state(conf_state.clone());
            Ok(())
        }

        fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftError> {
            Ok(self.0.wl().apply_snapshot(snapshot.clone())?)
        }

        fn sync(&mut self) -> Result<(), RaftError> {
            Ok(())
        }

        fn snapshot_index(&self) -> u64 {
            0
        }

        fn snapshot(&mut self, _index: u64) -> Result<(), RaftError> {
            Ok(())
        }

        fn compact_memory(&mut self, _applied: u64, _retained: u64) -> Result<(), RaftError> {
            Ok(())
        }
    }

    /// What one member's core did: messages out, and the reads it answered (by read tag).
    #[derive(Default)]
    struct Recorded {
        messages: Vec<Message>,
        answered: Vec<(u32, u64)>,
    }

    impl ReadyEffects<u32> for Recorded {
        fn send(&mut self, messages: Vec<Message>) {
            self.messages.extend(messages);
        }

        fn snapshot_installed(&mut self, _index: u64, _term: u64) {}

        fn committed(&mut self, _entries: Vec<Entry>) {}

        fn dropped(&mut self, id: u64, error: RaftError) {
            panic!("proposal {id} dropped: {error}");
        }

        fn read_index(&mut self, read: u32, result: Result<u64, RaftError>) {
            self.answered
                .push((read, result.expect("a read index while a leader serves")));
        }
    }

    struct Member {
        core: RaftCore<u32>,
        log: MemoryLog,
        recorded: Recorded,
    }

    fn three_members() -> Vec<Member> {
        (1..=3)
            .map(|id| {
                let memory =
                    MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
                let settings = CoreSettings {
                    tick_interval: Duration::from_millis(100),
                    read_index_timeout: Duration::from_secs(5),
                    snapshot_entries: 1000,
                };
                Member {
                    core: RaftCore::start(id, 10, 0, memory.clone(), settings).expect("start"),
                    log: MemoryLog(memory),
                    recorded: Recorded::default(),
                }
            })
            .collect()
    }

    /// Runs every Ready and delivers every message until the cluster is quiet. No tick
    /// passes, so nothing is asked again after an election timeout.
    fn settle(members: &mut [Member]) {
        loop {
            for member in members.iter_mut() {
                member
                    .core
                    .issue_reads(Duration::ZERO, &mut member.recorded);
                while let Some(ready) = member
                    .core
                    .start_ready(&mut member.log, &mut member.recorded)
                    .expect("start ready")
                {
                    member
                        .core
                        .finish_ready(ready, &mut member.log, &mut member.recorded)
                        .expect("finish ready");
                }
            }
            let messages: Vec<Message> = members
                .iter_mut()
                .flat_map(|m| std::mem::take(&mut m.recorded.messages))
                .collect();
            if messages.is_empty() {
                return;
            }
            for message in messages {
                let to = &mut members[message.to as usize - 1];
                to.core
                    .handle(
                        CoreRequest::Step(Box::new(message)),
                        Duration::ZERO,
                        &mut to.log,
                        &mut to.recorded,
                    )
                    .expect("step");
            }
        }
    }

    fn read(member: &mut Member, tag: u32) {
        member
            .core
            .handle(
                CoreRequest::ReadIndex(tag),
                Duration::ZERO,
                &mut member.log,
                &mut member.recorded,
            )
            .expect("read");
    }

    /// Every member numbers its batches from 1, so the leader's first batch and a follower's
    /// arrive at the leader under the same number; both must still be answered at once.
    #[test]
    fn reads_from_several_members_at_once_are_all_answered() {
        let mut members = three_members();
        members[0].core.raw_mut().campaign().expect("campaign");
        settle(&mut members);
        assert_eq!(members[0].core.raw().raft.state, StateRole::Leader);
        for (i, member) in members.iter_mut().enumerate() {
            read(member, i as u32);
        }
        settle(&mut members);
        for (i, member) in members.iter().enumerate() {
            let tags: Vec<u32> = member
                .recorded
                .answered
                .iter()
                .map(|(tag, _)| *tag)
                .collect();
            assert_eq!(tags, vec![i as u32], "member {} answered {tags:?}", i + 1);
        }
    }
}
