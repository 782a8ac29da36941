//! `evlog.v1.Cluster` over gRPC: converts, calls the service, maps its errors.

use std::sync::Arc;

use evlog_proto::v1 as pb;
use evlog_proto::v1::cluster_server::Cluster;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::grpc::convert;
use crate::grpc::status::to_status;
use crate::service::cluster::ClusterService;

pub struct ClusterGrpc {
    service: Arc<ClusterService>,
    /// This node's advertised peer address, as `Status` reports it.
    peer_address: String,
    /// This node's HTTP address, as `Status` reports it (empty: none).
    http_address: String,
}

impl ClusterGrpc {
    pub fn new(service: Arc<ClusterService>, peer_address: String, http_address: String) -> Self {
        Self {
            service,
            peer_address,
            http_address,
        }
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
        let transferred = self
            .service
            .transfer_leader(request.into_inner().to)
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(convert::leader_transferred(transferred)))
    }
}
