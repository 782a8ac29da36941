//! evlog's node and client: the `evlog` binary is `main.rs` over this library, so tests can
//! start a node in-process (`app::run` on a port-0 listener) and use the same client.

pub mod app;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod grpc;
pub mod raft;
pub mod telemetry;
