//! openraft's log storage on the engine: appends, votes, truncation and purge go to the
//! writer thread (group commit); reads open redb read transactions on blocking threads.

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
use crate::error::io_error;
use crate::schema::LOG;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

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

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| io::Error::other(format!("storage task failed: {error}")))?
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = to_range(&range);
        let shared = std::sync::Arc::clone(&self.engine.shared);
        blocking(move || {
            let txn = shared.db.begin_read().map_err(io_error)?;
            let table = txn.open_table(LOG).map_err(io_error)?;
            let items = match end {
                Some(end) if end <= start => return Ok(Vec::new()),
                Some(end) => table.range(start..end),
                None => table.range(start..),
            }
            .map_err(io_error)?;
            let mut entries = Vec::new();
            let mut expected = start;
            for item in items {
                let (index, value) = item.map_err(io_error)?;
                let entry = codec::decode_entry(value.value())?;
                // Pair assertion with the append path: contiguous, each at its own index.
                if entry.log_id.index != index.value()
                    || (!entries.is_empty() && index.value() != expected)
                {
                    return Err(io::Error::other(format!(
                        "log corrupt near index {}: found entry {}",
                        index.value(),
                        entry.log_id.index
                    )));
                }
                expected = index.value() + 1;
                entries.push(entry);
            }
            Ok(entries)
        })
        .await
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
        let log = self.engine.shared.log();
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            engine: self.engine.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.engine
            .write(|done| WriteOp::SaveVote { vote, done })
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.engine
            .write(|done| WriteOp::SaveCommitted { committed, done })
            .await
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
        // Returns once the batch holding these entries committed: they are readable and
        // durable, and `callback` has fired.
        self.engine
            .write(|done| WriteOp::Append {
                entries,
                done,
                flushed: callback,
            })
            .await
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        self.engine
            .write(|done| WriteOp::TruncateAfter { last, done })
            .await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        self.engine
            .write(|done| WriteOp::Purge { upto, done })
            .await
    }
}
