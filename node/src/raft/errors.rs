//! The raft layer's errors, one enum per operation, and the one place openraft's errors become
//! them. Each variant is a kind a caller can match on and a metric can count; the strings
//! they carry are details for a person, never what decides.

use std::time::Duration;

use evlog_raft_store::type_config::NodeId;
use evlog_raft_store::type_config::TypeConfig;
use openraft::error::ClientWriteError;
use openraft::error::ForwardToLeader;
use openraft::error::RaftError;

/// The leader as a node knows it: either part may be unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader_id: Option<NodeId>,
    pub leader_address: Option<String>,
}

impl LeaderHint {
    pub(crate) fn from_forward(forward: ForwardToLeader<TypeConfig>) -> Self {
        Self {
            leader_id: forward.leader_id,
            leader_address: forward.leader_node.map(|node| node.client_address),
        }
    }
}

impl std::fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.leader_id, &self.leader_address) {
            (Some(id), Some(address)) => write!(f, "the leader is node {id} at {address}"),
            (Some(id), None) => write!(f, "the leader is node {id}"),
            _ => f.write_str("no leader is known yet"),
        }
    }
}

/// Why a proposal was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead, or leads but has not heard from a quorum within its lease:
    /// the proposal was refused before it got a log id, so nothing was appended.
    #[error("this node is not the leader; {0}")]
    NotLeader(LeaderHint),
    /// The leader changed before the entry committed; it was not applied.
    #[error("the leader changed before the entry committed; it was not applied: {0}")]
    Discarded(String),
    /// Raft has stopped: the proposal was refused, nothing was appended.
    #[error("raft has stopped; nothing was proposed: {0}")]
    Halted(String),
    /// Raft stopped after the entry was proposed: it may or may not be applied.
    #[error("raft stopped before the entry was applied; its outcome is unknown: {0}")]
    Stopped(String),
    /// The node is shutting down and took nothing.
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// Why no read index could be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    /// Asked of a node that is not the leader.
    #[error("this node is not the leader; {0}")]
    NotLeader(LeaderHint),
    /// A follower that knows no leader to ask.
    #[error("no leader is known yet; retry")]
    NoLeader,
    /// The leader could not confirm its leadership with a quorum.
    #[error("no quorum confirmed the leader: {0}")]
    NoQuorum(String),
    /// The follower could not reach the leader, or the leader refused.
    #[error("asking leader {leader_id} for a read index failed: {detail}")]
    LeaderUnreachable { leader_id: NodeId, detail: String },
    /// Nothing was confirmed in time.
    #[error("no read index was confirmed within {} ms", .after.as_millis())]
    Timeout { after: Duration },
    /// Raft stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// Why a wait for this node's applied state ended without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed first.
    #[error("node {node_id} had not applied {what} before the deadline")]
    Timeout { node_id: NodeId, what: String },
    /// The node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// Why this node could not make itself ready for a read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinearizeError {
    #[error(transparent)]
    ReadIndex(#[from] ReadIndexError),
    #[error(transparent)]
    Wait(#[from] WaitError),
}

/// Why a membership change or an initialization did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Membership changes go through the leader; this node is not it.
    #[error("this node is not the leader; {0}")]
    NotLeader(LeaderHint),
    /// The change itself is refused (e.g. a voter set without the learners caught up).
    #[error("{0}")]
    Refused(String),
    /// The change could not be made now (another is under way): retry.
    #[error("{0}")]
    Unavailable(String),
    /// The change did not complete in time; it may still.
    #[error("{0}")]
    Timeout(String),
    /// Raft stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for MembershipError {
    fn from(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Self {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                MembershipError::NotLeader(LeaderHint::from_forward(forward))
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
                MembershipError::Refused(error.to_string())
            }
            RaftError::APIError(error) => MembershipError::Unavailable(error.to_string()),
            RaftError::Fatal(fatal) => MembershipError::Stopped(fatal.to_string()),
        }
    }
}

/// Why leadership was not handed over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Leadership is handed over by the leader; this node is not it.
    #[error("this node is not the leader; {0}")]
    NotLeader(LeaderHint),
    /// The target is not a member of the cluster.
    #[error("node {node_id} is not a member of the cluster")]
    UnknownMember { node_id: NodeId },
    /// The target is a learner: only a voter can lead.
    #[error("node {node_id} is a learner, not a voter: only a voter can lead (promote it first)")]
    NotAVoter { node_id: NodeId },
    /// The target does not vote yet (it started on an empty data directory and has not caught
    /// up): it would refuse the leadership.
    #[error(
        "node {node_id} does not vote yet (it started on an empty data directory and is catching \
         up with the leader); retry once it serves"
    )]
    TargetNotVoting { node_id: NodeId },
    /// The target could not be asked whether it can lead: nothing was changed.
    #[error("node {node_id} does not answer ({detail}); leadership stays where it is")]
    TargetUnavailable { node_id: NodeId, detail: String },
    /// The leader is the only voter: there is nobody to hand leadership to.
    #[error("the leader is the only voter: there is no other voter to hand leadership to")]
    NoOtherVoter,
    /// The target did not take over in time; the cluster elects a leader on its own.
    #[error(
        "leadership was offered to node {to} but it did not take over within {} ms (it may be \
         down, behind, or not voting yet); the cluster elects a leader on its own within an \
         election timeout: retry, or name another voter",
        .after.as_millis()
    )]
    Timeout { to: NodeId, after: Duration },
    /// Raft stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
}
