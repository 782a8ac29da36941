//! The read path: pages of events from a stream or the whole log, served from redb read
//! transactions (consistent snapshots that never wait for the writer) on blocking threads.
//! Which state a read may see (linearizable, at least, local) is decided by the node before it
//! calls in here.

use std::io;
use std::ops::Bound;
use std::sync::Arc;

use redb::ReadableDatabase;
use redb::ReadableTable;

use crate::codec;
use crate::engine::Engine;
use crate::engine::Shared;
use crate::engine::stream_info;
use crate::engine::stream_summary;
use crate::error::io_error;
use crate::log_store::blocking;
use crate::schema::EVENTS;
use crate::schema::STREAM_INDEX;
use crate::types::AppliedState;
use crate::types::RecordedEvent;
use crate::types::StreamInfo;

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

    /// Reads up to `max_count` events of `target` starting at `start`.
    pub async fn read(
        &self,
        target: ReadTarget,
        start: ReadStart,
        max_count: usize,
        backward: bool,
    ) -> io::Result<ReadPage> {
        let shared = Arc::clone(&self.shared);
        blocking(move || read_page(&shared, &target, start, max_count, backward)).await
    }

    /// Up to `max_count` streams whose names start with `prefix`, in name order, after the
    /// stream named `after` (exclusive). The second value is the cursor for the next page
    /// (`None` when this page reached the end).
    pub async fn list_streams(
        &self,
        prefix: String,
        after: Option<String>,
        max_count: usize,
    ) -> io::Result<(Vec<(String, StreamInfo)>, Option<String>)> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let txn = shared.db.begin_read().map_err(io_error)?;
            let index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
            // Each stream's entries lie together in the index: visit the first entry of each
            // stream (one seek), then seek past the stream's last possible entry.
            let mut from = match &after {
                Some(after) if after.as_str() >= prefix.as_str() => {
                    Bound::Excluded((after.clone(), u64::MAX))
                }
                _ => Bound::Included((prefix.clone(), 0)),
            };
            let mut page = Vec::with_capacity(max_count.min(1024));
            let mut next = None;
            loop {
                let start = from
                    .as_ref()
                    .map(|(name, version)| (name.as_str(), *version));
                let Some(item) = index
                    .range::<(&str, u64)>((start, Bound::Unbounded))
                    .map_err(io_error)?
                    .next()
                else {
                    break;
                };
                let (key, _) = item.map_err(io_error)?;
                let name = key.value().0.to_string();
                if !name.starts_with(prefix.as_str()) {
                    break;
                }
                if page.len() == max_count {
                    next = page
                        .last()
                        .map(|(last, _): &(String, StreamInfo)| last.clone());
                    break;
                }
                let info = stream_summary(&index, &name)?.ok_or_else(|| {
                    io::Error::other(format!("stream {name:?} vanished from the index"))
                })?;
                from = Bound::Excluded((name.clone(), u64::MAX));
                page.push((name, info));
            }
            Ok((page, next))
        })
        .await
    }

    /// A stream's summary, `None` if it has no events.
    pub async fn stream(&self, stream: String) -> io::Result<Option<StreamInfo>> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let txn = shared.db.begin_read().map_err(io_error)?;
            stream_info(&txn, &stream)
        })
        .await
    }

    /// What has been applied and shown to readers.
    pub fn applied(&self) -> AppliedState {
        *self.shared.applied.borrow()
    }
}

