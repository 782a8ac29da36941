//! The evlog gRPC API, package `evlog.v1`, generated from `proto/evlog/v1/evlog.proto`.
//!
//! `bytes` fields are `bytes::Bytes`, so event payloads pass through without copying.

#![allow(clippy::all, missing_docs)]

mod append_error;
pub mod codec;
pub mod metadata;

pub mod v1 {
    tonic::include_proto!("evlog.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/evlog_descriptor.bin"));
