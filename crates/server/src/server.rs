//! `Server`: what the API layer calls. Writes become proposals that go through Raft and come
//! back from the apply loop; linearizable reads wait for a read index to be applied;
//! serializable reads go straight to the local store.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use cairn_mvcc::Store;
use cairn_proto::cairnpb::{InternalRequest, internal_request};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_raft::{NodeConfig, RaftNode};
use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::apply::{Applied, AppliedResponse, ApplyLoop, WaitTable};
use crate::ids::{RequestIds, cluster_id, member_id};
use crate::lease::{LeaseTimeToLive, Lessor, MAX_LEASE_TTL_SECONDS};
use crate::watch::WatchHub;
use crate::{ServerError, kv};

/// The etcd version Cairn answers as: its API is 3.5's.
pub const ETCD_VERSION: &str = "3.5.0";

/// How long a request may wait for consensus before `etcdserver: request timed out`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// Proposals and reads queued for the Ready loop before callers get `too many requests`.
const QUEUED_REQUESTS_MAX: usize = 16 * 1024;

const META_MEMBER_ID: &str = "member_id";
const META_CLUSTER_ID: &str = "cluster_id";

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// `--initial-cluster`: every member's name and peer URLs.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// `--snapshot-count`: applied entries between raft snapshots, each of which trims the WAL.
    pub snapshot_count: u64,
    /// How often watchers that asked for progress notifications get one.
    pub watch_progress_notify_interval: Duration,
    /// How often the leader checkpoints remaining lease TTLs through Raft, so that a restart
    /// resumes them instead of granting every lease its full TTL again; None disables it.
    pub lease_checkpoint_interval: Option<Duration>,
}

/// Point-in-time facts for `Maintenance.Status`.
#[derive(Clone, Debug)]
pub struct ServerStatus {
    pub leader: u64,
    pub leader_changes: u64,
    pub keys: usize,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub db_size: u64,
    pub revision: i64,
}

pub struct Server {
    store: Arc<Store>,
    raft: RaftNode,
    waits: Arc<WaitTable>,
    applied: watch::Receiver<u64>,
    request_ids: Arc<RequestIds>,
    lessor: Arc<Lessor>,
    watches: Arc<WatchHub>,
    member_id: u64,
    cluster_id: u64,
    max_request_bytes: usize,
    max_txn_ops: usize,
}

fn storage_error(what: &str) -> impl Fn(cairn_mvcc::MvccError) -> ServerError + '_ {
    move |e| ServerError::Internal(format!("{what}: {e}"))
}