/// The first index in `low..high` for which `at_or_after` holds, given that it holds for a
/// suffix of the range (`high` when it holds nowhere): a binary search.
fn partition_point(
    mut low: u64,
    mut high: u64,
    mut at_or_after: impl FnMut(u64) -> io::Result<bool>,
) -> io::Result<u64> {
    while low < high {
        let middle = low + (high - low) / 2;
        if at_or_after(middle)? {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}

/// Turns a time into the position (all) or version (stream) a read starts at. Relies on
/// timestamps never decreasing along the log (apply guarantees it), so each stream's are
/// ordered too.
fn seek_time(
    txn: &redb::ReadTransaction,
    events_table: &redb::ReadOnlyTable<u64, &[u8]>,
    target: &ReadTarget,
    time_ms: u64,
    backward: bool,
) -> io::Result<u64> {
    let timestamp_at = |position: u64| -> io::Result<u64> {
        let value = events_table
            .get(position)
            .map_err(io_error)?
            .ok_or_else(|| io::Error::other(format!("position {position} has no event")))?;
        Ok(codec::decode_event(position, value.value())?.timestamp_ms)
    };
    // Going forward: the first index recorded at or after the time. Going backward: the last
    // one at or before it, i.e. one before the first recorded after it.
    let past = |timestamp: u64| {
        if backward {
            timestamp > time_ms
        } else {
            timestamp >= time_ms
        }
    };
    let found = match target {
        ReadTarget::All => {
            let head = events_table
                .last()
                .map_err(io_error)?
                .map(|(position, _)| position.value())
                .unwrap_or(0);
            partition_point(1, head + 1, |position| Ok(past(timestamp_at(position)?)))?
        }
        ReadTarget::Stream(stream) => {
            let Some(info) = stream_info(txn, stream)? else {
                return Ok(if backward { 0 } else { 1 });
            };
            let index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
            partition_point(1, info.version + 1, |version| {
                let position = index
                    .get((stream.as_str(), version))
                    .map_err(io_error)?
                    .ok_or_else(|| {
                        io::Error::other(format!("stream {stream} has no version {version}"))
                    })?
                    .value();
                Ok(past(timestamp_at(position)?))
            })?
        }
    };
    Ok(if backward { found - 1 } else { found })
}

fn read_page(
    shared: &Shared,
    target: &ReadTarget,
    start: ReadStart,
    max_count: usize,
    backward: bool,
) -> io::Result<ReadPage> {
    // Taken before the transaction: the transaction sees at least this much.
    let applied = *shared.applied.borrow();
    let txn = shared.db.begin_read().map_err(io_error)?;
    let events_table = txn.open_table(EVENTS).map_err(io_error)?;
    let from = match start {
        ReadStart::Edge => None,
        ReadStart::From(from) => Some(from),
        ReadStart::Time(time_ms) => {
            let from = seek_time(&txn, &events_table, target, time_ms, backward)?;
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
    let mut events = Vec::with_capacity(max_count.min(1024));
    let mut next_from = None;
    match target {
        ReadTarget::All => {
            let range = if backward {
                events_table.range(..=from.unwrap_or(u64::MAX))
            } else {
                events_table.range(from.unwrap_or(0)..)
            }
            .map_err(io_error)?;
            let items: Box<dyn Iterator<Item = _>> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for item in items {
                let (position, value) = item.map_err(io_error)?;
                if events.len() == max_count {
                    next_from = Some(position.value());
                    break;
                }
                events.push(codec::decode_event(position.value(), value.value())?);
            }
        }
        ReadTarget::Stream(stream) => {
            let index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
            let name = stream.as_str();
            let range = if backward {
                index.range((name, 0u64)..=(name, from.unwrap_or(u64::MAX)))
            } else {
                index.range((name, from.unwrap_or(0))..=(name, u64::MAX))
            }
            .map_err(io_error)?;
            let items: Box<dyn Iterator<Item = _>> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for item in items {
                let (key, position) = item.map_err(io_error)?;
                let version = key.value().1;
                if events.len() == max_count {
                    next_from = Some(version);
                    break;
                }
                let position = position.value();
                let value = events_table
                    .get(position)
                    .map_err(io_error)?
                    .ok_or_else(|| {
                        io::Error::other(format!("stream index points at missing event {position}"))
                    })?;
                let event = codec::decode_event(position, value.value())?;
                // Pair assertion with apply: the index and the event agree.
                if event.stream != *stream || event.stream_version != version {
                    return Err(io::Error::other(format!(
                        "stream index ({stream}, {version}) points at event {position} of ({}, {})",
                        event.stream, event.stream_version
                    )));
                }
                events.push(event);
            }
        }
    }
    Ok(ReadPage {
        events,
        next_from,
        applied,
    })
}
