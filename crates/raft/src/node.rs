//! The Ready loop: one thread owns the raft-rs `RawNode` and the WAL. It drains every request
//! that arrived since its last turn, so one fdatasync covers a whole batch of proposals (group
//! commit), and it hands committed entries to the apply loop over a bounded channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message};

use crate::RaftError;
use crate::core::{CoreRequest, CoreSettings, RaftCore, ReadyEffects};
use crate::log_store::RaftLogStore;

/// Requests taken per turn of the loop before the batch is persisted: bounds latency and memory.
const REQUESTS_PER_TURN_MAX: usize = 4096;

/// Where the Ready loop sends raft messages for other members: the peer transport. It must
/// not block: a message it cannot deliver is dropped, and raft sends it again.
pub trait MessageSink: Send + Sync {
    fn send(&self, messages: Vec<Message>);
}

pub struct NodeConfig {
    pub id: u64,
    /// Voters of a brand-new cluster; ignored when the WAL already records the membership.
    /// Empty for a member joining an existing cluster: it learns the membership from the
    /// leader's snapshot.
    pub initial_voters: Vec<u64>,
    pub wal_dir: PathBuf,
    /// Index of the last entry the state machine holds, so it is not handed over again.
    pub applied: u64,
    /// The raft snapshot index the state machine was last installed from (0 if never). A
    /// state machine installed from a leader's snapshot may be ahead of the WAL's end.
    pub installed_snapshot: u64,
    pub transport: Arc<dyn MessageSink>,
    /// One raft tick: etcd's `--heartbeat-interval`.
    pub tick_interval: Duration,
    /// `--election-timeout` in ticks.
    pub election_ticks: usize,
    /// Bound of the request queue: beyond it callers get `TooManyRequests`.
    pub queued_requests_max: usize,
    /// How long a linearizable read may wait for a leader before it fails.
    pub read_index_timeout: Duration,
    /// Entries between snapshots (etcd's `--snapshot-count`): each snapshot trims the WAL.
    pub snapshot_entries: u64,
}

/// Answers a read-index request with the commit index a read must wait to see applied.
pub type ReadIndexReply = Box<dyn FnOnce(Result<u64, RaftError>) + Send>;

/// A change of the voting membership, proposed through the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddVoter,
    AddLearner,
    Remove,
}

/// A committed membership change entry as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedMembershipChange {
    pub change: MembershipChange,
    pub member: u64,
    pub context: Vec<u8>,
}

/// The raft-rs change in a `EntryConfChange` entry; None for any other entry.
pub(crate) fn conf_change_of(entry: &Entry) -> Result<Option<ConfChange>, RaftError> {
    if entry.get_entry_type() != EntryType::EntryConfChange {
        return Ok(None);
    }
    protobuf::Message::parse_from_bytes(&entry.data)
        .map(Some)
        .map_err(|e| {
            RaftError::CorruptLog(format!(
                "undecodable membership change {}: {e}",
                entry.index
            ))
        })
}

/// Decodes a committed `EntryConfChange`; None for any other entry.
pub fn membership_change_of(entry: &Entry) -> Result<Option<CommittedMembershipChange>, RaftError> {
    let Some(cc) = conf_change_of(entry)? else {
        return Ok(None);
    };
    let change = match cc.get_change_type() {
        ConfChangeType::AddNode => MembershipChange::AddVoter,
        ConfChangeType::AddLearnerNode => MembershipChange::AddLearner,
        ConfChangeType::RemoveNode => MembershipChange::Remove,
    };
    Ok(Some(CommittedMembershipChange {
        change,
        member: cc.node_id,
        context: cc.context.to_vec(),
    }))
}

enum NodeRequest {
    Core(CoreRequest<ReadIndexReply>),
    LearnerInSync {
        member: u64,
        ready_percent: u64,
        reply: LearnerInSyncReply,
    },
}

/// Answers whether a learner is in sync: None when this member is not the leader.
pub type LearnerInSyncReply = Box<dyn FnOnce(Option<bool>) + Send>;

