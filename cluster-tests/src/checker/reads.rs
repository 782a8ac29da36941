//! Reads against the appends and the final log:
//!
//! - a linearizable read sees every append acknowledged before it began: the serving node's
//!   head is at or past their positions, and a read of the end of the log (or of a stream)
//!   returns them, or later events (stale read);
//! - every read returns only what the final log holds at those positions, never an append
//!   invoked after the read ended, and a head no further than the final log (phantom read);
//! - a read of the end returns a contiguous run (read gap).

use std::collections::HashMap;
use std::time::Instant;

use evlog_proto::v1::RecordedEvent;

use super::context::Context;
use super::violation::{Violation, ViolationKind};
use crate::history::{ReadOperation, ReadOutcome, ReadTarget};

/// An acknowledged append, reduced to what reads must see of it.
struct Seen<'a> {
    at: Instant,
    last_position: u64,
    stream: &'a str,
    stream_version: u64,
}

/// Runs the check; returns the violations and how many reads it checked.
pub(crate) fn check_reads(context: &Context<'_>) -> (Vec<Violation>, usize) {
    let mut acknowledged: Vec<Seen<'_>> = context
        .appends
        .iter()
        .filter_map(|append| {
            let ack = append.acknowledgement()?;
            Some(Seen {
                at: ack.at,
                last_position: ack.last_position,
                stream: append.stream(),
                stream_version: ack.stream_version,
            })
        })
        .collect();
    acknowledged.sort_by_key(|seen| seen.at);
    let mut reads: Vec<&ReadOperation> = context.history.reads().iter().collect();
    reads.sort_by_key(|read| read.invoked);

    let mut violations = Vec::new();
    let mut checked = 0;
    // What was acknowledged before the current read began.
    let mut required_position = 0;
    let mut required_versions: HashMap<&str, u64> = HashMap::new();
    let mut next = 0;
    for read in reads {
        while let Some(seen) = acknowledged.get(next)
            && seen.at < read.invoked
        {
            required_position = required_position.max(seen.last_position);
            let version = required_versions.entry(seen.stream).or_default();
            *version = (*version).max(seen.stream_version);
            next += 1;
        }
        let ReadOutcome::Served {
            events,
            head_position,
            served_by,
        } = &read.outcome
        else {
            continue;
        };
        checked += 1;
        let who = format!(
            "the {} read of {} by {} from node {} (served by {served_by}, head {head_position})",
            if read.linearizable {
                "linearizable"
            } else {
                "non-linearizable"
            },
            describe_target(&read.target),
            read.client,
            read.node
        );
        check_against_log(context, read, events, *head_position, &who, &mut violations);
        if read.from_end {
            check_contiguous(&read.target, events, &who, &mut violations);
        }
        if !read.linearizable {
            continue;
        }
        if *head_position < required_position {
            violations.push(Violation::new(
                ViolationKind::StaleRead,
                format!(
                    "{who}: position {required_position} was acknowledged before the read \
                     began, but the node's head was {head_position}"
                ),
            ));
        }
        if !read.from_end {
            continue;
        }
        match &read.target {
            ReadTarget::All => {
                let top = events.iter().map(|event| event.position).max().unwrap_or(0);
                if top < required_position {
                    violations.push(Violation::new(
                        ViolationKind::StaleRead,
                        format!(
                            "{who}: position {required_position} was acknowledged before the \
                             read began, but the end of the log it returned is {top}"
                        ),
                    ));
                }
            }
            ReadTarget::Stream(stream) => {
                let required = required_versions.get(stream.as_str()).copied().unwrap_or(0);
                let top = events
                    .iter()
                    .map(|event| event.stream_version)
                    .max()
                    .unwrap_or(0);
                if top < required {
                    violations.push(Violation::new(
                        ViolationKind::StaleRead,
                        format!(
                            "{who}: version {required} of {stream} was acknowledged before the \
                             read began, but the read returned up to version {top}"
                        ),
                    ));
                }
            }
        }
    }
    (violations, checked)
}

fn describe_target(target: &ReadTarget) -> String {
    match target {
        ReadTarget::All => "the whole log".to_owned(),
        ReadTarget::Stream(stream) => format!("stream {stream}"),
    }
}

/// What a read returned is what the final log holds, and was sent before the read ended.
fn check_against_log(
    context: &Context<'_>,
    read: &ReadOperation,
    events: &[RecordedEvent],
    head_position: u64,
    who: &str,
    violations: &mut Vec<Violation>,
) {
    let log_end = context.log.len() as u64;
    if head_position > log_end {
        violations.push(Violation::new(
            ViolationKind::PhantomRead,
            format!("{who}: the head is past the end of the final log, {log_end}"),
        ));
    }
    for event in events {
        let in_log = context.by_position.get(&event.position);
        if in_log != Some(&event) {
            violations.push(Violation::new(
                ViolationKind::PhantomRead,
                format!(
                    "{who}: returned {}, but the final log has {}",
                    super::describe(event),
                    in_log.map_or_else(
                        || "nothing there".to_owned(),
                        |in_log| super::describe(in_log)
                    )
                ),
            ));
            continue;
        }
        let sent = context
            .owner
            .get(event.id.as_str())
            .and_then(|index| context.appends.get(*index));
        if let (Some(append), Some(completed)) = (sent, read.completed)
            && append.invoked() > completed
        {
            violations.push(Violation::new(
                ViolationKind::PhantomRead,
                format!(
                    "{who}: returned {}, which {} sent only after the read ended",
                    super::describe(event),
                    append.who()
                ),
            ));
        }
    }
}

/// A read of the end returns consecutive positions (whole log) or versions (a stream).
fn check_contiguous(
    target: &ReadTarget,
    events: &[RecordedEvent],
    who: &str,
    violations: &mut Vec<Violation>,
) {
    let mut keys: Vec<u64> = events
        .iter()
        .map(|event| match target {
            ReadTarget::All => event.position,
            ReadTarget::Stream(_) => event.stream_version,
        })
        .collect();
    keys.sort_unstable();
    let wrong_stream = match target {
        ReadTarget::All => false,
        ReadTarget::Stream(stream) => events.iter().any(|event| &event.stream != stream),
    };
    if wrong_stream || keys.windows(2).any(|pair| pair[1] != pair[0] + 1) {
        violations.push(Violation::new(
            ViolationKind::ReadGap,
            format!("{who}: returned a broken run: {keys:?}"),
        ));
    }
}
