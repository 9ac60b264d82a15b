//! Service `etcdserverpb.Maintenance`: `Status` now; the rest answers Unimplemented until
//! its issue lands.

use std::pin::Pin;
use std::sync::Arc;

use crate::status::to_status;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use cairn_server::{ETCD_VERSION, Server};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct MaintenanceService {
    pub server: Arc<Server>,
    pub quota_backend_bytes: i64,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("cairn: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Err(not_yet("Alarm"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.server.status();
        let db_size = status.db_size as i64;
        Ok(Response::new(StatusResponse {
            header: Some(self.server.header(status.revision)),
            version: ETCD_VERSION.to_string(),
            db_size,
            leader: status.leader,
            raft_index: status.raft_index,
            raft_term: status.raft_term,
            raft_applied_index: status.raft_applied_index,
            db_size_in_use: db_size,
            db_size_quota: self.quota_backend_bytes,
            is_learner: status.is_learner,
            ..StatusResponse::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.server
            .move_leader(request.into_inner().target_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.server.header(self.server.current_revision())),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
