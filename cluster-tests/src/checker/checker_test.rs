//! Unit tests of the checker: each violation it exists to catch, caught.

use std::time::{Duration, Instant};

use super::*;
use crate::cluster::event;
use crate::history::{Operation, Outcome, ReadOperation, ReadOutcome, ReadTarget};
use evlog_proto::v1::EventData;

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
            expected_version: None,
            idempotency_key: None,
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
        expected_version: None,
        idempotency_key: None,
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

// ---------------------------------------------------------------- the whole check, by kind

/// Milliseconds after a fixed start, on the history's clock.
fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

fn acked(first_position: u64, last_position: u64, stream_version: u64) -> Outcome {
    Outcome::Acknowledged {
        first_position,
        last_position,
        stream_version,
        deduplicated: false,
    }
}

fn conflict(actual: u64) -> Outcome {
    Outcome::Failed {
        code: tonic::Code::FailedPrecondition,
        message: "wrong expected version".to_owned(),
        actual_version: Some(actual),
    }
}

fn attempt(
    events: &[EventData],
    stream: &str,
    invoked: Instant,
    completed: Instant,
    outcome: Outcome,
) -> Operation {
    Operation {
        client: "test".to_owned(),
        node: 1,
        stream: stream.to_owned(),
        events: events.to_vec(),
        expected_version: None,
        idempotency_key: None,
        invoked,
        completed: Some(completed),
        outcome,
    }
}

/// A linearizable read of the end of `target`, served with `events` and `head`.
fn read_of_end(
    target: ReadTarget,
    invoked: Instant,
    completed: Instant,
    events: Vec<RecordedEvent>,
    head_position: u64,
) -> ReadOperation {
    ReadOperation {
        client: "reader".to_owned(),
        node: 2,
        target,
        from_end: true,
        linearizable: true,
        invoked,
        completed: Some(completed),
        outcome: ReadOutcome::Served {
            events,
            head_position,
            served_by: 2,
        },
    }
}

fn kinds(history: &History, log: &[RecordedEvent]) -> Vec<ViolationKind> {
    let checked = check(history, &[(1, log.to_vec()), (2, log.to_vec())]);
    let mut kinds: Vec<ViolationKind> = checked
        .violations
        .iter()
        .map(|violation| violation.kind)
        .collect();
    kinds.dedup();
    kinds
}

/// Five acknowledged appends to `a` (10 ms apart), plus a history exercising every kind of
/// operation correctly: reads of the end, an expected-version success and a conflict, an
/// idempotent retry deduplicated, an unknown outcome absent, a refusal absent.
fn rich() -> (Instant, History, Vec<RecordedEvent>) {
    let (base, mut log) = sequential(5);
    let start = base.operations()[0].invoked - Duration::from_millis(10);
    let mut operations = base.operations().to_vec();
    // Reads after the third append was acknowledged (at 35 ms), before the fourth began.
    let reads = vec![
        read_of_end(
            ReadTarget::Stream("a".to_owned()),
            at(start, 36),
            at(start, 39),
            log[..3].iter().rev().cloned().collect(),
            3,
        ),
        read_of_end(
            ReadTarget::All,
            at(start, 37),
            at(start, 60),
            log[..4].iter().rev().take(2).cloned().collect(),
            4,
        ),
    ];
    // Expected version 5 wins (position 6); expected 2 then loses, seeing version 6.
    let winner = [event("ev-win", "T", "w")];
    let mut success = attempt(&winner, "a", at(start, 100), at(start, 110), acked(6, 6, 6));
    success.expected_version = Some(5);
    log.push(recorded(&winner[0], "a", 6, 6));
    let mut lost = attempt(
        &[event("ev-lose", "T", "l")],
        "a",
        at(start, 120),
        at(start, 125),
        conflict(6),
    );
    lost.expected_version = Some(2);
    operations.extend([success, lost]);
    // A keyed request: the first attempt times out, the retry is deduplicated.
    let keyed = [event("k-0", "T", "k0"), event("k-1", "T", "k1")];
    let mut first = attempt(
        &keyed,
        "b",
        at(start, 130),
        at(start, 140),
        Outcome::Unknown {
            code: Some(tonic::Code::DeadlineExceeded),
            message: "timeout".to_owned(),
        },
    );
    first.idempotency_key = Some("key-1".to_owned());
    let mut retry = attempt(
        &keyed,
        "b",
        at(start, 141),
        at(start, 150),
        Outcome::Acknowledged {
            first_position: 7,
            last_position: 8,
            stream_version: 2,
            deduplicated: true,
        },
    );
    retry.idempotency_key = Some("key-1".to_owned());
    log.push(recorded(&keyed[0], "b", 7, 1));
    log.push(recorded(&keyed[1], "b", 8, 2));
    operations.extend([first, retry]);
    // Never applied: an unknown outcome and a refusal.
    operations.push(attempt(
        &[event("maybe", "T", "m")],
        "c",
        at(start, 160),
        at(start, 170),
        Outcome::in_flight(),
    ));
    operations.push(attempt(
        &[event("refused", "T", "r")],
        "c",
        at(start, 160),
        at(start, 161),
        Outcome::Failed {
            code: tonic::Code::InvalidArgument,
            message: "bad".to_owned(),
            actual_version: None,
        },
    ));
    (start, History::from_parts(operations, reads), log)
}

