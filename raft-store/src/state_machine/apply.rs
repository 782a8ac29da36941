//! The state machine's decisions, as pure functions: given what a stream looks like now and a
//! command, decide what to write and what to answer. No I/O here; `store.rs` carries the
//! decision out inside a redb transaction. Deterministic: every replica decides the same.

use crate::types::AppendCommand;
use crate::types::AppendOutcome;
use crate::types::CommandResponse;
use crate::types::IdempotentRecord;
use crate::types::RecordedEvent;
use crate::types::StreamInfo;

/// What applying one append decided.
#[derive(Debug, PartialEq, Eq)]
pub struct AppendDecision {
    pub response: CommandResponse,
    /// `None` when nothing is written (a rejected append).
    pub writes: Option<AppendWrites>,
}

/// The rows an accepted append writes.
#[derive(Debug, PartialEq, Eq)]
pub struct AppendWrites {
    pub stream: String,
    /// The stream's summary after the append.
    pub info: StreamInfo,
    pub events: Vec<RecordedEvent>,
}

/// Decides a keyed append against what the key already holds: `Some(response)` answers it
/// without appending (a retry, or a key reused for another request); `None` appends as usual.
/// A record older than the command's window (in append timestamps, `now_ms` being this
/// append's) no longer counts.
pub fn decide_idempotent(
    existing: Option<IdempotentRecord>,
    command: &AppendCommand,
    now_ms: u64,
) -> Option<CommandResponse> {
    let record = existing?;
    if now_ms.saturating_sub(record.timestamp_ms) > command.idempotency.window_ms {
        return None;
    }
    if record.fingerprint != command.request_fingerprint {
        return Some(CommandResponse::IdempotencyKeyReused);
    }
    Some(CommandResponse::Appended(AppendOutcome {
        deduplicated: true,
        ..record.outcome
    }))
}

/// Whether the oldest kept key should expire now, given the newest append's timestamp.
pub fn should_expire(
    oldest: &IdempotentRecord,
    key_count: u64,
    now_ms: u64,
    window_ms: u64,
    max_keys: u64,
) -> bool {
    key_count > max_keys || now_ms.saturating_sub(oldest.timestamp_ms) > window_ms
}

