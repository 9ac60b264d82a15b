//! Service `etcdserverpb.Lease`.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use cairn_server::Server;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::status::to_status;

/// Keep-alive answers buffered per stream before the sender waits for the client to read.
const KEEP_ALIVE_BUFFER: usize = 16;

pub struct LeaseService {
    pub server: Arc<Server>,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.server
            .lease_grant(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.server
            .lease_revoke(request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let server = self.server.clone();
        tokio::spawn(async move {
            while let Ok(Some(keep_alive)) = inbound.message().await {
                let answer = match server.lease_renew(keep_alive.id).await {
                    // An unknown lease is answered with TTL 0, as etcd does, not an error.
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(server.header(server.current_revision())),
                        id: keep_alive.id,
                        ttl: ttl.unwrap_or(0),
                    }),
                    Err(e) => Err(to_status(e)),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let answer = self
            .server
            .lease_time_to_live(request.id, request.keys)
            .await
            .map_err(to_status)?;
        let header = Some(self.server.header(self.server.current_revision()));
        let response = match answer {
            Some(ttl) => LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: ttl.remaining_seconds,
                granted_ttl: ttl.granted_seconds,
                keys: ttl.keys,
            },
            // etcd answers an unknown (or expired) lease with TTL -1 rather than an error.
            None => LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                ..LeaseTimeToLiveResponse::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.server.header(self.server.current_revision())),
            leases: self
                .server
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}
