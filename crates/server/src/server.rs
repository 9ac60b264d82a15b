//! `Server`: what the API layer calls. Writes become proposals that go through Raft and come
//! back from the apply loop; linearizable reads wait for a read index to be applied;
//! serializable reads go straight to the local store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use cairn_mvcc::Store;
use cairn_proto::cairnpb::{InternalRequest, internal_request};
use cairn_proto::cairnpb::{LeaseTimeToLiveResponse, MemberChange, MembershipResponse};
use cairn_proto::etcdserverpb::Member;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_raft::{MembershipChange, NodeConfig, RaftNode};
use cairn_transport::PeerTransport;
use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::apply::{Applied, AppliedResponse, ApplyLoop, WaitTable, install_received_backend};
use crate::error::storage_error;
use crate::ids::{RequestIds, cluster_id, member_id};
use crate::lease::{LeaseTimeToLive, Lessor, MAX_LEASE_TTL_SECONDS};
use crate::membership::Membership;
use crate::watch::WatchHub;
use crate::{ServerError, kv};

/// The etcd version Cairn answers as: its API is 3.5's.
pub const ETCD_VERSION: &str = "3.5.0";

/// How long a request may wait for consensus before `etcdserver: request timed out`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// How long a request that must reach the leader waits before asking again.
const LEADER_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Proposals and reads queued for the Ready loop before callers get `too many requests`.
const QUEUED_REQUESTS_MAX: usize = 16 * 1024;

const META_MEMBER_ID: &str = "member_id";
const META_CLUSTER_ID: &str = "cluster_id";
/// The raft snapshot index the backend was last installed from.
pub(crate) const META_INSTALLED_SNAPSHOT: &str = "installed_snapshot";
/// A learner is in sync, and may be promoted, once it holds this share of the leader's log.
const LEARNER_READY_PERCENT: u64 = 90;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// `--initial-cluster`: every member's name and peer URLs.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub initial_cluster_token: String,
    /// `--initial-cluster-state=existing`: join a running cluster that already added this
    /// member, instead of bootstrapping a new one.
    pub join_existing: bool,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: Vec<String>,
    /// `--advertise-client-urls`, published to the other members.
    pub client_urls: Vec<String>,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
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
    pub is_learner: bool,
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
    membership: Arc<Membership>,
    transport: Arc<PeerTransport>,
    strict_reconfig_check: bool,
    election_timeout: Duration,
    removed: watch::Receiver<bool>,
}

/// Who answers a call only the leader may answer.
enum LeaderCall {
    Here,
    Forward(u64),
}

/// Raised once this member learns it was removed from the cluster: it applied its own removal,
/// or a peer refused it as removed.
#[derive(Default)]
pub(crate) struct RemovedFlag(watch::Sender<bool>);

