//! The peer transport: carries raft messages between the members of one cluster over HTTP/2
//! (a gRPC service on `--listen-peer-urls`), streams a backend snapshot to a member that fell
//! too far behind, and answers the few questions members ask each other directly (the
//! membership, forwarded lease keep-alives).
//!
//! One stream per peer, dialled by the sender, reconnected with backoff; a message that
//! cannot be delivered is dropped and raft is told the peer is unreachable, so raft's own
//! retries take over. It knows raft messages but not what they carry: it must never depend
//! on cairn-mvcc, cairn-server or cairn-api (the server plugs in through `LocalMember`).
//!
//! A member removed from the cluster is refused, whatever it sends, with a status only that
//! refusal carries (etcd answers 410 Gone); a member refused so learns it was removed, and is
//! told through `LocalMember::removed_from_cluster`.

mod peer;
mod service;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::{LeaseTimeToLiveResponse, MembershipResponse};
use cairn_raft::{Message, MessageSink, MessageType, RaftNode};
use tonic::transport::{Channel, Endpoint};

use service::PeerService;

/// The metadata key carrying the sender's cluster ID, in hex.
pub const CLUSTER_ID_HEADER: &str = "cairn-cluster-id";
/// The metadata key carrying the sender's member ID, in hex.
pub const FROM_HEADER: &str = "cairn-from";
/// The metadata key that marks a refusal of a removed member, so that the sender can tell it
/// from any other failure (a status code alone could also come from a proxy or a library).
const REMOVED_HEADER: &str = "cairn-member-removed";

/// Largest peer message accepted: a batch of raft entries up to raft's 1 MiB per message,
/// many messages at once.
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the transport needs from the member it runs in.
pub trait LocalMember: Send + Sync + 'static {
    /// Writes a consistent copy of the backend, holding at least every entry up to `index`,
    /// to a new file and returns its path. Blocking; the transport deletes the file after.
    fn export_backend(&self, index: u64) -> Result<PathBuf, String>;
    /// Where a backend received with raft snapshot `index` is put for the apply loop.
    fn incoming_backend_path(&self, index: u64) -> PathBuf;
    /// This member's view of the cluster.
    fn membership(&self) -> MembershipResponse;
    /// A keep-alive forwarded by another member; only the leader answers. Some(TTL) if the
    /// lease exists.
    fn lease_renew(&self, id: i64) -> Result<Option<i64>, String>;
    /// A lease's time to live asked by another member; only the leader answers, from the
    /// clock keep-alives renew.
    fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, String>;
    /// Whether learner `id` may be promoted; only the leader answers. Blocking.
    fn learner_in_sync(&self, id: u64) -> Result<bool, String>;
    /// Whether member `id` was removed from the cluster: its peer traffic is refused.
    fn is_removed(&self, id: u64) -> bool;
    /// A peer refused this member as removed from the cluster: it must stop for good.
    fn removed_from_cluster(&self);
}

/// The refusal of removed member `id`.
fn removed_status(id: u64) -> tonic::Status {
    let mut status = tonic::Status::permission_denied(format!(
        "member {id:x} has been permanently removed from the cluster"
    ));
    status.metadata_mut().insert(
        REMOVED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

fn is_removed_status(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::PermissionDenied && status.metadata().contains_key(REMOVED_HEADER)
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid peer URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("member {0:x} is not a known peer")]
    UnknownPeer(u64),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("no peer answered: {0}")]
    Unreachable(String),
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}

struct Peer {
    urls: Vec<String>,
    channel: Channel,
    outbox: tokio::sync::mpsc::Sender<Message>,
}

/// The transport of one member: a sink for the Ready loop's messages and the server side
/// of the peer protocol.
pub struct PeerTransport {
    local_id: u64,
    cluster_id: u64,
    peers: RwLock<HashMap<u64, Peer>>,
    node: OnceLock<RaftNode>,
    member: Arc<dyn LocalMember>,
    runtime: tokio::runtime::Handle,
}

/// A lazily connecting channel to the first of `urls`: a member advertises one peer URL in
/// practice, and tonic reconnects by itself.
fn lazy_channel(urls: &[String]) -> Result<Channel, TransportError> {
    let url = urls.first().ok_or_else(|| TransportError::InvalidUrl {
        url: String::new(),
        reason: "a member needs at least one peer URL".into(),
    })?;
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| TransportError::InvalidUrl {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .connect_lazy())
}

fn client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

