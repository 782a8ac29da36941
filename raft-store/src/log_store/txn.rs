//! The log's ops inside the writer's transaction: append, save a vote, truncate, purge, and
//! the commit index. Each changes the staged [`LogMeta`], which the writer publishes once the
//! transaction committed.

use redb::ReadableTable;
use redb::WriteTransaction;

use super::LogMeta;
use crate::codec;
use crate::engine::journal::Journal;
use crate::error::StoreError;
use crate::schema::LOG;
use crate::schema::META;
use crate::schema::meta_key;
use crate::type_config::Entry;
use crate::type_config::LogId;
use crate::type_config::Vote;

/// Stores `entries` after the log's last entry, and stages each in the journal, which makes
/// them durable.
pub(crate) fn append(
    txn: &WriteTransaction,
    entries: &[Entry],
    log: &mut LogMeta,
    journal: &mut Journal,
) -> Result<(), StoreError> {
    let mut records = Vec::with_capacity(entries.len());
    stage_append(entries, log, journal, &mut records)?;
    insert_staged(txn, &records)
}

/// An entry encoded for the log table and the journal: its index and its record.
pub(crate) type StagedEntry = (u64, Vec<u8>);

/// Takes `entries` after the log's last entry without writing the database: stages each in
/// the journal (which makes them durable once synced) and pushes its record onto `records`,
/// for [`insert_staged`] in this transaction or a later one.
pub(crate) fn stage_append(
    entries: &[Entry],
    log: &mut LogMeta,
    journal: &mut Journal,
    records: &mut Vec<StagedEntry>,
) -> Result<(), StoreError> {
    for entry in entries {
        // Pair assertion with the open-time check: the log stays contiguous.
        if let Some(last) = log.last_log_id
            && entry.log_id.index != last.index + 1
        {
            return Err(StoreError::Invariant(format!(
                "append of log index {} after {}: the log must stay contiguous",
                entry.log_id.index, last.index
            )));
        }
        let record = codec::encode_entry(entry);
        journal.stage_append(&record);
        records.push((entry.log_id.index, record));
        log.last_log_id = Some(entry.log_id);
    }
    Ok(())
}

/// Writes staged entries to the log table, in order.
pub(crate) fn insert_staged(
    txn: &WriteTransaction,
    records: &[StagedEntry],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(LOG).map_err(StoreError::db)?;
    for (index, record) in records {
        table
            .insert(*index, record.as_slice())
            .map_err(StoreError::db)?;
    }
    Ok(())
}

/// Replays an append from the journal at open: after the log's last entry, or over one the
/// database holds already (a durable commit had it before the journal was emptied). Entries
/// at or below the purge point are gone already.
pub(crate) fn replay_append(
    txn: &WriteTransaction,
    entry: &Entry,
    log: &mut LogMeta,
) -> Result<(), StoreError> {
    let index = entry.log_id.index;
    if log.last_purged.is_some_and(|purged| index <= purged.index) {
        return Ok(());
    }
    // A truncation replayed over a log purged since may have cut below the purge point: the
    // log then goes on after the purge point.
    let next = log
        .last_log_id
        .max(log.last_purged)
        .map_or(0, |last| last.index + 1);
    if index > next && log.last_log_id.max(log.last_purged).is_some() {
        return Err(StoreError::Invariant(format!(
            "journal entry at log index {index}, but the log ends at {}",
            next - 1
        )));
    }
    let mut table = txn.open_table(LOG).map_err(StoreError::db)?;
    table
        .insert(index, codec::encode_entry(entry).as_slice())
        .map_err(StoreError::db)?;
    if log.last_log_id.is_none_or(|last| index >= last.index) {
        log.last_log_id = Some(entry.log_id);
    }
    Ok(())
}

/// Stores the vote.
pub(crate) fn save_vote(
    txn: &WriteTransaction,
    vote: Vote,
    log: &mut LogMeta,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::db)?;
    meta.insert(meta_key::VOTE, codec::encode_vote(&vote).as_slice())
        .map_err(StoreError::db)?;
    log.vote = Some(vote);
    Ok(())
}

