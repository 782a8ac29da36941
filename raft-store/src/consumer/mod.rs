//! Consumer groups' replicated state: what a group is (its definition and settings), how far it
//! has got (its frontier and counters), each unsettled event (delivered, waiting to be retried,
//! or held back behind its stream's unsettled event) and each dead letter.
//!
//! Every change is a [`ConsumerCommand`] in the Raft log, decided by a pure function
//! ([`decide::decide`]) against a [`ConsumerView`]: the state machine executes its
//! [`ConsumerMutation`]s in the writer's transaction, and the leader's dispatcher runs the very
//! same function over its in-memory copy of a group ([`GroupMirror`]), so the two never disagree
//! about what a step did.
//!
//! Keys: a group's events are keyed in its target's coordinates: global positions for the
//! whole log, stream versions for one stream (what the subscription scans take and return).

pub mod decide;
#[cfg(test)]
#[path = "decide_test.rs"]
mod decide_test;
mod mirror;
pub(crate) mod tables;

use serde::Deserialize;
use serde::Serialize;

pub use mirror::GroupMirror;

use crate::error::CorruptRecord;
use crate::error::StoreError;

/// How a group hands out events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DispatchMode {
    /// At most one unsettled event per stream at a time; streams spread over the members:
    /// per-stream order with parallelism.
    #[default]
    Keyed,
    /// Any member gets any event.
    Shared,
    /// One member (the first connected) gets everything, in order.
    Exclusive,
}

/// What a group reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerTarget {
    All,
    Stream(String),
}

/// Which events of the target the group takes (empty lists match everything).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerFilter {
    pub stream_prefixes: Vec<String>,
    pub event_types: Vec<String>,
}

/// How a group delivers, retries and gives up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSettings {
    pub mode: DispatchMode,
    pub ack_wait_ms: u32,
    pub max_deliveries: u32,
    pub backoff_ms: Vec<u32>,
    pub max_in_flight: u32,
}

impl ConsumerSettings {
    pub const DEFAULT_ACK_WAIT_MS: u32 = 30_000;
    pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
    pub const DEFAULT_BACKOFF_MS: [u32; 4] = [1_000, 5_000, 30_000, 120_000];
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1_000;
    /// Limits a group's settings must keep (checked by the node before it proposes).
    pub const MAX_ACK_WAIT_MS: u32 = 12 * 60 * 60 * 1000;
    pub const MAX_DELIVERIES: u32 = 100;
    pub const MAX_BACKOFF_STEPS: usize = 16;
    pub const MAX_BACKOFF_MS: u32 = 24 * 60 * 60 * 1000;
    pub const MAX_IN_FLIGHT: u32 = 10_000;

    /// The delay before the redelivery that follows delivery number `attempt` (1-based): the
    /// schedule's step for it, its last step past its end, none with an empty schedule.
    pub fn backoff_after(&self, attempt: u32) -> u32 {
        let step = (attempt.max(1) - 1) as usize;
        self.backoff_ms
            .get(step)
            .or(self.backoff_ms.last())
            .copied()
            .unwrap_or(0)
    }

    /// Most unsettled events a group tracks (delivered, waiting, or held behind their
    /// stream): past it the group takes no new events, and a redrive moves no more, until some
    /// settle. The leader's dispatcher keeps them in memory (about 1.3 KiB each measured, so at
    /// most about 26 MiB a group). Used by the leader when it plans, never by a decision (a
    /// replica of another version must decide the same).
    pub fn max_tracked(&self) -> usize {
        (self.max_in_flight as usize)
            .saturating_mul(4)
            .clamp(1_000, 20_000)
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            mode: DispatchMode::Keyed,
            ack_wait_ms: Self::DEFAULT_ACK_WAIT_MS,
            max_deliveries: Self::DEFAULT_MAX_DELIVERIES,
            backoff_ms: Self::DEFAULT_BACKOFF_MS.to_vec(),
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Where a new group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerStart {
    /// At this key (a position, or a version for a stream target), inclusive.
    At(u64),
    /// Just after the target's head when the create applies.
    Head,
}

/// A group's counters (identical on every replica).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerStats {
    pub delivered_total: u64,
    pub acked_total: u64,
    pub redelivered_total: u64,
    pub dead_lettered_total: u64,
    pub redriven_total: u64,
    /// Dead letters kept now.
    pub dead_letters: u64,
    /// Unsettled events tracked now (delivered, waiting, held).
    pub tracked: u64,
    /// Of those, delivered and not yet settled.
    pub in_flight: u64,
}

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    pub name: String,
    pub target: ConsumerTarget,
    pub filter: ConsumerFilter,
    pub settings: ConsumerSettings,
    /// The log index of the entry that created it: a step proposed for an earlier group of the
    /// same name is refused.
    pub created_index: u64,
    pub created_ms: u64,
    /// Bumped by every change; a step names the revision it was planned against.
    pub revision: u64,
    /// The next key the group has not looked at: every matching event below it is tracked or
    /// settled.
    pub frontier: u64,
    pub stats: ConsumerStats,
    /// The last redrives (id, dead letters redriven), newest last, at most
    /// [`MAX_REMEMBERED_REDRIVES`]: a repeated redrive id is answered from here.
    pub redrives: Vec<(String, u64)>,
}

