//! openraft's type configuration for evlog, and the aliases of openraft's generic types the
//! store and the node use: the one place that declares them.

use crate::snapshot::SnapshotData;
use crate::types::Command;
use crate::types::CommandResponse;

/// Node ids are positive integers chosen by the operator (`--id`).
pub type NodeId = u64;

/// What the membership keeps of each member: where to reach it. A node serves clients and
/// peers on separate ports, so it has two addresses: followers forward client requests to
/// the leader's client address, and Raft traffic goes to peer addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberNode {
    /// Where its client services are served (its `--advertise`).
    pub client_address: String,
    /// Where it serves the peer protocol (its `--peer-advertise`). Empty in a membership
    /// recorded before evlog had a peer port (codec version 1 records): the node derives it
    /// from the client address (see the node's `config::derived_peer_address`).
    pub peer_address: String,
}

impl MemberNode {
    pub fn new(client_address: impl Into<String>, peer_address: impl Into<String>) -> Self {
        Self {
            client_address: client_address.into(),
            peer_address: peer_address.into(),
        }
    }
}

impl std::fmt::Display for MemberNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (peer {})", self.client_address, self.peer_address)
    }
}

openraft::declare_raft_types!(
    /// evlog's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = MemberNode,
);

pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type LogId = openraft::LogId<LeaderId>;
pub type Vote = openraft::impls::Vote<LeaderId>;
pub type EntryPayload = openraft::EntryPayload<Command, NodeId, MemberNode>;
pub type Entry = openraft::Entry<LeaderId, EntryPayload>;
pub type Membership = openraft::Membership<NodeId, MemberNode>;
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderId, NodeId, MemberNode>;
pub type Snapshot = openraft::Snapshot<LeaderId, NodeId, MemberNode, SnapshotData>;
