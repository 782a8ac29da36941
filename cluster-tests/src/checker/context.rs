//! What every check needs, computed once: the history's appends grouped into logical appends
//! (the attempts of one idempotent request are one append), and the final log indexed by
//! position, by event id and by stream version.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use evlog_proto::v1::{EventData, RecordedEvent};

use super::violation::{Violation, ViolationKind};
use crate::history::{History, Operation, Outcome};

/// An acknowledgement: when it came and what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub at: Instant,
    pub first_position: u64,
    pub last_position: u64,
    pub stream_version: u64,
    pub deduplicated: bool,
}

/// One request as the cluster should have applied it: all attempts sharing an idempotency key
/// (or a single attempt without a key), in invocation order.
#[derive(Debug, Clone)]
pub(crate) struct LogicalAppend<'h> {
    /// Never empty.
    pub attempts: Vec<&'h Operation>,
}

impl<'h> LogicalAppend<'h> {
    /// The first attempt: what was requested, and when.
    pub fn request(&self) -> &'h Operation {
        self.attempts[0]
    }

    pub fn events(&self) -> &'h [EventData] {
        &self.request().events
    }

    pub fn stream(&self) -> &'h str {
        &self.request().stream
    }

    /// When the first attempt was sent: the append cannot have taken effect before.
    pub fn invoked(&self) -> Instant {
        self.request().invoked
    }

    /// Every acknowledgement of an attempt, in completion order.
    pub fn acknowledgements(&self) -> Vec<Ack> {
        let mut acks: Vec<Ack> = self
            .attempts
            .iter()
            .filter_map(|attempt| match (&attempt.outcome, attempt.completed) {
                (
                    Outcome::Acknowledged {
                        first_position,
                        last_position,
                        stream_version,
                        deduplicated,
                    },
                    Some(at),
                ) => Some(Ack {
                    at,
                    first_position: *first_position,
                    last_position: *last_position,
                    stream_version: *stream_version,
                    deduplicated: *deduplicated,
                }),
                _ => None,
            })
            .collect();
        acks.sort_by_key(|ack| ack.at);
        acks
    }

    /// The first acknowledgement: the append had taken effect by then.
    pub fn acknowledgement(&self) -> Option<Ack> {
        self.acknowledgements().first().copied()
    }

    /// Whether the cluster refused the request for good: no attempt was acknowledged and the
    /// last one was refused. (A refusal decided when the entry is applied means no earlier
    /// attempt was applied before it, and none can be applied after it: the log is applied in
    /// order, and an idempotency key is checked before the expected version.)
    pub fn definitely_failed(&self) -> bool {
        self.acknowledgement().is_none()
            && self
                .attempts
                .last()
                .is_some_and(|attempt| attempt.definitely_failed())
    }

    /// Names the request in a violation.
    pub fn who(&self) -> String {
        let request = self.request();
        match &request.idempotency_key {
            Some(key) => format!(
                "the append by {} to {} (key {key}, {} attempts)",
                request.client,
                request.stream,
                self.attempts.len()
            ),
            None => format!("the append by {} to {}", request.client, request.stream),
        }
    }
}

/// The history and the final log, indexed.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub history: &'a History,
    pub log: &'a [RecordedEvent],
    pub appends: Vec<LogicalAppend<'a>>,
    /// Which logical append sent each event id.
    pub owner: HashMap<&'a str, usize>,
    /// Where each event id is in the log (more than one position: a duplicate).
    pub positions_of: HashMap<&'a str, Vec<u64>>,
    pub by_position: BTreeMap<u64, &'a RecordedEvent>,
    /// Each stream's events by stream version.
    pub streams: HashMap<&'a str, BTreeMap<u64, &'a RecordedEvent>>,
    /// Inconsistencies of the history itself.
    pub harness: Vec<Violation>,
}

impl<'a> Context<'a> {
    pub fn new(history: &'a History, log: &'a [RecordedEvent]) -> Context<'a> {
        let mut harness = Vec::new();
        let appends = group(history, &mut harness);
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (index, append) in appends.iter().enumerate() {
            for event in append.events() {
                if owner.insert(event.id.as_str(), index).is_some() {
                    harness.push(Violation::new(
                        ViolationKind::Harness,
                        format!(
                            "the history sent event id {} in two requests (ids must be unique)",
                            event.id
                        ),
                    ));
                }
            }
        }
        let mut positions_of: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut by_position = BTreeMap::new();
        let mut streams: HashMap<&str, BTreeMap<u64, &RecordedEvent>> = HashMap::new();
        for event in log {
            positions_of
                .entry(event.id.as_str())
                .or_default()
                .push(event.position);
            by_position.insert(event.position, event);
            streams
                .entry(event.stream.as_str())
                .or_default()
                .insert(event.stream_version, event);
        }
        Context {
            history,
            log,
            appends,
            owner,
            positions_of,
            by_position,
            streams,
            harness,
        }
    }

    /// Where each event of `append` is in the log (its first position), in order.
    pub fn positions(&self, append: &LogicalAppend<'_>) -> Vec<Option<u64>> {
        append
            .events()
            .iter()
            .map(|event| {
                self.positions_of
                    .get(event.id.as_str())
                    .and_then(|positions| positions.first().copied())
            })
            .collect()
    }

    /// The first and last positions of `append` when all its events are in the log.
    pub fn placed(&self, append: &LogicalAppend<'_>) -> Option<(u64, u64)> {
        let positions: Option<Vec<u64>> = self.positions(append).into_iter().collect();
        let positions = positions?;
        Some((*positions.iter().min()?, *positions.iter().max()?))
    }

    /// A stream's version in the final log (its event count).
    pub fn final_version(&self, stream: &str) -> u64 {
        self.streams
            .get(stream)
            .and_then(|versions| versions.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// The logical append that wrote `stream`'s event at `version`, if the log has one.
    pub fn owner_of_version(&self, stream: &str, version: u64) -> Option<&LogicalAppend<'a>> {
        let event = self.streams.get(stream)?.get(&version)?;
        let index = *self.owner.get(event.id.as_str())?;
        self.appends.get(index)
    }
}

/// Groups the attempts by idempotency key; an attempt without a key is a request of its own.
fn group<'h>(history: &'h History, harness: &mut Vec<Violation>) -> Vec<LogicalAppend<'h>> {
    let mut appends: Vec<LogicalAppend<'h>> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for operation in history.operations() {
        match &operation.idempotency_key {
            Some(key) => match by_key.get(key.as_str()) {
                Some(&index) => appends[index].attempts.push(operation),
                None => {
                    by_key.insert(key.as_str(), appends.len());
                    appends.push(LogicalAppend {
                        attempts: vec![operation],
                    });
                }
            },
            None => appends.push(LogicalAppend {
                attempts: vec![operation],
            }),
        }
    }
    for append in &mut appends {
        append.attempts.sort_by_key(|attempt| attempt.invoked);
        let request = append.request();
        let differing = append.attempts.iter().any(|attempt| {
            attempt.stream != request.stream
                || attempt.events != request.events
                || attempt.expected_version != request.expected_version
        });
        if differing {
            harness.push(Violation::new(
                ViolationKind::Harness,
                format!(
                    "{}: attempts with one idempotency key sent different requests",
                    append.who()
                ),
            ));
        }
    }
    appends
}
