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
use crate::types::AppliedState;
use crate::types::RecordedEvent;
use crate::types::StreamInfo;

pub mod checksum;
pub mod consumers;
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

    /// The running hash of the events at positions `from..=to`, with a checkpoint after every
    /// `step` positions (see `checksum.rs`). `from` ≥ 1, `to` ≥ `from`, `step` ≥ 1.
    pub async fn checksum(
        &self,
        from: u64,
        to: u64,
        step: u64,
    ) -> Result<checksum::Checksum, StoreError> {
        if from == 0 || to < from || step == 0 {
            return Err(StoreError::Invariant(format!(
                "a checksum of positions {from}..={to} in steps of {step}"
            )));
        }
        self.run(move |txn| checksum::checksum(txn, from, to, step))
            .await
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
    let events_table = txn.open_table(EVENTS).map_err(StoreError::db)?;
    let from = match start {
        ReadStart::Edge => None,
        ReadStart::From(from) => Some(from),
        ReadStart::Time(time_ms) => {
            let from = seek::seek_time(txn, &events_table, target, time_ms, backward)?;
            if backward && from == 0 {
                // Nothing was recorded at or before the time.
                return Ok(ReadPage {
                    events: Vec::new(),
                    next_from: None,
                    applied,
                });
            }
            Some(from)
        }
    };
    let mut page = PageBuilder::new(limit);
    let mut next_from = None;
    match target {
        ReadTarget::All => {
            let range = if backward {
                events_table.range(..=from.unwrap_or(u64::MAX))
            } else {
                events_table.range(from.unwrap_or(0)..)
            }
            .map_err(StoreError::db)?;
            let items: Box<dyn Iterator<Item = _>> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for item in items {
                let (position, value) = item.map_err(StoreError::db)?;
                let record = value.value();
                let event = codec::decode_event(position.value(), record)?;
                let weight = weight(record, &event);
                if !page.fits(weight) {
                    next_from = Some(position.value());
                    break;
                }
                page.push(event, weight);
            }
        }
        ReadTarget::Stream(stream) => {
            let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
            let name = stream.as_str();
            let range = if backward {
                index.range((name, 0u64)..=(name, from.unwrap_or(u64::MAX)))
            } else {
                index.range((name, from.unwrap_or(0))..=(name, u64::MAX))
            }
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
