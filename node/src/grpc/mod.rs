//! The gRPC services, one file each, plus `convert` (wire <-> domain, with validation) and
//! `status` (the one place errors become `tonic::Status`).

pub mod cluster;
pub mod convert;
pub mod event_log;
pub mod peer;
pub mod status;

/// Metadata marking an append a follower forwarded, so the receiver never forwards it again.
pub const FORWARDED_KEY: &str = "evlog-forwarded";