impl PeerTransport {
    /// Must be called inside a tokio runtime: peer tasks run on it.
    pub fn new(local_id: u64, cluster_id: u64, member: Arc<dyn LocalMember>) -> Arc<PeerTransport> {
        Arc::new(PeerTransport {
            local_id,
            cluster_id,
            peers: RwLock::new(HashMap::new()),
            node: OnceLock::new(),
            member,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Connects the transport to the raft node it delivers to; once, before any traffic.
    pub fn attach(&self, node: RaftNode) {
        if self.node.set(node).is_err() {
            tracing::warn!("the peer transport was attached to a raft node twice; kept the first");
        }
    }

    fn node(&self) -> Option<&RaftNode> {
        self.node.get()
    }

    /// The gRPC service to serve on the peer URLs.
    fn service(self: &Arc<Self>) -> cairn_proto::cairnpb::peer_server::PeerServer<PeerService> {
        cairn_proto::cairnpb::peer_server::PeerServer::new(PeerService::new(self.clone()))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// Serves the peer protocol on each listener, in the background.
    pub fn serve(self: &Arc<Self>, listeners: Vec<tokio::net::TcpListener>) {
        for listener in listeners {
            let service = self.service();
            self.runtime.spawn(async move {
                // Nagle would hold raft's small messages back; tonic's own option reaches
                // only listeners it binds itself.
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |accepted| {
                        accepted.inspect(|socket| {
                            let _ = socket.set_nodelay(true);
                        })
                    },
                );
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await
                {
                    tracing::error!(error = %e, "the peer listener stopped");
                }
            });
        }
    }

    /// Adds `id` at `urls`, or points it at new URLs. The local member is never a peer.
    pub fn set_peer(self: &Arc<Self>, id: u64, urls: Vec<String>) -> Result<(), TransportError> {
        if id == self.local_id {
            return Ok(());
        }
        // Called from the apply loop's thread too: the channel needs the runtime.
        let _runtime = self.runtime.enter();
        let mut peers = self.peers.write().expect("peer map lock is never poisoned");
        if peers.get(&id).is_some_and(|p| p.urls == urls) {
            return Ok(());
        }
        let channel = lazy_channel(&urls)?;
        let (outbox, messages) = tokio::sync::mpsc::channel(peer::OUTBOX_MESSAGES_MAX);
        // Replacing the entry drops the old outbox, which ends the old peer task.
        peers.insert(
            id,
            Peer {
                urls,
                channel: channel.clone(),
                outbox,
            },
        );
        self.runtime.spawn(peer::run_stream(
            self.clone(),
            id,
            client(channel),
            messages,
        ));
        Ok(())
    }

    pub fn remove_peer(&self, id: u64) {
        self.peers
            .write()
            .expect("peer map lock is never poisoned")
            .remove(&id);
    }

    fn peer_client(&self, id: u64) -> Result<PeerClient<Channel>, TransportError> {
        let peers = self.peers.read().expect("peer map lock is never poisoned");
        let peer = peers.get(&id).ok_or(TransportError::UnknownPeer(id))?;
        Ok(client(peer.channel.clone()))
    }

    /// Forwards a lease keep-alive to `leader`; Some(TTL) if the lease exists.
    pub async fn forward_lease_renew(
        &self,
        leader: u64,
        id: i64,
    ) -> Result<Option<i64>, TransportError> {
        let mut client = self.peer_client(leader)?;
        let request = self.request_to_peer(cairn_proto::cairnpb::LeaseRenewRequest { id });
        let response = client
            .lease_renew(request)
            .await
            .map_err(|s| self.refusal(s))?
            .into_inner();
        Ok(response.found.then_some(response.ttl))
    }

    /// Asks `leader` for the time to live of lease `id`, with its keys if `keys`.
    pub async fn forward_lease_time_to_live(
        &self,
        leader: u64,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, TransportError> {
        let mut client = self.peer_client(leader)?;
        let request =
            self.request_to_peer(cairn_proto::cairnpb::LeaseTimeToLiveRequest { id, keys });
        Ok(client
            .lease_time_to_live(request)
            .await
            .map_err(|s| self.refusal(s))?
            .into_inner())
    }

    /// Asks `leader` whether learner `member` is in sync with it.
    pub async fn forward_learner_in_sync(
        &self,
        leader: u64,
        member: u64,
    ) -> Result<bool, TransportError> {
        let mut client = self.peer_client(leader)?;
        let request = self.request_to_peer(cairn_proto::cairnpb::LearnerInSyncRequest { member });
        Ok(client
            .learner_in_sync(request)
            .await
            .map_err(|s| self.refusal(s))?
            .into_inner()
            .in_sync)
    }

    /// What a peer's error status means; a refusal as removed is passed on to the member.
    fn refusal(&self, status: tonic::Status) -> TransportError {
        if is_removed_status(&status) {
            self.member.removed_from_cluster();
            return TransportError::Removed;
        }
        TransportError::Rpc(status)
    }

    /// A request to a peer, marked with this member's cluster and ID.
    fn request_to_peer<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        peer::identify(&mut request, self.cluster_id, self.local_id);
        request
    }
}

/// Asks members at `urls` for the cluster they belong to: how a member started with
/// `--initial-cluster-state=existing` learns its cluster ID and the other members.
pub async fn fetch_membership(urls: &[String]) -> Result<MembershipResponse, TransportError> {
    let mut failures = Vec::new();
    for url in urls {
        let channel = match Endpoint::from_shared(url.clone()) {
            Ok(endpoint) => endpoint.connect_timeout(CONNECT_TIMEOUT).connect().await,
            Err(e) => {
                failures.push(format!("{url}: {e}"));
                continue;
            }
        };
        match channel {
            Ok(channel) => match client(channel)
                .membership(cairn_proto::cairnpb::MembershipRequest {})
                .await
            {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => failures.push(format!("{url}: {}", status.message())),
            },
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    Err(TransportError::Unreachable(failures.join("; ")))
}

impl MessageSink for PeerTransport {
    fn send(&self, messages: Vec<Message>) {
        let peers = self.peers.read().expect("peer map lock is never poisoned");
        for message in messages {
            let to = message.to;
            let Some(peer) = peers.get(&to) else {
                tracing::debug!(
                    to = format_args!("{to:x}"),
                    "message to an unknown peer dropped"
                );
                continue;
            };
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let client = client(peer.channel.clone());
                let Some(node) = self.node().cloned() else {
                    continue;
                };
                self.runtime.spawn(peer::send_snapshot(
                    self.member.clone(),
                    node,
                    client,
                    message,
                    self.cluster_id,
                    self.local_id,
                ));
                continue;
            }
            if peer.outbox.try_send(message).is_err()
                && let Some(node) = self.node()
            {
                node.report_unreachable(to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const CLUSTER: u64 = 0xc1;
    const SERVING: u64 = 1;
    const REMOVED: u64 = 7;
    const MEMBER: u64 = 8;

    /// A member that knows no leases and counts `REMOVED` as removed.
    #[derive(Default)]
    struct FakeMember {
        told_removed: AtomicBool,
    }

    impl LocalMember for FakeMember {
        fn export_backend(&self, _index: u64) -> Result<PathBuf, String> {
            Err("no backend".into())
        }
        fn incoming_backend_path(&self, index: u64) -> PathBuf {
            PathBuf::from(format!("unused-{index}"))
        }
        fn membership(&self) -> MembershipResponse {
            MembershipResponse::default()
        }
        fn lease_renew(&self, _id: i64) -> Result<Option<i64>, String> {
            Ok(None)
        }
        fn lease_time_to_live(
            &self,
            _id: i64,
            _keys: bool,
        ) -> Result<LeaseTimeToLiveResponse, String> {
            Ok(LeaseTimeToLiveResponse::default())
        }
        fn learner_in_sync(&self, _id: u64) -> Result<bool, String> {
            Ok(false)
        }
        fn is_removed(&self, id: u64) -> bool {
            id == REMOVED
        }
        fn removed_from_cluster(&self) {
            self.told_removed.store(true, Ordering::SeqCst);
        }
    }

    /// A transport for member `id` that knows the serving member at `url`.
    fn sender(id: u64, url: &str) -> (Arc<FakeMember>, Arc<PeerTransport>) {
        let member = Arc::new(FakeMember::default());
        let transport = PeerTransport::new(id, CLUSTER, member.clone());
        transport
            .set_peer(SERVING, vec![url.to_owned()])
            .expect("valid peer URL");
        (member, transport)
    }

    #[tokio::test]
    async fn a_removed_member_is_refused_and_told_so_by_its_raft_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let serving = PeerTransport::new(SERVING, CLUSTER, Arc::new(FakeMember::default()));
        serving.serve(vec![listener]);

        let (member, removed) = sender(REMOVED, &url);
        assert!(matches!(
            removed.forward_lease_renew(SERVING, 5).await,
            Err(TransportError::Removed)
        ));
        assert!(member.told_removed.load(Ordering::SeqCst));

        // The raft stream, dialled by set_peer with nothing to send, is refused on its own.
        let (member, _removed) = sender(REMOVED, &url);
        tokio::time::timeout(Duration::from_secs(30), async {
            while !member.told_removed.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the raft stream of a removed member is refused");

        let (member, other) = sender(MEMBER, &url);
        assert_eq!(
            other
                .forward_lease_renew(SERVING, 5)
                .await
                .expect("a member that was not removed is answered"),
            None
        );
        assert!(!member.told_removed.load(Ordering::SeqCst));
    }
}
