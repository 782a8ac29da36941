//! The record of what clients did: every append and every read, with its invoke time,
//! completion time (one monotonic clock) and outcome. The [`crate::checker`] judges the
//! cluster's logs against it.
//!
//! An append either was acknowledged, definitely failed (the cluster refused it: a wrong
//! expected version, bad input; it is not in the log and never will be), or has an unknown
//! outcome: the leader may have committed it before the error (a timeout, a crash after
//! proposing, a lost connection), so it may appear in the log once or never, but never twice
//! and never in part. Retries of one request share its idempotency key, and are recorded as
//! separate operations (attempts) with that key.

use std::time::{Duration, Instant};

use evlog_proto::v1::{AppendResponse, EventData, RecordedEvent};

/// The metadata key carrying a stream's actual version on `FAILED_PRECONDITION`.
pub const ACTUAL_VERSION_KEY: &str = "evlog-actual-version";

/// Whether an append error means the append was refused and is not, and never will be, in
/// the log: the node decided it (bad input, a limit, a wrong expected version decided when the
/// entry was applied, an idempotency key reused for another request). Every other error
/// (unavailable, deadline exceeded, a broken connection) leaves the outcome unknown.
pub fn is_definite_failure(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::ResourceExhausted
            | tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
            | tonic::Code::NotFound
    )
}

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster acknowledged the append at these positions.
    Acknowledged {
        first_position: u64,
        last_position: u64,
        /// The stream's version after the append.
        stream_version: u64,
        /// The server recognised a retry of an already committed idempotency key.
        deduplicated: bool,
    },
    /// The cluster refused the append: it is not in the log.
    Failed {
        code: tonic::Code,
        message: String,
        /// On `FAILED_PRECONDITION`: the stream's actual version the node reported.
        actual_version: Option<u64>,
    },
    /// The append failed without a verdict or never completed: it may or may not be in the
    /// log.
    Unknown {
        /// The gRPC status code, or `None` when the operation never completed (its task was
        /// stopped while the request was in flight).
        code: Option<tonic::Code>,
        message: String,
    },
}

impl Outcome {
    /// The outcome of an `Append` RPC.
    pub fn from_result(result: &Result<AppendResponse, tonic::Status>) -> Outcome {
        match result {
            Ok(response) => Outcome::Acknowledged {
                first_position: response.first_position,
                last_position: response.last_position,
                stream_version: response.stream_version,
                deduplicated: response.deduplicated,
            },
            Err(status) if is_definite_failure(status.code()) => Outcome::Failed {
                code: status.code(),
                message: status.message().to_owned(),
                actual_version: status
                    .metadata()
                    .get(ACTUAL_VERSION_KEY)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok()),
            },
            Err(status) => Outcome::Unknown {
                code: Some(status.code()),
                message: status.message().to_owned(),
            },
        }
    }

    /// The outcome of an operation whose request was sent but whose answer never arrived.
    pub fn in_flight() -> Outcome {
        Outcome::Unknown {
            code: None,
            message: "the operation never completed".to_owned(),
        }
    }
}

/// One append (one attempt of it) as a client saw it.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Which client sent it, e.g. `appender 3`.
    pub client: String,
    /// The node the request was sent to.
    pub node: u64,
    pub stream: String,
    /// The events sent, in order. Their ids are unique across a history, except between the
    /// attempts of one request (same idempotency key), which send the same events.
    pub events: Vec<EventData>,
    /// The request's `expected_version`.
    pub expected_version: Option<u64>,
    /// The request's idempotency key: the attempts of one request share it.
    pub idempotency_key: Option<String>,
    /// When the first attempt was sent.
    pub invoked: Instant,
    /// When the final answer arrived; `None` if it never did.
    pub completed: Option<Instant>,
    pub outcome: Outcome,
}

impl Operation {
    /// The completion time of an acknowledged operation.
    pub fn acknowledged_at(&self) -> Option<Instant> {
        match self.outcome {
            Outcome::Acknowledged { .. } => self.completed,
            Outcome::Failed { .. } | Outcome::Unknown { .. } => None,
        }
    }

    /// Whether the cluster refused this attempt.
    pub fn definitely_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }
}

/// What a read asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadTarget {
    /// The whole log, by global position.
    All,
    /// One stream, by stream version.
    Stream(String),
}

/// How a read ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    /// The node answered.
    Served {
        /// The events returned, as returned.
        events: Vec<RecordedEvent>,
        /// The last position applied on the serving node when it served the read.
        head_position: u64,
        served_by: u64,
    },
    /// The read failed (a read changes nothing, so a failure says nothing either).
    Failed {
        code: Option<tonic::Code>,
        message: String,
    },
}