/// What the Ready loop hands to the apply loop, in log order.
pub enum NodeEvent {
    /// The leader's backend, received by the transport, must replace the state machine:
    /// raft's log now starts after `index`.
    Snapshot { index: u64 },
    /// Entries committed by a quorum and durable in the WAL.
    Committed(Vec<Entry>),
    /// A proposal raft refused; its caller must be told.
    Dropped { id: u64, error: RaftError },
}

#[derive(Debug, Default)]
struct SharedStatus {
    term: AtomicU64,
    leader: AtomicU64,
    /// Times a new leader was seen (etcd's `etcd_server_leader_changes_seen_total`).
    leader_changes: AtomicU64,
    last_index: AtomicU64,
    is_learner: AtomicBool,
}

/// A handle to the Ready loop; cheap to clone. The loop stops when every handle is dropped.
#[derive(Clone)]
pub struct RaftNode {
    requests: SyncSender<NodeRequest>,
    status: Arc<SharedStatus>,
    id: u64,
}

impl RaftNode {
    /// Replays the WAL, starts the Ready loop on its own thread, and returns a handle to it.
    pub fn start(
        config: NodeConfig,
        events: SyncSender<NodeEvent>,
    ) -> Result<(RaftNode, JoinHandle<()>), RaftError> {
        let log = RaftLogStore::open(
            &config.wal_dir,
            cairn_wal::WalOptions::default(),
            &config.initial_voters,
            config.applied,
            config.installed_snapshot,
        )?;
        let core = RaftCore::start(
            config.id,
            config.election_ticks,
            config.applied,
            log.memory(),
            CoreSettings {
                tick_interval: config.tick_interval,
                read_index_timeout: config.read_index_timeout,
                snapshot_entries: config.snapshot_entries,
            },
        )?;
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queued_requests_max);
        let status = Arc::new(SharedStatus::default());
        let node = RaftNode {
            requests: tx,
            status: status.clone(),
            id: config.id,
        };
        let ready_loop = ReadyLoop {
            core,
            log,
            requests: rx,
            effects: NodeEffects {
                events,
                transport: config.transport,
            },
            status,
            tick_interval: config.tick_interval,
            epoch: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("raft-ready".into())
            .spawn(move || ready_loop.run())
            .map_err(|e| RaftError::Io(e.to_string()))?;
        Ok((node, handle))
    }

