//! Handing a request to the leader: the service decides to, a transport does it. The service
//! sees only this trait and domain types; `grpc/forward.rs` implements it over the pooled
//! peer channels (marking forwarded appends, so they are never forwarded twice).

use std::time::Duration;

use futures::future::BoxFuture;

use crate::raft::handle::LeaderTransferred;
use crate::raft::handle::MemberStatus;
use crate::service::append::AppendRequest;
use crate::service::append::Appended;
use crate::service::error::ServiceError;
use crate::service::event_log::StreamChange;
use crate::service::event_log::StreamChanged;

/// The leader a request goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub id: u64,
    pub address: String,
}

/// A membership change as the leader reports it.
#[derive(Clone, Debug)]
pub struct MembershipChanged {
    /// The log index of the change.
    pub log_index: u64,
    /// The members afterwards.
    pub members: Vec<MemberStatus>,
}

/// Sends requests to the leader. Every call is bounded by `timeout`; a refusal from the
/// leader comes back as [`ServiceError::FromLeader`], a leader that cannot be reached as
/// [`ServiceError::LeaderUnreachable`], no answer in time as [`ServiceError::Timeout`] (for
/// an append: outcome unknown).
pub trait Forward: Send + Sync {
    fn append(
        &self,
        leader: Leader,
        request: AppendRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Appended, ServiceError>>;

    /// Hands a whole `AppendMany` on: a result per append, in order, or the call's failure.
    fn append_many(
        &self,
        leader: Leader,
        requests: Vec<AppendRequest>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Result<Appended, ServiceError>>, ServiceError>>;

    /// Hands a stream change (metadata, deletion) on.
    fn change_stream(
        &self,
        leader: Leader,
        change: StreamChange,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<StreamChanged, ServiceError>>;

    fn add_learner(
        &self,
        leader: Leader,
        node_id: u64,
        node: evlog_raft_store::type_config::MemberNode,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<MembershipChanged, ServiceError>>;

    fn change_membership(
        &self,
        leader: Leader,
        voters: Vec<u64>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<MembershipChanged, ServiceError>>;

    /// Asks the leader to hand leadership to `to` (absent: its most caught-up voter).
    fn transfer_leader(
        &self,
        leader: Leader,
        to: Option<u64>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<LeaderTransferred, ServiceError>>;
}
