//! openraft's type configuration for evlog, and the aliases of openraft's generic types the
//! store and the node use: the one place that declares them.

use openraft::impls::BasicNode;

use crate::snapshot::SnapshotData;
use crate::types::Command;
use crate::types::CommandResponse;

/// Node ids are positive integers chosen by the operator (`--id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// evlog's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = BasicNode,
);

pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type LogId = openraft::LogId<LeaderId>;
pub type Vote = openraft::impls::Vote<LeaderId>;
pub type EntryPayload = openraft::EntryPayload<Command, NodeId, BasicNode>;
pub type Entry = openraft::Entry<LeaderId, EntryPayload>;
pub type Membership = openraft::Membership<NodeId, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderId, NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<LeaderId, NodeId, BasicNode, SnapshotData>;
