//! Every redb table evlog keeps, and the storage format version.
//!
//! One database file per node (`<data-dir>/evlog.redb`) holds the Raft log, the vote and the
//! state machine, so one write transaction (one fsync) can cover a log append, a vote and an
//! apply together. `raft-store/DESIGN.md` documents each table byte by byte.

use redb::TableDefinition;

/// The database file in a node's data directory.
pub const DATABASE_FILE: &str = "evlog.redb";

/// Bumped whenever a table's layout or meaning changes incompatibly. Format 4: the log may
/// hold entries of several appends (`Command::Appends`), and idempotency keys take places
/// `log index << 12 | part` in the expiry order; an older evlog must not open such a store.
/// Format 5: the log may hold consumer-group commands, and the state machine keeps consumer
/// groups (the three `consumer*` tables). Format 6: log entries and event records may be of
/// codec version 2 (compressed event data); the log may hold retention commands; the state
/// machine may hold an epoch, stream metadata (`stream_meta`) and the log's first retained
/// position (`sm_meta` `first_position`): events below either are removed, whatever rows are
/// still stored. Format 7: memberships (log entries, `sm_meta` `membership`) may be of codec
/// version 3, each member with a client and a peer address; the log and the state machine may
/// hold a compression dictionary (`sm_meta` `dictionary`), and events compressed with it (data
/// encoding 2). Format 8: the log may hold access commands, and the state machine tokens and
/// roles (`sm_meta` `access`). Format 9: log appends and truncations since the database's last
/// durable commit are in the journal file (`evlog.journal`), which an older evlog would not
/// replay.
pub const FORMAT_VERSION: u32 = 9;
/// Formats 3 to 8 are upgraded at open by stamping them 9 (format 8 has no journal): format 3's entries and keys read
/// as they are (a key's bare log index sorts before every newer place), formats 3 and 4 have
/// no consumer groups, formats 3 to 5 have no compressed data, no epoch, and removed nothing,
/// formats 3 to 6 have no dictionary, and their memberships (codec version 1) read with empty
/// peer addresses, which the node derives from the client addresses (the default peer port);
/// none holds tokens or roles.
pub const FORMAT_3: u32 = 3;
pub const FORMAT_4: u32 = 4;
pub const FORMAT_5: u32 = 5;
pub const FORMAT_6: u32 = 6;
pub const FORMAT_7: u32 = 7;
pub const FORMAT_8: u32 = 8;
/// The oldest format a store is upgraded from at open: format 2 kept a `streams` table
/// (name -> version, first and last position) that repeated what the stream index holds.
pub const UPGRADABLE_FORMAT_VERSION: u32 = 2;

/// The snapshot (and backup) file format, apart from the store's: format 6 adds the log epoch
/// to the header, format 7 the compression dictionary record (and its header's membership may
/// be of codec version 3, with peer addresses), format 8 the access record (tokens and roles). Snapshots of formats 3 to 5 (the
/// store format they were written with) are read too, as epoch 0.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 8;
/// The first snapshot format whose header holds the epoch.
pub const SNAPSHOT_FORMAT_EPOCH: u32 = 6;

/// Store-wide facts: format version, cluster id, node id, vote, committed, last purged, and
/// whether the store must catch up before its node votes.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Raft log: log index -> encoded entry.
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// State-machine facts: last applied log id, membership, head position.
pub const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Events: global position -> encoded event.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Stream index: (stream name, stream version) -> global position. Also the streams' summaries:
/// a stream's version and last position are its last entry, its first position its first.
pub const STREAM_INDEX: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_index");
/// Format 2's stream summaries, deleted by the upgrade to format 3.
pub const FORMAT_2_STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// Idempotency keys: key -> encoded record (fingerprint, original outcome, log index, time).
pub const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// Idempotency expiry order: log index of the first use -> key.
pub const IDEMPOTENCY_ORDER: TableDefinition<u64, &str> = TableDefinition::new("idempotency_order");

/// Consumer groups: name -> encoded [`crate::consumer::ConsumerRecord`].
pub const CONSUMERS: TableDefinition<&str, &[u8]> = TableDefinition::new("consumers");
/// A group's unsettled events: (group, key) -> encoded [`crate::consumer::PendingRecord`].
pub const CONSUMER_PENDING: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("consumer_pending");
/// A group's dead letters: (group, key) -> encoded [`crate::consumer::DeadLetterRecord`].
pub const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");

/// Streams with metadata, or deleted: name -> encoded [`crate::types::StreamMeta`] (its
/// retention limits and first retained version). Streams without a row have removed nothing
/// by themselves.
pub const STREAM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_meta");
/// Streams whose removed rows the writer has still to delete: name -> the first retained
/// version when queued. Physical work only (not state: never in a snapshot, emptied by an
/// install).
pub const RECLAIM_STREAMS: TableDefinition<&str, u64> = TableDefinition::new("reclaim_streams");

/// What retention took from each consumer group: name -> encoded
/// [`crate::types::ConsumerSkips`]. Only groups that lost events have a row.
pub const CONSUMER_SKIPS: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_skips");

pub mod meta_key {
    pub const FORMAT_VERSION: &str = "format_version";
    pub const CLUSTER_ID: &str = "cluster_id";
    pub const NODE_ID: &str = "node_id";
    pub const VOTE: &str = "vote";
    pub const COMMITTED: &str = "committed";
    pub const LAST_PURGED: &str = "last_purged";
    /// Present (`u64` 1) from a store's creation until its node has caught up with a leader,
    /// or (a founding member) confirmed that no peer has committed anything: its node must
    /// not vote before (it may lack acknowledged entries).
    pub const CATCH_UP_REQUIRED: &str = "catch_up_required";
    /// Present (`u64` 1) when the store was created as one of a new cluster's founding
    /// members (`--bootstrap`); kept for good, so the lowest-id member initializes the cluster
    /// even when restarted without the flag before it did.
    pub const FOUNDING_MEMBER: &str = "founding_member";
    /// The log journal's generation (`u64`; absent: 0): its records of this generation hold
    /// the log's changes since the durable commit that wrote it (see `engine/journal.rs`).
    pub const JOURNAL_GENERATION: &str = "journal_generation";
}

pub mod sm_key {
    pub const LAST_APPLIED: &str = "last_applied";
    pub const MEMBERSHIP: &str = "membership";
    pub const HEAD_POSITION: &str = "head_position";
    /// The log's epoch (`u64`; absent: 0): raised by each restore from a backup, so clients
    /// can tell a restored log (whose positions may repeat ones they saw) from the one they
    /// followed.
    pub const EPOCH: &str = "epoch";
    /// The log's first retained position (`u64`; absent: 1, nothing removed log-wide).
    pub const FIRST_POSITION: &str = "first_position";
    /// The log's compression dictionary (zstd dictionary bytes; see `crate::dictionary`).
    /// Format 7.
    pub const DICTIONARY: &str = "dictionary";
    /// Tokens and roles (`crate::access::encode_state`; absent: none). Format 8.
    pub const ACCESS: &str = "access";
}
