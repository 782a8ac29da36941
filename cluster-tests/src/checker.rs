//! Proves, from a client [`History`] and the logs read back from the nodes, that the cluster
//! kept its promises:
//!
//! - every node holds the identical log ([`identical_logs`]);
//! - positions are dense from 1 and each stream's versions rise by one ([`log_shape`]);
//! - every acknowledged append is present exactly once, at its returned positions, with the
//!   stream version it returned; an append with an unknown outcome is present entirely, in
//!   one contiguous run, or not at all; no event appears that was never sent, and every event
//!   is stored as sent ([`history_in_log`]);
//! - the order of positions respects real time: an append acknowledged before another was
//!   invoked has lower positions ([`real_time_order`]).
//!
//! Each check returns every violation it finds rather than stopping at the first, so a failure
//! shows its extent. [`assert_valid`] runs them all.

use std::collections::{BTreeMap, HashMap};

use evlog_proto::v1::{EventData, RecordedEvent};

use crate::history::{History, Operation, Outcome};

/// How many violations [`assert_valid`] prints.
const MAX_REPORTED_VIOLATIONS: usize = 25;

/// What a successful check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Events in the log.
    pub events: usize,
    /// Distinct streams in the log.
    pub streams: usize,
    /// Acknowledged appends, all found where they were acknowledged.
    pub acknowledged: usize,
    /// Appends with an unknown outcome found in the log.
    pub unknown_present: usize,
    /// Appends with an unknown outcome not in the log.
    pub unknown_absent: usize,
}

/// Checks that every log equals the first: same length, same events at every position.
pub fn identical_logs(logs: &[(u64, Vec<RecordedEvent>)]) -> Vec<String> {
    let mut violations = Vec::new();
    let Some((reference_node, reference)) = logs.first() else {
        return vec!["no logs to compare".to_owned()];
    };
    for (node, log) in &logs[1..] {
        if log.len() != reference.len() {
            violations.push(format!(
                "node {node} holds {} events, node {reference_node} holds {}",
                log.len(),
                reference.len()
            ));
        }
        if let Some((index, (ours, theirs))) = log
            .iter()
            .zip(reference)
            .enumerate()
            .find(|(_, (ours, theirs))| ours != theirs)
        {
            violations.push(format!(
                "node {node} and node {reference_node} differ first at log entry {}: \
                 {} vs {}",
                index + 1,
                describe(ours),
                describe(theirs)
            ));
        }
    }
    violations
}

/// Checks that positions are 1, 2, 3, … and that each stream's versions are 1, 2, 3, … in
/// position order.
pub fn log_shape(log: &[RecordedEvent]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut stream_versions: HashMap<&str, u64> = HashMap::new();
    for (index, event) in log.iter().enumerate() {
        let expected_position = index as u64 + 1;
        if event.position != expected_position {
            violations.push(format!(
                "log entry {expected_position} has position {} (positions must be dense)",
                event.position
            ));
        }
        let version = stream_versions.entry(event.stream.as_str()).or_insert(0);
        *version += 1;
        if event.stream_version != *version {
            violations.push(format!(
                "{} has stream version {}, expected {} (versions must rise by one)",
                describe(event),
                event.stream_version,
                *version
            ));
            *version = event.stream_version;
        }
    }
    violations
}

fn same_content(sent: &EventData, stored: &RecordedEvent, stream: &str) -> bool {
    stored.stream == stream
        && stored.r#type == sent.r#type
        && stored.content_type == sent.content_type
        && stored.data == sent.data
        && stored.metadata == sent.metadata
}

