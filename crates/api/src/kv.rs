//! Service `etcdserverpb.KV`.

use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_server::{Server, ServerError};
use tonic::{Request, Response, Status};

use crate::status::to_status;

pub struct KvService {
    pub server: Arc<Server>,
}

impl KvService {
    /// Honours etcd's `hasleader` metadata: a client that requires a leader is refused at
    /// once while there is none, instead of waiting for one.
    fn check_leader<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let requires_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v == "true");
        if requires_leader && self.server.status().leader == 0 {
            return Err(to_status(ServerError::NoLeader));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.check_leader(&request)?;
        self.server
            .range(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.check_leader(&request)?;
        self.server
            .put(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.check_leader(&request)?;
        self.server
            .delete_range(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.check_leader(&request)?;
        self.server
            .txn(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.check_leader(&request)?;
        self.server
            .compact(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }
}
