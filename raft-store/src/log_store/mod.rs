//! openraft's log storage on the engine: appends, votes, truncation and purge go to the
//! writer thread (group commit), which carries them out with `txn.rs`; reads take the pending
//! tail (`tail.rs`) and open redb read transactions on blocking threads. `meta.rs` is what the
//! log looks like now.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;

use openraft::LogState;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use redb::ReadableDatabase;

use crate::codec;
use crate::engine::Engine;
use crate::engine::WriteOp;
use crate::engine::blocking;
use crate::error::StoreError;
use crate::schema::LOG;
use crate::type_config::Entry;
use crate::type_config::EntryPayload;
use crate::type_config::LogId;
use crate::type_config::TypeConfig;
use crate::type_config::Vote;
use crate::types::Command;

mod meta;
mod tail;
pub(crate) mod txn;

pub(crate) use meta::LogMeta;
pub(crate) use tail::Tail;

/// The Raft log and vote of one node.
#[derive(Clone)]
pub struct LogStore {
    engine: Engine,
}

impl LogStore {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// Reads log entries; cheap to clone, used by replication tasks.
#[derive(Clone)]
pub struct LogReader {
    engine: Engine,
}

fn to_range(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(start) => *start,
        Bound::Excluded(start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(end) => Some(end.saturating_add(1)),
        Bound::Excluded(end) => Some(*end),
        Bound::Unbounded => None,
    };
    (start, end)
}

/// Most bytes of entries one replication message carries (one entry always goes, whatever its
/// size): openraft asks for up to `max_payload_entries` (300) entries at a time, and 300
/// appends of 4 MiB would make a message of over a gigabyte on both ends.
pub const MAX_REPLICATION_BATCH_BYTES: usize = 8 << 20;

/// What an entry weighs against a byte budget, as held in memory (its events, roughly).
fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(Command::Append(command)) => append_bytes(command),
        EntryPayload::Normal(Command::Appends(commands)) => {
            ENTRY_OVERHEAD + commands.iter().map(append_bytes).sum::<usize>()
        }
        EntryPayload::Normal(Command::Consumer(command)) => command.weight(),
        EntryPayload::Normal(Command::Retention(_)) => 2 * ENTRY_OVERHEAD,
        // A role's grants and principals, or a token: bounded by the access limits.
        EntryPayload::Normal(Command::Access(command)) => {
            ENTRY_OVERHEAD + crate::access::encode_command(command).len()
        }
        EntryPayload::Normal(Command::Dictionary(bytes)) => ENTRY_OVERHEAD + bytes.len(),
        EntryPayload::Normal(Command::Check(_))
        | EntryPayload::Blank
        | EntryPayload::Membership(_) => ENTRY_OVERHEAD,
    }
}

const ENTRY_OVERHEAD: usize = 64;

fn append_bytes(command: &crate::types::AppendCommand) -> usize {
    ENTRY_OVERHEAD
        + command.stream.len()
        + command
            .events
            .iter()
            .map(|event| ENTRY_OVERHEAD + event.size())
            .sum::<usize>()
}

/// Entries kept while they fit a byte budget (the first always does).
struct Budgeted {
    entries: Vec<Entry>,
    bytes: usize,
    max_bytes: usize,
}

impl Budgeted {
    fn new(max_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Keeps `entry` if it fits; `false` (and drops it) when the budget is spent.
    fn push(&mut self, entry: Entry, bytes: usize) -> bool {
        if !self.entries.is_empty() && self.bytes.saturating_add(bytes) > self.max_bytes {
            return false;
        }
        self.bytes += bytes;
        self.entries.push(entry);
        true
    }
}

impl LogReader {
    /// Entries `start..end` (`None`: to the end) from the database, on a blocking thread, as
    /// many as fit `max_bytes` (their stored records; at least one). The flag says whether the
    /// budget stopped the read before `end`.
    async fn read_stored(
        &self,
        start: u64,
        end: Option<u64>,
        max_bytes: usize,
    ) -> Result<(Budgeted, bool), StoreError> {
        let shared = std::sync::Arc::clone(&self.engine.shared);
        blocking(move || {
            let txn = shared.db.begin_read().map_err(StoreError::db)?;
            let table = txn.open_table(LOG).map_err(StoreError::db)?;
            let mut kept = Budgeted::new(max_bytes);
            let items = match end {
                Some(end) if end <= start => return Ok((kept, false)),
                Some(end) => table.range(start..end),
                None => table.range(start..),
            }
            .map_err(StoreError::db)?;
            let mut expected = start;
            for item in items {
                let (index, value) = item.map_err(StoreError::db)?;
                let record = value.value();
                let entry = codec::decode_entry(record)?;
                // Pair assertion with the append path: contiguous, each at its own index.
                if entry.log_id.index != index.value()
                    || (!kept.entries.is_empty() && index.value() != expected)
                {
                    return Err(StoreError::Invariant(format!(
                        "log corrupt near index {}: found entry {}",
                        index.value(),
                        entry.log_id.index
                    )));
                }
                expected = index.value() + 1;
                if !kept.push(entry, record.len()) {
                    return Ok((kept, true));
                }
            }
            Ok((kept, false))
        })
        .await
    }