impl Server {
    /// Opens the data directory (`member/wal`, `member/snap/db`, as etcd lays it out), replays
    /// the WAL into the store, and starts the Ready and apply loops.
    pub fn start(config: ServerConfig) -> Result<Arc<Server>, ServerError> {
        let member_dir = config.data_dir.join("member");
        let snap_dir = member_dir.join("snap");
        std::fs::create_dir_all(&snap_dir).map_err(|e| {
            ServerError::Internal(format!("cannot create {}: {e}", snap_dir.display()))
        })?;
        let (store, leased_keys) =
            Store::open(&snap_dir.join("db")).map_err(storage_error("cannot open the backend"))?;
        let store = Arc::new(store);

        let (member_id, cluster_id) = match (
            store
                .meta(META_MEMBER_ID)
                .map_err(storage_error("backend"))?,
            store
                .meta(META_CLUSTER_ID)
                .map_err(storage_error("backend"))?,
        ) {
            (Some(member), Some(cluster)) => (member, cluster),
            _ => {
                let (member, cluster) = initial_ids(&config)?;
                store
                    .set_meta(META_MEMBER_ID, member)
                    .map_err(storage_error("backend"))?;
                store
                    .set_meta(META_CLUSTER_ID, cluster)
                    .map_err(storage_error("backend"))?;
                (member, cluster)
            }
        };

        let applied_index = store.applied_index().map_err(storage_error("backend"))?;
        let ticks = (config.election_timeout.as_millis()
            / config.heartbeat_interval.as_millis().max(1))
        .max(2);
        let (events_tx, events_rx) = sync_channel(1024);
        let (raft, _ready_thread) = RaftNode::start(
            NodeConfig {
                id: member_id,
                initial_voters: vec![member_id],
                wal_dir: member_dir.join("wal"),
                applied: applied_index,
                tick_interval: config.heartbeat_interval,
                election_ticks: ticks as usize,
                queued_requests_max: QUEUED_REQUESTS_MAX,
                read_index_timeout: REQUEST_TIMEOUT,
                snapshot_entries: config.snapshot_count,
            },
            events_tx,
        )
        .map_err(|e| ServerError::Internal(format!("cannot start raft: {e}")))?;

        // etcd's minimum TTL: long enough to survive a leader election (1.5 election timeouts).
        let min_ttl_seconds =
            (config.election_timeout.as_millis() as u64 * 3 / 2).div_ceil(1000) as i64;
        let lessor = Arc::new(Lessor::new(min_ttl_seconds));
        lessor.restore(
            store.leases().map_err(storage_error("backend"))?,
            leased_keys,
        );

        let header_raft = raft.clone();
        let watches = Arc::new(WatchHub::new(
            store.clone(),
            Box::new(move |revision| ResponseHeader {
                cluster_id,
                member_id,
                revision,
                raft_term: header_raft.term(),
            }),
            config.max_request_bytes,
            config.watch_progress_notify_interval,
        ));
        spawn_watch_syncer(watches.clone())?;

        let waits = Arc::new(WaitTable::default());
        let (applied_tx, applied_rx) = watch::channel(applied_index);
        let apply_loop = ApplyLoop {
            store: store.clone(),
            events: events_rx,
            waits: waits.clone(),
            applied: applied_tx,
            raft: raft.clone(),
            lessor: lessor.clone(),
            watches: watches.clone(),
            applied_index,
        };
        std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || apply_loop.run())
            .map_err(|e| ServerError::Internal(format!("cannot start the apply loop: {e}")))?;

