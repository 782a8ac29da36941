//! evlog's thin layer over openraft: the peer network and the one facade the rest of the node
//! uses. openraft's API moves between alphas; only this module (and `raft-store`) names it.

pub mod channels;
pub mod handle;
pub mod network;
pub mod proposals;
pub mod read_index;
pub mod wire;

pub use handle::RaftHandle;

/// openraft specialised to evlog's types and store.
pub type Raft =
    openraft::Raft<evlog_raft_store::type_config::TypeConfig, evlog_raft_store::StateMachine>;
