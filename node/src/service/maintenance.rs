//! Maintenance: backups. A backup is a live snapshot (one redb read transaction: an MVCC view
//! that never stops the writer) streamed in chunks at the pace the client takes them; the
//! client writes the file. Served by any node once it has applied what the client asked for.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
    /// The node's database file (its size estimates a backup's).
    database_file: PathBuf,
}

impl MaintenanceService {
    pub fn new(handle: RaftHandle, event_log: Arc<EventLogService>, data_dir: &Path) -> Self {
        Self {
            handle,
            event_log,
            backups: Arc::new(Semaphore::new(MAX_CONCURRENT_BACKUPS)),
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
}

/// How long a backup stream may wait for the client to take its next chunk before it ends:
/// a stalled client must not hold a read transaction forever.
pub const BACKUP_STALL_TIMEOUT: Duration = Duration::from_secs(60);
