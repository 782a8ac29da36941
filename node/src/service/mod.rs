//! The service layer, between gRPC and Raft (etcd's `EtcdServer` between `v3rpc` and raft):
//! it decides, with domain types and no gRPC. Validation, forward-or-propose, the settle loop
//! while leadership moves, consistency levels for reads.
//!
//! - `event_log.rs`: appends and reads.
//! - `subscribe.rs`: subscriptions, a cursor over the applied log.
//! - `consumers/`: consumer groups (the service, and each group's dispatcher on the leader).
//! - `cluster.rs`: status and membership.
//! - `maintenance.rs`: backups.
//! - `access.rs`: who a caller is and what it may do (tokens, roles, grants).
//! - `append.rs`: an append's request, validation, fingerprint and command (pure).
//! - `forward.rs`: the trait a transport implements to hand requests to the leader.
//! - `error.rs`: [`ServiceError`], one variant per kind; `grpc/status.rs` maps it to the wire.

pub mod access;
pub mod append;
pub mod cluster;
pub mod compression;
pub mod consumers;
pub mod error;
pub mod event_log;
pub mod forward;
pub mod maintenance;
pub mod retention;
pub mod subscribe;

pub use error::ServiceError;
