//! `evlog.v1.Cluster`: status, and membership changes (handed to the leader).

use std::collections::BTreeSet;

use evlog_proto::v1 as pb;
use evlog_proto::v1::cluster_client::ClusterClient;
use evlog_proto::v1::cluster_server::Cluster;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::error::NodeError;
use crate::raft::RaftHandle;
use crate::raft::channels::PeerChannels;
use crate::raft::handle::NodeStatus;

pub struct ClusterService {
    handle: RaftHandle,
    channels: PeerChannels,
}

impl ClusterService {
    pub fn new(handle: RaftHandle, channels: PeerChannels) -> Self {
        Self { handle, channels }
    }

    fn members(status: &NodeStatus) -> Vec<pb::Member> {
        status
            .members
            .iter()
            .map(|member| pb::Member {
                node_id: member.node_id,
                address: member.address.clone(),
                role: if member.voter { "voter" } else { "learner" }.to_string(),
                matched_index: member.matched_index,
                replication_lag: member
                    .matched_index
                    .map(|matched| status.last_log_index.saturating_sub(matched)),
            })
            .collect()
    }

    /// The leader's Cluster client, when this node is not the leader.
    fn leader_client(
        &self,
        error: NodeError,
    ) -> Result<ClusterClient<tonic::transport::Channel>, Status> {
        match error {
            NodeError::NotLeader {
                leader_address: Some(address),
                leader_id: Some(leader),
            } if leader != self.handle.node_id() => {
                Ok(ClusterClient::new(self.channels.get(&address)?))
            }
            other => Err(other.into()),
        }
    }

    fn membership_response(&self, log_index: u64) -> pb::MembershipResponse {
        pb::MembershipResponse {
            log_index,
            members: Self::members(&self.handle.status()),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.handle.status();
        let address = status
            .members
            .iter()
            .find(|member| member.node_id == status.node_id)
            .map(|member| member.address.clone())
            .unwrap_or_default();
        Ok(Response::new(pb::StatusResponse {
            node_id: status.node_id,
            role: status.role.to_string(),
            term: status.term,
            leader_id: status.leader_id.unwrap_or(0),
            leader_address: status.leader_address.clone().unwrap_or_default(),
            last_log_index: status.last_log_index,
            committed_index: status.committed_index,
            applied_index: status.applied_index,
            head_position: status.head_position,
            members: Self::members(&status),
            address,
            snapshot_index: status.snapshot_index,
            purged_index: status.purged_index,
            millis_since_quorum_ack: status.since_quorum_ack.map(|age| age.as_millis() as u64),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let inner = request.into_inner();
        if inner.node_id == 0 || inner.address.is_empty() {
            return Err(NodeError::InvalidArgument(
                "add learner needs a node id ≥ 1 and an address".to_string(),
            )
            .into());
        }
        match self
            .handle
            .add_learner(inner.node_id, inner.address.clone())
            .await
        {
            Ok(log_index) => Ok(Response::new(self.membership_response(log_index))),
            Err(error) => self.leader_client(error)?.add_learner(inner).await,
        }
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let inner = request.into_inner();
        let voters: BTreeSet<u64> = inner.voters.iter().copied().collect();
        if voters.is_empty() || voters.contains(&0) {
            return Err(NodeError::InvalidArgument(
                "the new voter set must be non-empty node ids ≥ 1".to_string(),
            )
            .into());
        }
        match self.handle.change_membership(voters).await {
            Ok(log_index) => Ok(Response::new(self.membership_response(log_index))),
            Err(error) => self.leader_client(error)?.change_membership(inner).await,
        }
    }
}
