//! evlog's node and command line: the `evlog` binary is `main.rs` over this library, so tests
//! start a node in-process (`app::run` on a port-0 listener).
//!
//! Layers, top down: `grpc/` converts the wire and maps errors (tonic only); `service/`
//! decides with domain types (validation, forward or propose, consistency); `raft/` is the only
//! door to openraft (and its peer transport); `raft-store` holds the data. `app.rs` wires them
//! and supervises; `http/` serves `/metrics` and the status page from `metrics/`; `cli/` and `bench/` are the command line, clients through `evlog-client`.

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod raft;
pub mod service;
pub mod telemetry;
pub mod tls;
