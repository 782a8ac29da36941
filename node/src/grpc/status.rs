//! The one place where the service's errors become `tonic::Status` (code, message and
//! metadata), and where a status the leader answered a forwarded request with becomes an
//! error again (passed on to the client unchanged).

use evlog_proto::metadata;
use tonic::Code;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::raft::errors::LeaderHint;
use crate::raft::errors::LinearizeError;
use crate::raft::errors::WaitError;
use crate::service::ServiceError;
use crate::service::error::AnswerCode;
use crate::service::error::LeaderAnswer;

/// The gRPC status of `error`. `forwarded`: the request was handed to this node by a follower,
/// which then passes the status on as it is (the mark tells it so).
pub fn to_status(error: ServiceError, forwarded: bool) -> Status {
    let message = error.to_string();
    let mut status = match error {
        ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
        ServiceError::TooLarge(_) => Status::resource_exhausted(message),
        ServiceError::Busy(_) => {
            let mut status = Status::resource_exhausted(message);
            status
                .metadata_mut()
                .insert(metadata::BUSY, MetadataValue::from_static("1"));
            status
        }
        ServiceError::WrongExpectedVersion { actual, .. } => {
            let mut status = Status::failed_precondition(message);
            status
                .metadata_mut()
                .insert(metadata::ACTUAL_VERSION, MetadataValue::from(actual));
            status
        }
        ServiceError::WrongMetadataVersion { actual, .. } => {
            let mut status = Status::failed_precondition(message);
            status
                .metadata_mut()
                .insert(metadata::ACTUAL_VERSION, MetadataValue::from(actual));
            status
        }
        ServiceError::StreamTombstoned { .. } => Status::failed_precondition(message),
        ServiceError::OutOfRange { first, .. } => {
            let mut status = Status::out_of_range(message);
            status
                .metadata_mut()
                .insert(metadata::FIRST_RETAINED, MetadataValue::from(first));
            status
        }
        ServiceError::IdempotencyKeyReused { .. } => Status::already_exists(message),
        ServiceError::StreamNotFound { .. } | ServiceError::ConsumerNotFound { .. } => {
            Status::not_found(message)
        }
        ServiceError::ConsumerExists { .. } => Status::already_exists(message),
        ServiceError::MemberNotFound(_) => Status::not_found(message),
        ServiceError::FailedPrecondition(_) => Status::failed_precondition(message),
        ServiceError::NotFound(_) => Status::not_found(message),
        ServiceError::Unauthenticated(_) => Status::unauthenticated(message),
        ServiceError::PermissionDenied(_) => Status::permission_denied(message),
        ServiceError::NotLeader(hint) => with_leader(Status::unavailable(message), &hint),
        ServiceError::NoLeader { .. }
        | ServiceError::LeaderUnreachable { .. }
        | ServiceError::ForwardBroken { .. }
        | ServiceError::LeaseLost
        | ServiceError::Discarded(_)
        | ServiceError::OutcomeUnknown(_)
        | ServiceError::RaftStopped(_)
        | ServiceError::MembershipBusy(_)
        | ServiceError::TransferIncomplete(_)
        | ServiceError::LeaderLost { .. }
        | ServiceError::NotCaughtUp { .. }
        | ServiceError::ShuttingDown => Status::unavailable(message),
        ServiceError::ReadIndex(LinearizeError::Wait(WaitError::Timeout { .. })) => {
            Status::deadline_exceeded(message)
        }
        ServiceError::ReadIndex(_) => Status::unavailable(message),
        ServiceError::Timeout(_) => Status::deadline_exceeded(message),
        ServiceError::FromLeader(answer) => return leader_answer_status(answer),
        ServiceError::Storage(_) | ServiceError::Internal(_) => {
            tracing::error!("request failed: {message}");
            Status::new(Code::Internal, message)
        }
    };
    if forwarded {
        status
            .metadata_mut()
            .insert(metadata::FORWARDED, MetadataValue::from_static("1"));
    }
    status
}

/// Adds the leader's id and address, when known, to a not-leader status.
fn with_leader(mut status: Status, hint: &LeaderHint) -> Status {
    if let Some(id) = hint.leader_id {
        status
            .metadata_mut()
            .insert(metadata::LEADER_ID, MetadataValue::from(id));
    }
    if let Some(value) = hint
        .leader_address
        .as_ref()
        .and_then(|address| address.parse().ok())
    {
        status
            .metadata_mut()
            .insert(metadata::LEADER_ADDRESS, value);
    }
    status
}

