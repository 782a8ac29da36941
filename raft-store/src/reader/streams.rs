//! Stream summaries from the stream index: one stream's (two seeks), and pages of streams by
//! name prefix. The index is also every stream's summary: a stream's entries run without a gap
//! to its version (retention deletes rows from the front, never its last), so its version and
//! last position are its last entry; its first retained event comes from its metadata and the
//! log's first retained position (`retention.rs`).

use std::ops::Bound;

use redb::ReadableTable;

use crate::error::StoreError;
use crate::schema::STREAM_INDEX;
use crate::types::StreamInfo;

/// Reads a stream's summary in a read transaction, as reads see it (its first retained event;
/// see [`super::retention`]).
pub(crate) fn stream_info(
    txn: &redb::ReadTransaction,
    stream: &str,
) -> Result<Option<StreamInfo>, StoreError> {
    super::retention::stream_summary(txn, stream)
}

/// A stream's summary from the stream index, `None` if it has no events. Its first entry is
/// the first row stored, which may be a removed event's not yet deleted (readers take
/// [`stream_info`]); its last is the stream's last event, never deleted.
pub(crate) fn stream_summary(
    index: &impl ReadableTable<(&'static str, u64), u64>,
    stream: &str,
) -> Result<Option<StreamInfo>, StoreError> {
    let mut entries = index
        .range((stream, 1)..=(stream, u64::MAX))
        .map_err(StoreError::db)?;
    let Some(first) = entries.next() else {
        return Ok(None);
    };
    let (first_key, first_position) = first.map_err(StoreError::db)?;
    let first_position = first_position.value();
    let first_version = first_key.value().1;
    let (version, last_position) = match entries.next_back() {
        Some(last) => {
            let (key, position) = last.map_err(StoreError::db)?;
            (key.value().1, position.value())
        }
        None => (first_key.value().1, first_position),
    };
    Ok(Some(StreamInfo {
        version,
        first_version,
        first_position,
        last_position,
    }))
}

/// A page of stream summaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPage {
    /// Stream names and summaries, in name order.
    pub streams: Vec<(String, StreamInfo)>,
    /// The cursor for the next page (pass it as `after`); `None` when this page reached the end.
    pub next_after: Option<String>,
}

impl From<StreamPage> for (Vec<(String, StreamInfo)>, Option<String>) {
    fn from(page: StreamPage) -> Self {
        (page.streams, page.next_after)
    }
}

/// Up to `max_count` streams whose names start with `prefix`, in name order, after the stream
/// named `after` (exclusive).
pub(crate) fn list(
    txn: &redb::ReadTransaction,
    prefix: &str,
    after: Option<&str>,
    max_count: usize,
) -> Result<StreamPage, StoreError> {
    let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
    // Each stream's entries lie together in the index: visit the first entry of each stream
    // (one seek), then seek past the stream's last possible entry.
    let mut from = match after {
        Some(after) if after >= prefix => Bound::Excluded((after.to_string(), u64::MAX)),
        _ => Bound::Included((prefix.to_string(), 0)),
    };
    let mut page = Vec::with_capacity(max_count.min(1024));
    let mut next = None;
    loop {
        let start = from
            .as_ref()
            .map(|(name, version)| (name.as_str(), *version));
        let Some(item) = index
            .range::<(&str, u64)>((start, Bound::Unbounded))
            .map_err(StoreError::db)?
            .next()
        else {
            break;
        };
        let (key, _) = item.map_err(StoreError::db)?;
        let name = key.value().0.to_string();
        if !name.starts_with(prefix) {
            break;
        }
        if page.len() == max_count {
            next = page
                .last()
                .map(|(last, _): &(String, StreamInfo)| last.clone());
            break;
        }
        let info = stream_summary(&index, &name)?.ok_or_else(|| {
            StoreError::Invariant(format!("stream {name:?} vanished from the index"))
        })?;
        let info = super::retention::retained_summary(txn, &index, &name, info)?;
        from = Bound::Excluded((name.clone(), u64::MAX));
        page.push((name, info));
    }
    Ok(StreamPage {
        streams: page,
        next_after: next,
    })
}