impl RemovedFlag {
    /// Raises the flag; the first time, says so in etcd's words.
    pub(crate) fn raise(&self) {
        if self
            .0
            .send_if_modified(|removed| !std::mem::replace(removed, true))
        {
            tracing::error!("the member has been permanently removed from the cluster");
            tracing::error!("the data-dir used by this member must be removed");
        }
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

impl Server {
    /// Opens the data directory (`member/wal`, `member/snap/db`, as etcd lays it out), replays
    /// the WAL into the store, and starts the Ready and apply loops and the peer transport.
    /// Peers are served on `peer_listeners` from the start: the other members need this one
    /// to elect a leader. Must run inside a tokio runtime.
    pub async fn start(
        config: ServerConfig,
        peer_listeners: Vec<tokio::net::TcpListener>,
    ) -> Result<Arc<Server>, ServerError> {
        let member_dir = config.data_dir.join("member");
        let snap_dir = member_dir.join("snap");
        std::fs::create_dir_all(&snap_dir).map_err(|e| {
            ServerError::Internal(format!("cannot create {}: {e}", snap_dir.display()))
        })?;
        let (store, leased_keys) =
            Store::open(&snap_dir.join("db")).map_err(storage_error("cannot open the backend"))?;
        let store = Arc::new(store);
        let membership = Arc::new(Membership::load(&store)?);

        let stored_ids = (
            store
                .meta(META_MEMBER_ID)
                .map_err(storage_error("backend"))?,
            store
                .meta(META_CLUSTER_ID)
                .map_err(storage_error("backend"))?,
        );
        let (member_id, cluster_id, initial_voters) = match stored_ids {
            (Some(member), Some(cluster)) => (member, cluster, Vec::new()),
            _ => {
                let bootstrap = if config.join_existing {
                    join_existing(&config).await?
                } else {
                    bootstrap_new(&config)?
                };
                let applied = store.applied_index().map_err(storage_error("backend"))?;
                store.write(applied, |w| membership.bootstrap(w, bootstrap.members))?;
                store
                    .set_meta(META_MEMBER_ID, bootstrap.member_id)
                    .map_err(storage_error("backend"))?;
                store
                    .set_meta(META_CLUSTER_ID, bootstrap.cluster_id)
                    .map_err(storage_error("backend"))?;
                (bootstrap.member_id, bootstrap.cluster_id, bootstrap.voters)
            }
        };

        let removed = Arc::new(RemovedFlag::default());
        if membership.is_removed(member_id) {
            // It applied its own removal before it stopped.
            removed.raise();
            return Err(ServerError::MemberRemoved);
        }
        let peer_facade = Arc::new(PeerFacade {
            server: std::sync::OnceLock::new(),
            snap_dir: snap_dir.clone(),
            membership: membership.clone(),
            removed: removed.clone(),
        });
        let transport = PeerTransport::new(member_id, cluster_id, peer_facade.clone());
        for member in membership.list() {
            transport
                .set_peer(member.id, member.peer_ur_ls.clone())
                .map_err(|e| ServerError::Internal(e.to_string()))?;
        }

        let ticks = (config.election_timeout.as_millis()
            / config.heartbeat_interval.as_millis().max(1))
        .max(2);
        let (events_tx, events_rx) = sync_channel(1024);
        let node_config = |applied: u64, installed_snapshot: u64| NodeConfig {
            id: member_id,
            initial_voters: initial_voters.clone(),
            wal_dir: member_dir.join("wal"),
            applied,
            installed_snapshot,
            transport: transport.clone(),
            tick_interval: config.heartbeat_interval,
            election_ticks: ticks as usize,
            queued_requests_max: QUEUED_REQUESTS_MAX,
            read_index_timeout: REQUEST_TIMEOUT,
            snapshot_entries: config.snapshot_count,
        };
        let installed = |store: &Store| -> Result<(u64, u64), ServerError> {
            Ok((
                store.applied_index().map_err(storage_error("backend"))?,
                store
                    .meta(META_INSTALLED_SNAPSHOT)
                    .map_err(storage_error("backend"))?
                    .unwrap_or(0),
            ))
        };
        let (mut applied_index, installed_snapshot) = installed(&store)?;
        let mut leased_keys = leased_keys;
        let raft = match RaftNode::start(
            node_config(applied_index, installed_snapshot),
            events_tx.clone(),
        ) {
            Ok((raft, _)) => raft,
            // Stopped between recording the leader's snapshot in the WAL and installing the
            // backend that came with it: install it now.
            Err(cairn_raft::RaftError::SnapshotNotInstalled { index, .. }) => {
                leased_keys = install_received_backend(&store, &membership, &snap_dir, index)?;
                let (applied, installed_snapshot) = installed(&store)?;
                applied_index = applied;
                RaftNode::start(node_config(applied, installed_snapshot), events_tx)
                    .map_err(|e| ServerError::Internal(format!("cannot start raft: {e}")))?
                    .0
            }
            Err(e) => return Err(ServerError::Internal(format!("cannot start raft: {e}"))),
        };
        transport.attach(raft.clone());
        transport.serve(peer_listeners);

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
            membership: membership.clone(),
            transport: transport.clone(),
            member_id,
            snap_dir: snap_dir.clone(),
            removed: removed.clone(),
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
        let request_ids = Arc::new(RequestIds::new(member_id));
        spawn_lease_driver(
            LeaseDriver {
                raft: raft.clone(),
                lessor: lessor.clone(),
                request_ids: request_ids.clone(),
                member_id,
            },
            config.lease_checkpoint_interval,
        )?;
        let server = Arc::new(Server {
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
            membership,
            transport,
            strict_reconfig_check: config.strict_reconfig_check,
            election_timeout: config.election_timeout,
            removed: removed.subscribe(),
        });
        let _ = peer_facade.server.set(Arc::downgrade(&server));
        let publish = tokio::spawn(publish_attributes(
            server.clone(),
            Member {
                id: member_id,
                name: config.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: config.client_urls.clone(),
                is_learner: false,
            },
        ));
        // As etcd, clients are served once this member is listed with its client URLs; a
        // member that cannot reach a quorum still serves (serializable reads) after a while,
        // and keeps trying to publish. A member that learns meanwhile that it was removed will
        // never be listed.
        tokio::select! {
            _ = tokio::time::timeout(PUBLISH_WAIT, publish) => Ok(server),
            removed = server.removed_from_cluster() => Err(removed),
        }
    }

    /// Resolves once this member learns it was removed from the cluster. It must then stop
    /// for good: its data dir can never rejoin.
    pub async fn removed_from_cluster(&self) -> ServerError {
        let mut removed = self.removed.clone();
        if removed.wait_for(|r| *r).await.is_err() {
            // The flag lives as long as the server: it can no longer be raised.
            std::future::pending::<()>().await;
        }
        ServerError::MemberRemoved
    }

    /// The peer transport, whose service is served on `--listen-peer-urls`.
    pub fn transport(&self) -> &Arc<PeerTransport> {
        &self.transport
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

    /// Whether this member is a learner: one atomic load, cheap enough for every request.
    pub fn is_learner(&self) -> bool {
        self.raft.is_learner()
    }

    /// `--election-timeout`.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
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
            raft_index: self.raft.last_index(),
            raft_applied_index: *self.applied.borrow(),
            db_size: self.store.size_bytes(),
            revision: self.store.current_revision(),
            is_learner: self.is_learner(),
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
        let proposed = self.raft.propose(id, data);
        self.wait_applied(id, outcome, proposed).await
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

    /// etcd's health read: a linearizable (or local) read that learners may do too, since
    /// they can ask the leader for a read index.
    pub async fn health_read(&self, serializable: bool) -> Result<(), ServerError> {
        if !serializable {
            self.read_barrier().await?;
        }
        self.store.read_view()?;
        Ok(())
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, ServerError> {
        if request.key.is_empty() {
            return Err(ServerError::EmptyKey);
        }
        if !request.serializable {
            // The API's learner gate lets every range through, since it cannot see whether
            // one is serializable: a learner serves only those, as etcd's.
            if self.is_learner() {
                return Err(ServerError::NotSupportedForLearner);
            }
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

    /// A keep-alive, answered by the leader from memory (a follower forwards it): the
    /// lease's TTL, or None if unknown.
    pub async fn lease_renew(&self, id: i64) -> Result<Option<i64>, ServerError> {
        match self.leader_call()? {
            LeaderCall::Here => self.lease_renew_as_leader(id),
            LeaderCall::Forward(leader) => self
                .transport
                .forward_lease_renew(leader, id)
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "lease keep-alive not forwarded to the leader");
                    ServerError::NoLeader
                }),
        }
    }

    /// Where a call only the leader may answer goes: here, or forwarded to the leader.
    fn leader_call(&self) -> Result<LeaderCall, ServerError> {
        match self.raft.leader() {
            0 => Err(ServerError::NoLeader),
            leader if leader == self.member_id => Ok(LeaderCall::Here),
            leader => Ok(LeaderCall::Forward(leader)),
        }
    }

    /// A keep-alive on the leader.
    fn lease_renew_as_leader(&self, id: i64) -> Result<Option<i64>, ServerError> {
        if self.raft.leader() != self.member_id {
            return Err(ServerError::NotLeader);
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

    /// `LeaseTimeToLive`, answered by the leader: keep-alives renew only its clock, so a
    /// follower forwards it, as etcd does. While there is no leader, or it cannot be reached,
    /// it is asked again until the request times out. None if the lease is unknown.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        with_keys: bool,
    ) -> Result<Option<LeaseTimeToLive>, ServerError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let answer = match self.leader_call() {
                Err(e) => Err(e),
                Ok(LeaderCall::Here) => self.lease_time_to_live_as_leader(id, with_keys),
                Ok(LeaderCall::Forward(leader)) => self
                    .transport
                    .forward_lease_time_to_live(leader, id, with_keys)
                    .await
                    .map(|response| {
                        response.found.then_some(LeaseTimeToLive {
                            remaining_seconds: response.ttl,
                            granted_seconds: response.granted_ttl,
                            keys: response.keys,
                        })
                    })
                    .map_err(|e| {
                        tracing::debug!(error = %e, "lease time-to-live not answered by the leader");
                        ServerError::Timeout
                    }),
            };
            match answer {
                Ok(ttl) => return Ok(ttl),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                // Leadership is moving: ask whoever leads next.
                Err(_) => tokio::time::sleep(LEADER_RETRY_INTERVAL).await,
            }
        }
    }

    /// `LeaseTimeToLive` on the leader, from its own clock.
    fn lease_time_to_live_as_leader(
        &self,
        id: i64,
        with_keys: bool,
    ) -> Result<Option<LeaseTimeToLive>, ServerError> {
        if self.raft.leader() != self.member_id {
            return Err(ServerError::NotLeader);
        }
        Ok(self.lessor.time_to_live(id, with_keys))
    }

    /// Waits for the outcome of proposal `id`, registered before it was proposed.
    async fn wait_applied(
        &self,
        id: u64,
        outcome: oneshot::Receiver<crate::apply::ApplyOutcome>,
        proposed: Result<(), cairn_raft::RaftError>,
    ) -> Result<Applied, ServerError> {
        if let Err(e) = proposed {
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

    async fn propose_membership(
        &self,
        change: MembershipChange,
        member: Member,
    ) -> Result<Vec<Member>, ServerError> {
        let id = self.request_ids.next();
        let context = MemberChange {
            member: Some(member.clone()),
            request_id: id,
        }
        .encode_to_vec();
        let outcome = self.waits.register(id);
        let proposed = self.raft.propose_membership(id, change, member.id, context);
        match self.wait_applied(id, outcome, proposed).await? {
            Applied::Members(members) => Ok(members),
            other => Err(ServerError::Internal(format!(
                "the apply loop answered a membership change with {other:?}"
            ))),
        }
    }

    pub fn member_list(&self) -> Vec<Member> {
        self.membership.list()
    }

    /// `MemberAdd`: the new member's ID is derived from its peer URLs and the time, as etcd's.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), ServerError> {
        if peer_urls.is_empty() || peer_urls.iter().any(|u| !valid_peer_url(u)) {
            return Err(ServerError::BadMemberUrls);
        }
        self.membership.check_add(&peer_urls, is_learner)?;
        if self.strict_reconfig_check && !is_learner {
            self.membership.check_quorum_after(1, None)?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = member_id(&peer_urls, &now.to_string());
        if self.membership.get(id).is_some() {
            return Err(ServerError::MemberExists);
        }
        if self.membership.is_removed(id) {
            // etcd's answer to an ID that was removed (`membership: ID removed` inside).
            return Err(ServerError::MemberNotFound);
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: peer_urls,
            client_ur_ls: Vec::new(),
            is_learner,
        };
        let change = if is_learner {
            MembershipChange::AddLearner
        } else {
            MembershipChange::AddVoter
        };
        let members = self.propose_membership(change, member.clone()).await?;
        Ok((member, members))
    }

    pub async fn member_remove(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        let member = self.membership.get(id).ok_or(ServerError::MemberNotFound)?;
        if self.strict_reconfig_check && !member.is_learner {
            self.membership.check_quorum_after(-1, Some(id))?;
        }
        self.propose_membership(MembershipChange::Remove, member)
            .await
    }

    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<Member>, ServerError> {
        if peer_urls.is_empty() || peer_urls.iter().any(|u| !valid_peer_url(u)) {
            return Err(ServerError::BadMemberUrls);
        }
        self.membership.get(id).ok_or(ServerError::MemberNotFound)?;
        if self
            .membership
            .list()
            .iter()
            .any(|m| m.id != id && m.peer_ur_ls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(ServerError::PeerUrlExists);
        }
        let update = Member {
            id,
            peer_ur_ls: peer_urls,
            ..Member::default()
        };
        match self
            .propose(internal_request::Request::MemberAttributes(update))
            .await?
        {
            Applied::Members(members) => Ok(members),
            other => Err(ServerError::Internal(format!(
                "the apply loop answered a member update with {other:?}"
            ))),
        }
    }

    /// `MemberPromote`: only a learner that holds nearly all of the leader's log, as etcd.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        let member = self.membership.get(id).ok_or(ServerError::MemberNotFound)?;
        if !member.is_learner {
            return Err(ServerError::NotLearner);
        }
        let in_sync = self.learner_in_sync(id).await?;
        if !in_sync {
            return Err(ServerError::LearnerNotReady);
        }
        if self.strict_reconfig_check {
            self.membership.check_quorum_after(1, None)?;
        }
        self.propose_membership(MembershipChange::AddVoter, member)
            .await
    }

    /// Asks the leader (this member or, forwarded, another) whether learner `id` is in sync.
    async fn learner_in_sync(&self, id: u64) -> Result<bool, ServerError> {
        match self.leader_call()? {
            LeaderCall::Here => self.learner_in_sync_as_leader(id).await,
            LeaderCall::Forward(leader) => self
                .transport
                .forward_learner_in_sync(leader, id)
                .await
                .map_err(|e| match e {
                    cairn_transport::TransportError::Rpc(status) => {
                        ServerError::Internal(status.message().to_owned())
                    }
                    _ => ServerError::NoLeader,
                }),
        }
    }

    /// Whether learner `id` holds enough of this member's log, asked of the leader (this
    /// member) by itself or, forwarded, by another member.
    async fn learner_in_sync_as_leader(&self, id: u64) -> Result<bool, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.raft.learner_in_sync(
            id,
            LEARNER_READY_PERCENT,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Some(in_sync))) => Ok(in_sync),
            Ok(Ok(None)) => Err(ServerError::NotLeader),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// `MoveLeader`: asked of the leader, hands leadership to voter `target` and waits until
    /// it has taken over.
    pub async fn move_leader(&self, target: u64) -> Result<(), ServerError> {
        if self.raft.leader() != self.member_id {
            return Err(ServerError::NotLeader);
        }
        let member = self
            .membership
            .get(target)
            .ok_or(ServerError::BadLeaderTransferee)?;
        if member.is_learner {
            return Err(ServerError::BadLeaderTransferee);
        }
        if target == self.member_id {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.election_timeout * 3;
        self.raft.transfer_leader(target)?;
        while self.raft.leader() != target {
            if tokio::time::Instant::now() > deadline {
                return Err(ServerError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
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
            let mut leading = false;
            loop {
                std::thread::sleep(LEASE_EXPIRY_CHECK);
                if driver.raft.leader() != driver.member_id {
                    leading = false;
                    continue;
                }
                if !leading {
                    leading = true;
                    driver.lessor.promote();
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

/// Where the backend received with raft snapshot `index` waits for the apply loop. Named by
/// index: a slower, older snapshot arriving meanwhile must not take the place of the one
/// raft accepted.
pub(crate) fn incoming_backend(snap_dir: &Path, index: u64) -> PathBuf {
    snap_dir.join(format!("incoming-{index:016x}.db"))
}

/// Who this member is in a cluster it is joining for the first time.
struct Bootstrap {
    member_id: u64,
    cluster_id: u64,
    /// The voters of a brand-new cluster; empty when joining (the leader's snapshot tells).
    voters: Vec<u64>,
    members: Vec<Member>,
}

/// A brand-new cluster: IDs derived from `--initial-cluster` and `--initial-cluster-token`
/// exactly as etcd derives them, so every member computes the same.
fn bootstrap_new(config: &ServerConfig) -> Result<Bootstrap, ServerError> {
    let members: Vec<Member> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| Member {
            id: member_id(urls, &config.initial_cluster_token),
            name: name.clone(),
            peer_ur_ls: urls.clone(),
            // Each member publishes its own client URLs through raft once it has started.
            client_ur_ls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let Some(own) = members.iter().find(|m| m.name == config.name) else {
        return Err(ServerError::Internal(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            config.name
        )));
    };
    let mut own_urls = own.peer_ur_ls.clone();
    own_urls.sort();
    let mut advertised = config.peer_urls.clone();
    advertised.sort();
    if !advertised.is_empty() && own_urls != advertised {
        return Err(ServerError::Internal(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} (the URLs of this member must match)",
            config.name,
            own_urls.join(","),
            advertised.join(",")
        )));
    }
    let voters: Vec<u64> = members.iter().map(|m| m.id).collect();
    let mut unique = voters.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != voters.len() {
        return Err(ServerError::Internal(
            "--initial-cluster names the same peer URLs twice".into(),
        ));
    }
    Ok(Bootstrap {
        member_id: own.id,
        cluster_id: cluster_id(&voters),
        voters,
        members,
    })
}

/// `--initial-cluster-state=existing`: ask the running members who the cluster is; this
/// member must already have been added (`member add`) with its peer URLs.
async fn join_existing(config: &ServerConfig) -> Result<Bootstrap, ServerError> {
    let peers: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(name, _)| *name != config.name)
        .flat_map(|(_, urls)| urls.clone())
        .collect();
    if peers.is_empty() {
        return Err(ServerError::Internal(
            "--initial-cluster-state=existing needs the other members in --initial-cluster".into(),
        ));
    }
    let response = cairn_transport::fetch_membership(&peers)
        .await
        .map_err(|e| {
            ServerError::Internal(format!("cannot fetch the cluster from its members: {e}"))
        })?;
    let mut advertised = config.peer_urls.clone();
    advertised.sort();
    let own = response.members.iter().find(|m| {
        let mut urls = m.peer_ur_ls.clone();
        urls.sort();
        urls == advertised
    });
    let Some(own) = own else {
        return Err(ServerError::Internal(format!(
            "cluster {:x} has no member with peer URLs {}: add it first with `member add`",
            response.cluster_id,
            advertised.join(",")
        )));
    };
    Ok(Bootstrap {
        member_id: own.id,
        cluster_id: response.cluster_id,
        voters: Vec::new(),
        members: response.members.clone(),
    })
}

/// etcd accepts http and https peer URLs with a host and a port.
fn valid_peer_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let host_port = rest.trim_end_matches('/');
    host_port
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// What the peer transport asks of this member. It holds the server weakly: the server owns
/// the transport.
struct PeerFacade {
    server: std::sync::OnceLock<std::sync::Weak<Server>>,
    snap_dir: PathBuf,
    /// Held directly: removed members are refused from the first peer request on, before
    /// the server exists.
    membership: Arc<Membership>,
    removed: Arc<RemovedFlag>,
}

/// How long start waits for this member's attributes to be published before serving anyway.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// How long a snapshot export waits for the state machine to catch up with the snapshot.
const EXPORT_WAIT: Duration = Duration::from_secs(30);

impl PeerFacade {
    fn server(&self) -> Result<Arc<Server>, String> {
        self.server
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| "the server is not running".to_owned())
    }
}

impl cairn_transport::LocalMember for PeerFacade {
    fn export_backend(&self, index: u64) -> Result<PathBuf, String> {
        let server = self.server()?;
        let mut applied = server.applied.clone();
        // The transport calls this from a blocking thread of the runtime.
        tokio::runtime::Handle::current()
            .block_on(tokio::time::timeout(
                EXPORT_WAIT,
                applied.wait_for(|a| *a >= index),
            ))
            .map_err(|_| format!("the state machine did not reach index {index}"))?
            .map_err(|_| "the server stopped".to_owned())?;
        let path = self
            .snap_dir
            .join(format!("outgoing-{index}-{}.db", server.request_ids.next()));
        server
            .store
            .export_to(&path)
            .map_err(|e| format!("cannot export the backend: {e}"))?;
        Ok(path)
    }

    fn incoming_backend_path(&self, index: u64) -> PathBuf {
        incoming_backend(&self.snap_dir, index)
    }

    fn membership(&self) -> MembershipResponse {
        match self.server() {
            Ok(server) => MembershipResponse {
                cluster_id: server.cluster_id,
                members: server.membership.list(),
            },
            Err(_) => MembershipResponse::default(),
        }
    }

    fn lease_renew(&self, id: i64) -> Result<Option<i64>, String> {
        self.server()?
            .lease_renew_as_leader(id)
            .map_err(|e| e.to_string())
    }

    fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, String> {
        let answer = self
            .server()?
            .lease_time_to_live_as_leader(id, keys)
            .map_err(|e| e.to_string())?;
        Ok(match answer {
            Some(ttl) => LeaseTimeToLiveResponse {
                found: true,
                ttl: ttl.remaining_seconds,
                granted_ttl: ttl.granted_seconds,
                keys: ttl.keys,
            },
            None => LeaseTimeToLiveResponse::default(),
        })
    }

    fn is_removed(&self, id: u64) -> bool {
        self.membership.is_removed(id)
    }

    fn removed_from_cluster(&self) {
        self.removed.raise();
    }

    fn learner_in_sync(&self, id: u64) -> Result<bool, String> {
        let server = self.server()?;
        // The transport calls this from a blocking thread of the runtime.
        tokio::runtime::Handle::current()
            .block_on(server.learner_in_sync_as_leader(id))
            .map_err(|e| e.to_string())
    }
}

/// Publishes this member's name and client URLs through raft once a leader is known, as
/// etcd does, so every member lists them (and `--strict-reconfig-check` counts it started).
async fn publish_attributes(server: Arc<Server>, attributes: Member) {
    loop {
        let recorded = server.membership.get(attributes.id);
        let current = recorded.as_ref().is_some_and(|m| {
            m.name == attributes.name && m.client_ur_ls == attributes.client_ur_ls
        });
        if current {
            return;
        }
        if recorded.is_some() && server.has_leader() {
            let request = internal_request::Request::MemberAttributes(attributes.clone());
            match server.propose(request).await {
                Ok(_) => {
                    tracing::info!(name = attributes.name, "published member attributes");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "cannot publish member attributes yet"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
