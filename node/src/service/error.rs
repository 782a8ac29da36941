//! The service layer's error: what a client request ended in, one variant per kind, in words a
//! person understands. `grpc/status.rs` is the one place these become gRPC statuses; a
//! metric counts them by [`ServiceError::kind`].

use evlog_raft_store::StoreError;

use crate::raft::errors::LeaderHint;
use crate::raft::errors::LinearizeError;

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (bad stream name, missing field, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request exceeds a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The node has as much work in flight as it takes: nothing was done; retry.
    #[error("node busy: {0}; nothing was done, retry")]
    Busy(String),
    /// `expected_version` did not match the stream's version; nothing was appended.
    #[error("stream {stream:?} is at version {actual}, not the expected version {expected}")]
    WrongExpectedVersion {
        stream: String,
        expected: u64,
        actual: u64,
    },
    /// The idempotency key was used for a different request; nothing was appended.
    #[error(
        "idempotency key {key:?} was already used for a different request (same key, other \
         stream, events or expected version)"
    )]
    IdempotencyKeyReused { key: String },
    /// A read or subscription that starts below the first event retention or a deletion left.
    #[error(
        "{target}: {unit} {requested} was removed by retention or a deletion; the first retained \
         {unit} is {first} (start there, or from the start)"
    )]
    OutOfRange {
        /// What was read: `stream "name"` or `the log`.
        target: String,
        /// `version` or `position`.
        unit: &'static str,
        requested: u64,
        first: u64,
    },
    /// `expected_metadata_version` did not match; the metadata was not changed.
    #[error("stream {stream:?} has metadata version {actual}, not the expected version {expected}")]
    WrongMetadataVersion {
        stream: String,
        expected: u64,
        actual: u64,
    },
    /// The stream was deleted with a tombstone: it takes no appends or metadata changes.
    #[error("stream {stream:?} is deleted (tombstoned); it takes no appends or changes")]
    StreamTombstoned { stream: String },
    /// `GetStream` of a stream with no events.
    #[error("stream {stream:?} has no events")]
    StreamNotFound { stream: String },
    /// A consumer group that does not exist.
    #[error("consumer group {name:?} does not exist")]
    ConsumerNotFound { name: String },
    /// A consumer group of that name exists with other settings.
    #[error(
        "consumer group {name:?} already exists with another target, filter or settings; delete it first, or update its settings"
    )]
    ConsumerExists { name: String },
    /// This node does not lead and did not hand the request on.
    #[error("this node is not the leader; {0}")]
    NotLeader(LeaderHint),
    /// No leader was known in time: retry.
    #[error("no leader elected within {waited_ms} ms; retry")]
    NoLeader { waited_ms: u64 },
    /// The leader could not be reached to forward a request to it: nothing was done; retry.
    #[error("forwarding to leader {leader_id} failed: {detail}; retry")]
    LeaderUnreachable { leader_id: u64, detail: String },
    /// The call forwarding a request to the leader broke after it may have reached it: the
    /// request may have been carried out.
    #[error(
        "the call to leader {leader_id} broke after the request may have reached it ({detail}); \
         its outcome is unknown: retry with the same idempotency key"
    )]
    ForwardBroken { leader_id: u64, detail: String },
    /// This node leads but takes no writes now (it has not heard from a quorum within its
    /// lease, or leadership is changing): nothing was appended; retry.
    #[error(
        "this node leads but cannot take writes now (it has not heard from a quorum lately, or \
         leadership is changing); nothing was appended; retry"
    )]
    LeaseLost,
    /// The leader changed before the write committed; it was not applied: retry.
    #[error("the leader changed before the write committed; it was not applied: {0}")]
    Discarded(String),
    /// Raft stopped after the write was proposed: its outcome is unknown.
    #[error("raft stopped before the write was applied; its outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// Raft has stopped; nothing was done.
    #[error("raft has stopped: {0}")]
    RaftStopped(String),
    /// A read that needs a confirmed read index could not get one (or wait for it).
    #[error("no read index: {0}")]
    ReadIndex(LinearizeError),
    /// This node has not caught up with the leader since it started, and serves no read
    /// until it has.
    #[error(
        "node {node_id} has not caught up with the leader since it started, and serves no read \
         until it has: {cause}"
    )]
    NotCaughtUp { node_id: u64, cause: LinearizeError },
    /// A subscription's node lost touch with the leader: it ends, to be resumed elsewhere.
    #[error(
        "node {node_id} has had no leader with a quorum confirm a read index for {after_ms} ms; \
         the subscription ends: resume it from next_from {next_from} on another node"
    )]
    LeaderLost {
        node_id: u64,
        after_ms: u64,
        next_from: u64,
    },
    /// A membership change cannot be made now (another is under way): retry.
    #[error("a membership change cannot be made now: {0}; retry")]
    MembershipBusy(String),
    /// A member id that is not in the cluster.
    #[error("{0}")]
    MemberNotFound(String),
    /// The cluster is not in a state where the request makes sense (e.g. leadership offered
    /// to a learner): nothing was done.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Leadership was offered but not taken in time: retry.
    #[error("{0}")]
    TransferIncomplete(String),
    /// The deadline passed. For a write, the outcome is unknown: a retry with the same
    /// idempotency key is safe.
    #[error("{0}")]
    Timeout(String),
    /// The leader answered a forwarded request with this refusal; passed on as it is.
    #[error("{}", .0.message)]
    FromLeader(LeaderAnswer),
    /// What the request names does not exist (a token, a role).
    #[error("{0}")]
    NotFound(String),
    /// No credentials, or ones that authenticate no one (access control is on).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's grants do not cover the request: nothing was done.
    #[error("{0}")]
    PermissionDenied(String),
    /// The node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// The node's storage failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A refusal the leader sent back for a forwarded request: its code, message and details,
