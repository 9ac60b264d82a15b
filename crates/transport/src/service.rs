//! The receiving side of the peer protocol.

use std::sync::Arc;

use cairn_proto::cairnpb::peer_server::Peer;
use cairn_proto::cairnpb::{
    LearnerInSyncRequest, LearnerInSyncResponse, LeaseRenewRequest, LeaseRenewResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MembershipRequest, MembershipResponse,
    RaftAck, RaftBatch, SnapshotAck, SnapshotChunk,
};
use cairn_raft::{Message, MessageType};
use protobuf::Message as _;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{CLUSTER_ID_HEADER, FROM_HEADER, PeerTransport, removed_status};

pub struct PeerService {
    transport: Arc<PeerTransport>,
    /// One incoming snapshot at a time: a resent snapshot shares its file with the first.
    receiving_snapshot: tokio::sync::Mutex<()>,
}

impl PeerService {
    pub(crate) fn new(transport: Arc<PeerTransport>) -> PeerService {
        PeerService {
            transport,
            receiving_snapshot: tokio::sync::Mutex::new(()),
        }
    }

    /// Refuses a sender from another cluster, as etcd does, so that a member started with the
    /// wrong token or data dir cannot disturb this one, and a member removed from this one.
    /// Returns the sender's ID.
    fn check_sender<T>(&self, request: &Request<T>) -> Result<u64, Status> {
        let header = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        let local = self.transport.cluster_id;
        let from =
            header(FROM_HEADER).ok_or_else(|| Status::invalid_argument("missing sender ID"))?;
        match header(CLUSTER_ID_HEADER) {
            Some(remote) if remote == local => self.check_not_removed(from).map(|()| from),
            Some(remote) => {
                tracing::warn!(
                    from = format_args!("{from:x}"),
                    remote_cluster_id = format_args!("{remote:x}"),
                    local_cluster_id = format_args!("{local:x}"),
                    "request cluster ID mismatch: refused a peer from another cluster"
                );
                Err(Status::failed_precondition(format!(
                    "cluster ID mismatch: this member is in cluster {local:x}, the sender in {remote:x}"
                )))
            }
            None => Err(Status::invalid_argument("missing cluster ID")),
        }
    }

    fn check_not_removed(&self, from: u64) -> Result<(), Status> {
        if self.transport.member.is_removed(from) {
            tracing::warn!(
                from = format_args!("{from:x}"),
                "refused a member removed from the cluster"
            );
            return Err(removed_status(from));
        }
        Ok(())
    }

    fn node(&self) -> Result<&cairn_raft::RaftNode, Status> {
        self.transport
            .node()
            .ok_or_else(|| Status::unavailable("the raft node is not started yet"))
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    Message::parse_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftAck>, Status> {
        let from = self.check_sender(&request)?;
        let node = self.node()?.clone();
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            // Removed while its stream was open: it learns only when it is refused.
            self.check_not_removed(from)?;
            for bytes in batch.messages {
                let message = decode(&bytes)?;
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    // A snapshot comes only with its backend, over the Snapshot call.
                    continue;
                }
                node.step(message);
            }
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        self.check_sender(&request)?;
        let node = self.node()?.clone();
        let _receiving = self.receiving_snapshot.lock().await;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let message = decode(&first.message)?;
        if message.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "the first chunk must carry a MsgSnapshot",
            ));
        }
        let path = self
            .transport
            .member
            .incoming_backend_path(message.get_snapshot().get_metadata().index);
        let partial = path.with_extension("partial");
        let io = |e: std::io::Error| {
            Status::internal(format!("cannot write {}: {e}", partial.display()))
        };
        let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
        file.write_all(&first.data).await.map_err(io)?;
        let mut bytes = first.data.len() as u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data).await.map_err(io)?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        tokio::fs::rename(&partial, &path).await.map_err(io)?;
        tracing::info!(
            from = format_args!("{:x}", message.from),
            index = message.get_snapshot().get_metadata().index,
            bytes,
            "received a snapshot"
        );
        node.step(message);
        Ok(Response::new(SnapshotAck {}))
    }

    async fn membership(
        &self,
        _request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        Ok(Response::new(self.transport.member.membership()))
    }

    async fn lease_renew(
        &self,
        request: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        self.check_sender(&request)?;
        let id = request.into_inner().id;
        match self.transport.member.lease_renew(id) {
            Ok(Some(ttl)) => Ok(Response::new(LeaseRenewResponse { ttl, found: true })),
            Ok(None) => Ok(Response::new(LeaseRenewResponse {
                ttl: 0,
                found: false,
            })),
            Err(e) => Err(Status::unavailable(e)),
        }
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.check_sender(&request)?;
        let request = request.into_inner();
        self.transport
            .member
            .lease_time_to_live(request.id, request.keys)
            .map(Response::new)
            .map_err(Status::unavailable)
    }

    async fn learner_in_sync(
        &self,
        request: Request<LearnerInSyncRequest>,
    ) -> Result<Response<LearnerInSyncResponse>, Status> {
        self.check_sender(&request)?;
        let member = request.into_inner().member;
        let local = self.transport.member.clone();
        let answer = tokio::task::spawn_blocking(move || local.learner_in_sync(member))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match answer {
            Ok(in_sync) => Ok(Response::new(LearnerInSyncResponse { in_sync })),
            Err(e) => Err(Status::failed_precondition(e)),
        }
    }
}
