//! The node's errors. Each says what went wrong in words a person understands; the one place
//! they become gRPC statuses is `grpc::status`.

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is malformed (bad stream name, missing field, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request exceeds a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// `expected_version` did not match the stream's version; nothing was appended.
    #[error("stream {stream:?} is at version {actual}, not the expected version {expected}")]
    WrongExpectedVersion {
        stream: String,
        expected: u64,
        actual: u64,
    },
    /// The idempotency key was used for a different request; nothing was appended.
    #[error(
        "idempotency key {key:?} was already used for a different request (same key, other stream, events or expected version)"
    )]
    IdempotencyKeyReused { key: String },
    /// What the request names does not exist (a stream with no events).
    #[error("{0}")]
    NotFound(String),
    /// This node is not the leader and could not hand the request on.
    #[error("this node is not the leader{}", leader_hint(.leader_id, .leader_address))]
    NotLeader {
        leader_id: Option<u64>,
        leader_address: Option<String>,
    },
    /// No leader, no quorum, or a peer unreachable: retry.
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed; the outcome of a write is unknown.
    #[error("{0}")]
    Timeout(String),
    /// The node's storage failed.
    #[error("storage error: {0}")]
    Storage(#[from] evlog_raft_store::StoreError),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(leader_id: &Option<u64>, leader_address: &Option<String>) -> String {
    match (leader_id, leader_address) {
        (Some(id), Some(address)) => format!("; the leader is node {id} at {address}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known yet".to_string(),
    }
}