/// How many redrive ids a group remembers.
pub const MAX_REMEMBERED_REDRIVES: usize = 64;

/// How a delivery ended, or is to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ack,
    /// Deliver again after `delay_ms` (the backoff schedule's delay with `None`).
    Retry {
        delay_ms: Option<u32>,
    },
    DeadLetter,
    /// Not settled within `ack_wait` (or its member left): retried like `Retry`.
    Expired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Expired => "expired",
        }
    }
}

/// One delivery of an event, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub member: String,
    pub delivered_ms: u64,
    pub outcome: Option<Outcome>,
    pub settled_ms: u64,
    pub reason: String,
}

/// Where an unsettled event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingState {
    /// Looked at but not yet delivered (its stream has an earlier unsettled event, KEYED).
    Held,
    /// Delivered (attempt number `attempts`), not yet settled.
    Delivered,
    /// Settled with a retry: deliver again from `not_before_ms` (leader time).
    Waiting { not_before_ms: u64 },
}

/// An unsettled event of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Its global position (the key is a version for a stream target).
    pub position: u64,
    pub stream: String,
    pub event_timestamp_ms: u64,
    /// What the event weighs ([`crate::types::RecordedEvent::size`]): a dispatcher bounds
    /// what it reads and sends in bytes with it.
    pub event_bytes: u32,
    /// Deliveries so far.
    pub attempts: u32,
    pub state: PendingState,
    /// Every delivery (at most `max_deliveries`).
    pub history: Vec<Attempt>,
}

/// An event the group gave up on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub position: u64,
    pub stream: String,
    pub event_timestamp_ms: u64,
    /// What the event weighs ([`crate::types::RecordedEvent::size`]): a dispatcher bounds
    /// what it reads and sends in bytes with it.
    pub event_bytes: u32,
    pub reason: String,
    pub dead_lettered_ms: u64,
    pub history: Vec<Attempt>,
}

/// An event the leader takes into a group for the first time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPending {
    pub key: u64,
    pub position: u64,
    pub stream: String,
    pub event_timestamp_ms: u64,
    /// What the event weighs ([`crate::types::RecordedEvent::size`]): a dispatcher bounds
    /// what it reads and sends in bytes with it.
    pub event_bytes: u32,
    /// Delivered at once to this member, or held (`None`).
    pub deliver_to: Option<String>,
}

/// A member's settlement of one delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub key: u64,
    /// The delivery it settles (its attempt number).
    pub attempt: u32,
    pub outcome: Outcome,
    pub reason: String,
    pub member: String,
}

/// A tracked event delivered (again): attempt `attempts + 1` to `member`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redelivery {
    pub key: u64,
    /// The attempts the leader saw (a step that finds another count refuses it).
    pub attempts: u32,
    pub member: String,
}

/// Which dead letters a redrive gives back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedriveSelection {
    /// Up to `limit` of them, oldest key first.
    All { limit: u32 },
    /// These keys (those that are dead letters).
    Keys(Vec<u64>),
    /// Up to `limit` whose reason contains `text`.
    Reason { text: String, limit: u32 },
}

