//! The read path: pages of events from a stream or the whole log, served from redb read
//! transactions (consistent snapshots that never wait for the writer) on blocking threads.
//! Which state a read may see (linearizable, at least, local) is decided by the node before it
//! calls in here. `seek.rs` turns a time into where a read starts; `streams.rs` reads stream
//! summaries from the stream index; `scan.rs` serves subscriptions.

use std::sync::Arc;

use redb::ReadableDatabase;

use crate::codec;
use crate::engine::Engine;
use crate::engine::Shared;
use crate::engine::blocking;
use crate::error::StoreError;
use crate::schema::EVENTS;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::types::AppliedState;
use crate::types::RecordedEvent;
use crate::types::StreamInfo;
use crate::types::StreamMeta;

pub mod checks;
pub mod checksum;
pub mod consumers;
pub(crate) mod retention;
pub mod scan;
mod seek;
pub(crate) mod streams;

pub use scan::EventFilter;
pub use scan::Scan;
pub use scan::SubscribeStart;
pub use streams::StreamPage;

use streams::stream_info;

/// Which events a read covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadTarget {
    /// One stream, `from` being a stream version.
    Stream(String),
    /// The whole log, `from` being a global position.
    All,
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStart {
    /// The start going forward, the end going backward.
    Edge,
    /// This stream version or global position, inclusive.
    From(u64),
    /// Going forward, the first event recorded at or after this time (ms since the Unix epoch);
    /// going backward, the last event recorded at or before it.
    Time(u64),
}

/// One page of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPage {
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts, `None` when this page reached the end.
    pub next_from: Option<u64>,
    /// What had been applied in the transaction that served the read.
    pub applied: AppliedState,
    /// The read started below the first retained event of its target (retention or a
    /// deletion removed what it asked for): the first retained version (stream) or position
    /// (all). The page is empty then.
    pub out_of_range: Option<u64>,
}

/// How much one page may hold: events, and bytes of them (their stored records). A page
/// stops at whichever comes first, holding at least one event, and says where to go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    pub max_count: usize,
    pub max_bytes: usize,
}

impl PageLimit {
    /// At most `max_count` events, whatever their size.
    pub fn count(max_count: usize) -> Self {
        Self {
            max_count,
            max_bytes: usize::MAX,
        }
    }
}

/// Events gathered into a page, within its limit.
struct PageBuilder {
    events: Vec<RecordedEvent>,
    bytes: usize,
    limit: PageLimit,
}

impl PageBuilder {
    fn new(limit: PageLimit) -> Self {
        Self {
            events: Vec::with_capacity(limit.max_count.min(1024)),
            bytes: 0,
            limit,
        }
    }

    /// Whether an event of `record_bytes` still fits (the first one always does).
    fn fits(&self, record_bytes: usize) -> bool {
        self.events.is_empty()
            || (self.events.len() < self.limit.max_count
                && self.bytes.saturating_add(record_bytes) <= self.limit.max_bytes)
    }

    fn push(&mut self, event: RecordedEvent, record_bytes: usize) {
        self.bytes += record_bytes;
        self.events.push(event);
    }
}

/// A cloneable handle for reads.
#[derive(Clone)]
pub struct EventReader {
    shared: Arc<Shared>,
}

impl EventReader {
    pub fn new(engine: &Engine) -> Self {
        Self {
            shared: Arc::clone(&engine.shared),
        }
    }

    /// Tokens and roles as last applied (a change raises `AppliedState::access_revision`).
    pub fn access(&self) -> Arc<crate::access::AccessState> {
        Arc::clone(&self.shared.machine().access)
    }

    /// Reads a page of events of `target` starting at `start`, within `limit`.
    pub async fn read(
        &self,
        target: ReadTarget,
        start: ReadStart,
        limit: PageLimit,
        backward: bool,
    ) -> Result<ReadPage, StoreError> {
        // Taken before the transaction: the transaction sees at least this much.
        let applied = *self.shared.applied.borrow();
        self.run(move |txn| read_page(txn, applied, &target, start, limit, backward))
            .await
    }

    /// Up to `max_count` streams whose names start with `prefix`, in name order, after the
    /// stream named `after` (exclusive).
    pub async fn list_streams(
        &self,
        prefix: String,
        after: Option<String>,
        max_count: usize,
    ) -> Result<StreamPage, StoreError> {
        self.run(move |txn| streams::list(txn, &prefix, after.as_deref(), max_count))
            .await
    }

    /// A stream's metadata (the default when none was set), its first version the first
    /// retained (past the log-wide limits too).
    pub async fn stream_metadata(&self, stream: String) -> Result<StreamMeta, StoreError> {
        self.run(move |txn| {
            let mut meta = retention::stream_meta(txn, &stream)?.unwrap_or_default();
            if let Some(info) = stream_info(txn, &stream)? {
                meta.first_version = info.first_version;
            }
            Ok(meta)
        })
        .await
    }