        tracing::info!(
            member_id = format_args!("{member_id:x}"),
            cluster_id = format_args!("{cluster_id:x}"),
            applied_index,
            "server started"
        );
        let request_ids = Arc::new(RequestIds::new());
        spawn_lease_driver(
            LeaseDriver {
                raft: raft.clone(),
                lessor: lessor.clone(),
                request_ids: request_ids.clone(),
                member_id,
            },
            config.lease_checkpoint_interval,
        )?;
        Ok(Arc::new(Server {
            store,
            raft,
            waits,
            applied: applied_rx,
            request_ids,
            lessor,
            watches,
            member_id,
            cluster_id,
            max_request_bytes: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
        }))
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// A full response header at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.term(),
        }
    }

    fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map_or_else(|| self.store.current_revision(), |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// Whether this member knows a leader: one atomic load, cheap enough for every request.
    pub fn has_leader(&self) -> bool {
        self.raft.leader() != 0
    }

    /// The store's current revision, for headers of responses that read nothing.
    pub fn current_revision(&self) -> i64 {
        self.store.current_revision()
    }

    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            leader: self.raft.leader(),
            leader_changes: self.raft.leader_changes(),
            keys: self.store.key_count(),
            raft_term: self.raft.term(),
            raft_index: self.raft.committed_index(),
            raft_applied_index: *self.applied.borrow(),
            db_size: self.store.size_bytes(),
            revision: self.store.current_revision(),
        }
    }

    /// Waits until this member has applied everything committed when the call began, as
    /// confirmed by the leader: after it, a local read is linearizable.
    async fn read_barrier(&self) -> Result<(), ServerError> {
        let (tx, rx) = oneshot::channel();
        self.raft.read_index(Box::new(move |index| {
            let _ = tx.send(index);
        }))?;
        let index = tokio::time::timeout(REQUEST_TIMEOUT, rx)
            .await
            .map_err(|_| ServerError::Timeout)?
            .map_err(|_| ServerError::Stopped)??;
        let mut applied = self.applied.clone();
        tokio::time::timeout(REQUEST_TIMEOUT, applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| ServerError::Timeout)?
            .map_err(|_| ServerError::Stopped)?;
        Ok(())
    }

    async fn propose(&self, request: internal_request::Request) -> Result<Applied, ServerError> {
        let id = self.request_ids.next();
        let data = InternalRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        let outcome = self.waits.register(id);
        if let Err(e) = self.raft.propose(id, data) {
            self.waits.cancel(id);
            return Err(e.into());
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => {
                self.waits.cancel(id);
                Err(ServerError::Timeout)
            }
        }
    }

    /// Proposes `request` and returns its response, with a full header, once it is applied.
    async fn propose_for<R: AppliedResponse>(
        &self,
        request: internal_request::Request,
    ) -> Result<R, ServerError> {
        let mut response = R::from_applied(self.propose(request).await?).map_err(|other| {
            ServerError::Internal(format!(
                "the apply loop answered with the wrong kind of response: {other:?}"
            ))
        })?;
        self.fill_header(response.header_mut());
        Ok(response)
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, ServerError> {
        if request.key.is_empty() {
            return Err(ServerError::EmptyKey);
        }
        if !request.serializable {
            self.read_barrier().await?;
        }
        let view = self.store.read_view()?;
        let mut response = kv::range(&view, &request)?;
        self.fill_header(&mut response.header);
        Ok(response)
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, ServerError> {
        kv::check_put_shape(&request)?;
        self.propose_for(internal_request::Request::Put(request))
            .await
    }

    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError> {
        if request.key.is_empty() {
            return Err(ServerError::EmptyKey);
        }
        self.propose_for(internal_request::Request::DeleteRange(request))
            .await
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, ServerError> {
        kv::check_txn_shape(&request, self.max_txn_ops)?;
        let mut response = if kv::is_read_only(&request) {
            // Nothing to replicate: evaluate on a local view once it is known to be current.
            if !kv::is_serializable(&request) {
                self.read_barrier().await?;
            }
            let mut view = self.store.read_view()?;
            kv::txn(&mut view, request)?
        } else {
            return self
                .propose_for(internal_request::Request::Txn(request))
                .await;
        };
        self.fill_header(&mut response.header);
        Ok(response)
    }

    pub async fn compact(
        &self,
        request: CompactionRequest,
    ) -> Result<CompactionResponse, ServerError> {
        // Compaction is applied in full (index and backend) before the apply loop answers, so a
        // `physical` request needs no extra wait.
        self.propose_for(internal_request::Request::Compaction(request))
            .await
    }

    pub async fn lease_grant(
        &self,
        mut request: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        if request.ttl > MAX_LEASE_TTL_SECONDS {
            return Err(ServerError::LeaseTtlTooLarge);
        }
        if request.id == 0 {
            request.id = (self.request_ids.next() & i64::MAX as u64) as i64;
        }
        self.propose_for(internal_request::Request::LeaseGrant(request))
            .await
    }

    pub async fn lease_revoke(
        &self,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        self.propose_for(internal_request::Request::LeaseRevoke(request))
            .await
    }

    /// A keep-alive, answered by the leader from memory: the lease's TTL, or None if unknown.
    pub fn lease_renew(&self, id: i64) -> Result<Option<i64>, ServerError> {
        if self.raft.leader() != self.member_id {
            return Err(ServerError::NoLeader);
        }
        let Some((ttl, clear_checkpoint)) = self.lessor.renew(id) else {
            return Ok(None);
        };
        if clear_checkpoint {
            // Fire and forget: if it is lost, the next periodic checkpoint corrects it.
            let checkpoint = LeaseCheckpoint {
                id,
                remaining_ttl: 0,
            };
            let _ = propose_detached(
                &self.raft,
                &self.request_ids,
                internal_request::Request::LeaseCheckpoint(LeaseCheckpointRequest {
                    checkpoints: vec![checkpoint],
                }),
            );
        }
        Ok(Some(ttl))
    }

    pub fn lease_time_to_live(&self, id: i64, with_keys: bool) -> Option<LeaseTimeToLive> {
        self.lessor.time_to_live(id, with_keys)
    }

    pub fn watch_hub(&self) -> &WatchHub {
        &self.watches
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.lessor.ids()
    }

    /// Makes everything applied so far durable in the backend, for a clean shutdown.
    pub fn persist(&self) -> Result<(), ServerError> {
        self.store.persist().map_err(storage_error("backend"))
    }
}

/// How often unsynced watchers are caught up from the backend.
const WATCH_SYNC_INTERVAL: Duration = Duration::from_millis(50);

fn spawn_watch_syncer(watches: Arc<WatchHub>) -> Result<(), ServerError> {
    std::thread::Builder::new()
        .name("watch-sync".into())
        .spawn(move || {
            loop {
                std::thread::sleep(WATCH_SYNC_INTERVAL);
                watches.sync_round();
            }
        })
        .map_err(|e| ServerError::Internal(format!("cannot start the watch syncer: {e}")))?;
    Ok(())
}

/// How often the leader looks for expired leases.
const LEASE_EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// Leases checkpointed in one proposal at most, as etcd's batch.
const LEASE_CHECKPOINTS_PER_PROPOSAL: usize = 1000;

/// Proposes a request nobody waits for (the outcome goes to an empty slot in the wait table).
fn propose_detached(
    raft: &RaftNode,
    request_ids: &RequestIds,
    request: internal_request::Request,
) -> Result<(), cairn_raft::RaftError> {
    let request = InternalRequest {
        id: request_ids.next(),
        request: Some(request),
    };
    raft.propose(request.id, request.encode_to_vec())
}

/// What the leader's lease duties need.
struct LeaseDriver {
    raft: RaftNode,
    lessor: Arc<Lessor>,
    request_ids: Arc<RequestIds>,
    member_id: u64,
}

/// While this member leads: proposes a revoke for every lease that has run out, and
/// checkpoints remaining TTLs. Both go through Raft, so every member deletes the same keys at
/// the same revision and would resume the same TTLs.
fn spawn_lease_driver(
    driver: LeaseDriver,
    checkpoint_interval: Option<Duration>,
) -> Result<(), ServerError> {
    std::thread::Builder::new()
        .name("lease-driver".into())
        .spawn(move || {
            let mut last_checkpoint = std::time::Instant::now();
            loop {
                std::thread::sleep(LEASE_EXPIRY_CHECK);
                if driver.raft.leader() != driver.member_id {
                    continue;
                }
                for id in driver.lessor.expired(std::time::Instant::now()) {
                    let revoke = internal_request::Request::LeaseRevoke(LeaseRevokeRequest { id });
                    match propose_detached(&driver.raft, &driver.request_ids, revoke) {
                        Ok(()) => tracing::debug!(lease = format_args!("{id:x}"), "lease expired; revoking"),
                        Err(cairn_raft::RaftError::Stopped) => return,
                        Err(e) => tracing::warn!(error = %e, "cannot propose the revoke of an expired lease; will retry"),
                    }
                }
                if let Some(interval) = checkpoint_interval
                    && last_checkpoint.elapsed() >= interval
                {
                    last_checkpoint = std::time::Instant::now();
                    let due = driver.lessor.checkpoints_due(LEASE_CHECKPOINTS_PER_PROPOSAL);
                    if !due.is_empty() {
                        let checkpoints = due
                            .into_iter()
                            .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                            .collect();
                        let request = internal_request::Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints });
                        if let Err(e) = propose_detached(&driver.raft, &driver.request_ids, request) {
                            tracing::warn!(error = %e, "cannot propose lease checkpoints; will retry");
                        }
                    }
                }
            }
        })
        .map_err(|e| ServerError::Internal(format!("cannot start the lease driver: {e}")))?;
    Ok(())
}

/// The IDs a brand-new member takes from `--initial-cluster` and `--initial-cluster-token`.
fn initial_ids(config: &ServerConfig) -> Result<(u64, u64), ServerError> {
    let ids: Vec<(String, u64)> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| (name.clone(), member_id(urls, &config.initial_cluster_token)))
        .collect();
    let Some(&(_, own)) = ids.iter().find(|(name, _)| *name == config.name) else {
        return Err(ServerError::Internal(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            config.name
        )));
    };
    if ids.len() > 1 {
        return Err(ServerError::Internal(
            "multi-member clusters are not supported yet (issue #4): give --initial-cluster one member".into(),
        ));
    }
    let member_ids: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
    Ok((own, cluster_id(&member_ids)))
}
