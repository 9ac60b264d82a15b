//! Service `etcdserverpb.KV`.

use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_server::Server;
use tonic::{Request, Response, Status};

use crate::status::to_status;

pub struct KvService {
    pub server: Arc<Server>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.server
            .range(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
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
        self.server
            .delete_range(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
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
        self.server
            .compact(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }
}
