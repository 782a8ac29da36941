//! Consumer groups' reads: a group with its tracked events (for its dispatcher), the list of
//! groups, dead letters, and a group's lag; each in one read transaction.

use super::EventReader;
use super::ReadTarget;
use super::indexed_event;
use super::retention;
use super::retention::Retained;
use super::scan::EventFilter;
use super::scan::last_position;
use super::streams::stream_info;
use crate::codec;
use crate::consumer::ConsumerRecord;
use crate::consumer::ConsumerTarget;
use crate::consumer::DeadLetterRecord;
use crate::consumer::PendingRecord;
use crate::consumer::tables;
use crate::error::StoreError;
use crate::schema::CONSUMER_PENDING;
use crate::schema::CONSUMER_SKIPS;
use crate::schema::CONSUMERS;
use crate::schema::DEAD_LETTERS;
use crate::schema::EVENTS;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::types::ConsumerSkips;
use crate::types::RecordedEvent;

/// Most events a lag count of a filtered group looks at; past it the count is a lower bound.
pub const MAX_LAG_SCAN: u64 = 1_000_000;

/// How far behind a group is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Matching events not yet settled (tracked, plus those past the frontier).
    pub events: u64,
    /// False when a filtered group's count stopped at [`MAX_LAG_SCAN`] events looked at.
    pub exact: bool,
    /// The timestamp of the oldest unsettled matching event, if any.
    pub oldest_unsettled_ms: Option<u64>,
    /// The lowest key the group tracks, if any (its ack floor is this or its frontier,
    /// whichever is lower).
    pub first_tracked: Option<u64>,
}

/// A group's filter as the subscription scans take it.
pub fn event_filter(record: &ConsumerRecord) -> EventFilter {
    EventFilter {
        stream_prefixes: record.filter.stream_prefixes.clone(),
        event_types: record.filter.event_types.clone(),
        min_timestamp_ms: 0,
    }
}

pub fn read_target(target: &ConsumerTarget) -> ReadTarget {
    match target {
        ConsumerTarget::All => ReadTarget::All,
        ConsumerTarget::Stream(stream) => ReadTarget::Stream(stream.clone()),
    }
}

impl EventReader {
    /// A group's record alone.
    pub async fn consumer_record(
        &self,
        name: String,
    ) -> Result<Option<ConsumerRecord>, StoreError> {
        self.run(move |txn| {
            let consumers = txn.open_table(CONSUMERS).map_err(StoreError::db)?;
            tables::consumer(&consumers, &name)
        })
        .await
    }

    /// What retention took from group `name` (nothing: the default).
    pub async fn consumer_skips(&self, name: String) -> Result<ConsumerSkips, StoreError> {
        self.run(move |txn| {
            let table = txn.open_table(CONSUMER_SKIPS).map_err(StoreError::db)?;
            Ok(match table.get(name.as_str()).map_err(StoreError::db)? {
                None => ConsumerSkips::default(),
                Some(value) => codec::decode_consumer_skips(value.value())?,
            })
        })
        .await
    }

    /// A group and every event it tracks, in key order.
    pub async fn consumer(
        &self,
        name: String,
    ) -> Result<Option<(ConsumerRecord, Vec<(u64, PendingRecord)>)>, StoreError> {
        self.run(move |txn| {
            let consumers = txn.open_table(CONSUMERS).map_err(StoreError::db)?;
            let Some(record) = tables::consumer(&consumers, &name)? else {
                return Ok(None);
            };
            let pending = txn.open_table(CONSUMER_PENDING).map_err(StoreError::db)?;
            let rows =
                tables::group_rows(&pending, "consumer pending event", &name, 0, usize::MAX)?;
            Ok(Some((record, rows)))
        })
        .await
    }

