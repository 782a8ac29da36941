//! The domain types that travel through the Raft log: commands (what a client asked for) and
//! their responses (what applying decided), events, and the state machine's records.
//!
//! A leaf but for the consumer groups' commands ([`crate::consumer`]). These are evlog's own types; on disk they are
//! written by [`crate::codec`], between nodes serialized with serde (postcard) inside the
//! internal peer service. openraft's type configuration is [`crate::type_config`].

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::consumer::ConsumerCommand;
use crate::consumer::ConsumerResponse;

/// A state-machine command carried by a normal Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Append events to one stream, atomically.
    Append(AppendCommand),
    /// Independent appends proposed together, as one entry (one log write and one replication
    /// for all): each applies on its own, in order, against the state the ones before it left,
    /// and gets its own response ([`CommandResponse::Many`]). At most
    /// [`MAX_APPENDS_PER_ENTRY`]. Shared: an entry is cloned for the pending tail, for each
    /// follower's replication and for apply, and a clone of this is a count, not a copy of
    /// every event (encoded as the `Vec` it holds).
    Appends(std::sync::Arc<Vec<AppendCommand>>),
    /// A change to consumer groups (see [`crate::consumer`]).
    Consumer(ConsumerCommand),
    /// Stream metadata, deletion and retention (see [`RetentionCommand`]).
    Retention(RetentionCommand),
    /// The log's compression dictionary, trained by a leader: the first one applied is kept
    /// (for good; see [`crate::dictionary`]), later ones change nothing.
    Dictionary(Bytes),
    /// A replica check: every member, as it applies this entry, hashes its events in the
    /// range as the log stands at this entry (see [`crate::reader::checks`]). Changes nothing.
    Check(CheckRange),
    /// A change to tokens or roles (see [`crate::access`]).
    Access(crate::access::AccessCommand),
}

/// The positions a [`Command::Check`] hashes: `from..=to` (`to` 0: the log's head at the
/// entry), with a checkpoint every `step` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRange {
    pub from: u64,
    pub to: u64,
    pub step: u64,
}

/// Changes to what the log retains: a stream's metadata, a stream's deletion, and expiry the
/// leader decided. Every replica removes exactly what the entry says, when it applies: reads
/// stop returning removed events then, and the rows are deleted later, in the background.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionCommand {
    /// Sets a stream's metadata if its metadata version is `expected_metadata_version`
    /// (`None`: any). `max_count` and `truncate_before` take effect as the entry applies.
    SetMetadata {
        stream: String,
        expected_metadata_version: Option<u64>,
        retention: StreamRetention,
    },
    /// Deletes a stream's events (all of them, if its version is `expected_version`), and
    /// appends a `$stream-deleted` event to [`DELETIONS_STREAM`]. A soft delete lets the
    /// stream go on from its version; a tombstone refuses every later append.
    Delete {
        stream: String,
        expected_version: Option<u64>,
        tombstone: bool,
        /// The leader's clock when it proposed the delete (the system event's time).
        timestamp_ms: u64,
    },
    /// The leader found `stream`'s events before `before_version` older than its `max_age_s`.
    ExpireStream { stream: String, before_version: u64 },
    /// The leader found the log's events before `before_position` past the log-wide limits
    /// (`--retention-max-age`, `--retention-max-bytes`).
    ExpireLog { before_position: u64 },
}

/// The system stream every deletion is announced in, with events of type
/// [`STREAM_DELETED_TYPE`] whose data is `{"stream":NAME,"version":N,"tombstone":BOOL}`.
pub const DELETIONS_STREAM: &str = "$deleted-streams";
/// The type of the event a deletion appends to [`DELETIONS_STREAM`].
pub const STREAM_DELETED_TYPE: &str = "$stream-deleted";

/// How much of a stream is kept, as its metadata says (each limit `None`: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRetention {
    /// Events older than this (by their leader-assigned timestamps) are removed, as the leader
    /// finds them (it proposes [`RetentionCommand::ExpireStream`]).
    pub max_age_s: Option<u64>,
    /// At most this many of the stream's latest events are kept.
    pub max_count: Option<u64>,
    /// Events below this stream version are removed.
    pub truncate_before: Option<u64>,
}

/// What the state machine keeps of a stream with metadata, or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// 0 before any metadata was set; +1 with each `SetMetadata` applied.
    pub metadata_version: u64,
    pub retention: StreamRetention,
    /// The first version not removed (1: none removed). Only ever rises; at most the stream's
    /// version + 1 (everything removed).
    pub first_version: u64,
    /// Deleted for good: appends and metadata changes are refused.
    pub tombstoned: bool,
}

