//! Service `etcdserverpb.Cluster`: the membership, and changes to it through Raft.

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use cairn_server::Server;
use tonic::{Request, Response, Status};

use crate::status::to_status;

pub struct ClusterService {
    pub server: Arc<Server>,
}

impl ClusterService {
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.server.header(self.server.current_revision()))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let request = request.into_inner();
        let (member, members) = self
            .server
            .member_add(request.peer_ur_ls, request.is_learner)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let members = self
            .server
            .member_remove(request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let members = self
            .server
            .member_update(request.id, request.peer_ur_ls)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.server.member_list(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let members = self
            .server
            .member_promote(request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}