/// Checks the log against the history (see the module documentation).
pub fn history_in_log(history: &History, log: &[RecordedEvent]) -> (CheckReport, Vec<String>) {
    let mut violations = Vec::new();
    let mut report = CheckReport {
        events: log.len(),
        streams: log
            .iter()
            .map(|event| event.stream.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        ..CheckReport::default()
    };

    // Every event sent, by id.
    let mut sent: HashMap<&str, (&Operation, &EventData)> = HashMap::new();
    for operation in history.operations() {
        for event in &operation.events {
            if sent.insert(event.id.as_str(), (operation, event)).is_some() {
                violations.push(format!(
                    "the history sent event id {} twice (a harness bug: ids must be unique)",
                    event.id
                ));
            }
        }
    }

    // Where each id is in the log, and that it was sent as stored.
    let mut found: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut by_position: BTreeMap<u64, &RecordedEvent> = BTreeMap::new();
    for event in log {
        by_position.insert(event.position, event);
        found
            .entry(event.id.as_str())
            .or_default()
            .push(event.position);
        match sent.get(event.id.as_str()) {
            None => violations.push(format!("{} was never sent", describe(event))),
            Some((operation, data)) => {
                if !same_content(data, event, &operation.stream) {
                    violations.push(format!(
                        "{} differs from what {} sent to stream {}",
                        describe(event),
                        operation.client,
                        operation.stream
                    ));
                }
            }
        }
    }
    for (id, positions) in &found {
        if positions.len() > 1 {
            violations.push(format!(
                "event {id} appears {} times, at positions {positions:?}",
                positions.len()
            ));
        }
    }

    for operation in history.operations() {
        let positions: Vec<Option<u64>> = operation
            .events
            .iter()
            .map(|event| {
                found
                    .get(event.id.as_str())
                    .and_then(|positions| positions.first().copied())
            })
            .collect();
        match &operation.outcome {
            Outcome::Acknowledged {
                first_position,
                last_position,
                stream_version,
                ..
            } => {
                report.acknowledged += 1;
                check_acknowledged(
                    operation,
                    *first_position,
                    *last_position,
                    *stream_version,
                    &positions,
                    &by_position,
                    &mut violations,
                );
            }
            Outcome::Unknown { .. } => {
                let present = positions
                    .iter()
                    .filter(|position| position.is_some())
                    .count();
                if present == 0 {
                    report.unknown_absent += 1;
                } else if present < positions.len() {
                    violations.push(format!(
                        "an append by {} to {} with unknown outcome is partially in the log: \
                         {present} of {} events, at {positions:?}",
                        operation.client,
                        operation.stream,
                        positions.len()
                    ));
                } else {
                    report.unknown_present += 1;
                    let contiguous = positions
                        .windows(2)
                        .all(|pair| matches!(pair, [Some(a), Some(b)] if *b == *a + 1));
                    if !contiguous {
                        violations.push(format!(
                            "an append by {} to {} with unknown outcome is not contiguous: \
                             positions {positions:?}",
                            operation.client, operation.stream
                        ));
                    }
                }
            }
        }
    }
    (report, violations)
}

fn check_acknowledged(
    operation: &Operation,
    first_position: u64,
    last_position: u64,
    stream_version: u64,
    positions: &[Option<u64>],
    by_position: &BTreeMap<u64, &RecordedEvent>,
    violations: &mut Vec<String>,
) {
    let who = format!(
        "the append by {} to {} acknowledged at {first_position}..={last_position}",
        operation.client, operation.stream
    );
    let expected_count = operation.events.len() as u64;
    if last_position < first_position || last_position - first_position + 1 != expected_count {
        violations.push(format!(
            "{who} carried {expected_count} events but the acknowledged range does not"
        ));
    }
    for (offset, (event, position)) in operation.events.iter().zip(positions).enumerate() {
        let expected = first_position + offset as u64;
        match position {
            None => violations.push(format!(
                "{who}: event {} is missing from the log (acknowledged at {expected})",
                event.id
            )),
            Some(position) if *position != expected => violations.push(format!(
                "{who}: event {} is at position {position}, acknowledged at {expected}",
                event.id
            )),
            Some(_) => {}
        }
    }
    if let Some(last) = by_position.get(&last_position)
        && last.stream == operation.stream
        && last.stream_version != stream_version
    {
        violations.push(format!(
            "{who}: acknowledged stream version {stream_version}, but the log has {}",
            last.stream_version
        ));
    }
}

/// Checks that an append acknowledged before another was invoked has lower positions.
pub fn real_time_order(history: &History) -> Vec<String> {
    let mut acknowledged: Vec<(&Operation, u64, u64)> = history
        .operations()
        .iter()
        .filter_map(|operation| match operation.outcome {
            Outcome::Acknowledged {
                first_position,
                last_position,
                ..
            } if operation.completed.is_some() => Some((operation, first_position, last_position)),
            _ => None,
        })
        .collect();
    let mut by_completion = acknowledged.clone();
    by_completion.sort_by_key(|(operation, ..)| operation.completed);
    acknowledged.sort_by_key(|(operation, ..)| operation.invoked);

    let mut violations = Vec::new();
    // The highest last position among appends completed before the current invocation.
    let mut highest: Option<(&Operation, u64)> = None;
    let mut completed = by_completion.iter().peekable();
    for (operation, first_position, _) in &acknowledged {
        while let Some((earlier, _, last_position)) =
            completed.next_if(|(earlier, ..)| earlier.completed < Some(operation.invoked))
        {
            if highest.is_none_or(|(_, highest)| *last_position > highest) {
                highest = Some((earlier, *last_position));
            }
        }
        if let Some((earlier, last_position)) = highest
            && last_position >= *first_position
        {
            violations.push(format!(
                "the append by {} to {} at {first_position} was invoked after the append by \
                 {} to {} at {last_position} was acknowledged, yet is not after it",
                operation.client, operation.stream, earlier.client, earlier.stream
            ));
        }
    }
    violations
}

/// Runs every check on `history` and the logs of the nodes.
///
/// # Panics
///
/// When any check fails, listing the violations.
pub fn assert_valid(history: &History, logs: &[(u64, Vec<RecordedEvent>)]) -> CheckReport {
    let mut violations = identical_logs(logs);
    let (report, in_log) = match logs.first() {
        Some((_, log)) => {
            violations.extend(log_shape(log));
            history_in_log(history, log)
        }
        None => (CheckReport::default(), Vec::new()),
    };
    violations.extend(in_log);
    violations.extend(real_time_order(history));
    if !violations.is_empty() {
        let shown: Vec<&str> = violations
            .iter()
            .take(MAX_REPORTED_VIOLATIONS)
            .map(String::as_str)
            .collect();
        panic!(
            "{} violations (showing {}); history: {}; log: {} events on nodes {:?}:\n  {}",
            violations.len(),
            shown.len(),
            history.summary(),
            report.events,
            logs.iter().map(|(node, _)| *node).collect::<Vec<_>>(),
            shown.join("\n  ")
        );
    }
    report
}

fn describe(event: &RecordedEvent) -> String {
    format!(
        "event {} (position {}, {} version {})",
        event.id, event.position, event.stream, event.stream_version
    )
}

#[cfg(test)]
#[path = "checker_test.rs"]
mod tests;
