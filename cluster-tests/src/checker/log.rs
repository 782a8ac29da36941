//! The logs on their own: every node holds the identical log, positions are dense from 1, and
//! each stream's versions rise by one.

use std::collections::HashMap;

use evlog_proto::v1::RecordedEvent;

use super::violation::{Violation, ViolationKind, messages};

/// Every log equals the first: same length, same events at every position.
pub(crate) fn check_identical(logs: &[(u64, Vec<RecordedEvent>)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let Some((reference_node, reference)) = logs.first() else {
        return vec![Violation::new(ViolationKind::Harness, "no logs to compare")];
    };
    for (node, log) in &logs[1..] {
        if log.len() != reference.len() {
            violations.push(Violation::new(
                ViolationKind::Divergence,
                format!(
                    "node {node} holds {} events, node {reference_node} holds {}",
                    log.len(),
                    reference.len()
                ),
            ));
        }
        if let Some((index, (ours, theirs))) = log
            .iter()
            .zip(reference)
            .enumerate()
            .find(|(_, (ours, theirs))| ours != theirs)
        {
            violations.push(Violation::new(
                ViolationKind::Divergence,
                format!(
                    "node {node} and node {reference_node} differ first at log entry {}: {} vs {}",
                    index + 1,
                    super::describe(ours),
                    super::describe(theirs)
                ),
            ));
        }
    }
    violations
}

/// Checks that every log equals the first: same length, same events at every position.
pub fn identical_logs(logs: &[(u64, Vec<RecordedEvent>)]) -> Vec<String> {
    messages(check_identical(logs))
}

/// Positions are 1, 2, 3, … and each stream's versions are 1, 2, 3, … in position order.
pub(crate) fn check_shape(log: &[RecordedEvent]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut stream_versions: HashMap<&str, u64> = HashMap::new();
    for (index, event) in log.iter().enumerate() {
        let expected_position = index as u64 + 1;
        if event.position != expected_position {
            violations.push(Violation::new(
                ViolationKind::Shape,
                format!(
                    "log entry {expected_position} has position {} (positions must be dense)",
                    event.position
                ),
            ));
        }
        let version = stream_versions.entry(event.stream.as_str()).or_insert(0);
        *version += 1;
        if event.stream_version != *version {
            violations.push(Violation::new(
                ViolationKind::Shape,
                format!(
                    "{} has stream version {}, expected {} (versions must rise by one)",
                    super::describe(event),
                    event.stream_version,
                    *version
                ),
            ));
            *version = event.stream_version;
        }
    }
    violations
}

/// Checks that positions are 1, 2, 3, … and that each stream's versions are 1, 2, 3, … in
/// position order.
pub fn log_shape(log: &[RecordedEvent]) -> Vec<String> {
    messages(check_shape(log))
}
