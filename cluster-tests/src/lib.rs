//! A harness that starts real `evlog serve` processes on loopback and hurts them.
//!
//! The tests in `cluster-tests/tests/` treat the node as a black box: they start the `evlog`
//! binary as child processes (one temporary directory per cluster, one free loopback port per
//! node), talk to it over the public gRPC API only, and inject faults with signals (SIGKILL,
//! SIGTERM, SIGSTOP/SIGCONT). Nothing here links the node's code, so the tests observe exactly
//! what a client would.
//!
//! - [`Cluster`] owns the processes: start, kill, terminate, restart, pause, resume, and waits on
//!   cluster conditions (a leader everyone agrees on, all nodes applied the same log).
//! - [`wait`] is the one polling loop: every wait has a deadline and a description, and a
//!   timeout panics with the last observed state instead of hanging.
//! - [`Workload`] runs bounded concurrent appenders and records every operation into a
//!   [`History`]; [`RecordingWriter`] does the same for sequential appends.
//! - [`checker`] proves, from a history and the logs read back, that every acknowledged append
//!   is present exactly once at its position, nothing unsent appears, positions are dense,
//!   stream versions rise by one, the order respects real time, all nodes hold the same log,
//!   linearizable reads are fresh, and expected-version and idempotency results are consistent.
//! - [`proxy`] and [`Network`]: a fault-injecting TCP proxy on every directed peer link of a
//!   proxied cluster (`ClusterOptions::proxied`): delay, blackhole, drop, loss.
//! - [`chaos`]: the chaos campaign (`scripts/chaos.sh`): faults on a seeded schedule under
//!   recorded workloads, checked, with availability figures.
//!
//! The binary is found through `EVLOG_BIN`, or next to the test executable
//! (`target/<profile>/evlog`): run `cargo build --bins` (or `scripts/test.sh`) first.

mod binary;
pub mod chaos;
pub mod checker;
mod cluster;
mod cluster_options;
mod history;
pub mod http;
mod network;
mod node;
mod ports;
pub mod proxy;
mod recording_writer;
pub mod subscriber;
mod tls;
pub mod wait;
mod workload;
pub mod writers;

pub use binary::{evlog_binary, failpoints_compiled_in, require_failpoints};
pub use cluster::{Cluster, event, is_retryable};
pub use cluster_options::ClusterOptions;
pub use evlog_proto::v1 as proto;
pub use history::{
    History, Operation, Outcome, ReadOperation, ReadOutcome, ReadTarget, is_definite_failure,
};
pub use network::Network;
pub use node::FAILPOINTS;
pub use recording_writer::RecordingWriter;
pub use tls::TestTls;
pub use wait::{wait_for, wait_until};
pub use workload::{Workload, WorkloadOptions};

/// Deadlines for the waits of the cluster tests, sized for debug builds on a loaded two-core
/// machine: generous, because a wait that times out on a slow but correct cluster is a flaky
/// test, and a wait that succeeds returns as soon as its condition holds.
pub mod timeouts {
    use std::time::Duration;

    /// A leader everyone agrees on, after a start or a leader's death.
    pub const LEADER: Duration = Duration::from_secs(60);
    /// A restarted node catching up, or every node applying the whole log.
    pub const CATCH_UP: Duration = Duration::from_secs(120);
    /// A handful of acknowledgements from a running workload.
    pub const ACKS: Duration = Duration::from_secs(60);
}