    fn send(&self, request: NodeRequest) -> Result<(), RaftError> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => RaftError::TooManyRequests,
            TrySendError::Disconnected(_) => RaftError::Stopped,
        })
    }

    /// Queues `data` for replication; the outcome arrives through the apply loop under `id`.
    pub fn propose(&self, id: u64, data: Vec<u8>) -> Result<(), RaftError> {
        self.send(NodeRequest::Core(CoreRequest::Propose { id, data }))
    }

    /// Proposes a membership change; `context` comes back with the committed entry.
    pub fn propose_membership(
        &self,
        id: u64,
        change: MembershipChange,
        member: u64,
        context: Vec<u8>,
    ) -> Result<(), RaftError> {
        self.send(NodeRequest::Core(CoreRequest::ProposeMembership {
            id,
            change,
            member,
            context,
        }))
    }

    /// Hands a message from another member to raft. A full queue drops it; raft resends.
    pub fn step(&self, message: Message) {
        let _ = self
            .requests
            .try_send(NodeRequest::Core(CoreRequest::Step(Box::new(message))));
    }

    /// Tells raft that messages to `member` could not be delivered.
    pub fn report_unreachable(&self, member: u64) {
        let _ = self
            .requests
            .try_send(NodeRequest::Core(CoreRequest::Unreachable(member)));
    }

    /// Tells raft whether the snapshot sent to `to` arrived.
    pub fn report_snapshot(&self, to: u64, delivered: bool) {
        let _ = self
            .requests
            .try_send(NodeRequest::Core(CoreRequest::SnapshotSent {
                to,
                delivered,
            }));
    }

    /// Asks whether learner `member` holds at least `ready_percent` of the leader's log.
    pub fn learner_in_sync(
        &self,
        member: u64,
        ready_percent: u64,
        reply: LearnerInSyncReply,
    ) -> Result<(), RaftError> {
        self.send(NodeRequest::LearnerInSync {
            member,
            ready_percent,
            reply,
        })
    }

    /// Asks the leader to hand leadership to `member`.
    pub fn transfer_leader(&self, member: u64) -> Result<(), RaftError> {
        self.send(NodeRequest::Core(CoreRequest::TransferLeader(member)))
    }

    /// Asks for a read index; `reply` is called exactly once, from the Ready loop's thread.
    pub fn read_index(&self, reply: ReadIndexReply) -> Result<(), RaftError> {
        self.send(NodeRequest::Core(CoreRequest::ReadIndex(reply)))
    }

    /// Tells the Ready loop that the state machine holds everything up to `index` durably, so
    /// the WAL before it may go once enough entries have gathered.
    pub fn report_persisted(&self, index: u64) {
        // A full queue only delays the snapshot until the next report.
        let _ = self
            .requests
            .try_send(NodeRequest::Core(CoreRequest::Persisted(index)));
    }

    /// Tells the Ready loop how far the state machine got, so it can trim the in-memory log.
    pub fn report_applied(&self, index: u64) {
        // A full queue only delays trimming until the next report.
        let _ = self
            .requests
            .try_send(NodeRequest::Core(CoreRequest::Applied(index)));
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn term(&self) -> u64 {
        self.status.term.load(Ordering::Acquire)
    }

    /// The leader's member id, or 0 while there is none.
    pub fn leader(&self) -> u64 {
        self.status.leader.load(Ordering::Acquire)
    }

    pub fn leader_changes(&self) -> u64 {
        self.status.leader_changes.load(Ordering::Acquire)
    }

    /// The index of the last entry in this member's log, committed or not.
    pub fn last_index(&self) -> u64 {
        self.status.last_index.load(Ordering::Acquire)
    }

    /// Whether raft counts this member as a learner (a non-voting member).
    pub fn is_learner(&self) -> bool {
        self.status.is_learner.load(Ordering::Acquire)
    }
}

/// The Ready loop's effects: messages to the transport, everything else to the apply loop.
struct NodeEffects {
    events: SyncSender<NodeEvent>,
    transport: Arc<dyn MessageSink>,
}

impl ReadyEffects<ReadIndexReply> for NodeEffects {
    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            self.transport.send(messages);
        }
    }

    fn snapshot_installed(&mut self, index: u64, _term: u64) {
        let _ = self.events.send(NodeEvent::Snapshot { index });
    }

    fn committed(&mut self, entries: Vec<Entry>) {
        // Blocking here is the backpressure: a lagging apply loop slows the log down.
        let _ = self.events.send(NodeEvent::Committed(entries));
    }

    fn dropped(&mut self, id: u64, error: RaftError) {
        let _ = self.events.send(NodeEvent::Dropped { id, error });
    }

    fn read_index(&mut self, reply: ReadIndexReply, result: Result<u64, RaftError>) {
        reply(result);
    }
}

/// The thread around a [`RaftCore`]: it owns the WAL, takes requests from a channel, ticks
/// on the wall clock, and publishes raft's status for other threads.
struct ReadyLoop {
    core: RaftCore<ReadIndexReply>,
    log: RaftLogStore,
    requests: Receiver<NodeRequest>,
    effects: NodeEffects,
    status: Arc<SharedStatus>,
    tick_interval: Duration,
    /// The core's clock starts here.
    epoch: Instant,
}

