//! The apply loop: one thread takes committed entries from the Ready loop in order, applies
//! each batch to the store in one backend transaction, then wakes the callers waiting on
//! those requests and publishes the applied index that linearizable reads wait for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_mvcc::{LeaseAttachments, Store, Writer};
use cairn_proto::cairnpb::MemberChange;
use cairn_proto::cairnpb::{InternalRequest, internal_request};
use cairn_proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    ResponseHeader, TxnResponse,
};
use cairn_raft::{Entry, EntryType, NodeEvent, RaftNode, membership_change_of};
use cairn_transport::PeerTransport;
use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::error::storage_error;
use crate::kv::{AppliedTxn, header};
use crate::lease::Lessor;
use crate::membership::{Membership, PeerChange};
use crate::server::{RemovedFlag, incoming_backend};
use crate::watch::WatchHub;
use crate::{ServerError, kv};

/// Make the backend durable at least this often, so recovery replays a bounded WAL suffix.
/// Each durable commit fsyncs on the apply thread and stalls applying meanwhile, so it is
/// not done for every batch; the WAL keeps everything since the last one.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
const PERSIST_ENTRIES_MAX: u64 = 20_000;
/// Entries applied in one backend transaction at most, to bound how long readers wait.
const APPLY_BATCH_ENTRIES_MAX: usize = 10_000;
/// The apply loop tells the Ready loop its progress once per this many entries.
const APPLIED_REPORT_ENTRIES: u64 = 1024;
/// How long the apply loop waits for entries before it looks at the persist deadline.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// What applying one request produced.
#[derive(Debug)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint,
    /// A membership change or member update: the members after it.
    Members(Vec<cairn_proto::etcdserverpb::Member>),
}

pub type ApplyOutcome = Result<Applied, ServerError>;

