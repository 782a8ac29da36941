//! What reads may return: not the events retention or a deletion removed, whose rows may
//! still be stored until the writer deletes them (`state_machine/reclaim.rs`). An event is
//! removed when its position is below the log's first retained position, or its version below
//! its stream's first retained version. Reads of a stream start at its first retained
//! version; reads of the whole log start at the first retained position and skip removed
//! events past it.

use std::collections::HashMap;

use redb::ReadableTable;

use crate::codec;
use crate::error::StoreError;
use crate::schema::SM_META;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::schema::sm_key;
use crate::types::StreamInfo;
use crate::types::StreamMeta;

/// Most streams' first versions one read remembers (then it starts over).
const MAX_REMEMBERED: usize = 4_096;

/// The log's first retained position, as a read transaction sees it.
pub(crate) fn first_position(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let sm = txn.open_table(SM_META).map_err(StoreError::db)?;
    Ok(
        match sm.get(sm_key::FIRST_POSITION).map_err(StoreError::db)? {
            None => 1,
            Some(value) => codec::decode_u64("first position", value.value())?,
        },
    )
}

/// A stream's metadata, as a read transaction sees it.
pub(crate) fn stream_meta(
    txn: &redb::ReadTransaction,
    stream: &str,
) -> Result<Option<StreamMeta>, StoreError> {
    let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
    match metas.get(stream).map_err(StoreError::db)? {
        None => Ok(None),
        Some(value) => Ok(Some(codec::decode_stream_meta(value.value())?)),
    }
}

/// Decides, event by event, whether a read of the whole log returns it.
pub(crate) struct Retained<'t, T> {
    first_position: u64,
    metas: &'t T,
    /// Whether any stream has metadata (none: only the log's first position counts).
    any: bool,
    first_versions: HashMap<String, u64>,
}

impl<'t, T: ReadableTable<&'static str, &'static [u8]>> Retained<'t, T> {
    pub fn new(first_position: u64, metas: &'t T) -> Self {
        // An error here shows again on the first lookup.
        let any = !metas.is_empty().unwrap_or(false);
        Self {
            first_position,
            metas,
            any,
            first_versions: HashMap::new(),
        }
    }

    /// Whether the event stored as `record` at `position` is kept; peeks into the record only
    /// when some stream has metadata.
    pub fn keeps_record(&mut self, position: u64, record: &[u8]) -> Result<bool, StoreError> {
        if position < self.first_position {
            return Ok(false);
        }
        if !self.any {
            return Ok(true);
        }
        let head = codec::peek_event(record)?;
        self.keeps(position, head.stream, head.stream_version)
    }

    /// Whether the event at `position`, `version` of `stream`, is kept.
    pub fn keeps(&mut self, position: u64, stream: &str, version: u64) -> Result<bool, StoreError> {
        if position < self.first_position {
            return Ok(false);
        }
        if !self.any {
            return Ok(true);
        }
        let first_version = match self.first_versions.get(stream) {
            Some(first) => *first,
            None => {
                let first = match self.metas.get(stream).map_err(StoreError::db)? {
                    None => 1,
                    Some(value) => codec::decode_stream_meta(value.value())?.first_version,
                };
                if self.first_versions.len() >= MAX_REMEMBERED {
                    self.first_versions.clear();
                }
                self.first_versions.insert(stream.to_string(), first);
                first
            }
        };
        Ok(version >= first_version)
    }
}

/// A stream's summary as reads see it: `first_version` and `first_position` are its first
/// retained event's (`version + 1` and 0 when none is). `info` is the stream index's summary
/// (`None`: the stream has no events).
pub(crate) fn retained_summary(
    txn: &redb::ReadTransaction,
    index: &impl ReadableTable<(&'static str, u64), u64>,
    stream: &str,
    info: StreamInfo,
) -> Result<StreamInfo, StoreError> {
    let first_version = first_version(txn, index, stream, &info)?;
    let first_position = if first_version > info.version {
        0
    } else {
        index
            .get((stream, first_version))
            .map_err(StoreError::db)?
            .ok_or_else(|| {
                StoreError::Invariant(format!(
                    "stream {stream:?} has no index entry for its first retained version \
                     {first_version}"
                ))
            })?
            .value()
    };
    Ok(StreamInfo {
        first_version,
        first_position,
        ..info
    })
}

/// A stream's first retained version: past its own boundary and the log's.
pub(crate) fn first_version(
    txn: &redb::ReadTransaction,
    index: &impl ReadableTable<(&'static str, u64), u64>,
    stream: &str,
    info: &StreamInfo,
) -> Result<u64, StoreError> {
    let own = stream_meta(txn, stream)?.map_or(1, |meta| meta.first_version);
    let low = own.max(info.first_version).max(1);
    let log_first = first_position(txn)?;
    if info.first_position >= log_first {
        // Every entry from the index's first on lies at or past the log's first position.
        return Ok(low);
    }
    // The first version at or past `low` whose event lies at or past the log's first retained
    // position: positions rise with versions, and the rows missing (deleted) are all below it.
    let mut low = low;
    let mut high = info.version + 1;
    while low < high {
        let middle = low + (high - low) / 2;
        let kept = match index.get((stream, middle)).map_err(StoreError::db)? {
            Some(position) => position.value() >= log_first,
            None => false,
        };
        if kept {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}

/// The summary of `stream` from the index, as reads see it (`None`: no events ever).
pub(crate) fn stream_summary(
    txn: &redb::ReadTransaction,
    stream: &str,
) -> Result<Option<StreamInfo>, StoreError> {
    let index = txn.open_table(STREAM_INDEX).map_err(StoreError::db)?;
    match super::streams::stream_summary(&index, stream)? {
        None => Ok(None),
        Some(info) => Ok(Some(retained_summary(txn, &index, stream, info)?)),
    }
}