#[test]
fn a_rich_valid_history_passes() {
    let (_, history, log) = rich();
    let checked = check(&history, &[(1, log.clone()), (2, log)]);
    assert_eq!(checked.violations, Vec::<Violation>::new());
    assert_eq!(checked.report.acknowledged, 7);
    assert_eq!(checked.report.definitely_failed, 2);
    assert_eq!(checked.report.unknown_absent, 1);
    assert_eq!(checked.report.reads, 2);
}

#[test]
fn an_injected_loss_is_caught() {
    let (_, history, mut log) = rich();
    log.truncate(7);
    assert!(kinds(&history, &log).contains(&ViolationKind::Lost));
}

#[test]
fn a_duplicated_idempotent_retry_is_caught() {
    let (_, history, mut log) = rich();
    // Both attempts of the keyed request were applied: the first was acknowledged at 7..=8,
    // the retry appended the events again instead of deduplicating them.
    let mut operations = history.operations().to_vec();
    for operation in &mut operations {
        if operation.idempotency_key.is_some() {
            operation.outcome = if matches!(operation.outcome, Outcome::Unknown { .. }) {
                acked(7, 8, 2)
            } else {
                acked(9, 10, 4)
            };
        }
    }
    let mut again = log[6..8].to_vec();
    for (offset, event) in again.iter_mut().enumerate() {
        event.position = 9 + offset as u64;
        event.stream_version = 3 + offset as u64;
    }
    log.extend(again);
    let history = History::from_parts(operations, history.reads().to_vec());
    let found = kinds(&history, &log);
    assert!(found.contains(&ViolationKind::Duplicate), "{found:?}");
    assert!(found.contains(&ViolationKind::Idempotency), "{found:?}");
}

#[test]
fn an_injected_reorder_is_caught() {
    let (_, history, mut log) = rich();
    // Positions 2 and 3 swapped: the second append lands after the third.
    log.swap(1, 2);
    log[1].position = 2;
    log[2].position = 3;
    let found = kinds(&history, &log);
    assert!(found.contains(&ViolationKind::Misplaced), "{found:?}");
    assert!(found.contains(&ViolationKind::RealTimeOrder), "{found:?}");
}

