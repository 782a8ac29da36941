//! The read path: pages of events from a stream or the whole log, served from redb read
//! transactions (consistent snapshots that never wait for the writer) on blocking threads.
//! Which state a read may see (linearizable, at least, local) is decided by the node before it
//! calls in here.

use std::io;
use std::sync::Arc;

use redb::ReadableDatabase;

use crate::codec;
use crate::engine::Engine;
use crate::engine::Shared;
use crate::engine::stream_info;
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

    /// Reads up to `max_count` events of `target` starting at `from` (inclusive; `None` is the
    /// start going forward and the end going backward).
    pub async fn read(
        &self,
        target: ReadTarget,
        from: Option<u64>,
        max_count: usize,
        backward: bool,
    ) -> io::Result<ReadPage> {
        let shared = Arc::clone(&self.shared);
        blocking(move || read_page(&shared, &target, from, max_count, backward)).await
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

    /// What has been applied (as of the last durable apply).
    pub fn applied(&self) -> AppliedState {
        *self.shared.applied.borrow()
    }
}

fn read_page(
    shared: &Shared,
    target: &ReadTarget,
    from: Option<u64>,
    max_count: usize,
    backward: bool,
) -> io::Result<ReadPage> {
    // Taken before the transaction: the transaction sees at least this much.
    let applied = *shared.applied.borrow();
    let txn = shared.db.begin_read().map_err(io_error)?;
    let events_table = txn.open_table(EVENTS).map_err(io_error)?;
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
