//! Proves, from a client [`History`] and the logs read back from the nodes after healing,
//! that the cluster kept its promises. One invariant per file:
//!
//! - [`log`]: every node holds the identical log; positions are dense from 1 and each
//!   stream's versions rise by one;
//! - [`appends`]: every acknowledged append is present exactly once, at its returned
//!   positions, with the stream version it returned; an append with an unknown outcome is
//!   present entirely, in one contiguous run, or not at all; an append the cluster refused is
//!   absent; the retries of one idempotent request agree and never duplicate it; no event
//!   appears that was never sent, and every event is stored as sent;
//! - [`real_time`]: the order of positions respects real time: every append in the log lies
//!   after every append acknowledged before it was invoked;
//! - [`reads`]: every linearizable read saw every append acknowledged before it began, and
//!   every read returned only what the final log holds;
//! - [`expected_version`]: expected-version successes and conflicts are consistent with the
//!   final log;
//! - [`subscriptions`]: every subscriber received exactly its view of the final log from its
//!   start, across resumes, and every head it was told covers what was acknowledged before it
//!   subscribed.
//!
//! The attempts of one request (retries with one idempotency key) are judged together, as one
//! logical append ([`context`]). Each check returns every violation it finds rather than
//! stopping at the first, so a failure shows its extent; [`check`] runs them all and
//! [`assert_valid`] panics on any.

mod appends;
mod context;
mod expected_version;
mod log;
mod reads;
mod real_time;
mod subscriptions;
mod violation;

use evlog_proto::v1::RecordedEvent;

pub use log::{identical_logs, log_shape};
pub use real_time::real_time_order;
pub use subscriptions::{check_subscriptions, view_head};
pub use violation::{Violation, ViolationKind};

use crate::history::History;

/// How many violations [`assert_valid`] prints.
const MAX_REPORTED_VIOLATIONS: usize = 25;

/// What a check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Events in the log.
    pub events: usize,
    /// Distinct streams in the log.
    pub streams: usize,
    /// Acknowledged appends (logical: the attempts of one idempotent request count once).
    pub acknowledged: usize,
    /// Appends the cluster refused (a wrong expected version, say).
    pub definitely_failed: usize,
    /// Appends with an unknown outcome found in the log.
    pub unknown_present: usize,
    /// Appends with an unknown outcome not in the log.
    pub unknown_absent: usize,
    /// Reads the node answered, checked.
    pub reads: usize,
}

/// A report and every violation found.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub report: CheckReport,
    pub violations: Vec<Violation>,
}

/// Runs every check on `history` and the logs of the nodes (the first log is the reference
/// the others must equal).
pub fn check(history: &History, logs: &[(u64, Vec<RecordedEvent>)]) -> Checked {
    let mut violations = log::check_identical(logs);
    let empty = Vec::new();
    let log = logs.first().map_or(&empty, |(_, log)| log);
    violations.extend(log::check_shape(log));
    let context = context::Context::new(history, log);
    let mut report = CheckReport {
        events: log.len(),
        streams: context.streams.len(),
        ..CheckReport::default()
    };
    violations.extend(context.harness.iter().cloned());
    violations.extend(appends::check_appends(&context, &mut report));
    violations.extend(real_time::check_real_time(&context));
    let (read_violations, reads) = reads::check_reads(&context);
    report.reads = reads;
    violations.extend(read_violations);
    violations.extend(expected_version::check_expected_versions(&context));
    Checked { report, violations }
}

/// Checks the log against the history: the appends alone (see [`appends`]), without the
/// real-time, read and expected-version checks.
pub fn history_in_log(history: &History, log: &[RecordedEvent]) -> (CheckReport, Vec<String>) {
    let context = context::Context::new(history, log);
    let mut report = CheckReport {
        events: log.len(),
        streams: context.streams.len(),
        ..CheckReport::default()
    };
    let mut violations: Vec<Violation> = context.harness.clone();
    violations.extend(appends::check_appends(&context, &mut report));
    (report, violation::messages(violations))
}

/// Runs every check on `history` and the logs of the nodes.
///
/// # Panics
///
/// When any check fails, listing the violations.
pub fn assert_valid(history: &History, logs: &[(u64, Vec<RecordedEvent>)]) -> CheckReport {
    let Checked { report, violations } = check(history, logs);
    if !violations.is_empty() {
        let shown: Vec<String> = violations
            .iter()
            .take(MAX_REPORTED_VIOLATIONS)
            .map(Violation::to_string)
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