#[test]
fn a_stale_read_is_caught() {
    let (start, mut history, log) = rich();
    // After the fifth append was acknowledged (55 ms), a read still ends at version 4.
    history.push_read(read_of_end(
        ReadTarget::Stream("a".to_owned()),
        at(start, 56),
        at(start, 58),
        log[..4].iter().rev().cloned().collect(),
        5,
    ));
    assert_eq!(kinds(&history, &log), vec![ViolationKind::StaleRead]);

    let (start, mut history, log) = rich();
    history.push_read(read_of_end(
        ReadTarget::All,
        at(start, 56),
        at(start, 58),
        log[2..4].iter().rev().cloned().collect(),
        4,
    ));
    assert_eq!(kinds(&history, &log), vec![ViolationKind::StaleRead]);
}

#[test]
fn a_phantom_is_caught() {
    let (_, history, mut log) = rich();
    log.push(recorded(&event("ghost", "T", "boo"), "c", 9, 1));
    assert_eq!(kinds(&history, &log), vec![ViolationKind::Phantom]);

    // A read that returned an event the final log does not hold there.
    let (start, mut history, log) = rich();
    let mut ghost = log[4].clone();
    ghost.id = "e-ghost".to_owned();
    history.push_read(read_of_end(
        ReadTarget::All,
        at(start, 200),
        at(start, 210),
        vec![ghost],
        9,
    ));
    assert!(kinds(&history, &log).contains(&ViolationKind::PhantomRead));
}

#[test]
fn a_read_of_the_future_is_caught() {
    let (start, mut history, log) = rich();
    // The read ended at 90 ms, but returned the event sent at 100 ms.
    history.push_read(read_of_end(
        ReadTarget::Stream("a".to_owned()),
        at(start, 80),
        at(start, 90),
        vec![log[5].clone()],
        6,
    ));
    assert_eq!(kinds(&history, &log), vec![ViolationKind::PhantomRead]);
}

#[test]
fn an_injected_divergence_is_caught() {
    let (_, history, log) = rich();
    let mut other = log.clone();
    other[3].data = b"changed".to_vec().into();
    let checked = check(&history, &[(1, log.clone()), (3, other)]);
    assert!(
        checked
            .violations
            .iter()
            .any(|violation| violation.kind == ViolationKind::Divergence)
    );
    let checked = check(&history, &[(1, log.clone()), (3, log[..7].to_vec())]);
    assert!(
        checked
            .violations
            .iter()
            .any(|violation| violation.kind == ViolationKind::Divergence)
    );
}

#[test]
fn a_definite_failure_in_the_log_is_caught() {
    let (_, history, mut log) = rich();
    let refused = history
        .operations()
        .iter()
        .find(|operation| operation.definitely_failed() && operation.stream == "c")
        .expect("the rich history has a refusal");
    log.push(recorded(&refused.events[0], "c", 9, 1));
    assert_eq!(
        kinds(&history, &log),
        vec![ViolationKind::DefiniteFailurePresent]
    );
}

#[test]
fn a_wrong_expected_version_success_is_caught() {
    let (_, history, log) = rich();
    let mut operations = history.operations().to_vec();
    let winner = operations
        .iter_mut()
        .find(|operation| operation.expected_version == Some(5))
        .expect("the rich history has an expected-version success");
    // Succeeding at expected version 3 when the stream had 5 events is impossible.
    winner.expected_version = Some(3);
    let history = History::from_parts(operations, history.reads().to_vec());
    assert_eq!(kinds(&history, &log), vec![ViolationKind::ExpectedVersion]);
}

#[test]
fn an_impossible_conflict_is_caught() {
    // Reported actual versions the stream never had during the request, or equal to the
    // expected one.
    for actual in [2, 7, 4] {
        let (_, history, log) = rich();
        let mut operations = history.operations().to_vec();
        let loser = operations
            .iter_mut()
            .find(|operation| operation.definitely_failed() && operation.stream == "a")
            .expect("the rich history has a conflict");
        loser.outcome = conflict(actual);
        let history = History::from_parts(operations, history.reads().to_vec());
        assert_eq!(
            kinds(&history, &log),
            vec![ViolationKind::ExpectedVersion],
            "actual version {actual}"
        );
    }
}