/// Decides an append against the stream's current summary (`None`: the stream has no events)
/// and the log's current head position; its events are recorded at `timestamp_ms`.
pub fn decide_append(
    head_position: u64,
    current: Option<StreamInfo>,
    command: &AppendCommand,
    timestamp_ms: u64,
) -> AppendDecision {
    let current = current.unwrap_or_default();
    if let Some(expected) = command.expected_version
        && expected != current.version
    {
        return AppendDecision {
            response: CommandResponse::WrongExpectedVersion {
                expected,
                actual: current.version,
            },
            writes: None,
        };
    }
    let count = command.events.len() as u64;
    if count == 0 {
        // Validation upstream refuses empty appends; stay total anyway.
        return AppendDecision {
            response: CommandResponse::Appended(AppendOutcome {
                first_position: head_position,
                last_position: head_position,
                stream_version: current.version,
                deduplicated: false,
            }),
            writes: None,
        };
    }
    let first_position = head_position + 1;
    let events: Vec<RecordedEvent> = command
        .events
        .iter()
        .enumerate()
        .map(|(offset, event)| RecordedEvent {
            position: first_position + offset as u64,
            stream: command.stream.clone(),
            stream_version: current.version + 1 + offset as u64,
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            content_type: event.content_type.clone(),
            data: event.data.clone(),
            metadata: event.metadata.clone(),
            timestamp_ms,
        })
        .collect();
    let last_position = first_position + count - 1;
    let info = StreamInfo {
        version: current.version + count,
        first_position: if current.version == 0 {
            first_position
        } else {
            current.first_position
        },
        last_position,
    };
    AppendDecision {
        response: CommandResponse::Appended(AppendOutcome {
            first_position,
            last_position,
            stream_version: info.version,
            deduplicated: false,
        }),
        writes: Some(AppendWrites {
            stream: command.stream.clone(),
            info,
            events,
        }),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::types::NewEvent;

    fn command(events: usize, expected_version: Option<u64>) -> AppendCommand {
        AppendCommand {
            stream: "s".to_string(),
            events: (0..events)
                .map(|i| NewEvent {
                    id: format!("e{i}"),
                    event_type: "T".to_string(),
                    content_type: String::new(),
                    data: Bytes::from(vec![i as u8]),
                    metadata: vec![],
                })
                .collect(),
            expected_version,
            idempotency_key: None,
            timestamp_ms: 99,
            request_fingerprint: 7,
            idempotency: Default::default(),
        }
    }

    #[test]
    fn first_append_to_a_new_stream_starts_at_version_one() {
        let decision = decide_append(10, None, &command(2, Some(0)), 99);
        let writes = decision.writes.expect("accepted");
        assert_eq!(
            writes.info,
            StreamInfo {
                version: 2,
                first_position: 11,
                last_position: 12
            }
        );
        assert_eq!(
            writes
                .events
                .iter()
                .map(|e| (e.position, e.stream_version))
                .collect::<Vec<_>>(),
            vec![(11, 1), (12, 2)]
        );
        assert!(writes.events.iter().all(|e| e.timestamp_ms == 99));
        assert_eq!(
            decision.response,
            CommandResponse::Appended(AppendOutcome {
                first_position: 11,
                last_position: 12,
                stream_version: 2,
                deduplicated: false
            })
        );
    }

    #[test]
    fn append_to_an_existing_stream_keeps_its_first_position() {
        let current = StreamInfo {
            version: 3,
            first_position: 2,
            last_position: 7,
        };
        let writes = decide_append(20, Some(current), &command(1, None), 99)
            .writes
            .expect("accepted");
        assert_eq!(
            writes.info,
            StreamInfo {
                version: 4,
                first_position: 2,
                last_position: 21
            }
        );
        assert_eq!(writes.events[0].stream_version, 4);
    }

    #[test]
    fn wrong_expected_version_writes_nothing_and_reports_the_actual_version() {
        let current = StreamInfo {
            version: 3,
            first_position: 1,
            last_position: 3,
        };
        let decision = decide_append(3, Some(current), &command(1, Some(2)), 99);
        assert_eq!(decision.writes, None);
        assert_eq!(
            decision.response,
            CommandResponse::WrongExpectedVersion {
                expected: 2,
                actual: 3
            }
        );
        let decision = decide_append(0, None, &command(1, Some(1)), 99);
        assert_eq!(
            decision.response,
            CommandResponse::WrongExpectedVersion {
                expected: 1,
                actual: 0
            }
        );
    }

    #[test]
    fn matching_expected_version_is_accepted() {
        let current = StreamInfo {
            version: 3,
            first_position: 1,
            last_position: 3,
        };
        assert!(
            decide_append(3, Some(current), &command(1, Some(3)), 99)
                .writes
                .is_some()
        );
    }

    fn record(fingerprint: u64, timestamp_ms: u64) -> IdempotentRecord {
        IdempotentRecord {
            fingerprint,
            outcome: AppendOutcome {
                first_position: 4,
                last_position: 5,
                stream_version: 2,
                deduplicated: false,
            },
            log_index: 9,
            timestamp_ms,
        }
    }

    #[test]
    fn a_retry_with_the_same_key_returns_the_original_outcome() {
        let response = decide_idempotent(Some(record(7, 90)), &command(2, None), 1_000);
        let expected = AppendOutcome {
            first_position: 4,
            last_position: 5,
            stream_version: 2,
            deduplicated: true,
        };
        assert_eq!(response, Some(CommandResponse::Appended(expected)));
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused() {
        let response = decide_idempotent(Some(record(8, 90)), &command(2, None), 1_000);
        assert_eq!(response, Some(CommandResponse::IdempotencyKeyReused));
    }

    #[test]
    fn an_unknown_or_expired_key_appends_as_usual() {
        assert_eq!(decide_idempotent(None, &command(1, None), 1_000), None);
        let mut short_window = command(1, None);
        short_window.idempotency.window_ms = 30;
        assert_eq!(
            decide_idempotent(Some(record(7, 10)), &short_window, 99),
            None
        );
        assert!(decide_idempotent(Some(record(7, 10)), &short_window, 40).is_some());
    }

    #[test]
    fn events_are_recorded_at_the_timestamp_apply_decided() {
        let writes = decide_append(0, None, &command(2, None), 500)
            .writes
            .expect("accepted");
        assert!(writes.events.iter().all(|e| e.timestamp_ms == 500));
    }

    #[test]
    fn expiry_is_by_age_and_by_count() {
        assert!(!should_expire(&record(1, 100), 10, 150, 100, 10));
        assert!(should_expire(&record(1, 100), 10, 201, 100, 10));
        assert!(should_expire(&record(1, 100), 11, 150, 100, 10));
    }

    #[test]
    fn an_empty_append_writes_nothing() {
        assert_eq!(decide_append(5, None, &command(0, None), 99).writes, None);
    }
}
