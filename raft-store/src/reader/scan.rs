//! Subscriptions' reads: where one starts, and the batch after a cursor, each in its own short
//! read transaction (a long-lived one would pin the pages it sees: redb#830). A filter is
//! tested on the few fields it needs, peeked from the record, so a sparse filter decodes only
//! what it delivers.

use std::sync::Arc;

use redb::ReadableTable;

use super::EventReader;
use super::PageBuilder;
use super::PageLimit;
use super::ReadTarget;
use super::indexed_event;
use super::retention;
use super::seek;
use super::streams::stream_info;
use crate::codec;
use crate::error::StoreError;
use crate::schema::EVENTS;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::types::RecordedEvent;

/// Which events a subscription delivers: all three conditions hold. Empty lists match
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The event's stream starts with one of these.
    pub stream_prefixes: Vec<String>,
    /// The event's type is one of these.
    pub event_types: Vec<String>,
    /// The event was recorded at or after this time (ms since the Unix epoch; 0: any).
    pub min_timestamp_ms: u64,
}

impl EventFilter {
    /// Whether every event matches (no need to look at any).
    pub fn matches_everything(&self) -> bool {
        self.stream_prefixes.is_empty() && self.event_types.is_empty() && self.min_timestamp_ms == 0
    }

    /// Whether the event whose head is `event` passes.
    pub fn matches_head(&self, event: &codec::EventHead<'_>) -> bool {
        event.timestamp_ms >= self.min_timestamp_ms
            && (self.stream_prefixes.is_empty()
                || self
                    .stream_prefixes
                    .iter()
                    .any(|prefix| event.stream.starts_with(prefix.as_str())))
            && (self.event_types.is_empty()
                || self
                    .event_types
                    .iter()
                    .any(|event_type| event.event_type == event_type))
    }
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeStart {
    /// The first event.
    Beginning,
    /// This stream version or global position, inclusive (it may lie beyond the head).
    From(u64),
    /// The first event recorded at or after this time (ms since the Unix epoch).
    Time(u64),
    /// Just after the head.
    Head,
}

/// What one read transaction showed a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The events delivered, in order (empty when resolving a start).
    pub events: Vec<RecordedEvent>,
    /// Where the next scan starts: one past the last event looked at (a stream version for a
    /// stream target, a global position for the whole log).
    pub next_from: u64,
    /// The last global position in the transaction.
    pub head_position: u64,
    /// The target's last version (stream) or position (all) in the transaction: the cursor
    /// has reached the head when `next_from` is past it.
    pub target_head: u64,
    /// The cursor lies below the first retained event of the target (retention or a deletion
    /// removed what comes next): the first retained version (stream) or position (all). No
    /// events then.
    pub out_of_range: Option<u64>,
}

impl Scan {
    /// Whether the scan got to the head of its target.
    pub fn reached_head(&self) -> bool {
        self.next_from > self.target_head
    }

    /// How far the cursor is behind the target's head, in versions or positions.
    pub fn lag(&self) -> u64 {
        (self.target_head + 1).saturating_sub(self.next_from)
    }
}

impl EventReader {
    /// Resolves where a subscription to `target` starts, in one read transaction: `next_from`
    /// of the returned scan (which holds no events).
    pub async fn subscription_start(
        &self,
        target: ReadTarget,
        start: SubscribeStart,
    ) -> Result<Scan, StoreError> {
        self.run(move |txn| {
            let events_table = txn.open_table(EVENTS).map_err(StoreError::db)?;
            let head_position = last_position(&events_table)?;
            let (first, target_head) = bounds(txn, &target, head_position)?;
            let next_from = match start {
                SubscribeStart::Beginning => first,
                SubscribeStart::From(from) => from.max(1),
                SubscribeStart::Time(time_ms) => {
                    seek::seek_time(txn, &events_table, &target, time_ms, false)?.max(first)
                }
                SubscribeStart::Head => target_head + 1,
            };
            Ok(Scan {
                events: Vec::new(),
                next_from,
                head_position,
                target_head,
                out_of_range: (next_from < first && first > 1).then_some(first),
            })
        })
        .await
    }

