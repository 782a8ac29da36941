//! Expected-version successes and conflicts against the final log.
//!
//! The expected version is decided when the entry is applied, at one point between the
//! request's invocation and its answer, so:
//!
//! - a success at expected version `v` of `n` events returned stream version `v + n`, and its
//!   events hold versions `v + 1 ..= v + n`;
//! - a conflict reported an actual version `a` that the stream really had at some point of
//!   the request's interval: `a` differs from the expected version; `a` is at most the
//!   stream's final version; `a` falls between two appends, never inside one (appends are
//!   atomic); the append that made version `a + 1` was not acknowledged before the request was
//!   sent; and the append that made version `a` was sent before the answer came.

use super::context::{Context, LogicalAppend};
use super::violation::{Violation, ViolationKind};
use crate::history::{Operation, Outcome};

/// Runs the check.
pub(crate) fn check_expected_versions(context: &Context<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    for append in &context.appends {
        let Some(expected) = append.request().expected_version else {
            continue;
        };
        if let Some(ack) = append.acknowledgement() {
            check_success(
                context,
                append,
                expected,
                ack.stream_version,
                &mut violations,
            );
        }
        for attempt in &append.attempts {
            if let Outcome::Failed {
                code: tonic::Code::FailedPrecondition,
                actual_version,
                ..
            } = &attempt.outcome
            {
                check_conflict(
                    context,
                    append,
                    attempt,
                    expected,
                    *actual_version,
                    &mut violations,
                );
            }
        }
    }
    violations
}

fn check_success(
    context: &Context<'_>,
    append: &LogicalAppend<'_>,
    expected: u64,
    stream_version: u64,
    violations: &mut Vec<Violation>,
) {
    let count = append.events().len() as u64;
    if stream_version != expected + count {
        violations.push(Violation::new(
            ViolationKind::ExpectedVersion,
            format!(
                "{} at expected version {expected} with {count} events succeeded with stream \
                 version {stream_version}, not {}",
                append.who(),
                expected + count
            ),
        ));
    }
    for (offset, position) in context.positions(append).into_iter().enumerate() {
        let Some(event) = position.and_then(|position| context.by_position.get(&position)) else {
            continue;
        };
        let wanted = expected + 1 + offset as u64;
        if event.stream_version != wanted {
            violations.push(Violation::new(
                ViolationKind::ExpectedVersion,
                format!(
                    "{} at expected version {expected} succeeded, but its event {} holds \
                     version {}, not {wanted}",
                    append.who(),
                    event.id,
                    event.stream_version
                ),
            ));
        }
    }
}

fn check_conflict(
    context: &Context<'_>,
    append: &LogicalAppend<'_>,
    attempt: &Operation,
    expected: u64,
    actual: Option<u64>,
    violations: &mut Vec<Violation>,
) {
    let stream = append.stream();
    let who = format!("{} at expected version {expected}", append.who());
    let Some(actual) = actual else {
        violations.push(Violation::new(
            ViolationKind::ExpectedVersion,
            format!("{who}: a conflict without the actual version"),
        ));
        return;
    };
    let mut wrong = |reason: String| {
        violations.push(Violation::new(
            ViolationKind::ExpectedVersion,
            format!("{who}: conflict reported actual version {actual}, {reason}"),
        ));
    };
    if actual == expected {
        wrong("the version it expected".to_owned());
        return;
    }
    let final_version = context.final_version(stream);
    if actual > final_version {
        wrong(format!("but the stream ends at version {final_version}"));
        return;
    }
    let at = context.owner_of_version(stream, actual);
    let after = context.owner_of_version(stream, actual + 1);
    if let (Some(at), Some(after)) = (at, after)
        && std::ptr::eq(at, after)
    {
        wrong(format!(
            "inside one append ({}, which holds versions {actual} and {})",
            at.who(),
            actual + 1
        ));
    }
    if let Some(after) = after
        && let Some(ack) = after.acknowledgement()
        && ack.at < attempt.invoked
    {
        wrong(format!(
            "but version {} ({}) was acknowledged before the request was sent",
            actual + 1,
            after.who()
        ));
    }
    if let (Some(at), Some(completed)) = (at, attempt.completed)
        && at.invoked() > completed
    {
        wrong(format!(
            "but version {actual} ({}) was sent only after the answer came",
            at.who()
        ));
    }
}