impl Default for StreamMeta {
    fn default() -> Self {
        Self {
            metadata_version: 0,
            retention: StreamRetention::default(),
            first_version: 1,
            tombstoned: false,
        }
    }
}

impl StreamMeta {
    /// The first version kept once the stream is at `version`: what was removed stays
    /// removed, and `max_count` and `truncate_before` remove more as the stream grows.
    pub fn first_version_at(&self, version: u64) -> u64 {
        let mut first = self.first_version;
        if let Some(max_count) = self.retention.max_count {
            first = first.max((version + 1).saturating_sub(max_count));
        }
        if let Some(truncate_before) = self.retention.truncate_before {
            first = first.max(truncate_before.min(version + 1));
        }
        first.max(1)
    }
}

/// What retention took from a consumer group before it took the events in: how many keys
/// (versions of a stream target, positions of `all`) its frontier moved past, in all, and the
/// last such range `[last_from, last_to)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerSkips {
    pub skipped_total: u64,
    pub last_from: u64,
    pub last_to: u64,
}

/// What applying a [`RetentionCommand`] decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionResponse {
    /// The stream's metadata as it is now (after a `SetMetadata` or an expiry).
    Metadata(StreamMeta),
    /// `expected_metadata_version` did not match; nothing changed.
    WrongMetadataVersion { expected: u64, actual: u64 },
    /// The stream is tombstoned; nothing changed.
    Tombstoned,
    /// A delete's `expected_version` did not match; nothing changed.
    WrongExpectedVersion { expected: u64, actual: u64 },
    /// The stream was deleted at `version`; the `$stream-deleted` event is at `position`.
    Deleted { version: u64, position: u64 },
    /// The log's first retained position is now this.
    LogExpired { first_position: u64 },
}

/// Most appends one entry carries (an idempotency key's place in the expiry order keeps 12
/// bits for the append's index within its entry).
pub const MAX_APPENDS_PER_ENTRY: usize = 1 << 12;

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Append(append) => write!(
                f,
                "append({} events to {:?}, expected_version={:?})",
                append.events.len(),
                append.stream,
                append.expected_version
            ),
            Command::Appends(appends) => write!(f, "{} appends", appends.len()),
            Command::Consumer(command) => write!(f, "consumer {command:?}"),
            Command::Retention(command) => write!(f, "retention {command:?}"),
            Command::Check(range) => write!(f, "check {range:?}"),
            Command::Dictionary(bytes) => write!(f, "dictionary of {} bytes", bytes.len()),
            // Names only: a token's hash is no one's business in a log line.
            Command::Access(command) => match command {
                crate::access::AccessCommand::CreateToken { id, .. } => {
                    write!(f, "create token {id}")
                }
                crate::access::AccessCommand::RevokeToken { id } => write!(f, "revoke token {id}"),
                crate::access::AccessCommand::PutRole { name, .. } => write!(f, "put role {name}"),
                crate::access::AccessCommand::DeleteRole { name } => {
                    write!(f, "delete role {name}")
                }
            },
        }
    }
}

/// Append `events` to `stream` if its version matches `expected_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCommand {
    pub stream: String,
    pub events: Vec<NewEvent>,
    /// `None`: any version; `Some(0)`: the stream has no events; `Some(n)`: exactly n events.
    pub expected_version: Option<u64>,
    /// Retries with the same key return the first result (see the idempotency table).
    pub idempotency_key: Option<String>,
    /// A hash of the request as the client sent it (before server-generated ids), so a key
    /// reused for a different request is told apart from a retry.
    pub request_fingerprint: u64,
    /// Milliseconds since the Unix epoch, set by the leader when it proposed the command, so
    /// every replica stores the same value and apply never reads a clock. Apply records
    /// `max(timestamp_ms, the previous event's timestamp)`, so timestamps never go backwards in
    /// the log even when a new leader's clock is behind the old one's.
    pub timestamp_ms: u64,
    /// How long idempotency keys are kept, as the proposing leader was configured: it travels
    /// in the command so every replica expires keys identically.
    pub idempotency: IdempotencyPolicy,
}

/// How long the state machine remembers idempotency keys: a key expires once it is older than
/// `window_ms` (in append timestamps) or once more than `max_keys` newer keys exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyPolicy {
    pub window_ms: u64,
    pub max_keys: u64,
}

impl IdempotencyPolicy {
    /// Keys are remembered for 24 hours, measured in leader-assigned append timestamps (never
    /// the local clock, so every replica expires the same keys)...
    pub const DEFAULT_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
    /// ...and at most this many are kept (the oldest go first).
    pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;
}

