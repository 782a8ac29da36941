//! What the Raft log looks like now, kept in memory and changed only after a commit.

use crate::type_config::LogId;
use crate::type_config::Vote;

/// The log's vote, commit index, purge point and last entry, as committed.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    /// `committed` has changed since it was last written: the next transaction writes it.
    pub committed_unwritten: bool,
    pub last_purged: Option<LogId>,
    /// Entries from this index up to `last_purged` are purged but still stored: each
    /// transaction deletes a bounded run of them (see `txn::delete_purged`).
    pub purged_stored_from: u64,
    pub last_log_id: Option<LogId>,
}

impl LogMeta {
    /// Takes a new commit index in memory; the next transaction writes it.
    pub fn stage_committed(&mut self, committed: Option<LogId>) {
        self.committed = committed;
        self.committed_unwritten = true;
    }
}
