//! Shrinking a stopped node's database file (`evlog compact --data-dir DIR`). redb frees the
//! pages of deleted rows for reuse but never gives them back to the file system on its own
//! (but for free pages at the file's end), so after retention removed much of a log the file
//! keeps its size. Offline, with no node holding the database: first the rows of removed
//! events not deleted yet are deleted (the running writer does it in bounded steps), then
//! redb's `compact` moves the pages down and truncates the file.

use std::path::Path;
use std::path::PathBuf;

use redb::Database;
use redb::ReadableDatabase;

use crate::codec;
use crate::error::OpenError;
use crate::schema::DATABASE_FILE;
use crate::schema::FORMAT_VERSION;
use crate::schema::META;
use crate::schema::SM_META;
use crate::schema::meta_key;
use crate::schema::sm_key;
use crate::state_machine::MachineMeta;
use crate::state_machine::reclaim;

/// What compacting did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Rows of removed events deleted before compacting.
    pub rows_deleted: u64,
}

/// Most deletion steps before compacting (each deletes up to
/// [`reclaim::MAX_ROWS_PER_STEP`] rows): far more than any log holds.
const MAX_STEPS: usize = 1 << 24;

/// Compacts the database in `data_dir`, which no node may have open (redb locks it: a running
/// node's is refused). A directory of another format is refused, never upgraded.
pub fn compact_offline(data_dir: &Path) -> Result<Compacted, OpenError> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.is_file() {
        return Err(OpenError::Damaged {
            path,
            detail: "no evlog database here".to_string(),
        });
    }
    let size = |path: &PathBuf| {
        std::fs::metadata(path)
            .map(|metadata| metadata.len())
            .map_err(|source| OpenError::Storage {
                path: path.clone(),
                source,
            })
    };
    let bytes_before = size(&path)?;
    let mut db = Database::open(&path).map_err(|source| OpenError::Database {
        path: path.clone(),
        source,
    })?;
    let storage = |path: &PathBuf| {
        let path = path.clone();
        move |error: redb::Error| OpenError::Storage {
            path,
            source: std::io::Error::other(error),
        }
    };
    let damaged = |path: &PathBuf| {
        let path = path.clone();
        move |detail: String| OpenError::Damaged { path, detail }
    };
    let machine = {
        let txn = db.begin_read().map_err(|e| storage(&path)(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| storage(&path)(e.into()))?;
        let format = meta
            .get(meta_key::FORMAT_VERSION)
            .map_err(|e| storage(&path)(e.into()))?
            .ok_or_else(|| damaged(&path)("no format version".to_string()))?;
        let format = codec::decode_u64("format version", format.value())
            .map_err(|e| damaged(&path)(e.to_string()))?;
        if format != u64::from(FORMAT_VERSION) {
            return Err(OpenError::UnknownFormat {
                path,
                found: u32::try_from(format).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let sm = txn
            .open_table(SM_META)
            .map_err(|e| storage(&path)(e.into()))?;
        let first_position = match sm
            .get(sm_key::FIRST_POSITION)
            .map_err(|e| storage(&path)(e.into()))?
        {
            None => 1,
            Some(value) => codec::decode_u64("first position", value.value())
                .map_err(|e| damaged(&path)(e.to_string()))?,
        };
        MachineMeta {
            first_position,
            ..MachineMeta::default()
        }
    };
    let mut state = reclaim::ReclaimState::default();
    let mut rows_deleted = 0u64;
    for _ in 0..MAX_STEPS {
        if !state.pending {
            break;
        }
        let txn = db.begin_write().map_err(|e| storage(&path)(e.into()))?;
        let deleted = reclaim::step(&txn, &machine, &mut state, reclaim::MAX_ROWS_PER_STEP)
            .map_err(|error| damaged(&path)(error.to_string()))?;
        txn.commit().map_err(|e| storage(&path)(e.into()))?;
        rows_deleted += deleted as u64;
    }
    // Each pass moves what it can; stop when one moves nothing (bounded all the same).
    for _ in 0..64 {
        let moved = db.compact().map_err(|error| OpenError::Storage {
            path: path.clone(),
            source: std::io::Error::other(error),
        })?;
        if !moved {
            break;
        }
    }
    drop(db);
    Ok(Compacted {
        bytes_before,
        bytes_after: size(&path)?,
        rows_deleted,
    })
}
