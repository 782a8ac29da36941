//! Maintenance: backups and replica checks. A backup is a live snapshot (one redb read transaction: an MVCC view
//! that never stops the writer) streamed in chunks at the pace the client takes them; the
//! client writes the file. Served by any node once it has applied what the client asked for.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use evlog_raft_store::reader::checks;
use evlog_raft_store::reader::checks::CheckOutcome;
use evlog_raft_store::reader::checks::KEPT_CHECKS;
use evlog_raft_store::snapshot::BackupHeader;
use evlog_raft_store::types::CheckRange;
use evlog_raft_store::types::Command;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;

use crate::raft::RaftHandle;
use crate::service::ServiceError;
use crate::service::event_log::Consistency;
use crate::service::event_log::EventLogService;
use crate::service::event_log::propose_error;

/// Most backups one node serves at once: each holds a read transaction (pages it sees are not
/// reused until it ends) and a blocking thread.
pub const MAX_CONCURRENT_BACKUPS: usize = 2;

/// Longest a `Checksum` call waits for its result (the client asks again).
pub const MAX_CHECKSUM_WAIT: Duration = Duration::from_secs(10);

/// Bytes per chunk of a backup stream (well under the response message limit).
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;

/// A backup being served: what it copies, then its bytes.
pub struct Backup {
    pub header: BackupHeader,
    /// About how many bytes the file will have (the database file's size).
    pub estimated_bytes: u64,
    /// The file's bytes in order; an error ends them.
    pub chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    /// Held until the backup ends.
    pub _permit: OwnedSemaphorePermit,
}

pub struct MaintenanceService {
    handle: RaftHandle,
    event_log: Arc<EventLogService>,
    backups: Arc<Semaphore>,
    request_timeout: Duration,
    /// The node's database file (its size estimates a backup's).
    database_file: PathBuf,
}

impl MaintenanceService {
    pub fn new(
        handle: RaftHandle,
        event_log: Arc<EventLogService>,
        data_dir: &Path,
        request_timeout: Duration,
    ) -> Self {
        Self {
            handle,
            event_log,
            backups: Arc::new(Semaphore::new(MAX_CONCURRENT_BACKUPS)),
            request_timeout,
            database_file: data_dir.join(evlog_raft_store::schema::DATABASE_FILE),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.handle.node_id()
    }

    /// Starts a backup of the state this node has applied, once that includes
    /// `at_least_position` (and the node has caught up since it started).
    pub async fn backup(&self, at_least_position: u64) -> Result<Backup, ServiceError> {
        let permit = Arc::clone(&self.backups).try_acquire_owned().map_err(|_| {
            ServiceError::Busy(format!(
                "node {} serves {MAX_CONCURRENT_BACKUPS} backups already; retry when one ends \
                 (or ask another node)",
                self.handle.node_id()
            ))
        })?;
        self.event_log
            .wait_for(Consistency::AtLeast(at_least_position))
            .await?;
        let reader = self.handle.reader();
        let (header, data) = reader.backup().await?;
        let estimated_bytes = std::fs::metadata(&self.database_file)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        Ok(Backup {
            header,
            estimated_bytes,
            chunks: evlog_raft_store::snapshot::chunks(data, BACKUP_CHUNK_BYTES),
            _permit: permit,
        })
    }

    /// Starts a replica check of `range` (see `reader::checks`): proposes its entry and
    /// answers its log index once this node (the leader) applied it.
    pub async fn start_checksum(&self, range: CheckRange) -> Result<u64, ServiceError> {
        // The range as the entry will see it at the earliest (the head only grows): refused
        // here rather than failing on every member.
        checks::validate(range, self.handle.applied().head_position)
            .map_err(ServiceError::InvalidArgument)?;
        match tokio::time::timeout(
            self.request_timeout,
            self.handle.propose(Command::Check(range)),
        )
        .await
        {
            Err(_) => Err(ServiceError::Timeout(
                "the check entry did not commit in time; retry".to_string(),
            )),
            Ok(Err(error)) => Err(propose_error(error)),
            Ok(Ok((_, receipt))) => Ok(receipt.log_index),
        }
    }

    /// This node's result of the check at log index `index`: waits up to `wait` for this node
    /// to apply and hash it; `None` when it has not by then.
    pub async fn checksum(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<Option<CheckOutcome>, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_CHECKSUM_WAIT);
        let mut applied = self.handle.applied_watch();
        if tokio::time::timeout_at(
            deadline,
            applied.wait_for(|applied| applied.log_index >= index),
        )
        .await
        .is_err()
        {
            return Ok(None);
        }
        let mut pending = self.handle.reader().check(index).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "node {} has no result of the check at log index {index}: it applied the entry \
                 before it restarted, or installed a snapshot past it, or keeps only its latest \
                 {KEPT_CHECKS} checks, or the entry is no check; start another check",
                self.handle.node_id()
            ))
        })?;
        match tokio::time::timeout_at(deadline, pending.wait_for(Option::is_some)).await {
            Err(_) => Ok(None),
            Ok(Err(_)) => Ok(Some(Err("the check's hashing stopped".to_string()))),
            Ok(Ok(outcome)) => Ok(outcome.clone()),
        }
    }
}
