//! Encoding of Raft messages inside the internal peer service: serde + postcard, a compact
//! binary format. Peers of one cluster run the same evlog version; the peer service is not a
//! client API and has no compatibility promise across versions.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, tonic::Status> {
    postcard::to_stdvec(value)
        .map(Bytes::from)
        .map_err(|error| {
            tonic::Status::internal(format!("encoding a raft message failed: {error}"))
        })
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, tonic::Status> {
    postcard::from_bytes(bytes).map_err(|error| {
        tonic::Status::invalid_argument(format!("malformed raft message: {error}"))
    })
}