    /// Entries `start..end`, as many as fit `max_bytes` (at least one, when the range holds
    /// any): the pending tail first, then the database, so an entry the writer commits in
    /// between is in both (the pending copy wins), never in neither.
    async fn read(
        &self,
        start: u64,
        end: Option<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // Purged entries may still be stored for a while (see `txn::delete_purged`): they
        // are gone all the same.
        let start = match self.engine.shared.log().last_purged {
            Some(purged) => start.max(purged.index + 1),
            None => start,
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let (pending, first_pending) = {
            let tail = self.engine.shared.tail();
            let mut range = match end {
                Some(end) => tail.pending.range(start..end),
                None => tail.pending.range(start..),
            };
            let first_pending = range.clone().next().map(|(index, _)| *index);
            let mut pending = Budgeted::new(max_bytes);
            for (_, entry) in range.by_ref() {
                if !pending.push(entry.clone(), entry_bytes(entry)) {
                    break;
                }
            }
            (pending.entries, first_pending)
        };
        let stored_end = first_pending.or(end);
        // Replication and apply mostly read the newest entries, all still in the pending tail:
        // no database read then, and no hop to a blocking thread for it.
        let (mut kept, stopped_by_budget) = if stored_end.is_some_and(|end| end <= start) {
            (Budgeted::new(max_bytes), false)
        } else {
            self.read_stored(start, stored_end, max_bytes).await?
        };
        if stopped_by_budget {
            return Ok(kept.entries);
        }
        let Some(first_pending) = first_pending else {
            return Ok(kept.entries);
        };
        // Pair assertion with the writer: the stored entries run on into the pending ones.
        // (None stored before the pending ones is a log that starts with them: the writer
        // reports entries flushed once its journal has them, before its database commit.)
        if let Some(last) = kept.entries.last()
            && last.log_id.index + 1 != first_pending
        {
            return Err(StoreError::Invariant(format!(
                "log read of {start}..: stored entries end at {} but pending ones start at \
                 {first_pending}",
                last.log_id.index,
            )));
        }
        for entry in pending {
            let bytes = entry_bytes(&entry);
            if !kept.push(entry, bytes) {
                break;
            }
        }
        Ok(kept.entries)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_range(&range);
        Ok(self.read(start, end, usize::MAX).await?)
    }

    /// Replication's read: at most [`MAX_REPLICATION_BATCH_BYTES`] of entries (at least one).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .read(start, Some(end), MAX_REPLICATION_BATCH_BYTES)
            .await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.engine.shared.log().vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        LogReader {
            engine: self.engine.clone(),
        }
        .try_get_log_entries(range)
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.engine.shared.log().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.engine.shared.log().last_purged;
        let last_log_id = self
            .engine
            .shared
            .tail()
            .last_log_id
            .max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            engine: self.engine.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        Ok(self
            .engine
            .write(|done| WriteOp::SaveVote { vote, done })
            .await?)
    }

    /// Queued, not awaited: the commit index is advisory (openraft re-derives it), and the
    /// writer makes it durable with its next fsync, which is what re-apply at start relies on.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let (done, _unwatched) = tokio::sync::oneshot::channel();
        Ok(self
            .engine
            .submit(WriteOp::SaveCommitted { committed, done })
            .await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.engine.shared.log().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|entry| entry.log_id) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        // Readable at once from the pending tail; `callback` fires after the writer's fsync.
        {
            let mut tail = self.engine.shared.tail();
            for entry in &entries {
                tail.pending.insert(entry.log_id.index, entry.clone());
            }
            tail.last_log_id = Some(last);
        }
        Ok(self
            .engine
            .submit(WriteOp::Append {
                entries,
                flushed: callback,
            })
            .await?)
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        {
            let mut tail = self.engine.shared.tail();
            let from = last.map(|id| id.index + 1).unwrap_or(0);
            tail.pending.retain(|&index, _| index < from);
            tail.last_log_id = tail.last_log_id.min(last);
        }
        Ok(self
            .engine
            .write(|done| WriteOp::TruncateAfter { last, done })
            .await?)
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        {
            let mut tail = self.engine.shared.tail();
            tail.pending.retain(|&index, _| index > upto.index);
            tail.last_log_id = tail.last_log_id.max(Some(upto));
        }
        Ok(self
            .engine
            .write(|done| WriteOp::Purge { upto, done })
            .await?)
    }
}