/// One read as a client saw it. The chaos workloads read the end of the log or of a stream
/// (backward from the end, a few events): a linearizable read of the end must show every
/// append acknowledged before it began.
#[derive(Debug, Clone)]
pub struct ReadOperation {
    pub client: String,
    pub node: u64,
    pub target: ReadTarget,
    /// Whether the read went backward from the end (`from` absent).
    pub from_end: bool,
    /// Whether the read asked for `LINEARIZABLE` consistency.
    pub linearizable: bool,
    pub invoked: Instant,
    /// `None` if the answer never arrived.
    pub completed: Option<Instant>,
    pub outcome: ReadOutcome,
}

/// The gap between two consecutive acknowledgements.
#[derive(Debug, Clone, Copy)]
pub struct AckGap {
    /// The acknowledgement before the gap (or the reference instant, see
    /// [`History::ack_gap_around`]).
    pub from: Instant,
    /// The acknowledgement after the gap.
    pub to: Instant,
}

impl AckGap {
    pub fn duration(&self) -> Duration {
        self.to.saturating_duration_since(self.from)
    }
}

/// Every operation of a test run.
#[derive(Debug, Clone, Default)]
pub struct History {
    operations: Vec<Operation>,
    reads: Vec<ReadOperation>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn from_operations(operations: Vec<Operation>) -> History {
        History {
            operations,
            reads: Vec::new(),
        }
    }

    /// A history of appends and reads.
    pub fn from_parts(operations: Vec<Operation>, reads: Vec<ReadOperation>) -> History {
        History { operations, reads }
    }

    pub fn push(&mut self, operation: Operation) {
        self.operations.push(operation);
    }

    pub fn push_read(&mut self, read: ReadOperation) {
        self.reads.push(read);
    }

    /// The appends (every attempt).
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The reads.
    pub fn reads(&self) -> &[ReadOperation] {
        &self.reads
    }

    /// How many attempts the cluster refused.
    pub fn failed_count(&self) -> usize {
        self.operations
            .iter()
            .filter(|operation| operation.definitely_failed())
            .count()
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// How many operations were acknowledged.
    pub fn acknowledged_count(&self) -> usize {
        self.operations
            .iter()
            .filter(|operation| operation.acknowledged_at().is_some())
            .count()
    }

    /// How many operations were acknowledged at or after `instant`.
    pub fn acknowledged_since(&self, instant: Instant) -> usize {
        self.operations
            .iter()
            .filter(|operation| operation.acknowledged_at().is_some_and(|at| at >= instant))
            .count()
    }

    /// Acknowledgement instants, sorted.
    fn acknowledgements(&self) -> Vec<Instant> {
        let mut instants: Vec<Instant> = self
            .operations
            .iter()
            .filter_map(Operation::acknowledged_at)
            .collect();
        instants.sort_unstable();
        instants
    }

    /// The longest time between two consecutive acknowledgements: the worst unavailability a
    /// client saw while the history was recorded.
    pub fn longest_ack_gap(&self) -> Option<AckGap> {
        self.acknowledgements()
            .windows(2)
            .map(|pair| AckGap {
                from: pair[0],
                to: pair[1],
            })
            .max_by_key(AckGap::duration)
    }

    /// The gap that spans `instant` (a fault): from the last acknowledgement before it (or
    /// `instant` itself if there was none) to the first one after it. `None` when nothing was
    /// acknowledged after `instant`.
    pub fn ack_gap_around(&self, instant: Instant) -> Option<AckGap> {
        let acknowledgements = self.acknowledgements();
        let after = acknowledgements.partition_point(|at| *at < instant);
        let to = *acknowledgements.get(after)?;
        let from = after
            .checked_sub(1)
            .map_or(instant, |before| acknowledgements[before]);
        Some(AckGap { from, to })
    }

    /// A one-line summary: operations, acknowledged, refused, unknown by error code, reads.
    pub fn summary(&self) -> String {
        let mut by_code: std::collections::BTreeMap<String, usize> = Default::default();
        for operation in &self.operations {
            if let Outcome::Unknown { code, .. } = &operation.outcome {
                let key = code.map_or_else(|| "in flight".to_owned(), |code| format!("{code:?}"));
                *by_code.entry(key).or_default() += 1;
            }
        }
        let unknown: usize = by_code.values().sum();
        let served = self
            .reads
            .iter()
            .filter(|read| matches!(read.outcome, ReadOutcome::Served { .. }))
            .count();
        format!(
            "{} operations, {} acknowledged, {} refused, {unknown} with unknown outcome {:?}; \
             {} reads, {served} served",
            self.operations.len(),
            self.acknowledged_count(),
            self.failed_count(),
            by_code,
            self.reads.len()
        )
    }
}
