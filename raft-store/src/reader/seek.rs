//! Seek by time: the position (whole log) or version (one stream) a read at a time starts at,
//! by binary search. It relies on timestamps never decreasing along the log (apply guarantees
//! it), so each stream's are ordered too: no time index to keep.

use redb::ReadableTable;

use super::ReadTarget;
use super::streams::stream_info;
use crate::codec;
use crate::error::StoreError;
use crate::schema::STREAM_INDEX;

/// The first index in `low..high` for which `at_or_after` holds, given that it holds for a
/// suffix of the range (`high` when it holds nowhere): a binary search.
fn partition_point(
    mut low: u64,
    mut high: u64,
    mut at_or_after: impl FnMut(u64) -> Result<bool, StoreError>,
) -> Result<u64, StoreError> {
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
pub(super) fn seek_time(
    txn: &redb::ReadTransaction,
    events_table: &redb::ReadOnlyTable<u64, &[u8]>,
    target: &ReadTarget,
    time_ms: u64,
    backward: bool,
) -> Result<u64, StoreError> {
    // The timestamp of the first event stored at or after `position` (rows of removed events
    // may be deleted: the next one stands in, timestamps never decrease); `u64::MAX` past the
    // last.
    let timestamp_at = |position: u64| -> Result<u64, StoreError> {
        match events_table
            .range(position..)
            .map_err(StoreError::db)?
            .next()
        {
            None => Ok(u64::MAX),
            Some(item) => {
                let (_, value) = item.map_err(StoreError::db)?;
                Ok(codec::peek_event(value.value())?.timestamp_ms)
            }
        }
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
                .map_err(StoreError::db)?
                .map(|(position, _)| position.value())
                .unwrap_or(0);
            let first = super::retention::first_position(txn)?.min(head + 1);
            partition_point(first, head + 1, |position| {
                Ok(past(timestamp_at(position)?))
            })?
        }
        ReadTarget::Stream(stream) => {
            let Some(info) = stream_info(txn, stream)? else {
                return Ok(if backward { 0 } else { 1 });
            };
            let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
            // Only retained versions: the rows of removed ones may be deleted.
            partition_point(info.first_version, info.version + 1, |version| {
                let position = index
                    .get((stream.as_str(), version))
                    .map_err(StoreError::db)?
                    .ok_or_else(|| {
                        StoreError::Invariant(format!("stream {stream} has no version {version}"))
                    })?
                    .value();
                Ok(past(timestamp_at(position)?))
            })?
        }
    };
    Ok(if backward { found - 1 } else { found })
}