impl Default for IdempotencyPolicy {
    fn default() -> Self {
        Self {
            window_ms: Self::DEFAULT_WINDOW_MS,
            max_keys: Self::DEFAULT_MAX_KEYS,
        }
    }
}

/// An event as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub content_type: String,
    pub data: Bytes,
    /// Sorted by key, so the encoding is deterministic.
    pub metadata: Vec<(String, String)>,
    /// How `data` is encoded: as given, or compressed by the leader that proposed it (stored
    /// so; reads give the data as given).
    pub encoding: DataEncoding,
}

/// How an event's data is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataEncoding {
    /// As the client gave it.
    #[default]
    Raw,
    /// A zstd frame of it.
    Zstd,
    /// A zstd frame of it, compressed with the log's dictionary of this id (see
    /// [`crate::dictionary`]).
    ZstdDictionary(u64),
}

/// What an event weighs against the event, append and batch limits: its data, id, type,
/// content type and metadata (the one measure for an event in every form it takes).
pub fn event_size(
    data: &[u8],
    id: &str,
    event_type: &str,
    content_type: &str,
    metadata: &[(String, String)],
) -> usize {
    data.len()
        + id.len()
        + event_type.len()
        + content_type.len()
        + metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
}

impl NewEvent {
    /// What the event weighs ([`event_size`]).
    pub fn size(&self) -> usize {
        event_size(
            &self.data,
            &self.id,
            &self.event_type,
            &self.content_type,
            &self.metadata,
        )
    }
}

/// An event as stored, with the position and version applying it assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub id: String,
    pub event_type: String,
    pub content_type: String,
    pub data: Bytes,
    pub metadata: Vec<(String, String)>,
    pub timestamp_ms: u64,
}

impl RecordedEvent {
    /// What the event weighs ([`event_size`]; its stream name besides).
    pub fn size(&self) -> usize {
        event_size(
            &self.data,
            &self.id,
            &self.event_type,
            &self.content_type,
            &self.metadata,
        ) + self.stream.len()
    }
}

/// What applying a log entry decided, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A blank or membership entry: nothing to report.
    Empty,
    /// The events were appended (or, with `deduplicated`, had been appended before).
    Appended(AppendOutcome),
    /// `expected_version` did not match; nothing was appended.
    WrongExpectedVersion { expected: u64, actual: u64 },
    /// The idempotency key was used before for a different request; nothing was appended.
    IdempotencyKeyReused,
    /// The responses of a [`Command::Appends`] entry, one per append, in order.
    Many(Vec<CommandResponse>),
    /// What a consumer command decided.
    Consumer(ConsumerResponse),
    /// An append to a tombstoned stream; nothing was appended.
    StreamTombstoned,
    /// What a retention command decided.
    Retention(RetentionResponse),
    /// What an access command decided.
    Access(crate::access::AccessResponse),
}

impl fmt::Display for CommandResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    pub first_position: u64,
    pub last_position: u64,
    pub stream_version: u64,
    pub deduplicated: bool,
}

/// What the idempotency table keeps per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotentRecord {
    pub fingerprint: u64,
    /// The original outcome (`deduplicated` is false here).
    pub outcome: AppendOutcome,
    /// The key's place in the expiry order (oldest first): `log index << 12 | the append's
    /// index within its entry` (see [`expiry_order`]); keys stored before entries carried
    /// several appends hold the bare log index, which sorts before every newer place.
    pub order: u64,
    /// The append's leader-assigned timestamp (expiry is measured in these, never the clock).
    pub timestamp_ms: u64,
}

/// The place in the idempotency expiry order of a key first used by append `part` of the
/// entry at `log_index`: later entries, and later appends of one entry, sort after.
pub fn expiry_order(log_index: u64, part: usize) -> u64 {
    (log_index << 12) | (part as u64 & 0xfff)
}

/// A stream's summary, read from its first and last stream-index entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's event count; 0 for a stream with no events.
    pub version: u64,
    /// Its first version kept (1 unless retention or a deletion removed events; `version + 1`
    /// when none is kept).
    pub first_version: u64,
    /// The position of its first event kept (0 when none is).
    pub first_position: u64,
    pub last_position: u64,
}

/// How far the state machine has got, published after every durable apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// Raft log index of the last applied entry (0: none).
    pub log_index: u64,
    /// Global position of the last applied event (0: none).
    pub head_position: u64,
    /// The log's epoch (see `schema::sm_key::EPOCH`).
    pub epoch: u64,
    /// The id of the log's compression dictionary (0: none yet).
    pub dictionary: u64,
    /// The access state's revision (see [`crate::access::AccessState::revision`]).
    pub access_revision: u64,
}
