//! Deleting the rows of removed events, a bounded step at a time, in the writer's
//! transactions. Removal itself happened when an entry applied (a boundary rose, and reads
//! stopped returning what lies below it); this is only the disk space coming back, so it may
//! lag, differ in timing between replicas, and restart anywhere.
//!
//! Two sources of work: the streams queued in `reclaim_streams` (their first retained version
//! rose), and the log-wide boundary (`first_position`), walked from the oldest event. One row
//! is never deleted: a stream's last event, which keeps its version and last position in the
//! stream index (the stream's summary), so a stream whose every event was removed still
//! continues from its version. Reads never return it; a snapshot carries it.

use redb::ReadableTable;
use redb::ReadableTableMetadata;
use redb::WriteTransaction;

use super::MachineMeta;
use crate::codec;
use crate::error::StoreError;
use crate::schema::EVENTS;
use crate::schema::RECLAIM_STREAMS;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;

/// Rows (events, each with its index entry) one step deletes at least, when there are: deleting
/// 100,000 rows in one transaction stalls the writer for hundreds of milliseconds (see the log
/// purge).
pub const MIN_ROWS_PER_STEP: usize = 1_024;
/// Most rows one step deletes. A batch's step may delete as many rows as the batch appended
/// events (up to this), so deletion keeps pace with appends that retention removes as they
/// come (max_count, the log-wide limits) instead of trailing behind them under load.
pub const MAX_ROWS_PER_STEP: usize = 8_192;

/// The rows a step may delete after a batch that appended `appended` events.
pub fn budget(appended: u64) -> usize {
    usize::try_from(appended.saturating_mul(2))
        .unwrap_or(MAX_ROWS_PER_STEP)
        .clamp(MIN_ROWS_PER_STEP, MAX_ROWS_PER_STEP)
}

/// What the writer knows of the work left.
#[derive(Debug)]
pub struct ReclaimState {
    /// Whether there may be rows to delete (true at start: the tables say).
    pub pending: bool,
    /// Every event below this position but streams' last ones is deleted (log-wide).
    log_done_below: u64,
}

impl Default for ReclaimState {
    fn default() -> Self {
        Self {
            pending: true,
            log_done_below: 0,
        }
    }
}

/// Deletes at most `max_rows` removed rows inside `txn` (see [`budget`]); returns how many,
/// and leaves `state.pending` false once nothing is left.
pub(crate) fn step(
    txn: &WriteTransaction,
    machine: &MachineMeta,
    state: &mut ReclaimState,
    max_rows: usize,
) -> Result<usize, StoreError> {
    let max_rows = max_rows.clamp(1, MAX_ROWS_PER_STEP);
    let max_looked_at = 4 * max_rows;
    if !state.pending {
        return Ok(0);
    }
    let mut events = txn.open_table(EVENTS).map_err(StoreError::db)?;
    let mut index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
    let mut queue = txn.open_table(RECLAIM_STREAMS).map_err(StoreError::db)?;
    let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
    let mut deleted = 0;
    let mut streams_done = queue.is_empty().map_err(StoreError::db)?;
    while deleted < max_rows && !streams_done {
        let Some(item) = queue.first().map_err(StoreError::db)? else {
            streams_done = true;
            break;
        };
        let stream = item.0.value().to_string();
        drop(item);
        let first_version = match metas.get(stream.as_str()).map_err(StoreError::db)? {
            Some(value) => codec::decode_stream_meta(value.value())?.first_version,
            None => 1,
        };
        let last_version = last_version(&index, &stream)?;
        let doomed: Vec<(u64, u64)> = index
            .range((stream.as_str(), 0)..(stream.as_str(), first_version))
            .map_err(StoreError::db)?
            .take(max_rows - deleted)
            .map(|item| item.map(|(key, position)| (key.value().1, position.value())))
            .collect::<Result<_, _>>()
            .map_err(StoreError::db)?;
        let mut finished = doomed.len() < max_rows - deleted;
        for (version, position) in doomed {
            if Some(version) == last_version {
                finished = true;
                break;
            }
            events.remove(position).map_err(StoreError::db)?;
            index
                .remove((stream.as_str(), version))
                .map_err(StoreError::db)?;
            deleted += 1;
        }
        if finished {
            queue.remove(stream.as_str()).map_err(StoreError::db)?;
        }
    }
    let mut log_done = state.log_done_below >= machine.first_position;
    if deleted < max_rows && !log_done {
        let from = state.log_done_below;
        let below: Vec<(u64, String, u64)> = events
            .range(from..machine.first_position)
            .map_err(StoreError::db)?
            .take(max_looked_at)
            .map(|item| {
                let (position, value) = item.map_err(StoreError::db)?;
                let head = codec::peek_event(value.value())?;
                Ok((
                    position.value(),
                    head.stream.to_string(),
                    head.stream_version,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let looked_at_all = below.len() < max_looked_at;
        let mut resume = match below.last() {
            Some((position, _, _)) if !looked_at_all => position + 1,
            _ => machine.first_position,
        };
        for (position, stream, version) in below {
            if deleted == max_rows {
                resume = position;
                break;
            }
            // A stream's last event stays (its version lives in the index).
            if last_version(&index, &stream)? == Some(version) {
                continue;
            }
            events.remove(position).map_err(StoreError::db)?;
            index
                .remove((stream.as_str(), version))
                .map_err(StoreError::db)?;
            deleted += 1;
        }
        state.log_done_below = resume;
        log_done = state.log_done_below >= machine.first_position;
    }
    state.pending = !(streams_done && log_done);
    Ok(deleted)
}

/// The last version the stream index holds for `stream`.
fn last_version(
    index: &impl ReadableTable<(&'static str, u64), u64>,
    stream: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(index
        .range((stream, 0)..=(stream, u64::MAX))
        .map_err(StoreError::db)?
        .next_back()
        .transpose()
        .map_err(StoreError::db)?
        .map(|(key, _)| key.value().1))
}
