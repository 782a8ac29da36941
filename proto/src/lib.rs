//! The evlog gRPC API, package `evlog.v1`, generated from `proto/evlog/v1/evlog.proto`, and
//! the peer protocol, package `evlog.internal.v1` (`proto/evlog/internal/v1/peer.proto`),
//! which only nodes speak to each other, on their peer ports.
//!
//! `bytes` fields are `bytes::Bytes`, so event payloads pass through without copying.

#![allow(clippy::all, missing_docs)]

mod append_error;
pub mod codec;
pub mod metadata;

pub mod v1 {
    tonic::include_proto!("evlog.v1");
}

/// The node-to-node protocol: not a client API, not in [`FILE_DESCRIPTOR_SET`].
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("evlog.internal.v1");
    }
}

/// The encoded file descriptor set of `evlog.v1` (not of the peer protocol), for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/evlog_descriptor.bin"));

/// The encoded file descriptor set of the peer protocol (`evlog.internal.v1`): for naming its
/// methods (metric labels), never for reflection.
pub const PEER_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/evlog_peer_descriptor.bin"));
