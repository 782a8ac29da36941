//! Deciding one append against its stream, as a pure function: given the stream's summary and
//! the log's head, which events it writes (positions, versions, the recorded timestamp) and
//! what it answers. Deterministic: every replica decides the same.

use crate::types::AppendCommand;
use crate::types::AppendOutcome;
use crate::types::CommandResponse;
use crate::types::DataEncoding;
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
    /// The events, each with how its data is encoded (as the log entry carries it).
    pub events: Vec<(RecordedEvent, DataEncoding)>,
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
    let events: Vec<(RecordedEvent, DataEncoding)> = command
        .events
        .iter()
        .enumerate()
        .map(|(offset, event)| {
            let recorded = RecordedEvent {
                position: first_position + offset as u64,
                stream: command.stream.clone(),
                stream_version: current.version + 1 + offset as u64,
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                content_type: event.content_type.clone(),
                data: event.data.clone(),
                metadata: event.metadata.clone(),
                timestamp_ms,
            };
            (recorded, event.encoding)
        })
        .collect();
    let last_position = first_position + count - 1;
    let info = StreamInfo {
        version: current.version + count,
        first_version: current.first_version.max(1),
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
    use super::*;
    use crate::state_machine::test_support::command;

    #[test]
    fn first_append_to_a_new_stream_starts_at_version_one() {
        let decision = decide_append(10, None, &command(2, Some(0)), 99);
        let writes = decision.writes.expect("accepted");
        assert_eq!(
            writes.info,
            StreamInfo {
                version: 2,
                first_version: 1,
                first_position: 11,
                last_position: 12
            }
        );
        assert_eq!(
            writes
                .events
                .iter()
                .map(|(e, _)| (e.position, e.stream_version))
                .collect::<Vec<_>>(),
            vec![(11, 1), (12, 2)]
        );
        assert!(writes.events.iter().all(|(e, _)| e.timestamp_ms == 99));
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
            first_version: 1,
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
                first_version: 1,
                first_position: 2,
                last_position: 21
            }
        );
        assert_eq!(writes.events[0].0.stream_version, 4);
    }

    #[test]
    fn wrong_expected_version_writes_nothing_and_reports_the_actual_version() {
        let current = StreamInfo {
            version: 3,
            first_version: 1,
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
            first_version: 1,
            first_position: 1,
            last_position: 3,
        };
        assert!(
            decide_append(3, Some(current), &command(1, Some(3)), 99)
                .writes
                .is_some()
        );
    }

    #[test]
    fn events_are_recorded_at_the_timestamp_apply_decided() {
        let writes = decide_append(0, None, &command(2, None), 500)
            .writes
            .expect("accepted");
        assert!(writes.events.iter().all(|(e, _)| e.timestamp_ms == 500));
    }

    #[test]
    fn an_empty_append_writes_nothing() {
        assert_eq!(decide_append(5, None, &command(0, None), 99).writes, None);
    }
}