/// passed on to the client unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderAnswer {
    pub code: AnswerCode,
    pub message: String,
    /// On a wrong expected version: the stream's actual version.
    pub actual_version: Option<u64>,
    /// On a not-leader refusal: who leads now.
    pub leader: LeaderHint,
    /// The leader refused for load (`evlog-busy`): nothing was done.
    pub busy: bool,
}

/// The gRPC codes a leader answers with, in domain terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerCode {
    InvalidArgument,
    ResourceExhausted,
    FailedPrecondition,
    AlreadyExists,
    NotFound,
    Unavailable,
    DeadlineExceeded,
    Unauthenticated,
    PermissionDenied,
    Internal,
}

impl ServiceError {
    /// The error's kind, for counting (a stable, bounded set of names).
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::InvalidArgument(_) => "invalid_argument",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::Busy(_) => "busy",
            ServiceError::WrongExpectedVersion { .. } => "wrong_expected_version",
            ServiceError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            ServiceError::StreamNotFound { .. } => "stream_not_found",
            ServiceError::OutOfRange { .. } => "out_of_range",
            ServiceError::WrongMetadataVersion { .. } => "wrong_metadata_version",
            ServiceError::StreamTombstoned { .. } => "stream_tombstoned",
            ServiceError::ConsumerNotFound { .. } => "consumer_not_found",
            ServiceError::ConsumerExists { .. } => "consumer_exists",
            ServiceError::NotLeader(_) => "not_leader",
            ServiceError::NoLeader { .. } => "no_leader",
            ServiceError::LeaderUnreachable { .. } => "leader_unreachable",
            ServiceError::ForwardBroken { .. } => "forward_broken",
            ServiceError::LeaseLost => "lease_lost",
            ServiceError::Discarded(_) => "discarded",
            ServiceError::OutcomeUnknown(_) => "outcome_unknown",
            ServiceError::RaftStopped(_) => "raft_stopped",
            ServiceError::ReadIndex(_) => "no_read_index",
            ServiceError::NotCaughtUp { .. } => "not_caught_up",
            ServiceError::LeaderLost { .. } => "leader_lost",
            ServiceError::MembershipBusy(_) => "membership_busy",
            ServiceError::MemberNotFound(_) => "member_not_found",
            ServiceError::FailedPrecondition(_) => "failed_precondition",
            ServiceError::TransferIncomplete(_) => "transfer_incomplete",
            ServiceError::Timeout(_) => "timeout",
            ServiceError::FromLeader(_) => "from_leader",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Unauthenticated(_) => "unauthenticated",
            ServiceError::PermissionDenied(_) => "permission_denied",
            ServiceError::ShuttingDown => "shutting_down",
            ServiceError::Storage(_) => "storage",
            ServiceError::Internal(_) => "internal",
        }
    }
}
