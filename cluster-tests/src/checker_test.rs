//! Unit tests of the checker: each violation it exists to catch, caught.

use std::time::{Duration, Instant};

use super::*;
use crate::cluster::event;

/// A history of acknowledged single-event appends to one stream, `a`, one after another,
/// and the log they produced.
fn sequential(count: u64) -> (History, Vec<RecordedEvent>) {
    let start = Instant::now();
    let mut history = History::new();
    let mut log = Vec::new();
    for position in 1..=count {
        let sent = event(format!("e{position}"), "T", format!("data {position}"));
        let at = start + Duration::from_millis(position * 10);
        history.push(Operation {
            client: "test".to_owned(),
            node: 1,
            stream: "a".to_owned(),
            events: vec![sent.clone()],
            invoked: at,
            completed: Some(at + Duration::from_millis(5)),
            outcome: Outcome::Acknowledged {
                first_position: position,
                last_position: position,
                stream_version: position,
                deduplicated: false,
            },
        });
        log.push(recorded(&sent, "a", position, position));
    }
    (history, log)
}

fn recorded(sent: &EventData, stream: &str, position: u64, version: u64) -> RecordedEvent {
    RecordedEvent {
        position,
        stream: stream.to_owned(),
        stream_version: version,
        id: sent.id.clone(),
        r#type: sent.r#type.clone(),
        content_type: sent.content_type.clone(),
        data: sent.data.clone(),
        metadata: sent.metadata.clone(),
        timestamp_ms: 1,
    }
}

fn all(history: &History, log: &[RecordedEvent]) -> Vec<String> {
    let mut violations = log_shape(log);
    violations.extend(history_in_log(history, log).1);
    violations.extend(real_time_order(history));
    violations
}

#[test]
fn a_faithful_log_passes() {
    let (history, log) = sequential(5);
    assert_eq!(all(&history, &log), Vec::<String>::new());
    let report = assert_valid(&history, &[(1, log.clone()), (2, log)]);
    assert_eq!(report.acknowledged, 5);
    assert_eq!(report.events, 5);
}

#[test]
fn a_lost_acknowledged_append_is_caught() {
    let (history, mut log) = sequential(5);
    log.pop();
    assert!(all(&history, &log).iter().any(|v| v.contains("missing")));
}

#[test]
fn a_duplicate_is_caught() {
    let (history, mut log) = sequential(3);
    let mut duplicate = log[2].clone();
    duplicate.position = 4;
    duplicate.stream_version = 4;
    log.push(duplicate);
    assert!(
        all(&history, &log)
            .iter()
            .any(|v| v.contains("appears 2 times"))
    );
}

#[test]
fn an_unsent_event_is_caught() {
    let (history, mut log) = sequential(3);
    log.push(recorded(&event("ghost", "T", "boo"), "a", 4, 4));
    assert!(all(&history, &log).iter().any(|v| v.contains("never sent")));
}

#[test]
fn a_hole_and_a_version_skip_are_caught() {
    let (history, mut log) = sequential(4);
    log.remove(1);
    let violations = all(&history, &log);
    assert!(violations.iter().any(|v| v.contains("dense")));
    assert!(violations.iter().any(|v| v.contains("rise by one")));
}

#[test]
fn a_stale_order_is_caught() {
    let (mut history, _) = sequential(2);
    // Swap the positions: the second append, invoked after the first was acknowledged,
    // got the lower position.
    let operations: Vec<Operation> = history
        .operations()
        .iter()
        .cloned()
        .zip([2, 1])
        .map(|(mut operation, position)| {
            operation.outcome = Outcome::Acknowledged {
                first_position: position,
                last_position: position,
                stream_version: position,
                deduplicated: false,
            };
            operation
        })
        .collect();
    history = History::from_operations(operations);
    assert_eq!(real_time_order(&history).len(), 1);
}

#[test]
fn an_unknown_outcome_may_be_present_or_absent_but_not_partial() {
    let (mut history, mut log) = sequential(2);
    let now = Instant::now();
    let unknown = |id: &str| Operation {
        client: "test".to_owned(),
        node: 1,
        stream: "a".to_owned(),
        events: vec![
            event(format!("{id}-0"), "T", "x"),
            event(format!("{id}-1"), "T", "y"),
        ],
        invoked: now,
        completed: None,
        outcome: Outcome::in_flight(),
    };
    let present = unknown("present");
    log.push(recorded(&present.events[0], "a", 3, 3));
    log.push(recorded(&present.events[1], "a", 4, 4));
    history.push(present);
    history.push(unknown("absent"));
    let (report, violations) = history_in_log(&history, &log);
    assert_eq!(violations, Vec::<String>::new());
    assert_eq!((report.unknown_present, report.unknown_absent), (1, 1));

    let partial = unknown("partial");
    log.push(recorded(&partial.events[0], "a", 5, 5));
    history.push(partial);
    assert!(
        history_in_log(&history, &log)
            .1
            .iter()
            .any(|v| v.contains("partially"))
    );
}

#[test]
fn diverging_logs_are_caught() {
    let (_, log) = sequential(3);
    let mut other = log.clone();
    other[1].data = b"changed".to_vec().into();
    assert_eq!(identical_logs(&[(1, log.clone()), (2, other)]).len(), 1);
    assert_eq!(
        identical_logs(&[(1, log.clone()), (2, log[..2].to_vec())]).len(),
        1
    );
}
