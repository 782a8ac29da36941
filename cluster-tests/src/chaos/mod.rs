//! The chaos campaign: faults injected on a schedule, chosen from a seed, into a real
//! three-node cluster under a recorded load, then the checker's proof on the healed cluster.
//!
//! - [`fault`]: the faults, by name; [`injector`] carries one out (kill, pause, partitions
//!   through the link proxies, slow and lossy links, crash failpoints, a wiped node rejoining
//!   under a new id, catch-up from a snapshot);
//! - [`load`]: the workloads (appends, mixed appends and linearizable reads, one hot stream
//!   under expected-version contention, idempotent retries, appends under many subscribers),
//!   recording a [`crate::History`];
//! - [`consumers`]: the `consumer` workload's group of four members, and its checker;
//! - [`subscribers`]: every run's subscribers (one per node, through the Rust client; more
//!   with the `subscribe` workload), checked against the final log;
//! - [`run`]: one run on a fresh cluster: load, fault, heal, settle, check;
//! - [`availability`]: the longest gap between acknowledgements, and the time to the first
//!   acknowledgement after the fault and after the healing;
//! - [`campaign`] and [`report`]: runs of faults × workloads, a progress line per run, and
//!   the report (JSON and a summary table); [`history_file`] keeps a failing run's history.
//!
//! `scripts/chaos.sh` builds the binaries and runs `src/bin/chaos.rs`.

pub mod availability;
pub mod campaign;
pub mod consumers;
pub mod fault;
pub mod history_file;
pub mod injector;
pub mod load;
pub mod report;
pub mod run;
pub mod subscribers;

pub use campaign::{CampaignOptions, run_campaign};
pub use fault::Fault;
pub use load::{Load, LoadKind, LoadOptions};
pub use report::Report;
