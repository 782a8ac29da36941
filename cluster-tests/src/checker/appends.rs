//! The log against the appends: every acknowledged append is present exactly once, at its
//! returned positions, with the stream version it returned; an append with an unknown outcome
//! is present entirely, in one contiguous run, or not at all; a refused append is absent;
//! retries of one idempotent request agree; no event appears that was never sent, and every
//! event is stored as sent.

use evlog_proto::v1::{EventData, RecordedEvent};

use super::CheckReport;
use super::context::{Ack, Context, LogicalAppend};
use super::violation::{Violation, ViolationKind};

fn same_content(sent: &EventData, stored: &RecordedEvent, stream: &str) -> bool {
    stored.stream == stream
        && stored.r#type == sent.r#type
        && stored.content_type == sent.content_type
        && stored.data == sent.data
        && stored.metadata == sent.metadata
}

/// Runs the check, counting what it saw into `report`.
pub(crate) fn check_appends(context: &Context<'_>, report: &mut CheckReport) -> Vec<Violation> {
    let mut violations = Vec::new();
    for event in context.log {
        match context.owner.get(event.id.as_str()) {
            None => violations.push(Violation::new(
                ViolationKind::Phantom,
                format!("{} was never sent", super::describe(event)),
            )),
            Some(&index) => {
                let append = &context.appends[index];
                let sent = append.events().iter().find(|sent| sent.id == event.id);
                if !sent.is_some_and(|sent| same_content(sent, event, append.stream())) {
                    violations.push(Violation::new(
                        ViolationKind::Phantom,
                        format!(
                            "{} differs from what {} sent",
                            super::describe(event),
                            append.who()
                        ),
                    ));
                }
            }
        }
    }
    let mut duplicated: Vec<(&str, &Vec<u64>)> = context
        .positions_of
        .iter()
        .filter(|(_, positions)| positions.len() > 1)
        .map(|(id, positions)| (*id, positions))
        .collect();
    duplicated.sort();
    for (id, positions) in duplicated {
        violations.push(Violation::new(
            ViolationKind::Duplicate,
            format!(
                "event {id} appears {} times, at positions {positions:?}",
                positions.len()
            ),
        ));
    }

    for append in &context.appends {
        let positions = context.positions(append);
        let acks = append.acknowledgements();
        if let Some(first) = acks.first() {
            report.acknowledged += 1;
            check_acknowledged(append, *first, &positions, context, &mut violations);
            check_retries_agree(append, &acks, &mut violations);
        } else if append.definitely_failed() {
            report.definitely_failed += 1;
            let present = positions.iter().flatten().count();
            if present > 0 {
                violations.push(Violation::new(
                    ViolationKind::DefiniteFailurePresent,
                    format!(
                        "{} was refused ({}), yet {present} of its {} events are in the log, \
                         at {positions:?}",
                        append.who(),
                        refusal(append),
                        positions.len()
                    ),
                ));
            }
        } else {
            check_unknown(append, &positions, report, &mut violations);
        }
    }
    violations
}

/// How the last attempt of a refused append was refused.
fn refusal(append: &LogicalAppend<'_>) -> String {
    match append.attempts.last().map(|attempt| &attempt.outcome) {
        Some(crate::history::Outcome::Failed { code, message, .. }) => {
            format!("{code:?}: {message}")
        }
        _ => "refused".to_owned(),
    }
}

fn check_acknowledged(
    append: &LogicalAppend<'_>,
    ack: Ack,
    positions: &[Option<u64>],
    context: &Context<'_>,
    violations: &mut Vec<Violation>,
) {
    let who = format!(
        "{} acknowledged at {}..={}",
        append.who(),
        ack.first_position,
        ack.last_position
    );
    let expected_count = append.events().len() as u64;
    if ack.last_position < ack.first_position
        || ack.last_position - ack.first_position + 1 != expected_count
    {
        violations.push(Violation::new(
            ViolationKind::Misplaced,
            format!("{who} carried {expected_count} events but the acknowledged range does not"),
        ));
    }
    for (offset, (event, position)) in append.events().iter().zip(positions).enumerate() {
        let expected = ack.first_position + offset as u64;
        match position {
            None => violations.push(Violation::new(
                ViolationKind::Lost,
                format!(
                    "{who}: event {} is missing from the log (acknowledged at {expected})",
                    event.id
                ),
            )),
            Some(position) if *position != expected => violations.push(Violation::new(
                ViolationKind::Misplaced,
                format!(
                    "{who}: event {} is at position {position}, acknowledged at {expected}",
                    event.id
                ),
            )),
            Some(_) => {}
        }
    }
    if let Some(last) = context.by_position.get(&ack.last_position)
        && last.stream == append.stream()
        && last.stream_version != ack.stream_version
    {
        violations.push(Violation::new(
            ViolationKind::Misplaced,
            format!(
                "{who}: acknowledged stream version {}, but the log has {}",
                ack.stream_version, last.stream_version
            ),
        ));
    }
}

/// Every acknowledgement of one idempotent request returns the same result, and no attempt
/// sent after an acknowledgement is refused.
fn check_retries_agree(append: &LogicalAppend<'_>, acks: &[Ack], violations: &mut Vec<Violation>) {
    let first = acks[0];
    for ack in &acks[1..] {
        let same = (ack.first_position, ack.last_position, ack.stream_version)
            == (
                first.first_position,
                first.last_position,
                first.stream_version,
            );
        if !same {
            violations.push(Violation::new(
                ViolationKind::Idempotency,
                format!(
                    "{}: one attempt was acknowledged at {}..={} (version {}), another at \
                     {}..={} (version {}, deduplicated: {})",
                    append.who(),
                    first.first_position,
                    first.last_position,
                    first.stream_version,
                    ack.first_position,
                    ack.last_position,
                    ack.stream_version,
                    ack.deduplicated
                ),
            ));
        }
    }
    for attempt in &append.attempts {
        if attempt.definitely_failed() && attempt.invoked > first.at {
            violations.push(Violation::new(
                ViolationKind::Idempotency,
                format!(
                    "{}: a retry sent after the request was acknowledged was refused: {:?}",
                    append.who(),
                    attempt.outcome
                ),
            ));
        }
    }
}

fn check_unknown(
    append: &LogicalAppend<'_>,
    positions: &[Option<u64>],
    report: &mut CheckReport,
    violations: &mut Vec<Violation>,
) {
    let present = positions.iter().flatten().count();
    if present == 0 {
        report.unknown_absent += 1;
    } else if present < positions.len() {
        violations.push(Violation::new(
            ViolationKind::Partial,
            format!(
                "{} with unknown outcome is partially in the log: {present} of {} events, at \
                 {positions:?}",
                append.who(),
                positions.len()
            ),
        ));
    } else {
        report.unknown_present += 1;
        let contiguous = positions
            .windows(2)
            .all(|pair| matches!(pair, [Some(a), Some(b)] if *b == *a + 1));
        if !contiguous {
            violations.push(Violation::new(
                ViolationKind::Partial,
                format!(
                    "{} with unknown outcome is not contiguous: positions {positions:?}",
                    append.who()
                ),
            ));
        }
    }
}