    /// Streams with metadata that sets a `max_age_s`, in name order after `after`, at most
    /// `max_count`: the leader's retention task looks at these.
    pub async fn streams_with_max_age(
        &self,
        after: Option<String>,
        max_count: usize,
    ) -> Result<Vec<(String, StreamMeta)>, StoreError> {
        self.run(move |txn| {
            let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
            let range = match &after {
                Some(after) => metas.range::<&str>((
                    std::ops::Bound::Excluded(after.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => metas.range::<&str>(..),
            }
            .map_err(StoreError::db)?;
            let mut found = Vec::new();
            // Bounded by rows looked at, not only rows found.
            for item in range.take(16 * max_count.max(1)) {
                let (name, value) = item.map_err(StoreError::db)?;
                let meta = codec::decode_stream_meta(value.value())?;
                if meta.retention.max_age_s.is_some() && !meta.tombstoned {
                    found.push((name.value().to_string(), meta));
                    if found.len() == max_count {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    /// How many event rows are stored, removed ones not yet deleted included: what the disk
    /// holds, for metrics and tests.
    pub async fn stored_events(&self) -> Result<u64, StoreError> {
        self.run(|txn| {
            use redb::ReadableTableMetadata;
            txn.open_table(EVENTS)
                .map_err(StoreError::db)?
                .len()
                .map_err(StoreError::db)
        })
        .await
    }

    /// The log's first retained position.
    pub async fn first_position(&self) -> Result<u64, StoreError> {
        self.run(retention::first_position).await
    }

    /// Where a forward read at `time_ms` of `target` starts: the first retained event recorded
    /// at or after it (a version or a position; one past the last when none is).
    pub async fn seek_time(&self, target: ReadTarget, time_ms: u64) -> Result<u64, StoreError> {
        self.run(move |txn| {
            let events_table = txn.open_table(EVENTS).map_err(StoreError::db)?;
            seek::seek_time(txn, &events_table, &target, time_ms, false)
        })
        .await
    }

    /// The stored sizes of the events from `from` on (at most `max_count`), in position order:
    /// the leader's log-wide byte limit counts these.
    pub async fn event_sizes(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<(u64, usize)>, StoreError> {
        self.run(move |txn| {
            let events_table = txn.open_table(EVENTS).map_err(StoreError::db)?;
            events_table
                .range(from..)
                .map_err(StoreError::db)?
                .take(max_count)
                .map(|item| {
                    let (position, value) = item.map_err(StoreError::db)?;
                    Ok((position.value(), value.value().len()))
                })
                .collect()
        })
        .await
    }

    /// A stream's summary, `None` if it has no events.
    pub async fn stream(&self, stream: String) -> Result<Option<StreamInfo>, StoreError> {
        self.run(move |txn| stream_info(txn, &stream)).await
    }

    /// Runs `read` in a read transaction on a blocking thread. Damage it finds (a record that
    /// does not decode, a broken invariant) stops the store: the node must not go on serving
    /// from it.
    async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        let result = blocking(move || {
            let txn = shared.db.begin_read().map_err(StoreError::db)?;
            read(&txn)
        })
        .await;
        if let Err(error @ (StoreError::Corrupt(_) | StoreError::Invariant(_))) = &result {
            self.shared.fail(error.clone());
        }
        result
    }

    /// The state machine as it is now, for a backup: what it holds (read from the same read
    /// transaction) and the transaction as snapshot data (`snapshot::chunks` streams it). The
    /// transaction keeps the pages it sees from being reused until it is dropped.
    pub async fn backup(
        &self,
    ) -> Result<(crate::snapshot::BackupHeader, crate::SnapshotData), StoreError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || crate::snapshot::backup_view(&shared.db).map_err(StoreError::from)).await
    }

    /// The replica check whose entry is at log index `index`, if this node applied it since
    /// it started and still keeps it (see `checks.rs`).
    pub fn check(&self, index: u64) -> Option<checks::PendingCheck> {
        self.shared.checks.get(index)
    }

    /// What has been applied and shown to readers.
    pub fn applied(&self) -> AppliedState {
        *self.shared.applied.borrow()
    }
}

/// What an event weighs against a page's byte limit: its stored record, or what it holds
/// decompressed when that is more (a page is a response message, which carries the data as
/// the client gave it).
pub(crate) fn weight(record: &[u8], event: &RecordedEvent) -> usize {
    record.len().max(crate::types::event_size(
        &event.data,
        &event.id,
        &event.event_type,
        &event.content_type,
        &event.metadata,
    ))
}

/// Most removed events one page steps over before it ends (saying where to go on), so a
/// read of the whole log over rows not yet deleted stays bounded.
const MAX_SKIPPED_PER_PAGE: usize = 16_384;

fn read_page(
    txn: &redb::ReadTransaction,
    applied: AppliedState,
    target: &ReadTarget,
    start: ReadStart,
    limit: PageLimit,
    backward: bool,
) -> Result<ReadPage, StoreError> {
    if limit.max_count == 0 {
        return Err(StoreError::Invariant(
            "a read page of 0 events cannot go on".to_string(),
        ));
    }
    let empty = |out_of_range| ReadPage {
        events: Vec::new(),
        next_from: None,
        applied,
        out_of_range,
    };
    let events_table = txn.open_table(EVENTS).map_err(StoreError::db)?;
    let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
    // The first retained version (stream) or position (all), and the last there is.
    let (first, last) = match target {
        ReadTarget::All => (
            retention::first_position(txn)?,
            scan::last_position(&events_table)?,
        ),
        ReadTarget::Stream(stream) => match streams::stream_summary(&index, stream)? {
            None => (1, 0),
            Some(info) => (
                retention::first_version(txn, &index, stream, &info)?,
                info.version,
            ),
        },
    };
    let from = match start {
        ReadStart::Edge => None,
        ReadStart::From(from) if from < first && first > 1 => return Ok(empty(Some(first))),
        ReadStart::From(from) => Some(from),
        ReadStart::Time(time_ms) => {
            let from = seek::seek_time(txn, &events_table, target, time_ms, backward)?;
            if backward && from < first {
                // Nothing retained was recorded at or before the time.
                return Ok(empty(None));
            }
            // A time names no event: going forward, it starts at the first retained one.
            Some(from.max(first))
        }
    };
    let (low, high) = if backward {
        (first, from.unwrap_or(last))
    } else {
        (from.unwrap_or(first), u64::MAX)
    };
    if low > high {
        return Ok(empty(None));
    }
    let mut page = PageBuilder::new(limit);
    let mut next_from = None;
    match target {
        ReadTarget::All => {
            let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
            let mut retained = retention::Retained::new(first, &metas);
            let range = events_table.range(low..=high).map_err(StoreError::db)?;
            let items: Box<dyn Iterator<Item = _>> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            let mut skipped = 0;
            for item in items {
                let (position, value) = item.map_err(StoreError::db)?;
                let position = position.value();
                let record = value.value();
                if !retained.keeps_record(position, record)? {
                    skipped += 1;
                    if skipped == MAX_SKIPPED_PER_PAGE {
                        next_from = if backward {
                            position.checked_sub(1).filter(|next| *next >= first)
                        } else {
                            Some(position + 1)
                        };
                        break;
                    }
                    continue;
                }
                let event = codec::decode_event(position, record)?;
                let weight = weight(record, &event);
                if !page.fits(weight) {
                    next_from = Some(position);
                    break;
                }
                page.push(event, weight);
            }
        }
        ReadTarget::Stream(stream) => {
            let name = stream.as_str();
            let range = index
                .range((name, low)..=(name, high))
                .map_err(StoreError::db)?;
            let items: Box<dyn Iterator<Item = _>> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for item in items {
                let (key, position) = item.map_err(StoreError::db)?;
                let version = key.value().1;
                if page.events.len() == limit.max_count {
                    next_from = Some(version);
                    break;
                }
                let position = position.value();
                let value = indexed_event(&events_table, position)?;
                let record = value.value();
                let event = codec::decode_event(position, record)?;
                let weight = weight(record, &event);
                if !page.fits(weight) {
                    next_from = Some(version);
                    break;
                }
                // Pair assertion with apply: the index and the event agree.
                if event.stream != *stream || event.stream_version != version {
                    return Err(StoreError::Invariant(format!(
                        "stream index ({stream}, {version}) points at event {position} of ({}, {})",
                        event.stream, event.stream_version
                    )));
                }
                page.push(event, weight);
            }
        }
    }
    Ok(ReadPage {
        events: page.events,
        next_from,
        applied,
        out_of_range: None,
    })
}

/// The stored record of the event at `position`, which the stream index points at (missing:
/// the index and the events disagree, an invariant broken).
pub(crate) fn indexed_event<'t>(
    events_table: &'t redb::ReadOnlyTable<u64, &'static [u8]>,
    position: u64,
) -> Result<redb::AccessGuard<'t, &'static [u8]>, StoreError> {
    events_table
        .get(position)
        .map_err(StoreError::db)?
        .ok_or_else(|| {
            StoreError::Invariant(format!("stream index points at missing event {position}"))
        })
}