/// The status a follower passes on for the leader's answer: the leader's code, message and
/// metadata.
fn leader_answer_status(answer: LeaderAnswer) -> Status {
    let code = match answer.code {
        AnswerCode::InvalidArgument => Code::InvalidArgument,
        AnswerCode::ResourceExhausted => Code::ResourceExhausted,
        AnswerCode::FailedPrecondition => Code::FailedPrecondition,
        AnswerCode::AlreadyExists => Code::AlreadyExists,
        AnswerCode::NotFound => Code::NotFound,
        AnswerCode::Unavailable => Code::Unavailable,
        AnswerCode::DeadlineExceeded => Code::DeadlineExceeded,
        AnswerCode::Unauthenticated => Code::Unauthenticated,
        AnswerCode::PermissionDenied => Code::PermissionDenied,
        AnswerCode::Internal => Code::Internal,
    };
    let mut status = with_leader(Status::new(code, answer.message), &answer.leader);
    if let Some(actual) = answer.actual_version {
        status
            .metadata_mut()
            .insert(metadata::ACTUAL_VERSION, MetadataValue::from(actual));
    }
    if answer.busy {
        status
            .metadata_mut()
            .insert(metadata::BUSY, MetadataValue::from_static("1"));
    }
    status
}

/// Whether a failed call never reached the other node: the connection could not be made, so
/// nothing was sent.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            || error.to_string() == "tcp connect error"
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// What a follower makes of the status the leader answered a forwarded request with. An
/// `UNAVAILABLE` without the leader's forwarded mark came from the way there (the leader
/// could not be reached), not from the leader.
pub fn from_leader_status(status: &Status, leader_id: u64) -> ServiceError {
    let code = match status.code() {
        Code::InvalidArgument => AnswerCode::InvalidArgument,
        Code::ResourceExhausted => AnswerCode::ResourceExhausted,
        Code::FailedPrecondition => AnswerCode::FailedPrecondition,
        Code::AlreadyExists => AnswerCode::AlreadyExists,
        Code::NotFound => AnswerCode::NotFound,
        Code::Unavailable if status.metadata().get(metadata::FORWARDED).is_some() => {
            AnswerCode::Unavailable
        }
        Code::Unavailable | Code::Cancelled | Code::Unknown if never_sent(status) => {
            return ServiceError::LeaderUnreachable {
                leader_id,
                detail: status.message().to_string(),
            };
        }
        // The connection broke (or the deadline passed) after the request may have reached
        // the leader: it may have been carried out.
        Code::Unavailable | Code::Cancelled | Code::Unknown => {
            return ServiceError::ForwardBroken {
                leader_id,
                detail: status.message().to_string(),
            };
        }
        Code::DeadlineExceeded => AnswerCode::DeadlineExceeded,
        Code::Unauthenticated => AnswerCode::Unauthenticated,
        Code::PermissionDenied => AnswerCode::PermissionDenied,
        _ => AnswerCode::Internal,
    };
    let value = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    ServiceError::FromLeader(LeaderAnswer {
        code,
        message: status.message().to_string(),
        busy: status.metadata().get(metadata::BUSY).is_some(),
        actual_version: value(metadata::ACTUAL_VERSION).and_then(|text| text.parse().ok()),
        leader: LeaderHint {
            leader_id: value(metadata::LEADER_ID).and_then(|text| text.parse().ok()),
            leader_address: value(metadata::LEADER_ADDRESS),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use evlog_raft_store::StoreError;

    use super::*;
    use crate::raft::errors::ReadIndexError;

    fn hint() -> LeaderHint {
        LeaderHint {
            leader_id: Some(2),
            leader_address: Some("127.0.0.1:50052".to_string()),
        }
    }

    /// An error, the code it becomes, and the metadata it carries.
    type Case = (ServiceError, Code, Vec<(&'static str, &'static str)>);

    /// Every kind of error, the code it becomes, and the metadata it carries.
    #[test]
    fn every_error_maps_to_its_code_and_metadata() {
        let cases: Vec<Case> = vec![
            (
                ServiceError::InvalidArgument("x".into()),
                Code::InvalidArgument,
                vec![],
            ),
            (
                ServiceError::TooLarge("x".into()),
                Code::ResourceExhausted,
                vec![],
            ),
            (
                ServiceError::Busy("x".into()),
                Code::ResourceExhausted,
                vec![(metadata::BUSY, "1")],
            ),
            (
                ServiceError::WrongExpectedVersion {
                    stream: "s".into(),
                    expected: 1,
                    actual: 4,
                },
                Code::FailedPrecondition,
                vec![(metadata::ACTUAL_VERSION, "4")],
            ),
            (
                ServiceError::IdempotencyKeyReused { key: "k".into() },
                Code::AlreadyExists,
                vec![],
            ),
            (
                ServiceError::WrongMetadataVersion {
                    stream: "s".into(),
                    expected: 1,
                    actual: 3,
                },
                Code::FailedPrecondition,
                vec![(metadata::ACTUAL_VERSION, "3")],
            ),
            (
                ServiceError::StreamTombstoned { stream: "s".into() },
                Code::FailedPrecondition,
                vec![],
            ),
            (
                ServiceError::OutOfRange {
                    target: "the log".into(),
                    unit: "position",
                    requested: 1,
                    first: 9,
                },
                Code::OutOfRange,
                vec![(metadata::FIRST_RETAINED, "9")],
            ),
            (
                ServiceError::StreamNotFound { stream: "s".into() },
                Code::NotFound,
                vec![],
            ),
            (
                ServiceError::ForwardBroken {
                    leader_id: 1,
                    detail: "reset".into(),
                },
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::NotLeader(hint()),
                Code::Unavailable,
                vec![
                    (metadata::LEADER_ID, "2"),
                    (metadata::LEADER_ADDRESS, "127.0.0.1:50052"),
                ],
            ),
            (
                ServiceError::NoLeader { waited_ms: 10 },
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::LeaderUnreachable {
                    leader_id: 2,
                    detail: "x".into(),
                },
                Code::Unavailable,
                vec![],
            ),
            (ServiceError::LeaseLost, Code::Unavailable, vec![]),
            (
                ServiceError::Discarded("x".into()),
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::OutcomeUnknown("x".into()),
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::RaftStopped("x".into()),
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::ReadIndex(LinearizeError::ReadIndex(ReadIndexError::NoLeader)),
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::ReadIndex(LinearizeError::Wait(WaitError::Timeout {
                    node_id: 1,
                    what: "log index 9".into(),
                })),
                Code::DeadlineExceeded,
                vec![],
            ),
            (
                ServiceError::NotCaughtUp {
                    node_id: 1,
                    cause: LinearizeError::ReadIndex(ReadIndexError::Timeout {
                        after: Duration::from_secs(1),
                    }),
                },
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::MembershipBusy("x".into()),
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::LeaderLost {
                    node_id: 2,
                    after_ms: 300,
                    next_from: 7,
                },
                Code::Unavailable,
                vec![],
            ),
            (
                ServiceError::Timeout("x".into()),
                Code::DeadlineExceeded,
                vec![],
            ),
            (ServiceError::ShuttingDown, Code::Unavailable, vec![]),
            (
                ServiceError::Storage(StoreError::Io("disk".into())),
                Code::Internal,
                vec![],
            ),
            (ServiceError::Internal("x".into()), Code::Internal, vec![]),
        ];
        for (error, code, expected) in cases {
            let kind = error.kind();
            let message = error.to_string();
            let status = to_status(error, false);
            assert_eq!(status.code(), code, "{kind}");
            assert_eq!(status.message(), message, "{kind}");
            for (key, value) in expected {
                assert_eq!(
                    status.metadata().get(key).and_then(|v| v.to_str().ok()),
                    Some(value),
                    "{kind}: {key}"
                );
            }
            assert!(
                status.metadata().get(metadata::FORWARDED).is_none(),
                "{kind}"
            );
        }
    }

    /// A follower passes the leader's refusal on with the same code, message and metadata.
    #[test]
    fn a_leader_refusal_passes_through_a_follower_unchanged() {
        let refusals = [
            ServiceError::WrongExpectedVersion {
                stream: "s".into(),
                expected: 1,
                actual: 4,
            },
            ServiceError::IdempotencyKeyReused { key: "k".into() },
            ServiceError::TooLarge("too big".into()),
            ServiceError::NotLeader(hint()),
            ServiceError::LeaseLost,
            ServiceError::Timeout("slow".into()),
            ServiceError::Busy("full".into()),
        ];
        for refusal in refusals {
            let at_leader = to_status(refusal, true);
            let at_follower = to_status(from_leader_status(&at_leader, 2), false);
            assert_eq!(at_follower.code(), at_leader.code());
            assert_eq!(at_follower.message(), at_leader.message());
            for key in [
                metadata::ACTUAL_VERSION,
                metadata::LEADER_ID,
                metadata::LEADER_ADDRESS,
                metadata::BUSY,
            ] {
                assert_eq!(
                    at_follower.metadata().get(key),
                    at_leader.metadata().get(key),
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn an_unreachable_leader_is_not_the_leaders_answer() {
        // The connection could not be made: nothing was sent.
        let mut refused = Status::unavailable("tcp connect error");
        refused.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(
            from_leader_status(&refused, 3),
            ServiceError::LeaderUnreachable { leader_id: 3, .. }
        ));
        // The call broke once under way (or its deadline passed): the leader may have
        // carried it out, and the client is told so.
        for broken in [
            Status::unavailable("connection reset"),
            Status::unknown("h2 protocol error"),
            Status::cancelled("Timeout expired"),
        ] {
            let error = from_leader_status(&broken, 3);
            assert!(
                matches!(error, ServiceError::ForwardBroken { leader_id: 3, .. }),
                "{error:?}"
            );
            let status = to_status(error, false);
            assert_eq!(status.code(), Code::Unavailable);
            assert!(
                status.message().contains("outcome is unknown"),
                "{status:?}"
            );
        }
    }
}