/// The node caught up with a leader: its store no longer needs to before it votes.
pub(crate) fn clear_catch_up_required(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::db)?;
    meta.remove(meta_key::CATCH_UP_REQUIRED)
        .map_err(StoreError::db)?;
    Ok(())
}

/// Removes every entry after `last` (all of them with `None`), in one transaction: no hole.
pub(crate) fn truncate_after(
    txn: &WriteTransaction,
    last: Option<LogId>,
    log: &mut LogMeta,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(LOG).map_err(StoreError::db)?;
    let from = last.map(|id| id.index + 1).unwrap_or(0);
    table
        .retain_in(from.., |_, _| false)
        .map_err(StoreError::db)?;
    log.last_log_id = match (last, log.last_log_id) {
        (Some(last), Some(current)) if current.index <= last.index => Some(current),
        (Some(last), _) => Some(last),
        (None, _) => log.last_purged,
    };
    Ok(())
}

/// Purges the log up to `upto`: it takes effect here (the purge point is written); the
/// entries go a run at a time, with this and later transactions ([`delete_purged`]).
pub(crate) fn purge(
    txn: &WriteTransaction,
    upto: LogId,
    log: &mut LogMeta,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::db)?;
    meta.insert(
        meta_key::LAST_PURGED,
        codec::encode_log_id(&upto).as_slice(),
    )
    .map_err(StoreError::db)?;
    log.last_purged = Some(upto);
    if log.last_log_id.is_none_or(|last| last.index < upto.index) {
        log.last_log_id = Some(upto);
    }
    Ok(())
}

/// The most purged entries one transaction deletes.
const PURGED_DELETED_PER_TRANSACTION: u64 = 1024;

/// Deletes the next run of purged entries still stored.
///
/// A purge takes effect at once: the purge point is written, and reads never go below it. The
/// entries themselves are deleted a bounded run per transaction, since deleting all of them in
/// the purge's own transaction (100,000 entries at the default snapshot threshold) stalled the
/// writer for 200-300 ms with 1 KiB events, and every client with it.
pub(crate) fn delete_purged(txn: &WriteTransaction, log: &mut LogMeta) -> Result<(), StoreError> {
    let Some(purged) = log.last_purged else {
        return Ok(());
    };
    if log.purged_stored_from > purged.index {
        return Ok(());
    }
    let mut table = txn.open_table(LOG).map_err(StoreError::db)?;
    // Start at the first entry stored: a node that installed a snapshot may have purged far
    // past anything it ever stored.
    let from = match table.first().map_err(StoreError::db)? {
        Some((first, _)) => first.value().max(log.purged_stored_from),
        None => u64::MAX,
    };
    if from > purged.index {
        log.purged_stored_from = purged.index + 1;
        return Ok(());
    }
    let end = purged
        .index
        .saturating_add(1)
        .min(from.saturating_add(PURGED_DELETED_PER_TRANSACTION));
    table
        .retain_in(from..end, |_, _| false)
        .map_err(StoreError::db)?;
    log.purged_stored_from = end;
    Ok(())
}

/// Records the log journal's `generation` in `txn` (see `engine/journal.rs`).
pub(crate) fn write_journal_generation(
    txn: &WriteTransaction,
    generation: u64,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::db)?;
    meta.insert(
        meta_key::JOURNAL_GENERATION,
        codec::encode_u64(generation).as_slice(),
    )
    .map_err(StoreError::db)?;
    Ok(())
}

/// Writes the commit index (absent: none) into `txn`.
pub(crate) fn write_commit_index(
    txn: &WriteTransaction,
    committed: Option<LogId>,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::db)?;
    match committed {
        Some(log_id) => {
            meta.insert(
                meta_key::COMMITTED,
                codec::encode_log_id(&log_id).as_slice(),
            )
            .map_err(StoreError::db)?;
        }
        None => {
            meta.remove(meta_key::COMMITTED).map_err(StoreError::db)?;
        }
    }
    Ok(())
}
