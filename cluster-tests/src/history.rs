//! The record of what clients did: every append with its invoke time, completion time and
//! outcome. The [`crate::checker`] judges the cluster's logs against it.
//!
//! An append that did not come back acknowledged has an unknown outcome, whatever the error:
//! the leader may have committed it before the error (a timeout, a crash after proposing), so
//! it may appear in the log once or never, but never twice and never in part.

use std::time::{Duration, Instant};

use evlog_proto::v1::{AppendResponse, EventData};

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
    /// The append failed or never completed: it may or may not be in the log.
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

/// One append as a client saw it.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Which client sent it, e.g. `appender 3`.
    pub client: String,
    /// The node the request was sent to.
    pub node: u64,
    pub stream: String,
    /// The events sent, in order. Their ids are unique across a history.
    pub events: Vec<EventData>,
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
            Outcome::Unknown { .. } => None,
        }
    }
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
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn from_operations(operations: Vec<Operation>) -> History {
        History { operations }
    }

    pub fn push(&mut self, operation: Operation) {
        self.operations.push(operation);
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
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

    /// A one-line summary: operations, acknowledged, unknown, by error code.
    pub fn summary(&self) -> String {
        let mut by_code: std::collections::BTreeMap<String, usize> = Default::default();
        for operation in &self.operations {
            if let Outcome::Unknown { code, .. } = &operation.outcome {
                let key = code.map_or_else(|| "in flight".to_owned(), |code| format!("{code:?}"));
                *by_code.entry(key).or_default() += 1;
            }
        }
        format!(
            "{} operations, {} acknowledged, {} with unknown outcome {:?}",
            self.operations.len(),
            self.acknowledged_count(),
            self.operations.len() - self.acknowledged_count(),
            by_code
        )
    }
}