    /// The events of `target` from `from` on that pass `filter`, within `limit`, looking at
    /// no more than `max_looked_at` events (a sparse filter ends the transaction early and
    /// says where it got to).
    pub async fn scan(
        &self,
        target: ReadTarget,
        from: u64,
        limit: PageLimit,
        filter: Arc<EventFilter>,
        max_looked_at: usize,
    ) -> Result<Scan, StoreError> {
        if limit.max_count == 0 || max_looked_at == 0 {
            return Err(StoreError::Invariant(
                "a subscription batch of 0 events cannot go on".to_string(),
            ));
        }
        self.run(move |txn| scan(txn, &target, from.max(1), limit, &filter, max_looked_at))
            .await
    }
}

pub(crate) fn last_position(
    events_table: &redb::ReadOnlyTable<u64, &[u8]>,
) -> Result<u64, StoreError> {
    Ok(events_table
        .last()
        .map_err(StoreError::db)?
        .map(|(position, _)| position.value())
        .unwrap_or(0))
}

/// The target's first retained version (stream) or position (all), and its last.
fn bounds(
    txn: &redb::ReadTransaction,
    target: &ReadTarget,
    head_position: u64,
) -> Result<(u64, u64), StoreError> {
    Ok(match target {
        ReadTarget::All => (retention::first_position(txn)?, head_position),
        ReadTarget::Stream(stream) => {
            stream_info(txn, stream)?.map_or((1, 0), |info| (info.first_version, info.version))
        }
    })
}

fn scan(
    txn: &redb::ReadTransaction,
    target: &ReadTarget,
    from: u64,
    limit: PageLimit,
    filter: &EventFilter,
    max_looked_at: usize,
) -> Result<Scan, StoreError> {
    let events_table = txn.open_table(EVENTS).map_err(StoreError::db)?;
    let head_position = last_position(&events_table)?;
    let (first, target_head) = bounds(txn, target, head_position)?;
    if from < first && first > 1 {
        return Ok(Scan {
            events: Vec::new(),
            next_from: from,
            head_position,
            target_head,
            out_of_range: Some(first),
        });
    }
    let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
    let mut retained = retention::Retained::new(first, &metas);
    let mut page = PageBuilder::new(limit);
    let mut next_from = from;
    let mut looked_at = 0;
    let stream = match target {
        ReadTarget::Stream(stream) => Some(stream.as_str()),
        ReadTarget::All => None,
    };
    // Takes the event at `position` (its version or position `key` in the target) if it
    // passes the filter and fits; `false` when the batch is full.
    let mut offer = |key: u64, position: u64, record: &[u8]| -> Result<bool, StoreError> {
        // The whole log skips removed events (a stream's read starts past its own).
        let removed = stream.is_none() && !retained.keeps_record(position, record)?;
        if removed
            || (!filter.matches_everything() && !filter.matches_head(&codec::peek_event(record)?))
        {
            next_from = key + 1;
            return Ok(true);
        }
        let event = codec::decode_event(position, record)?;
        let weight = super::weight(record, &event);
        if !page.fits(weight) {
            return Ok(false);
        }
        // Pair assertion with apply: the stream index and the event agree.
        if let Some(stream) = stream
            && (event.stream != stream || event.stream_version != key)
        {
            return Err(StoreError::Invariant(format!(
                "stream index ({stream}, {key}) points at event {position} of ({}, {})",
                event.stream, event.stream_version
            )));
        }
        page.push(event, weight);
        next_from = key + 1;
        Ok(true)
    };
    match target {
        ReadTarget::All => {
            for item in events_table.range(from..).map_err(StoreError::db)? {
                if looked_at == max_looked_at {
                    break;
                }
                looked_at += 1;
                let (position, value) = item.map_err(StoreError::db)?;
                let position = position.value();
                if !offer(position, position, value.value())? {
                    break;
                }
            }
        }
        ReadTarget::Stream(stream) => {
            let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
            let name = stream.as_str();
            for item in index
                .range((name, from)..=(name, u64::MAX))
                .map_err(StoreError::db)?
            {
                if looked_at == max_looked_at {
                    break;
                }
                looked_at += 1;
                let (key, position) = item.map_err(StoreError::db)?;
                let version = key.value().1;
                let position = position.value();
                let value = indexed_event(&events_table, position)?;
                if !offer(version, position, value.value())? {
                    break;
                }
            }
        }
    }
    let events = page.events;
    Ok(Scan {
        events,
        next_from,
        head_position,
        target_head,
        out_of_range: None,
    })
}