/// A change to consumer groups, proposed by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerCommand {
    Create {
        name: String,
        target: ConsumerTarget,
        filter: ConsumerFilter,
        start: ConsumerStart,
        settings: ConsumerSettings,
        timestamp_ms: u64,
    },
    Update {
        name: String,
        settings: ConsumerSettings,
    },
    Delete {
        name: String,
    },
    /// One round of a group's dispatcher: settlements first, then (re)deliveries, then new
    /// events taken in from the frontier.
    Step {
        name: String,
        created_index: u64,
        revision: u64,
        settlements: Vec<Settlement>,
        redeliveries: Vec<Redelivery>,
        /// Take the events in `taken` and move the frontier from `from` to `to`.
        advance: Option<Advance>,
        timestamp_ms: u64,
    },
    Redrive {
        name: String,
        redrive_id: String,
        selection: RedriveSelection,
        /// Most dead letters this redrive moves (the leader's view of the group's room for
        /// tracked events).
        max: u64,
        timestamp_ms: u64,
    },
}

impl ConsumerCommand {
    /// About what the command weighs in memory, in bytes (for byte budgets).
    pub fn weight(&self) -> usize {
        const ITEM: usize = 64;
        match self {
            ConsumerCommand::Step {
                settlements,
                redeliveries,
                advance,
                ..
            } => {
                ITEM + settlements
                    .iter()
                    .map(|s| ITEM + s.reason.len() + s.member.len())
                    .sum::<usize>()
                    + redeliveries
                        .iter()
                        .map(|r| ITEM + r.member.len())
                        .sum::<usize>()
                    + advance.as_ref().map_or(0, |advance| {
                        advance
                            .taken
                            .iter()
                            .map(|t| {
                                ITEM + t.stream.len() + t.deliver_to.as_ref().map_or(0, String::len)
                            })
                            .sum()
                    })
            }
            ConsumerCommand::Redrive { selection, .. } => match selection {
                RedriveSelection::Keys(keys) => ITEM + keys.len() * 8,
                _ => ITEM,
            },
            ConsumerCommand::Create { filter, .. } => {
                ITEM * 4
                    + filter
                        .stream_prefixes
                        .iter()
                        .chain(&filter.event_types)
                        .map(|s| s.len() + 8)
                        .sum::<usize>()
            }
            ConsumerCommand::Update { .. } | ConsumerCommand::Delete { .. } => ITEM * 2,
        }
    }
}

/// New events taken in by a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advance {
    pub from: u64,
    pub to: u64,
    pub taken: Vec<NewPending>,
}

/// What a consumer command decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerResponse {
    /// The group as it is after the command (create, update).
    Group(Box<ConsumerRecord>),
    /// Create with other settings than the existing group's.
    AlreadyExists(Box<ConsumerRecord>),
    NotFound,
    Deleted,
    /// A step's result: per settlement whether it took effect (`false`: stale), per
    /// redelivery whether it was made, and whether the advance was.
    Stepped {
        settled: Vec<bool>,
        redelivered: Vec<bool>,
        advanced: bool,
    },
    /// A step planned against another revision of the group: nothing was done.
    StepRefused {
        revision: u64,
    },
    Redriven {
        count: u64,
        repeated: bool,
    },
}

/// What a decision may read of consumer groups.
pub trait ConsumerView {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerRecord>, StoreError>;
    fn pending(&self, name: &str, key: u64) -> Result<Option<PendingRecord>, StoreError>;
    fn dead_letter(&self, name: &str, key: u64) -> Result<Option<DeadLetterRecord>, StoreError>;
    /// Up to `limit` dead letters from key `from` on, in key order.
    fn dead_letters(
        &self,
        name: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, StoreError>;
}

/// One change to consumer groups' state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerMutation {
    PutConsumer(ConsumerRecord),
    /// The group, its tracked events and its dead letters.
    DeleteConsumer(String),
    PutPending {
        name: String,
        key: u64,
        record: PendingRecord,
    },
    RemovePending {
        name: String,
        key: u64,
    },
    PutDeadLetter {
        name: String,
        key: u64,
        record: DeadLetterRecord,
    },
    RemoveDeadLetter {
        name: String,
        key: u64,
    },
}

/// The first byte of every stored consumer record: its layout's version.
const RECORD_VERSION: u8 = 1;

/// Encodes a consumer record for the store: a version byte, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // postcard into a Vec fails only when serde does (never for these plain types).
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    record: &[u8],
) -> Result<T, CorruptRecord> {
    match record.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|error| CorruptRecord {
                what,
                detail: format!("does not decode: {error}"),
            })
        }
        Some((version, _)) => Err(CorruptRecord {
            what,
            detail: format!("layout version {version}, this evlog knows {RECORD_VERSION}"),
        }),
        None => Err(CorruptRecord {
            what,
            detail: "empty".to_string(),
        }),
    }
}