impl ReadyLoop {
    fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick_interval;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(wait) {
                Ok(request) => {
                    self.handle(request);
                    for _ in 0..REQUESTS_PER_TURN_MAX {
                        let Ok(request) = self.requests.try_recv() else {
                            break;
                        };
                        self.handle(request);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.core.tick();
                next_tick = now + self.tick_interval;
            }
            self.core
                .issue_reads(now.duration_since(self.epoch), &mut self.effects);
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "raft Ready loop stopped: cannot persist the log");
                break;
            }
            self.publish_status();
        }
        tracing::info!("raft Ready loop stopped");
    }

    fn handle(&mut self, request: NodeRequest) {
        match request {
            NodeRequest::Core(request) => {
                let now = self.epoch.elapsed();
                if let Err(e) = self
                    .core
                    .handle(request, now, &mut self.log, &mut self.effects)
                {
                    tracing::warn!(error = %e, "could not trim or snapshot the raft log; the WAL keeps growing");
                }
            }
            NodeRequest::LearnerInSync {
                member,
                ready_percent,
                reply,
            } => reply(self.core.learner_in_sync(member, ready_percent)),
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.core.has_ready() {
            return Ok(());
        }
        // Term and leader first: whoever is woken by the entries handed over below must see
        // the leader that committed them.
        self.publish_status();
        if let Some(ready) = self.core.start_ready(&mut self.log, &mut self.effects)? {
            self.core
                .finish_ready(ready, &mut self.log, &mut self.effects)?;
        }
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.core.raw().raft;
        self.status.term.store(raft.term, Ordering::Release);
        self.status
            .last_index
            .store(raft.raft_log.last_index(), Ordering::Release);
        self.status.is_learner.store(
            raft.prs().conf().learners().contains(&raft.id),
            Ordering::Release,
        );
        let previous = self.status.leader.swap(raft.leader_id, Ordering::AcqRel);
        if raft.leader_id != 0 && raft.leader_id != previous {
            self.status.leader_changes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lone member sends nothing.
    struct NoPeers;

    impl MessageSink for NoPeers {
        fn send(&self, messages: Vec<Message>) {
            assert!(messages.is_empty(), "a single member sends no messages");
        }
    }

    fn config(dir: &std::path::Path, applied: u64) -> NodeConfig {
        NodeConfig {
            id: 1,
            initial_voters: vec![1],
            wal_dir: dir.to_owned(),
            applied,
            installed_snapshot: 0,
            transport: Arc::new(NoPeers),
            tick_interval: Duration::from_millis(10),
            election_ticks: 10,
            queued_requests_max: 1024,
            read_index_timeout: Duration::from_secs(5),
            snapshot_entries: 2,
        }
    }

    /// Collects committed application data (skipping raft's empty leader entries) until `n` arrive.
    fn committed_data(events: &Receiver<NodeEvent>, n: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while out.len() < n {
            match events
                .recv_timeout(Duration::from_secs(10))
                .expect("committed entries arrive")
            {
                NodeEvent::Committed(entries) => out.extend(
                    entries
                        .into_iter()
                        .filter(|e| !e.data.is_empty())
                        .map(|e| (e.index, e.data.to_vec())),
                ),
                NodeEvent::Dropped { id, error } => panic!("proposal {id} dropped: {error}"),
                NodeEvent::Snapshot { index } => panic!("a lone member got a snapshot at {index}"),
            }
        }
        out
    }

    #[test]
    fn a_single_member_commits_proposals_and_replays_them_after_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let (node, thread) = RaftNode::start(config(dir.path(), 0), tx).expect("start");
        for i in 0..3u8 {
            node.propose(u64::from(i), vec![b'a' + i]).expect("propose");
        }
        let first = committed_data(&rx, 3);
        assert_eq!(
            first.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(node.term() >= 1 && node.leader() == 1);

        let (read_tx, read_rx) = std::sync::mpsc::channel();
        node.read_index(Box::new(move |r| read_tx.send(r).expect("test alive")))
            .expect("read index");
        let read = read_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("read answered")
            .expect("read ok");
        assert!(read >= first.last().expect("three entries").0);

        drop(node);
        thread.join().expect("ready loop ends when handles drop");

        // Restart having applied only the first entry: the rest is handed over again.
        let applied = first[0].0;
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let (node, _thread) = RaftNode::start(config(dir.path(), applied), tx).expect("restart");
        let again = committed_data(&rx, 2);
        assert_eq!(again, first[1..].to_vec());
        node.propose(9, b"d".to_vec())
            .expect("propose after restart");
        let next = committed_data(&rx, 1);
        assert!(next[0].0 > first[2].0, "indexes keep growing after restart");
    }
}
