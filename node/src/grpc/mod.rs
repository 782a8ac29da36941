//! The gRPC services, tonic only: one file per service, each converting the wire request,
//! calling the service layer and mapping its errors; `convert.rs` (wire <-> domain),
//! `status.rs` (the one place errors become `tonic::Status`), `auth.rs` (who the caller is), `forward.rs` (the transport the
//! service hands requests to the leader with). The peer service is the raft layer's
//! (`raft/transport/server.rs`).

pub mod access;
pub mod admission;
pub mod auth;
pub mod cluster;
pub mod connections;
pub mod consumers;
pub mod convert;
pub mod event_log;
pub mod forward;
pub mod maintenance;
pub mod status;

#[cfg(test)]
mod fuzz_test;
