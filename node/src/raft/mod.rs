//! evlog's thin layer over openraft, and the only door to it: openraft's API moves between
//! alphas, so only this module (and `raft-store`) names it.
//!
//! - `handle.rs`: [`RaftHandle`], what the rest of the node may ask of Raft (propose, read
//!   index, wait for apply, status, membership, watch the core).
//! - `proposals.rs`, `read_index.rs`: appends and read-index confirmations batched per node.
//! - `contact.rs`: whether this node is in touch with a leader (subscriptions end when not).
//! - `errors.rs`: one error enum per operation; `receipt.rs`: where an entry landed.
//! - `config.rs`: openraft's configuration from the node's; `bootstrap.rs`: initializing a
//!   new cluster, once; `log_purge.rs`: when the log is purged.
//! - `transport/`: the Raft network over gRPC (client, server, channel pool, encoding).

pub mod bootstrap;
pub mod config;
pub mod contact;
pub mod errors;
pub mod handle;
pub mod log_purge;
pub mod proposals;
pub mod read_index;
pub mod receipt;
pub mod transport;

pub use handle::RaftHandle;

/// openraft specialised to evlog's types and store.
pub type Raft =
    openraft::Raft<evlog_raft_store::type_config::TypeConfig, evlog_raft_store::StateMachine>;