    /// Up to `max_count` groups in name order after `after`.
    pub async fn list_consumers(
        &self,
        after: Option<String>,
        max_count: usize,
    ) -> Result<Vec<ConsumerRecord>, StoreError> {
        self.run(move |txn| {
            let consumers = txn.open_table(CONSUMERS).map_err(StoreError::db)?;
            let mut groups = Vec::new();
            let range = match &after {
                Some(after) => consumers.range::<&str>((
                    std::ops::Bound::Excluded(after.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => consumers.range::<&str>(..),
            }
            .map_err(StoreError::db)?;
            for item in range.take(max_count) {
                let (_, value) = item.map_err(StoreError::db)?;
                groups.push(crate::consumer::decode("consumer group", value.value())?);
            }
            Ok(groups)
        })
        .await
    }

    /// Up to `max_count` dead letters of group `name` from key `from` on.
    pub async fn dead_letters(
        &self,
        name: String,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, StoreError> {
        self.run(move |txn| {
            let table = txn.open_table(DEAD_LETTERS).map_err(StoreError::db)?;
            tables::group_rows(&table, "dead letter", &name, from, max_count)
        })
        .await
    }

    /// The events at `positions`, in that order; `None` for one retention or a deletion
    /// removed (a group may track an event its stream's limits removed since).
    pub async fn events_at(
        &self,
        positions: Vec<u64>,
    ) -> Result<Vec<Option<RecordedEvent>>, StoreError> {
        self.run(move |txn| {
            let events = txn.open_table(EVENTS).map_err(StoreError::db)?;
            let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
            let mut retained = Retained::new(retention::first_position(txn)?, &metas);
            positions
                .into_iter()
                .map(|position| {
                    let Some(value) = events.get(position).map_err(StoreError::db)? else {
                        return Ok(None);
                    };
                    if !retained.keeps_record(position, value.value())? {
                        return Ok(None);
                    }
                    Ok(Some(codec::decode_event(position, value.value())?))
                })
                .collect()
        })
        .await
    }

    /// How far behind group `record` is, as the store is now.
    /// A filtered group's matching events are counted up to `max_scan` events looked at
    /// (then `exact` is false); [`MAX_LAG_SCAN`] for an answer to a person, less for metrics.
    pub async fn consumer_lag(
        &self,
        record: ConsumerRecord,
        max_scan: u64,
    ) -> Result<Lag, StoreError> {
        self.run(move |txn| {
            let pending = txn.open_table(CONSUMER_PENDING).map_err(StoreError::db)?;
            let mut oldest: Option<u64> = None;
            let mut first_tracked = None;
            let mut tracked = 0;
            for item in pending
                .range((record.name.as_str(), 0)..=(record.name.as_str(), u64::MAX))
                .map_err(StoreError::db)?
            {
                let (key, value) = item.map_err(StoreError::db)?;
                first_tracked.get_or_insert(key.value().1);
                let row: PendingRecord =
                    crate::consumer::decode("consumer pending event", value.value())?;
                tracked += 1;
                oldest = Some(oldest.map_or(row.event_timestamp_ms, |oldest| {
                    oldest.min(row.event_timestamp_ms)
                }));
            }
            let events = txn.open_table(EVENTS).map_err(StoreError::db)?;
            let filter = event_filter(&record);
            let mut lag = Lag {
                events: tracked,
                exact: true,
                oldest_unsettled_ms: oldest,
                first_tracked,
            };
            let mut count = |record: &[u8]| -> Result<bool, StoreError> {
                let head = codec::peek_event(record)?;
                if filter.matches_head(&head) {
                    if lag.events == tracked {
                        let first = head.timestamp_ms;
                        lag.oldest_unsettled_ms = Some(
                            lag.oldest_unsettled_ms
                                .map_or(first, |oldest| oldest.min(first)),
                        );
                    }
                    lag.events += 1;
                }
                Ok(true)
            };
            let mut looked_at = 0;
            match &record.target {
                ConsumerTarget::All => {
                    let head = last_position(&events)?;
                    if filter.matches_everything() {
                        lag.events += (head + 1).saturating_sub(record.frontier);
                        if let Some(first) = events.get(record.frontier).map_err(StoreError::db)? {
                            count_first(&mut lag, first.value())?;
                        }
                    } else {
                        for item in events.range(record.frontier..).map_err(StoreError::db)? {
                            if looked_at == max_scan {
                                lag.exact = false;
                                break;
                            }
                            looked_at += 1;
                            let (_, value) = item.map_err(StoreError::db)?;
                            count(value.value())?;
                        }
                    }
                }
                ConsumerTarget::Stream(stream) => {
                    let version = stream_info(txn, stream)?.map_or(0, |info| info.version);
                    let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
                    if filter.matches_everything() {
                        lag.events += (version + 1).saturating_sub(record.frontier);
                        if let Some(position) = index
                            .get((stream.as_str(), record.frontier))
                            .map_err(StoreError::db)?
                        {
                            let value = indexed_event(&events, position.value())?;
                            count_first(&mut lag, value.value())?;
                        }
                    } else {
                        for item in index
                            .range((stream.as_str(), record.frontier)..=(stream.as_str(), u64::MAX))
                            .map_err(StoreError::db)?
                        {
                            if looked_at == max_scan {
                                lag.exact = false;
                                break;
                            }
                            looked_at += 1;
                            let (_, position) = item.map_err(StoreError::db)?;
                            let value = indexed_event(&events, position.value())?;
                            count(value.value())?;
                        }
                    }
                }
            }
            Ok(lag)
        })
        .await
    }
}

/// Counts the first event past the frontier of an unfiltered group into the oldest time.
fn count_first(lag: &mut Lag, record: &[u8]) -> Result<(), StoreError> {
    let first = codec::peek_event(record)?.timestamp_ms;
    lag.oldest_unsettled_ms = Some(
        lag.oldest_unsettled_ms
            .map_or(first, |oldest| oldest.min(first)),
    );
    Ok(())
}