#[test]
fn an_unknown_append_placed_before_an_earlier_acknowledgement_is_caught() {
    let (start, mut history, mut log) = rich();
    // Invoked at 300 ms, after everything was acknowledged, yet found at position 1: the log
    // is rewritten so that it comes first.
    let late = [event("late", "T", "l")];
    history.push(attempt(
        &late,
        "d",
        at(start, 300),
        at(start, 310),
        Outcome::in_flight(),
    ));
    log.insert(0, recorded(&late[0], "d", 1, 1));
    for (index, event) in log.iter_mut().enumerate() {
        event.position = index as u64 + 1;
    }
    assert!(kinds(&history, &log).contains(&ViolationKind::RealTimeOrder));
}

/// A subscriber's record: everything of `log` from 1, as delivered, began at `began`.
fn subscriber(log: &[RecordedEvent], began: Instant) -> crate::subscriber::SubscriptionRecord {
    crate::subscriber::SubscriptionRecord {
        name: "subscriber".to_owned(),
        request: crate::subscriber::subscribe_all(None),
        began,
        events: log.to_vec(),
        heads: vec![("subscribed", 0), ("caught_up", log.len() as u64)],
        start: Some(1),
        next_from: Some(log.len() as u64 + 1),
        resumes: 1,
        error: None,
    }
}

fn subscription_kinds(
    history: &History,
    log: &[RecordedEvent],
    record: crate::subscriber::SubscriptionRecord,
) -> Vec<ViolationKind> {
    check_subscriptions(history, log, &[record])
        .1
        .into_iter()
        .map(|violation| violation.kind)
        .collect()
}

#[test]
fn a_subscriber_that_got_the_log_exactly_passes_and_every_flaw_is_caught() {
    let (history, log) = sequential(6);
    let before_any = Instant::now() - Duration::from_secs(60);
    assert_eq!(
        subscription_kinds(&history, &log, subscriber(&log, before_any)),
        vec![]
    );
    // A gap, a repeat, an event out of order: each a subscription violation.
    let mut gap = subscriber(&log, before_any);
    gap.events.remove(2);
    assert_eq!(
        subscription_kinds(&history, &log, gap),
        vec![ViolationKind::Subscription]
    );
    let mut repeat = subscriber(&log, before_any);
    repeat.events.insert(3, log[2].clone());
    assert_eq!(
        subscription_kinds(&history, &log, repeat),
        vec![ViolationKind::Subscription]
    );
    let mut swapped = subscriber(&log, before_any);
    swapped.events.swap(1, 2);
    assert_eq!(
        subscription_kinds(&history, &log, swapped),
        vec![ViolationKind::Subscription]
    );
    // Short of the head: a liveness violation, and the missing rest.
    let mut short = subscriber(&log, before_any);
    short.events.truncate(4);
    short.next_from = Some(5);
    assert_eq!(
        subscription_kinds(&history, &log, short),
        vec![ViolationKind::Liveness]
    );
    // Subscribed after every append was acknowledged, but told a head below them: stale.
    let after_all = Instant::now() + Duration::from_secs(60);
    let mut stale = subscriber(&log, after_all);
    stale.heads = vec![("subscribed", 6), ("caught_up", 5)];
    assert_eq!(
        subscription_kinds(&history, &log, stale),
        vec![ViolationKind::StaleRead]
    );
    // A filtered view: only its matches count.
    let mut filtered = subscriber(&log, before_any);
    filtered.request = crate::subscriber::subscribe_filtered(None, &["b"], &[]);
    filtered.events.clear();
    assert_eq!(subscription_kinds(&history, &log, filtered), vec![]);
    // An ended subscription is reported.
    let mut ended = subscriber(&log, before_any);
    ended.error = Some("Unavailable: no node took it".to_owned());
    assert_eq!(
        subscription_kinds(&history, &log, ended),
        vec![ViolationKind::Subscription]
    );
}
