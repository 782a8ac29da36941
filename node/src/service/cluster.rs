//! The cluster's service: this node's status, and membership changes (made on the leader:
//! a follower hands them on). Every call is bounded by the membership timeout.

use evlog_raft_store::type_config::MemberNode;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::raft::RaftHandle;
use crate::raft::errors::MembershipError;
use crate::raft::errors::TransferError;
use crate::raft::handle::LeaderTransferred;
use crate::raft::handle::NodeStatus;
use crate::service::error::ServiceError;
use crate::service::event_log::leader_to_forward_to;
use crate::service::forward::Forward;
use crate::service::forward::MembershipChanged;

pub struct ClusterService {
    handle: RaftHandle,
    forward: Arc<dyn Forward>,
    /// How long a membership change may take, adding a learner included (it waits until the
    /// learner has caught up).
    membership_timeout: Duration,
    /// How long the target of a leadership transfer may take to lead.
    transfer_timeout: Duration,
}

impl ClusterService {
    pub fn new(
        handle: RaftHandle,
        forward: Arc<dyn Forward>,
        membership_timeout: Duration,
        transfer_timeout: Duration,
    ) -> Self {
        Self {
            handle,
            forward,
            membership_timeout,
            transfer_timeout,
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        self.handle.status()
    }

    /// Adds a non-voting member at its client and peer addresses (an empty peer address: the
    /// default one, derived from the client address) and waits until it has caught up; on a
    /// follower, asks the leader to.
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: String,
        peer_address: String,
    ) -> Result<MembershipChanged, ServiceError> {
        if node_id == 0 || address.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "add learner needs a node id ≥ 1 and an address".to_string(),
            ));
        }
        let peer_address = if peer_address.is_empty() {
            crate::config::derived_peer_address(&address)
                .map_err(|error| ServiceError::InvalidArgument(format!("add learner: {error}")))?
        } else {
            peer_address
        };
        let node = MemberNode::new(address, peer_address);
        match self
            .handle
            .add_learner(node_id, node.clone(), self.membership_timeout)
            .await
        {
            Ok(log_index) => Ok(self.changed(log_index)),
            Err(MembershipError::NotLeader(_)) => {
                let leader = leader_to_forward_to(&self.handle, self.membership_timeout).await?;
                self.forward
                    .add_learner(leader, node_id, node, self.membership_timeout)
                    .await
            }
            Err(error) => Err(membership_error(error)),
        }
    }

    /// Sets the voters; on a follower, asks the leader to.
    pub async fn change_membership(
        &self,
        voters: Vec<u64>,
    ) -> Result<MembershipChanged, ServiceError> {
        let set: BTreeSet<u64> = voters.iter().copied().collect();
        if set.is_empty() || set.contains(&0) {
            return Err(ServiceError::InvalidArgument(
                "the new voter set must be non-empty node ids ≥ 1".to_string(),
            ));
        }
        match self
            .handle
            .change_membership(set, self.membership_timeout)
            .await
        {
            Ok(log_index) => Ok(self.changed(log_index)),
            Err(MembershipError::NotLeader(_)) => {
                let leader = leader_to_forward_to(&self.handle, self.membership_timeout).await?;
                self.forward
                    .change_membership(leader, voters, self.membership_timeout)
                    .await
            }
            Err(error) => Err(membership_error(error)),
        }
    }

    /// Hands leadership to voter `to` (absent: the most caught-up voting follower) and waits
    /// until it leads; on a follower, asks the leader to.
    pub async fn transfer_leader(
        &self,
        to: Option<u64>,
    ) -> Result<LeaderTransferred, ServiceError> {
        if to == Some(0) {
            return Err(ServiceError::InvalidArgument(
                "transfer leader needs a node id ≥ 1 (or none: the most caught-up voter)"
                    .to_string(),
            ));
        }
        match self.handle.transfer_leader(to, self.transfer_timeout).await {
            Ok(transferred) => {
                tracing::info!(
                    from = transferred.previous_leader_id,
                    to = transferred.leader_id,
                    term = transferred.term,
                    "leadership transferred on request"
                );
                Ok(transferred)
            }
            Err(TransferError::NotLeader(_)) => {
                let leader = leader_to_forward_to(&self.handle, self.transfer_timeout).await?;
                // The leader waits up to the transfer timeout; the call gets a little more.
                self.forward
                    .transfer_leader(leader, to, self.transfer_timeout + FORWARD_MARGIN)
                    .await
            }
            Err(error) => Err(transfer_error(error)),
        }
    }

    fn changed(&self, log_index: u64) -> MembershipChanged {
        MembershipChanged {
            log_index,
            members: self.handle.status().members,
        }
    }
}

/// What a forwarded call gets on top of the time the leader may take, for the way there and
/// back.
const FORWARD_MARGIN: Duration = Duration::from_secs(1);

fn transfer_error(error: TransferError) -> ServiceError {
    let message = error.to_string();
    match error {
        TransferError::NotLeader(hint) => ServiceError::NotLeader(hint),
        TransferError::UnknownMember { .. } => ServiceError::MemberNotFound(message),
        TransferError::NotAVoter { .. }
        | TransferError::NoOtherVoter
        | TransferError::TargetNotVoting { .. } => ServiceError::FailedPrecondition(message),
        TransferError::Timeout { .. } | TransferError::TargetUnavailable { .. } => {
            ServiceError::TransferIncomplete(message)
        }
        TransferError::Stopped(detail) => ServiceError::RaftStopped(detail),
    }
}

fn membership_error(error: MembershipError) -> ServiceError {
    match error {
        MembershipError::NotLeader(hint) => ServiceError::NotLeader(hint),
        MembershipError::Refused(detail) => ServiceError::InvalidArgument(detail),
        MembershipError::Unavailable(detail) => ServiceError::MembershipBusy(detail),
        MembershipError::Timeout(detail) => ServiceError::Timeout(detail),
        MembershipError::Stopped(detail) => ServiceError::RaftStopped(detail),
    }
}