/// A response the apply loop produces for one kind of request.
pub trait AppliedResponse: Sized {
    /// The response, or the `Applied` back if it is another kind.
    fn from_applied(applied: Applied) -> Result<Self, Applied>;
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! applied_response {
    ($($variant:ident => $response:ty),* $(,)?) => {$(
        impl AppliedResponse for $response {
            fn from_applied(applied: Applied) -> Result<Self, Applied> {
                match applied {
                    Applied::$variant(response) => Ok(response),
                    other => Err(other),
                }
            }
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

applied_response! {
    Put => PutResponse,
    DeleteRange => DeleteRangeResponse,
    Txn => TxnResponse,
    Compaction => CompactionResponse,
    LeaseGrant => LeaseGrantResponse,
    LeaseRevoke => LeaseRevokeResponse,
}

/// Callers waiting for their proposal to be applied, by request id.
#[derive(Default)]
pub struct WaitTable {
    waiters: Mutex<HashMap<u64, oneshot::Sender<ApplyOutcome>>>,
}

impl WaitTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<ApplyOutcome>>> {
        self.waiters
            .lock()
            .expect("the wait table lock is never held across a panic")
    }

    pub fn register(&self, id: u64) -> oneshot::Receiver<ApplyOutcome> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    pub fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn trigger(&self, id: u64, outcome: ApplyOutcome) {
        if let Some(tx) = self.lock().remove(&id) {
            // The caller may have given up (timeout); that is fine.
            let _ = tx.send(outcome);
        }
    }
}

pub struct ApplyLoop {
    pub store: Arc<Store>,
    pub events: Receiver<NodeEvent>,
    pub waits: Arc<WaitTable>,
    pub applied: watch::Sender<u64>,
    pub raft: RaftNode,
    pub lessor: Arc<Lessor>,
    pub watches: Arc<WatchHub>,
    pub applied_index: u64,
    pub membership: Arc<Membership>,
    pub transport: Arc<PeerTransport>,
    pub member_id: u64,
    /// Where the transport leaves backends received from the leader.
    pub snap_dir: PathBuf,
    pub removed: Arc<RemovedFlag>,
}

/// Applies one request. A request-level error leaves the store untouched (every check runs
/// before the first change); an `Internal` error is a storage failure and stops the batch.
fn apply_request(
    w: &mut Writer<'_>,
    lessor: &Lessor,
    membership: &Membership,
    peer_changes: &mut Vec<PeerChange>,
    request: internal_request::Request,
) -> ApplyOutcome {
    use internal_request::Request;
    match request {
        Request::Put(p) => w
            .txn(|txn| kv::put(&mut AppliedTxn { txn, lessor }, p))
            .map(Applied::Put),
        Request::DeleteRange(d) => w
            .txn(|txn| kv::delete_range(&mut AppliedTxn { txn, lessor }, &d))
            .map(Applied::DeleteRange),
        Request::Txn(t) => w
            .txn(|txn| kv::txn(&mut AppliedTxn { txn, lessor }, t))
            .map(Applied::Txn),
        Request::Compaction(c) => {
            w.compact(c.revision)?;
            Ok(Applied::Compaction(CompactionResponse {
                header: header(w.current_revision()),
            }))
        }
        Request::LeaseGrant(g) => {
            lessor.check_grant(g.id)?;
            let ttl = lessor.granted_ttl(g.ttl);
            w.txn(|txn| txn.put_lease(g.id, ttl, 0))?;
            lessor.grant(g.id, ttl);
            Ok(Applied::LeaseGrant(LeaseGrantResponse {
                header: header(w.current_revision()),
                id: g.id,
                ttl,
                error: String::new(),
            }))
        }
        Request::LeaseRevoke(r) => {
            let keys = lessor.keys(r.id).ok_or(ServerError::LeaseNotFound)?;
            // Every attached key goes in one revision, so watchers see one atomic change.
            w.txn(|txn| {
                let mut applied = AppliedTxn { txn, lessor };
                for key in &keys {
                    kv::KvView::delete_range(&mut applied, key, b"")?;
                }
                applied.txn.delete_lease(r.id)?;
                Ok::<_, ServerError>(())
            })?;
            lessor.remove(r.id);
            Ok(Applied::LeaseRevoke(LeaseRevokeResponse {
                header: header(w.current_revision()),
            }))
        }
        Request::LeaseCheckpoint(c) => {
            for checkpoint in c.checkpoints {
                // A lease revoked since the checkpoint was proposed is simply skipped.
                if let Some(ttl) = lessor.checkpoint(checkpoint.id, checkpoint.remaining_ttl) {
                    w.txn(|txn| txn.put_lease(checkpoint.id, ttl, checkpoint.remaining_ttl))?;
                }
            }
            Ok(Applied::LeaseCheckpoint)
        }
        Request::MemberAttributes(update) => {
            peer_changes.extend(membership.apply_attributes(w, update)?);
            Ok(Applied::Members(membership.list()))
        }
    }
}

/// Replaces `store` with the backend received with raft snapshot `index`, reloads the
/// members from it, and deletes backends received for that snapshot or earlier ones. Returns
/// the leased keys, for the lessor.
pub(crate) fn install_received_backend(
    store: &Store,
    membership: &Membership,
    snap_dir: &Path,
    index: u64,
) -> Result<LeaseAttachments, ServerError> {
    let leased = store
        .install(
            &incoming_backend(snap_dir, index),
            (crate::server::META_INSTALLED_SNAPSHOT, index),
        )
        .map_err(storage_error("cannot install the received backend"))?;
    membership.reload(store)?;
    remove_received_backends_up_to(snap_dir, index);
    Ok(leased)
}

/// Deletes backends received for snapshot `index` or earlier (complete or partial): raft
/// will never install them now.
fn remove_received_backends_up_to(snap_dir: &Path, index: u64) {
    let Ok(entries) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let received = name
            .to_str()
            .and_then(|n| n.strip_prefix("incoming-"))
            .and_then(|n| n.split('.').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        if received.is_some_and(|i| i <= index) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl ApplyLoop {
    pub fn run(mut self) {
        let mut last_persist = Instant::now();
        let mut unpersisted_entries = 0u64;
        loop {
            let first = match self.events.recv_timeout(IDLE_WAIT) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut events: Vec<NodeEvent> = first.into_iter().collect();
            let mut queued_entries = 0;
            while queued_entries < APPLY_BATCH_ENTRIES_MAX {
                let Ok(event) = self.events.try_recv() else {
                    break;
                };
                if let NodeEvent::Committed(batch) = &event {
                    queued_entries += batch.len();
                }
                events.push(event);
            }
            let mut entries: Vec<Entry> = Vec::new();
            for event in events {
                match event {
                    NodeEvent::Committed(batch) => entries.extend(batch),
                    NodeEvent::Dropped { id, error } => self.waits.trigger(id, Err(error.into())),
                    NodeEvent::Snapshot { index } => {
                        // Entries before the snapshot are applied first; those after it wait.
                        self.apply_pending(&mut entries, &mut unpersisted_entries);
                        if let Err(e) = self.install_snapshot(index) {
                            tracing::error!(error = %e, "cannot install the leader's snapshot; stopping");
                            std::process::exit(2);
                        }
                        last_persist = Instant::now();
                        unpersisted_entries = 0;
                    }
                }
            }
            self.apply_pending(&mut entries, &mut unpersisted_entries);
            if unpersisted_entries > 0
                && (unpersisted_entries >= PERSIST_ENTRIES_MAX
                    || last_persist.elapsed() >= PERSIST_INTERVAL)
            {
                if let Err(e) = self.store.persist() {
                    tracing::error!(error = %e, "cannot make the backend durable; stopping");
                    std::process::exit(2);
                }
                last_persist = Instant::now();
                unpersisted_entries = 0;
                self.raft.report_persisted(self.applied_index);
            }
        }
        if let Err(e) = self.store.persist() {
            tracing::error!(error = %e, "cannot make the backend durable at shutdown");
        }
    }

    fn apply_pending(&mut self, entries: &mut Vec<Entry>, unpersisted_entries: &mut u64) {
        let mut pending = std::mem::take(entries);
        pending.retain(|e| e.index > self.applied_index);
        if let Some(last) = pending.last().map(|e| e.index) {
            match self.apply_batch(pending, last) {
                Ok(count) => *unpersisted_entries += count,
                Err(e) => {
                    tracing::error!(error = %e, "cannot apply committed entries; stopping");
                    std::process::exit(2);
                }
            }
        }
    }

    /// Replaces the state machine with the backend the leader sent with snapshot `index`.
    fn install_snapshot(&mut self, index: u64) -> Result<(), ServerError> {
        let leased =
            install_received_backend(&self.store, &self.membership, &self.snap_dir, index)?;
        self.lessor.restore(
            self.store.leases().map_err(storage_error("backend"))?,
            leased,
        );
        for member in self.membership.list() {
            if let Err(e) = self
                .transport
                .set_peer(member.id, member.peer_ur_ls.clone())
            {
                tracing::warn!(error = %e, "cannot reach a member named in the snapshot");
            }
        }
        self.applied_index = self
            .store
            .applied_index()
            .map_err(storage_error("backend"))?;
        tracing::info!(
            index,
            applied = self.applied_index,
            "state machine replaced by the leader's snapshot"
        );
        self.watches.notify(self.store.current_revision());
        self.applied.send_replace(self.applied_index);
        self.raft.report_persisted(self.applied_index);
        Ok(())
    }

    fn change_peer(&self, change: PeerChange) {
        match change {
            PeerChange::Set { id, urls } => {
                if let Err(e) = self.transport.set_peer(id, urls) {
                    tracing::warn!(member = format_args!("{id:x}"), error = %e, "cannot reach member");
                }
            }
            // As etcd: a removed member stops; its data dir cannot rejoin.
            PeerChange::Removed(id) if id == self.member_id => self.removed.raise(),
            PeerChange::Removed(id) => self.transport.remove_peer(id),
        }
    }

    fn apply_batch(&mut self, entries: Vec<Entry>, last: u64) -> Result<u64, ServerError> {
        let count = entries.len() as u64;
        let mut peer_changes = Vec::new();
        let outcomes = self.store.write(last, |w| {
            let mut outcomes = Vec::with_capacity(entries.len());
            for entry in entries {
                if let Some(change) = membership_change_of(&entry)? {
                    let context = MemberChange::decode(change.context.as_slice()).map_err(|e| {
                        ServerError::Internal(format!(
                            "undecodable membership change {}: {e}",
                            entry.index
                        ))
                    })?;
                    peer_changes.push(self.membership.apply_change(w, &change, context.member)?);
                    outcomes.push((
                        context.request_id,
                        Ok(Applied::Members(self.membership.list())),
                    ));
                    continue;
                }
                if entry.entry_type != EntryType::EntryNormal || entry.data.is_empty() {
                    continue; // a new leader's empty entry
                }
                let request = InternalRequest::decode(entry.data.as_ref()).map_err(|e| {
                    ServerError::Internal(format!("undecodable entry {}: {e}", entry.index))
                })?;
                let Some(body) = request.request else {
                    continue;
                };
                let outcome =
                    apply_request(w, &self.lessor, &self.membership, &mut peer_changes, body);
                if let Err(ServerError::Internal(reason)) = &outcome {
                    return Err(ServerError::Internal(reason.clone()));
                }
                outcomes.push((request.id, outcome));
            }
            Ok::<_, ServerError>(outcomes)
        })?;
        debug_assert!(last > self.applied_index, "the applied index only grows");
        let previous = self.applied_index;
        self.applied_index = last;
        for (id, outcome) in outcomes {
            self.waits.trigger(id, outcome);
        }
        for change in peer_changes {
            self.change_peer(change);
        }
        self.watches.notify(self.store.current_revision());
        self.applied.send_replace(last);
        // Each report wakes the Ready loop; it only trims memory, so once per chunk will do.
        if last / APPLIED_REPORT_ENTRIES != previous / APPLIED_REPORT_ENTRIES {
            self.raft.report_applied(last);
        }
        Ok(count)
    }
}
