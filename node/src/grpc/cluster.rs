//! `evlog.v1.Cluster` over gRPC: converts, calls the service, maps its errors.

use std::sync::Arc;

use evlog_proto::v1 as pb;
use evlog_proto::v1::cluster_server::Cluster;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::grpc::auth;
use crate::grpc::convert;
use crate::grpc::status::to_status;
use crate::service::access::AccessControl;
use crate::service::access::Need;
use crate::service::cluster::ClusterService;

pub struct ClusterGrpc {
    service: Arc<ClusterService>,
    access: Arc<AccessControl>,
    /// This node's advertised peer address, as `Status` reports it.
    peer_address: String,
    /// This node's HTTP address, as `Status` reports it (empty: none).
    http_address: String,
}

impl ClusterGrpc {
    pub fn new(
        service: Arc<ClusterService>,
        access: Arc<AccessControl>,
        peer_address: String,
        http_address: String,
    ) -> Self {
        Self {
            service,
            access,
            peer_address,
            http_address,
        }
    }

    /// Membership and leadership changes need ADMIN.
    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.access
            .check(&auth::principal(request), Need::Admin)
            .map_err(|error| to_status(error, false))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterGrpc {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(convert::status_response(
            &self.service.status(),
            &self.peer_address,
            &self.http_address,
        )))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.check_admin(&request)?;
        let request = request.into_inner();
        let changed = self
            .service
            .add_learner(request.node_id, request.address, request.peer_address)
            .await
            .map_err(|error| to_status(error, false))?;
        let last_log_index = self.service.status().last_log_index;
        Ok(Response::new(convert::membership_response(
            changed,
            last_log_index,
        )))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.check_admin(&request)?;
        let changed = self
            .service
            .change_membership(request.into_inner().voters)
            .await
            .map_err(|error| to_status(error, false))?;
        let last_log_index = self.service.status().last_log_index;
        Ok(Response::new(convert::membership_response(
            changed,
            last_log_index,
        )))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.check_admin(&request)?;
        let transferred = self
            .service
            .transfer_leader(request.into_inner().to)
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(convert::leader_transferred(transferred)))
    }
}
