//! Subscriptions: each subscriber received exactly the final log from where it started (its
//! filtered view: a stream, stream prefixes, event types), in order, with no gap and no
//! repeat across the client's resumes; it got to the final head; and every head it was told
//! (`subscribed`, `caught_up`) covers every append acknowledged before it subscribed.

use evlog_proto::v1::RecordedEvent;
use evlog_proto::v1::subscribe_request::{Start, Target};

use super::describe;
use super::violation::{Violation, ViolationKind};
use crate::history::{History, Outcome};
use crate::subscriber::SubscriptionRecord;

/// Mismatches shown per subscriber.
const MAX_SHOWN: usize = 5;

/// Whether `event` is in `record`'s view of the log, from `start` on.
fn in_view(record: &SubscriptionRecord, start: u64, event: &RecordedEvent) -> bool {
    let request = &record.request;
    match &request.target {
        Some(Target::Stream(stream)) => event.stream == *stream && event.stream_version >= start,
        Some(Target::All(_)) | None => {
            let filter = request.filter.clone().unwrap_or_default();
            event.position >= start
                && (filter.stream_prefixes.is_empty()
                    || filter
                        .stream_prefixes
                        .iter()
                        .any(|prefix| event.stream.starts_with(prefix.as_str())))
                && (filter.event_types.is_empty() || filter.event_types.contains(&event.r#type))
        }
    }
}

/// Where `record`'s subscription must get past in `log`: the last version of its stream, or
/// the last position of the log.
pub fn view_head(record: &SubscriptionRecord, log: &[RecordedEvent]) -> u64 {
    match &record.request.target {
        Some(Target::Stream(stream)) => log
            .iter()
            .filter(|event| event.stream == *stream)
            .map(|event| event.stream_version)
            .max()
            .unwrap_or(0),
        Some(Target::All(_)) | None => log.last().map_or(0, |event| event.position),
    }
}

/// The highest position acknowledged before `instant`.
fn acknowledged_before(history: &History, instant: std::time::Instant) -> u64 {
    history
        .operations()
        .iter()
        .filter(|operation| operation.acknowledged_at().is_some_and(|at| at < instant))
        .filter_map(|operation| match operation.outcome {
            Outcome::Acknowledged { last_position, .. } => Some(last_position),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Checks every subscriber against `log`, the final log (every subscriber should have got
/// past its end: [`view_head`]). Returns the subscribers checked and the violations.
pub fn check_subscriptions(
    history: &History,
    log: &[RecordedEvent],
    records: &[SubscriptionRecord],
) -> (usize, Vec<Violation>) {
    let mut violations = Vec::new();
    for record in records {
        let head = view_head(record, log);
        let name = &record.name;
        let fail = |kind: ViolationKind, message: String| {
            Violation::new(kind, format!("{name}: {message}"))
        };
        if let Some(error) = &record.error {
            violations.push(fail(
                ViolationKind::Subscription,
                format!("the subscription ended: {error}"),
            ));
        }
        let Some(resolved) = record.start else {
            violations.push(fail(ViolationKind::Liveness, "never subscribed".to_owned()));
            continue;
        };
        let start = match record.request.start {
            None => 1,
            Some(Start::From(from)) => from.max(1),
            Some(Start::Head(_)) | Some(Start::FromTimestampMs(_)) => resolved,
        };
        if resolved != start {
            violations.push(fail(
                ViolationKind::Subscription,
                format!("asked to start at {start}, started at {resolved}"),
            ));
        }
        // Every head it was told covers every append acknowledged before it subscribed.
        let floor = acknowledged_before(history, record.began);
        for (kind, reported) in &record.heads {
            if *reported < floor {
                violations.push(fail(
                    ViolationKind::StaleRead,
                    format!(
                        "a `{kind}` at head {reported}, below position {floor} acknowledged \
                         before it subscribed"
                    ),
                ));
            }
        }
        if matches!(record.request.start, Some(Start::Head(_))) && resolved <= floor {
            violations.push(fail(
                ViolationKind::StaleRead,
                format!(
                    "started at the head, at {resolved}, not after position {floor} \
                     acknowledged before it subscribed"
                ),
            ));
        }
        let expected: Vec<&RecordedEvent> = log
            .iter()
            .filter(|event| in_view(record, start, event))
            .collect();
        let reached_head = record.next_from.is_some_and(|next| next > head);
        if record.error.is_none() && !reached_head {
            violations.push(fail(
                ViolationKind::Liveness,
                format!(
                    "did not get past the final head {head} (next_from {:?}, {} of {} events)",
                    record.next_from,
                    record.events.len(),
                    expected.len()
                ),
            ));
        }
        violations.extend(
            compare(&record.events, &expected, reached_head)
                .into_iter()
                .take(MAX_SHOWN)
                .map(|message| fail(ViolationKind::Subscription, message)),
        );
    }
    (records.len(), violations)
}

/// How `got` differs from `expected` (all of it when `complete`, else a prefix of it).
fn compare(got: &[RecordedEvent], expected: &[&RecordedEvent], complete: bool) -> Vec<String> {
    let mut differences = Vec::new();
    for (index, event) in got.iter().enumerate() {
        match expected.get(index) {
            Some(wanted) if *wanted == event => {}
            Some(wanted) => {
                let seen_before = got[..index]
                    .iter()
                    .any(|earlier| earlier.position == event.position);
                let what = if seen_before {
                    "a repeat of"
                } else if event.position > wanted.position {
                    "a gap: missing"
                } else {
                    "instead of"
                };
                differences.push(format!(
                    "delivery {index} is {}; expected {} ({what} it)",
                    describe(event),
                    describe(wanted)
                ));
                break;
            }
            None => {
                differences.push(format!(
                    "delivery {index} is {}, past the end of its view of the final log ({} \
                     events)",
                    describe(event),
                    expected.len()
                ));
                break;
            }
        }
    }
    if complete && differences.is_empty() && got.len() < expected.len() {
        differences.push(format!(
            "received {} events of {}; the first missing is {}",
            got.len(),
            expected.len(),
            describe(expected[got.len()])
        ));
    }
    differences
}
