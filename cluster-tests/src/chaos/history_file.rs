//! The history of a run that found a violation, written as JSON next to the report: every
//! operation and read with its times (microseconds since the load started), the fault's
//! timeline, the violations, and the final log of every node (positions, streams, versions,
//! ids), so the failure can be studied without rerunning it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use evlog_proto::v1::RecordedEvent;
use serde::Serialize;

use super::injector::Injection;
use super::run::RunResult;
use crate::history::{History, Operation, Outcome, ReadOperation, ReadOutcome, ReadTarget};

fn micros(epoch: Instant, instant: Instant) -> i128 {
    if instant >= epoch {
        instant.duration_since(epoch).as_micros() as i128
    } else {
        -(epoch.duration_since(instant).as_micros() as i128)
    }
}

#[derive(Serialize)]
struct EventRecord<'a> {
    id: &'a str,
    r#type: &'a str,
    bytes: usize,
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum OutcomeRecord<'a> {
    Acknowledged {
        first_position: u64,
        last_position: u64,
        stream_version: u64,
        deduplicated: bool,
    },
    Failed {
        code: String,
        message: &'a str,
        actual_version: Option<u64>,
    },
    Unknown {
        code: Option<String>,
        message: &'a str,
    },
}

#[derive(Serialize)]
struct OperationRecord<'a> {
    client: &'a str,
    node: u64,
    stream: &'a str,
    events: Vec<EventRecord<'a>>,
    expected_version: Option<u64>,
    idempotency_key: Option<&'a str>,
    invoked_us: i128,
    completed_us: Option<i128>,
    #[serde(flatten)]
    outcome: OutcomeRecord<'a>,
}

#[derive(Serialize)]
struct LoggedEvent<'a> {
    position: u64,
    stream: &'a str,
    stream_version: u64,
    id: &'a str,
}

#[derive(Serialize)]
struct ReadRecord<'a> {
    client: &'a str,
    node: u64,
    /// `$all` for the whole log, else the stream.
    target: &'a str,
    from_end: bool,
    linearizable: bool,
    invoked_us: i128,
    completed_us: Option<i128>,
    served_by: Option<u64>,
    head_position: Option<u64>,
    events: Vec<LoggedEvent<'a>>,
    error: Option<String>,
}

#[derive(Serialize)]
struct HistoryFile<'a> {
    run: usize,
    seed: u64,
    fault: &'a str,
    workload: &'a str,
    /// Microseconds since the load started.
    fault_at_us: i128,
    healed_at_us: i128,
    notes: &'a [String],
    violations: Vec<String>,
    operations: Vec<OperationRecord<'a>>,
    reads: Vec<ReadRecord<'a>>,
    logs: BTreeMap<u64, Vec<LoggedEvent<'a>>>,
}

fn logged(event: &RecordedEvent) -> LoggedEvent<'_> {
    LoggedEvent {
        position: event.position,
        stream: &event.stream,
        stream_version: event.stream_version,
        id: &event.id,
    }
}

fn operation(epoch: Instant, operation: &Operation) -> OperationRecord<'_> {
    OperationRecord {
        client: &operation.client,
        node: operation.node,
        stream: &operation.stream,
        events: operation
            .events
            .iter()
            .map(|event| EventRecord {
                id: &event.id,
                r#type: &event.r#type,
                bytes: event.data.len(),
            })
            .collect(),
        expected_version: operation.expected_version,
        idempotency_key: operation.idempotency_key.as_deref(),
        invoked_us: micros(epoch, operation.invoked),
        completed_us: operation.completed.map(|at| micros(epoch, at)),
        outcome: match &operation.outcome {
            Outcome::Acknowledged {
                first_position,
                last_position,
                stream_version,
                deduplicated,
            } => OutcomeRecord::Acknowledged {
                first_position: *first_position,
                last_position: *last_position,
                stream_version: *stream_version,
                deduplicated: *deduplicated,
            },
            Outcome::Failed {
                code,
                message,
                actual_version,
            } => OutcomeRecord::Failed {
                code: format!("{code:?}"),
                message,
                actual_version: *actual_version,
            },
            Outcome::Unknown { code, message } => OutcomeRecord::Unknown {
                code: code.map(|code| format!("{code:?}")),
                message,
            },
        },
    }
}

fn read(epoch: Instant, read: &ReadOperation) -> ReadRecord<'_> {
    let target = match &read.target {
        ReadTarget::All => "$all",
        ReadTarget::Stream(stream) => stream.as_str(),
    };
    let (served_by, head_position, events, error) = match &read.outcome {
        ReadOutcome::Served {
            events,
            head_position,
            served_by,
        } => (
            Some(*served_by),
            Some(*head_position),
            events.iter().map(logged).collect(),
            None,
        ),
        ReadOutcome::Failed { code, message } => {
            (None, None, Vec::new(), Some(format!("{code:?}: {message}")))
        }
    };
    ReadRecord {
        client: &read.client,
        node: read.node,
        target,
        from_end: read.from_end,
        linearizable: read.linearizable,
        invoked_us: micros(epoch, read.invoked),
        completed_us: read.completed.map(|at| micros(epoch, at)),
        served_by,
        head_position,
        events,
        error,
    }
}

/// Writes the history of `result` to `path`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write(
    path: &Path,
    result: &RunResult,
    history: &History,
    logs: &[(u64, Vec<RecordedEvent>)],
    injection: &Injection,
    epoch: Instant,
) -> std::io::Result<()> {
    let file = HistoryFile {
        run: result.spec.index,
        seed: result.spec.seed,
        fault: result.spec.fault.name(),
        workload: result.spec.load.name(),
        fault_at_us: micros(epoch, injection.fault_at),
        healed_at_us: micros(epoch, injection.healed_at),
        notes: &result.notes,
        violations: result.violations.iter().map(ToString::to_string).collect(),
        operations: history
            .operations()
            .iter()
            .map(|recorded| operation(epoch, recorded))
            .collect(),
        reads: history
            .reads()
            .iter()
            .map(|recorded| read(epoch, recorded))
            .collect(),
        logs: logs
            .iter()
            .map(|(node, log)| (*node, log.iter().map(logged).collect()))
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}
