//! Maintenance: backups. A backup is a live snapshot (one redb read transaction: an MVCC view
//! that never stops the writer) streamed in chunks at the pace the client takes them; the
//! client writes the file. Served by any node once it has applied what the client asked for.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use evlog_raft_store::reader::checksum::Checksum;
use evlog_raft_store::reader::checksum::MAX_CHECKPOINTS;
use evlog_raft_store::snapshot::BackupHeader;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;

use crate::raft::RaftHandle;
use crate::service::ServiceError;
use crate::service::event_log::Consistency;
use crate::service::event_log::EventLogService;

/// Most backups one node serves at once: each holds a read transaction (pages it sees are not
/// reused until it ends) and a blocking thread.
pub const MAX_CONCURRENT_BACKUPS: usize = 2;

/// Most checksums one node computes at once (each reads a range of the log).
pub const MAX_CONCURRENT_CHECKSUMS: usize = 2;

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
    checksums: Arc<Semaphore>,
    /// The node's database file (its size estimates a backup's).
    database_file: PathBuf,
}

impl MaintenanceService {
    pub fn new(handle: RaftHandle, event_log: Arc<EventLogService>, data_dir: &Path) -> Self {
        Self {
            handle,
            event_log,
            backups: Arc::new(Semaphore::new(MAX_CONCURRENT_BACKUPS)),
            checksums: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKSUMS)),
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

    /// The running hash of this node's events at `from..=to` (but for those removed by
    /// retention) with a checkpoint every `step` positions (0: none), once it has applied
    /// everything committed when the call began (and `to` with it).
    pub async fn checksum(&self, from: u64, to: u64, step: u64) -> Result<Checksum, ServiceError> {
        if from == 0 || to < from {
            return Err(ServiceError::InvalidArgument(format!(
                "positions {from}..={to}: give 1 <= from_position <= to_position"
            )));
        }
        let span = to - from + 1;
        let step = if step == 0 { span } else { step };
        if span / step > MAX_CHECKPOINTS {
            return Err(ServiceError::InvalidArgument(format!(
                "{} checkpoints asked for; at most {MAX_CHECKPOINTS} (use a step of at least {})",
                span / step,
                span.div_ceil(MAX_CHECKPOINTS)
            )));
        }
        let _permit = self.checksums.try_acquire().map_err(|_| {
            ServiceError::Busy(format!(
                "node {} computes {MAX_CONCURRENT_CHECKSUMS} checksums already; retry when one \
                 ends",
                self.handle.node_id()
            ))
        })?;
        // Linearizable, not just "applied `to`": removals by retention committed before the
        // call are applied here too, so replicas skip the same removed events.
        self.event_log.wait_for(Consistency::Linearizable).await?;
        if self.handle.applied().head_position < to {
            return Err(ServiceError::InvalidArgument(format!(
                "position {to} is past the log's head {}",
                self.handle.applied().head_position
            )));
        }
        let mut checksum = self.handle.reader().checksum(from, to, step).await?;
        if step == span {
            checksum.checkpoints.clear();
        }
        Ok(checksum)
    }
}
