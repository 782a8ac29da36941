//! What a check found wrong, by kind, so that a campaign can count violations per kind.

use std::fmt;

/// The kind of a broken promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// Two nodes hold different logs.
    Divergence,
    /// Positions are not dense, or a stream's versions do not rise by one.
    Shape,
    /// An acknowledged append is missing from the log.
    Lost,
    /// An acknowledged append is in the log, but not where or as it was acknowledged.
    Misplaced,
    /// An event appears more than once.
    Duplicate,
    /// An event that was never sent, or not as it was sent.
    Phantom,
    /// An append that is in the log only in part, or not in one contiguous run.
    Partial,
    /// An append the cluster refused is in the log.
    DefiniteFailurePresent,
    /// An append is before one acknowledged before it was invoked.
    RealTimeOrder,
    /// A linearizable read missed an append acknowledged before it began.
    StaleRead,
    /// A read returned what the final log does not hold, or an append sent after it ended.
    PhantomRead,
    /// A read of the end of the log or of a stream skipped events.
    ReadGap,
    /// An expected-version success or conflict inconsistent with the log.
    ExpectedVersion,
    /// Retries of one idempotent request disagree, or a retry of a committed one was refused.
    Idempotency,
    /// A subscriber did not receive exactly its view of the final log from its start (a gap,
    /// a repeat, an event out of order or not in the log), or its subscription ended.
    Subscription,
    /// A consumer group broke one of its promises: an event acked OK delivered again, an event
    /// skipped, delivered more than `max_deliveries` times, two unsettled deliveries of one
    /// stream (KEYED), or acks out of version order.
    ConsumerGroup,
    /// The history itself is inconsistent (a harness bug, not a cluster one).
    Harness,
    /// A node exited on its own with no failpoint asking it to (found by the chaos runner).
    Crash,
    /// The cluster did not serve again after the faults healed (found by the chaos runner).
    Liveness,
    /// A chaos run could not be carried out (the harness gave up; see its message).
    RunError,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [ViolationKind; 20] = [
        ViolationKind::Divergence,
        ViolationKind::Shape,
        ViolationKind::Lost,
        ViolationKind::Misplaced,
        ViolationKind::Duplicate,
        ViolationKind::Phantom,
        ViolationKind::Partial,
        ViolationKind::DefiniteFailurePresent,
        ViolationKind::RealTimeOrder,
        ViolationKind::StaleRead,
        ViolationKind::PhantomRead,
        ViolationKind::ReadGap,
        ViolationKind::ExpectedVersion,
        ViolationKind::Idempotency,
        ViolationKind::Subscription,
        ViolationKind::ConsumerGroup,
        ViolationKind::Harness,
        ViolationKind::Crash,
        ViolationKind::Liveness,
        ViolationKind::RunError,
    ];

    /// The kind's name in reports, e.g. `stale-read`.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Divergence => "divergence",
            ViolationKind::Shape => "shape",
            ViolationKind::Lost => "lost",
            ViolationKind::Misplaced => "misplaced",
            ViolationKind::Duplicate => "duplicate",
            ViolationKind::Phantom => "phantom",
            ViolationKind::Partial => "partial",
            ViolationKind::DefiniteFailurePresent => "definite-failure-present",
            ViolationKind::RealTimeOrder => "real-time-order",
            ViolationKind::StaleRead => "stale-read",
            ViolationKind::PhantomRead => "phantom-read",
            ViolationKind::ReadGap => "read-gap",
            ViolationKind::ExpectedVersion => "expected-version",
            ViolationKind::Idempotency => "idempotency",
            ViolationKind::Subscription => "subscription",
            ViolationKind::ConsumerGroup => "consumer-group",
            ViolationKind::Harness => "harness",
            ViolationKind::Crash => "crash",
            ViolationKind::Liveness => "liveness",
            ViolationKind::RunError => "run-error",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One broken promise, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub message: String,
}

impl Violation {
    pub fn new(kind: ViolationKind, message: impl Into<String>) -> Violation {
        Violation {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "[{}] {}", self.kind, self.message)
    }
}

/// The messages of `violations`, for the checks that return plain strings.
pub(crate) fn messages(violations: Vec<Violation>) -> Vec<String> {
    violations
        .into_iter()
        .map(|violation| violation.message)
        .collect()
}
