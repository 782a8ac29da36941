//! The storage engine: one redb database and the one thread that writes to it.
//!
//! Every change (log append, vote, truncate, purge, apply, snapshot install) is a [`WriteOp`]
//! sent over a bounded channel to the writer thread. The thread takes whatever ops are
//! waiting (up to [`MAX_BATCH_OPS`]), carries them out in ONE write transaction and commits it
//! with `Durability::Immediate`: one fsync covers every op of the batch (group commit). Only
//! after the commit does it answer the ops: appends see their entries readable and their
//! `IOFlushed` callbacks fire, votes return, apply responses go out. If the transaction fails,
//! nothing of the batch is kept and every op of it gets the error.
//!
//! Reads never go through this thread: they open redb read transactions (MVCC snapshots that
//! never wait for the writer) on blocking threads.

use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use openraft::storage::ApplyResponder;
use openraft::storage::IOFlushed;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::ReadableTableMetadata;
use redb::WriteTransaction;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;

use crate::codec;
use crate::error::OpenError;
use crate::error::io_error;
use crate::failpoint::crash_point;
use crate::schema::EVENTS;
use crate::schema::FORMAT_2_STREAMS;
use crate::schema::FORMAT_VERSION;
use crate::schema::IDEMPOTENCY;
use crate::schema::IDEMPOTENCY_MAX_EXPIRED_PER_APPLY;
use crate::schema::IDEMPOTENCY_ORDER;
use crate::schema::LOG;
use crate::schema::META;
use crate::schema::SM_META;
use crate::schema::STREAM_INDEX;
use crate::schema::UPGRADABLE_FORMAT_VERSION;
use crate::schema::meta_key;
use crate::schema::sm_key;
use crate::snapshot;
use crate::state_machine::apply::decide_append;
use crate::state_machine::apply::decide_idempotent;
use crate::state_machine::apply::should_expire;
use crate::types::AppliedState;
use crate::types::Command;
use crate::types::CommandResponse;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::IdempotentRecord;
use crate::types::LogId;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::StreamInfo;
use crate::types::TypeConfig;
use crate::types::Vote;

/// Most ops carried out in one transaction.
pub const MAX_BATCH_OPS: usize = 1024;
/// Capacity of the channel to the writer thread.
const WRITE_QUEUE_CAPACITY: usize = 4096;
/// How many log entries at the tail are checked (checksums) when a store opens.
const TAIL_ENTRIES_VERIFIED_AT_OPEN: usize = 1024;

/// How to open a node's store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The node's data directory; created if missing.
    pub data_dir: PathBuf,
    /// This node's id: a data directory written by another node is refused.
    pub node_id: u64,
    /// The cluster's name: a data directory of another cluster is refused.
    pub cluster_id: String,
    /// Memory redb may use to cache pages (reads and not yet flushed writes).
    pub cache_bytes: usize,
    /// Save redb's allocator state with every commit (and commit in two phases), so that
    /// reopening after a crash takes no walk over the whole file; commits cost more.
    pub quick_repair: bool,
    /// What the database is stored on: `<data_dir>/evlog.redb`, or a backend of the caller's.
    pub backend: StoreBackend,
}

impl StoreConfig {
    /// A store in `data_dir` for node `node_id` of cluster `cluster_id`, with the default
    /// cache, no quick repair, on the file.
    pub fn new(data_dir: impl Into<PathBuf>, node_id: u64, cluster_id: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            node_id,
            cluster_id: cluster_id.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            quick_repair: false,
            backend: StoreBackend::File,
        }
    }
}

/// Where the store's database lives.
#[derive(Clone, Default)]
pub enum StoreBackend {
    /// The file `<data_dir>/evlog.redb` (what a node runs on).
    #[default]
    File,
    /// Any redb storage backend: tests use one that loses every write not yet synced
    /// (`testing::CrashBackend`). It must hold this data directory's database.
    Custom(SharedBackend),
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreBackend::File => f.write_str("File"),
            StoreBackend::Custom(backend) => write!(f, "Custom({:?})", backend.0),
        }
    }
}

impl StoreBackend {
    /// A backend of the caller's.
    pub fn custom(backend: impl redb::StorageBackend) -> Self {
        StoreBackend::Custom(SharedBackend(Arc::new(backend)))
    }
}

/// A storage backend shared between the config that names it and the database that uses it.
#[derive(Clone, Debug)]
pub struct SharedBackend(Arc<dyn redb::StorageBackend>);

impl redb::StorageBackend for SharedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.0.close()
    }

    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// The default of [`StoreConfig::cache_bytes`]: 128 MiB (redb's own default is 1 GiB, which
/// a node fills as its log grows).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// What the Raft log looks like now (kept in memory, changed only after a commit).
#[derive(Clone, Debug, Default)]
pub(crate) struct LogMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    /// `committed` has changed since it was last written: the next transaction writes it.
    pub committed_unwritten: bool,
    pub last_purged: Option<LogId>,
    /// Entries from this index up to `last_purged` are purged but still stored: each
    /// transaction deletes a bounded run of them (see [`delete_purged`]).
    pub purged_stored_from: u64,
    pub last_log_id: Option<LogId>,
}

impl LogMeta {
    /// Takes a new commit index in memory; the next transaction writes it.
    fn stage_committed(&mut self, committed: Option<LogId>) {
        self.committed = committed;
        self.committed_unwritten = true;
    }
}

/// The log's tail as openraft sees it, ahead of what the writer has committed.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Entries appended but not yet committed by the writer, by index.
    pub pending: std::collections::BTreeMap<u64, Entry>,
    /// The last log id appended (pending or stored); `None` for an empty log.
    pub last_log_id: Option<LogId>,
}

/// What the state machine looks like now (kept in memory, changed only after a commit).
#[derive(Clone, Debug, Default)]
pub(crate) struct MachineMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub head_position: u64,
    /// The timestamp of the last event (0 with none): apply never records an earlier one.
    pub last_timestamp_ms: u64,
}

/// State shared by the engine's handles.
pub(crate) struct Shared {
    pub db: Database,
    pub data_dir: PathBuf,
    pub quick_repair: bool,
    pub log: Mutex<LogMeta>,
    pub machine: Mutex<MachineMeta>,
    /// The log's tail as openraft sees it: appended entries the writer has not committed yet
    /// (so `append()` returns at once and they are readable meanwhile), and the last log id.
    pub tail: Mutex<Tail>,
    pub applied: watch::Sender<AppliedState>,
}

impl Shared {
    pub fn log(&self) -> MutexGuard<'_, LogMeta> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn machine(&self) -> MutexGuard<'_, MachineMeta> {
        self.machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }
}

type Done = oneshot::Sender<io::Result<()>>;

/// One change for the writer thread.
pub(crate) enum WriteOp {
    /// Log entries the log store already shows from its pending tail: nobody waits for this op
    /// but openraft's `flushed`, which fires after the fsync.
    Append {
        entries: Vec<Entry>,
        flushed: IOFlushed<TypeConfig>,
    },
    SaveVote {
        vote: Vote,
        done: Done,
    },
    SaveCommitted {
        committed: Option<LogId>,
        done: Done,
    },
    TruncateAfter {
        last: Option<LogId>,
        done: Done,
    },
    Purge {
        upto: LogId,
        done: Done,
    },
    Apply {
        entries: Vec<(Entry, Option<ApplyResponder<TypeConfig>>)>,
        done: Done,
    },
    /// Replaces the state machine with the snapshot file at `path` (received from the leader).
    InstallSnapshot {
        meta: SnapshotMeta,
        path: PathBuf,
        done: Done,
    },
}

/// The handle the log store, the state machine and readers share.
///
/// Field order matters: when the last handle drops, the sender goes first (the writer
/// thread sees the channel close), then the thread is joined, so the database is closed by
/// the time the last handle is gone and the directory can be opened again at once.
#[derive(Clone)]
pub struct Engine {
    writer: mpsc::Sender<WriteOp>,
    _thread: Arc<WriterThread>,
    pub(crate) shared: Arc<Shared>,
}

/// Joins the writer thread when the last engine handle drops.
struct WriterThread {
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        let handle = self
            .handle
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

impl Engine {
    /// Opens (or creates) the store in `config.data_dir`, refusing a damaged or foreign one,
    /// and starts the writer thread.
    pub fn open(config: &StoreConfig) -> Result<Self, OpenError> {
        let data_dir = config.data_dir.clone();
        let dir_error = |source| OpenError::Directory {
            path: data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
        std::fs::create_dir_all(data_dir.join("snapshots")).map_err(dir_error)?;
        let db_path = data_dir.join(crate::schema::DATABASE_FILE);
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_bytes);
        let db = match &config.backend {
            StoreBackend::File => builder.create(&db_path),
            StoreBackend::Custom(backend) => builder.create_with_backend(backend.clone()),
        }
        .map_err(|source| match source {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                OpenError::Damaged {
                    path: db_path.clone(),
                    detail,
                }
            }
            source => OpenError::Database {
                path: db_path.clone(),
                source,
            },
        })?;
        let storage_path = data_dir.clone();
        let storage = move |source: io::Error| OpenError::Storage {
            path: storage_path.clone(),
            source,
        };
        check_identity(&db, config).map_err(|e| e.with_path(&data_dir))?;
        let log = load_log_meta(&db).map_err(|e| e.with_path(&data_dir))?;
        let machine = load_machine_meta(&db).map_err(|e| e.with_path(&data_dir))?;
        snapshot::clear_dir(&data_dir.join("snapshots")).map_err(&storage)?;
        let applied = AppliedState {
            log_index: machine.last_applied.map(|id| id.index).unwrap_or(0),
            head_position: machine.head_position,
        };
        let (applied_tx, _) = watch::channel(applied);
        let tail = Tail {
            pending: std::collections::BTreeMap::new(),
            last_log_id: log.last_log_id,
        };
        let shared = Arc::new(Shared {
            db,
            data_dir,
            quick_repair: config.quick_repair,
            tail: Mutex::new(tail),
            log: Mutex::new(log),
            machine: Mutex::new(machine),
            applied: applied_tx,
        });
        let (writer, queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("evlog-store-writer".to_string())
            .spawn(move || run_writer(&thread_shared, queue))
            .map_err(&storage)?;
        let thread = Arc::new(WriterThread {
            handle: Mutex::new(Some(handle)),
        });
        Ok(Self {
            writer,
            _thread: thread,
            shared,
        })
    }

    /// Sends an op to the writer thread.
    pub(crate) async fn submit(&self, op: WriteOp) -> io::Result<()> {
        self.writer
            .send(op)
            .await
            .map_err(|_| io::Error::other("the store's writer thread has stopped"))
    }

    /// Sends an op built around a fresh `done` channel and waits for its commit.
    pub(crate) async fn write(&self, op: impl FnOnce(Done) -> WriteOp) -> io::Result<()> {
        let (done, committed) = oneshot::channel();
        self.submit(op(done)).await?;
        committed
            .await
            .map_err(|_| io::Error::other("the store's writer thread dropped a write"))?
    }

    /// Watches the applied log index and head position (updated after each durable apply).
    pub fn applied(&self) -> watch::Receiver<AppliedState> {
        self.shared.applied.subscribe()
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }
}

/// Errors while opening, before the data directory path is attached.
enum OpenFailure {
    Foreign(Box<dyn FnOnce(PathBuf) -> OpenError>),
    Damaged(String),
}

impl OpenFailure {
    fn with_path(self, path: &Path) -> OpenError {
        match self {
            OpenFailure::Foreign(make) => make(path.to_path_buf()),
            OpenFailure::Damaged(detail) => OpenError::Damaged {
                path: path.to_path_buf(),
                detail,
            },
        }
    }
}

impl<E: Into<redb::Error>> From<E> for OpenFailure {
    fn from(error: E) -> Self {
        OpenFailure::Damaged(error.into().to_string())
    }
}

fn corrupt(error: crate::error::CorruptRecord) -> OpenFailure {
    OpenFailure::Damaged(error.to_string())
}

/// First open: stamps format version, cluster id and node id. Later opens: checks them.
fn check_identity(db: &Database, config: &StoreConfig) -> Result<(), OpenFailure> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let format = meta
            .get(meta_key::FORMAT_VERSION)?
            .map(|v| v.value().to_vec());
        match format {
            None => {
                let log_len = txn.open_table(LOG)?.len()?;
                let events_len = txn.open_table(EVENTS)?.len()?;
                if log_len != 0 || events_len != 0 {
                    return Err(OpenFailure::Damaged(
                        "log or events present but no format version".to_string(),
                    ));
                }
                meta.insert(
                    meta_key::FORMAT_VERSION,
                    codec::encode_u64(u64::from(FORMAT_VERSION)).as_slice(),
                )?;
                meta.insert(
                    meta_key::CLUSTER_ID,
                    codec::encode_str(&config.cluster_id).as_slice(),
                )?;
                meta.insert(
                    meta_key::NODE_ID,
                    codec::encode_u64(config.node_id).as_slice(),
                )?;
            }
            Some(format) => {
                let mut found = codec::decode_u64("format version", &format).map_err(corrupt)?;
                if found == u64::from(UPGRADABLE_FORMAT_VERSION) {
                    // Format 2 differs only by a table that repeated the stream index: drop it.
                    // The upgrade commits with the open's other checks, or not at all.
                    txn.delete_table(FORMAT_2_STREAMS)?;
                    meta.insert(
                        meta_key::FORMAT_VERSION,
                        codec::encode_u64(u64::from(FORMAT_VERSION)).as_slice(),
                    )?;
                    tracing::info!(
                        from = found,
                        to = FORMAT_VERSION,
                        "upgraded the store's format (dropped the streams table)"
                    );
                    found = u64::from(FORMAT_VERSION);
                }
                if found != u64::from(FORMAT_VERSION) {
                    let found = u32::try_from(found).unwrap_or(u32::MAX);
                    return Err(OpenFailure::Foreign(Box::new(move |path| {
                        OpenError::UnknownFormat {
                            path,
                            found,
                            supported: FORMAT_VERSION,
                        }
                    })));
                }
                let cluster = meta
                    .get(meta_key::CLUSTER_ID)?
                    .ok_or_else(|| OpenFailure::Damaged("cluster id missing".to_string()))?;
                let found = codec::decode_string("cluster id", cluster.value()).map_err(corrupt)?;
                if found != config.cluster_id {
                    let expected = config.cluster_id.clone();
                    return Err(OpenFailure::Foreign(Box::new(move |path| {
                        OpenError::ForeignCluster {
                            path,
                            expected,
                            found,
                        }
                    })));
                }
                let node = meta
                    .get(meta_key::NODE_ID)?
                    .ok_or_else(|| OpenFailure::Damaged("node id missing".to_string()))?;
                let found = codec::decode_u64("node id", node.value()).map_err(corrupt)?;
                if found != config.node_id {
                    let expected = config.node_id;
                    return Err(OpenFailure::Foreign(Box::new(move |path| {
                        OpenError::ForeignNode {
                            path,
                            expected,
                            found,
                        }
                    })));
                }
            }
        }
        // Create every table, so readers never meet a missing one.
        txn.open_table(LOG)?;
        txn.open_table(SM_META)?;
        txn.open_table(EVENTS)?;
        txn.open_table(STREAM_INDEX)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(IDEMPOTENCY_ORDER)?;
    }
    txn.commit()?;
    Ok(())
}

fn load_log_meta(db: &Database) -> Result<LogMeta, OpenFailure> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let read_log_id = |key: &str| -> Result<Option<LogId>, OpenFailure> {
        match meta.get(key)? {
            None => Ok(None),
            Some(value) => Ok(Some(codec::decode_log_id(value.value()).map_err(corrupt)?)),
        }
    };
    let vote = match meta.get(meta_key::VOTE)? {
        None => None,
        Some(value) => Some(codec::decode_vote(value.value()).map_err(corrupt)?),
    };
    let committed = read_log_id(meta_key::COMMITTED)?;
    let last_purged = read_log_id(meta_key::LAST_PURGED)?;
    let log = txn.open_table(LOG)?;
    // Verify the tail: indexes contiguous, checksums good, each entry at its own index.
    let mut last_log_id = None;
    let mut expected_index: Option<u64> = None;
    for item in log.iter()?.rev().take(TAIL_ENTRIES_VERIFIED_AT_OPEN) {
        let (index, value) = item?;
        let entry = codec::decode_entry(value.value()).map_err(corrupt)?;
        if entry.log_id.index != index.value() {
            return Err(OpenFailure::Damaged(format!(
                "log entry stored at index {} says index {}",
                index.value(),
                entry.log_id.index
            )));
        }
        if let Some(expected) = expected_index
            && index.value() != expected
        {
            return Err(OpenFailure::Damaged(format!(
                "log has a hole: index {} follows {}",
                index.value(),
                expected + 1
            )));
        }
        expected_index = index.value().checked_sub(1);
        if last_log_id.is_none() {
            last_log_id = Some(entry.log_id);
        }
    }
    let first = log.first()?.map(|(index, _)| index.value());
    // Entries at or below the purge point may still be stored (they are deleted a run at a
    // time); a first entry above the one after it is a hole.
    if let (Some(first), Some(purged)) = (first, last_purged)
        && first > purged.index + 1
    {
        return Err(OpenFailure::Damaged(format!(
            "log starts at index {first} but was purged up to {}",
            purged.index
        )));
    }
    Ok(LogMeta {
        vote,
        committed,
        committed_unwritten: false,
        last_purged,
        purged_stored_from: first.unwrap_or(0),
        last_log_id: last_log_id.or(last_purged),
    })
}

fn load_machine_meta(db: &Database) -> Result<MachineMeta, OpenFailure> {
    let txn = db.begin_read()?;
    let sm = txn.open_table(SM_META)?;
    let last_applied = match sm.get(sm_key::LAST_APPLIED)? {
        None => None,
        Some(value) => Some(codec::decode_log_id(value.value()).map_err(corrupt)?),
    };
    let membership = match sm.get(sm_key::MEMBERSHIP)? {
        None => StoredMembership::default(),
        Some(value) => codec::decode_stored_membership(value.value()).map_err(corrupt)?,
    };
    let head_position = match sm.get(sm_key::HEAD_POSITION)? {
        None => 0,
        Some(value) => codec::decode_u64("head position", value.value()).map_err(corrupt)?,
    };
    let events = txn.open_table(EVENTS)?;
    let (last_event, last_timestamp_ms) = match events.last()? {
        None => (0, 0),
        Some((position, value)) => {
            let event = codec::decode_event(position.value(), value.value()).map_err(corrupt)?;
            (event.position, event.timestamp_ms)
        }
    };
    if last_event != head_position {
        return Err(OpenFailure::Damaged(format!(
            "head position is {head_position} but the last event is at {last_event}"
        )));
    }
    Ok(MachineMeta {
        last_applied,
        membership,
        head_position,
        last_timestamp_ms,
    })
}

// ------------------------------------------------------------------ the writer thread

/// An op's answer, sent only after its batch committed.
enum Completion {
    /// Answered after the fsync.
    Done(Done),
    /// A commit-index save: answered once readable (see [`save_commit_index_later`]).
    Saved(Done),
    Append(IOFlushed<TypeConfig>),
    Apply(Done, Vec<(ApplyResponder<TypeConfig>, CommandResponse)>),
    /// Answered already, before the batch's fsync.
    Answered,
}

impl Completion {
    /// Tells the op's caller it succeeded.
    fn answer(self) {
        match self {
            Completion::Done(done) | Completion::Saved(done) => {
                done.send(Ok(())).ok();
            }
            Completion::Append(flushed) => flushed.io_completed(Ok(())),
            Completion::Apply(done, responses) => {
                for (responder, response) in responses {
                    responder.send(response);
                }
                done.send(Ok(())).ok();
            }
            Completion::Answered => {}
        }
    }
}

/// Drops from the pending tail the entries a commit just made readable from the database
/// (unless a truncation and a new append replaced them meanwhile).
fn forget_pending(shared: &Shared, appended: &[LogId]) {
    if appended.is_empty() {
        return;
    }
    let mut tail = shared.tail();
    for log_id in appended {
        if tail
            .pending
            .get(&log_id.index)
            .is_some_and(|pending| pending.log_id == *log_id)
        {
            tail.pending.remove(&log_id.index);
        }
    }
}

/// Shows the state machine as `machine` describes it: in memory, and to waiting readers.
fn publish_machine(shared: &Shared, machine: &MachineMeta) {
    let applied = AppliedState {
        log_index: machine.last_applied.map(|id| id.index).unwrap_or(0),
        head_position: machine.head_position,
    };
    *shared.machine() = machine.clone();
    shared.applied.send_if_modified(|current| {
        let changed = *current != applied;
        *current = applied;
        changed
    });
}

/// How long applied state may wait for its fsync while the writer has nothing else to do.
const IDLE_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

fn run_writer(shared: &Shared, mut queue: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH_OPS);
    let mut stats = WriterStats::new();
    // Only for waiting on the queue with a timeout; nothing else runs on it.
    let waiter = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("store writer cannot start its timer: {error}");
            return;
        }
    };
    // Applied state committed without fsync, waiting for the next durable commit.
    let mut unsynced = false;
    loop {
        let first = if unsynced {
            let next = waiter
                .block_on(async { tokio::time::timeout(IDLE_SYNC_DELAY, queue.recv()).await });
            match next {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(_idle) => {
                    sync(shared);
                    unsynced = false;
                    continue;
                }
            }
        } else {
            match queue.blocking_recv() {
                Some(op) => op,
                None => break,
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH_OPS {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let kinds = BatchKinds::of(&batch);
        let started = std::time::Instant::now();
        unsynced = write_batch(shared, &mut batch, unsynced);
        stats.record(kinds, started.elapsed());
    }
    if unsynced {
        sync(shared);
    }
    tracing::debug!("store writer thread stops: every handle is gone");
}

/// Makes every commit so far durable with an empty durable commit.
fn sync(shared: &Shared) {
    let result = (|| -> io::Result<()> {
        durable_empty_commit(shared)?;
        crash_point("store::after-commit");
        Ok(())
    })();
    if let Err(error) = result {
        // Nothing waits on it: the next batch that needs an fsync meets the error itself.
        tracing::error!("store fsync of applied state failed: {error}");
    }
}

/// An empty commit with fsync: it makes every commit before it durable.
fn durable_empty_commit(shared: &Shared) -> io::Result<()> {
    let mut flush = shared.db.begin_write().map_err(io_error)?;
    flush.set_quick_repair(shared.quick_repair);
    flush
        .set_durability(Durability::Immediate)
        .map_err(io_error)?;
    crash_point("store::before-fsync");
    flush.commit().map_err(io_error)
}

/// What kinds of op a batch holds (for the writer's statistics).
struct BatchKinds {
    ops: usize,
    append: bool,
    apply: bool,
    only_commit_index: bool,
}

impl BatchKinds {
    fn of(batch: &[WriteOp]) -> Self {
        Self {
            ops: batch.len(),
            append: batch.iter().any(|op| matches!(op, WriteOp::Append { .. })),
            apply: batch.iter().any(|op| matches!(op, WriteOp::Apply { .. })),
            only_commit_index: batch
                .iter()
                .all(|op| matches!(op, WriteOp::SaveCommitted { .. })),
        }
    }
}

/// What the writer thread did lately, logged at debug level every few seconds (for finding
/// where the write path spends its time).
struct WriterStats {
    since: std::time::Instant,
    batches: u64,
    ops: u64,
    /// Batches holding log appends, applies; batches that ran no transaction.
    with_append: u64,
    with_apply: u64,
    without_transaction: u64,
    busy: std::time::Duration,
    longest: std::time::Duration,
}

impl WriterStats {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            batches: 0,
            ops: 0,
            with_append: 0,
            with_apply: 0,
            without_transaction: 0,
            busy: std::time::Duration::ZERO,
            longest: std::time::Duration::ZERO,
        }
    }

    fn record(&mut self, kinds: BatchKinds, took: std::time::Duration) {
        self.batches += 1;
        self.ops += kinds.ops as u64;
        self.with_append += u64::from(kinds.append);
        self.with_apply += u64::from(kinds.apply);
        self.without_transaction += u64::from(kinds.only_commit_index);
        self.busy += took;
        self.longest = self.longest.max(took);
        let elapsed = self.since.elapsed();
        if elapsed >= Self::EVERY {
            tracing::debug!(
                batches = self.batches,
                ops_per_batch = self.ops as f64 / self.batches as f64,
                with_append = self.with_append,
                with_apply = self.with_apply,
                without_transaction = self.without_transaction,
                busy_percent = 100.0 * self.busy.as_secs_f64() / elapsed.as_secs_f64(),
                mean_batch_us = self.busy.as_micros() as u64 / self.batches,
                longest_batch_us = self.longest.as_micros() as u64,
                "store writer"
            );
            *self = Self::new();
        }
    }
}

/// Carries a batch out and answers its ops, each as soon as it may be. `unsynced` says whether
/// earlier commits still wait for an fsync; returns whether they (or this batch's) do now.
///
/// A batch commits in two steps: first without fsync, which makes its writes readable, then an
/// empty commit that fsyncs them, and every commit before them. Between the two:
/// - the batch's log entries move from the log store's pending tail to the database (openraft
///   read them from the tail until now); it hears they are flushed (`IOFlushed`, what counts
///   toward commit) only after the fsync.
/// - applies are answered and shown to readers. Applied state needs no fsync of its own: every
///   entry it comes from is committed, so on a quorum's disks, and a node that loses applied
///   state in a crash applies it again from the log (openraft re-applies up to the saved commit
///   index at start, the leader's commit index brings the rest). What it must not do is serve a
///   read older than one it served before the crash: the node serves no read until it has
///   confirmed a read index with the leader once since it started (`RaftHandle::catch_up` in
///   the node).
///   And nothing that depends on applied state can be durable without it: the log is purged in
///   a later commit of the same database, and a durable commit makes every commit before it
///   durable.
///
/// Votes, truncation, purge and appends are answered after the fsync. A batch with nothing
/// else (applies and commit-index saves) skips it: the next batch's fsync covers it, or the
/// writer's, once it has been idle for [`IDLE_SYNC_DELAY`]. A batch that installs a snapshot
/// commits once, durably, before anything is answered or shown.
fn write_batch(shared: &Shared, batch: &mut Vec<WriteOp>, unsynced: bool) -> bool {
    if batch
        .iter()
        .all(|op| matches!(op, WriteOp::SaveCommitted { .. }))
    {
        save_commit_index_later(shared, batch);
        return unsynced;
    }
    let mut log = shared.log().clone();
    let mut machine = shared.machine().clone();
    let mut completions = Vec::with_capacity(batch.len());
    let one_durable_commit = batch
        .iter()
        .any(|op| matches!(op, WriteOp::InstallSnapshot { .. }));
    let mut synced = false;
    let result = (|| -> io::Result<()> {
        let mut txn = shared.db.begin_write().map_err(io_error)?;
        txn.set_quick_repair(shared.quick_repair);
        let mut points = BatchPoints::default();
        let mut appended: Vec<LogId> = Vec::new();
        for op in batch.drain(..) {
            let (work, completion) = split(op);
            points.note(&work);
            if let Work::Append(entries) = &work {
                appended.extend(entries.iter().map(|entry| entry.log_id));
            }
            match carry_out(&txn, work, &mut log, &mut machine) {
                Ok(responses) => completions.push(match completion {
                    Completion::Apply(done, _) => Completion::Apply(done, responses),
                    other => other,
                }),
                Err(error) => {
                    completions.push(completion);
                    return Err(error);
                }
            }
        }
        if log.committed_unwritten {
            write_commit_index(&txn, log.committed)?;
            log.committed_unwritten = false;
        }
        delete_purged(&txn, &mut log)?;
        points.before_commit();
        if one_durable_commit {
            txn.set_durability(Durability::Immediate)
                .map_err(io_error)?;
            txn.commit().map_err(io_error)?;
            synced = true;
            forget_pending(shared, &appended);
            crash_point("store::after-commit");
            return Ok(());
        }
        txn.set_durability(Durability::None).map_err(io_error)?;
        txn.commit().map_err(io_error)?;
        forget_pending(shared, &appended);
        // Readable now: entries for openraft, applied state for everyone.
        *shared.log() = log.clone();
        if points.apply {
            publish_machine(shared, &machine);
        }
        for completion in &mut completions {
            if matches!(completion, Completion::Apply(..) | Completion::Saved(_)) {
                std::mem::replace(completion, Completion::Answered).answer();
            }
        }
        if completions
            .iter()
            .any(|completion| !matches!(completion, Completion::Answered))
        {
            durable_empty_commit(shared)?;
            synced = true;
            crash_point("store::after-commit");
        }
        Ok(())
    })();
    // Ops after a failed one were never carried out: they fail with the batch.
    completions.extend(batch.drain(..).map(|op| split(op).1));
    match result {
        Ok(()) => {
            *shared.log() = log;
            publish_machine(shared, &machine);
            for completion in completions {
                completion.answer();
            }
            !synced
        }
        Err(error) => {
            tracing::error!(
                "store write transaction failed, {} ops rejected: {error}",
                completions.len()
            );
            let copy = || io::Error::new(error.kind(), error.to_string());
            for completion in completions {
                match completion {
                    Completion::Done(done)
                    | Completion::Saved(done)
                    | Completion::Apply(done, _) => {
                        done.send(Err(copy())).ok();
                    }
                    Completion::Answered => {}
                    Completion::Append(flushed) => flushed.io_completed(Err(copy())),
                }
            }
            // Whatever committed before the failure still waits for an fsync.
            true
        }
    }
}

/// Takes a batch of nothing but commit-index saves without a transaction of its own: the index
/// is kept in memory and written by the next transaction (with the apply that follows it, as a
/// rule). A commit of its own would put one more commit and fsync between a quorum's
/// acknowledgement and the apply that answers the client. The saved index only tells a restarted
/// node how far it may re-apply its log at once; openraft asks nothing more of it, and applied
/// state is durable by its own commit, so a crash before the write loses nothing.
fn save_commit_index_later(shared: &Shared, batch: &mut Vec<WriteOp>) {
    let mut log = shared.log();
    for op in batch.drain(..) {
        if let WriteOp::SaveCommitted { committed, done } = op {
            log.stage_committed(committed);
            done.send(Ok(())).ok();
        }
    }
}

/// The most purged entries one transaction deletes.
const PURGED_DELETED_PER_TRANSACTION: u64 = 1024;

/// Deletes the next run of purged entries still stored.
///
/// A purge takes effect at once: the purge point is written, and reads never go below it. The
/// entries themselves are deleted a bounded run per transaction, since deleting all of them in
/// the purge's own transaction (100,000 entries at the default snapshot threshold) stalled the
/// writer for 200-300 ms with 1 KiB events, and every client with it.
fn delete_purged(txn: &WriteTransaction, log: &mut LogMeta) -> io::Result<()> {
    let Some(purged) = log.last_purged else {
        return Ok(());
    };
    if log.purged_stored_from > purged.index {
        return Ok(());
    }
    let mut table = txn.open_table(LOG).map_err(io_error)?;
    // Start at the first entry stored: a node that installed a snapshot may have purged far
    // past anything it ever stored.
    let from = match table.first().map_err(io_error)? {
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
    table.retain_in(from..end, |_, _| false).map_err(io_error)?;
    log.purged_stored_from = end;
    Ok(())
}

/// Writes the commit index (absent: none) into `txn`.
fn write_commit_index(txn: &WriteTransaction, committed: Option<LogId>) -> io::Result<()> {
    let mut meta = txn.open_table(META).map_err(io_error)?;
    match committed {
        Some(log_id) => {
            meta.insert(
                meta_key::COMMITTED,
                codec::encode_log_id(&log_id).as_slice(),
            )
            .map_err(io_error)?;
        }
        None => {
            meta.remove(meta_key::COMMITTED).map_err(io_error)?;
        }
    }
    Ok(())
}

/// The part of an op that changes the store.
enum Work {
    Append(Vec<Entry>),
    SaveVote(Vote),
    SaveCommitted(Option<LogId>),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
    Apply(Vec<(Entry, Option<ApplyResponder<TypeConfig>>)>),
    InstallSnapshot(SnapshotMeta, PathBuf),
}

/// Which crash points a batch passes before its commit.
#[derive(Default)]
struct BatchPoints {
    vote: bool,
    apply: bool,
    install: bool,
}

impl BatchPoints {
    fn note(&mut self, work: &Work) {
        match work {
            Work::SaveVote(_) => self.vote = true,
            Work::Apply(_) => self.apply = true,
            Work::InstallSnapshot(..) => self.install = true,
            _ => {}
        }
    }

    fn before_commit(&self) {
        crash_point("store::before-commit");
        if self.vote {
            crash_point("store::vote");
        }
        if self.apply {
            crash_point("store::apply");
        }
        if self.install {
            crash_point("store::snapshot-install");
        }
    }
}

fn split(op: WriteOp) -> (Work, Completion) {
    match op {
        WriteOp::Append { entries, flushed } => {
            (Work::Append(entries), Completion::Append(flushed))
        }
        WriteOp::SaveVote { vote, done } => (Work::SaveVote(vote), Completion::Done(done)),
        WriteOp::SaveCommitted { committed, done } => {
            (Work::SaveCommitted(committed), Completion::Saved(done))
        }
        WriteOp::TruncateAfter { last, done } => {
            (Work::TruncateAfter(last), Completion::Done(done))
        }
        WriteOp::Purge { upto, done } => (Work::Purge(upto), Completion::Done(done)),
        WriteOp::Apply { entries, done } => {
            (Work::Apply(entries), Completion::Apply(done, Vec::new()))
        }
        WriteOp::InstallSnapshot { meta, path, done } => {
            (Work::InstallSnapshot(meta, path), Completion::Done(done))
        }
    }
}

/// Carries one op out inside `txn`, updating the staged in-memory state. Returns the
/// responses an apply decided.
fn carry_out(
    txn: &WriteTransaction,
    work: Work,
    log: &mut LogMeta,
    machine: &mut MachineMeta,
) -> io::Result<Vec<(ApplyResponder<TypeConfig>, CommandResponse)>> {
    match work {
        Work::Append(entries) => {
            let mut table = txn.open_table(LOG).map_err(io_error)?;
            for entry in entries {
                // Pair assertion with the open-time check: the log stays contiguous.
                if let Some(last) = log.last_log_id
                    && entry.log_id.index != last.index + 1
                {
                    return Err(io::Error::other(format!(
                        "append of log index {} after {}: the log must stay contiguous",
                        entry.log_id.index, last.index
                    )));
                }
                table
                    .insert(entry.log_id.index, codec::encode_entry(&entry).as_slice())
                    .map_err(io_error)?;
                log.last_log_id = Some(entry.log_id);
            }
        }
        Work::SaveVote(vote) => {
            let mut meta = txn.open_table(META).map_err(io_error)?;
            meta.insert(meta_key::VOTE, codec::encode_vote(&vote).as_slice())
                .map_err(io_error)?;
            log.vote = Some(vote);
        }
        Work::SaveCommitted(committed) => {
            // Written once, just before the batch commits (see `write_batch`).
            log.stage_committed(committed);
        }
        Work::TruncateAfter(last) => {
            let mut table = txn.open_table(LOG).map_err(io_error)?;
            let from = last.map(|id| id.index + 1).unwrap_or(0);
            table.retain_in(from.., |_, _| false).map_err(io_error)?;
            log.last_log_id = match (last, log.last_log_id) {
                (Some(last), Some(current)) if current.index <= last.index => Some(current),
                (Some(last), _) => Some(last),
                (None, _) => log.last_purged,
            };
        }
        Work::Purge(upto) => {
            // The entries go a run at a time, with this and later transactions.
            let mut meta = txn.open_table(META).map_err(io_error)?;
            meta.insert(
                meta_key::LAST_PURGED,
                codec::encode_log_id(&upto).as_slice(),
            )
            .map_err(io_error)?;
            log.last_purged = Some(upto);
            if log.last_log_id.is_none_or(|last| last.index < upto.index) {
                log.last_log_id = Some(upto);
            }
        }
        Work::Apply(entries) => {
            let mut responses = Vec::with_capacity(entries.len());
            for (entry, responder) in entries {
                let response = apply_entry(txn, &entry, machine)?;
                if let Some(responder) = responder {
                    responses.push((responder, response));
                }
            }
            let mut sm = txn.open_table(SM_META).map_err(io_error)?;
            if let Some(last_applied) = machine.last_applied {
                sm.insert(
                    sm_key::LAST_APPLIED,
                    codec::encode_log_id(&last_applied).as_slice(),
                )
                .map_err(io_error)?;
            }
            sm.insert(
                sm_key::MEMBERSHIP,
                codec::encode_stored_membership(&machine.membership).as_slice(),
            )
            .map_err(io_error)?;
            sm.insert(
                sm_key::HEAD_POSITION,
                codec::encode_u64(machine.head_position).as_slice(),
            )
            .map_err(io_error)?;
            return Ok(responses);
        }
        Work::InstallSnapshot(meta, path) => {
            let installed = snapshot::install(txn, &meta, &path)?;
            machine.last_applied = meta.last_log_id;
            machine.membership = meta.last_membership.clone();
            machine.head_position = installed.head_position;
            let events = txn.open_table(EVENTS).map_err(io_error)?;
            machine.last_timestamp_ms = match events.last().map_err(io_error)? {
                None => 0,
                Some((position, value)) => {
                    codec::decode_event(position.value(), value.value())?.timestamp_ms
                }
            };
        }
    }
    Ok(Vec::new())
}

/// Applies one committed entry inside `txn`.
fn apply_entry(
    txn: &WriteTransaction,
    entry: &Entry,
    machine: &mut MachineMeta,
) -> io::Result<CommandResponse> {
    if let Some(last) = machine.last_applied
        && entry.log_id.index <= last.index
    {
        return Err(io::Error::other(format!(
            "apply of log index {} after {}: an entry is applied once, in log order",
            entry.log_id.index, last.index
        )));
    }
    machine.last_applied = Some(entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => Ok(CommandResponse::Empty),
        EntryPayload::Membership(membership) => {
            machine.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
            Ok(CommandResponse::Empty)
        }
        EntryPayload::Normal(Command::Append(command)) => {
            // Timestamps never go backwards in the log (seek by time relies on it).
            let timestamp_ms = command.timestamp_ms.max(machine.last_timestamp_ms);
            if let Some(key) = &command.idempotency_key {
                let keys = txn.open_table(IDEMPOTENCY).map_err(io_error)?;
                let existing = match keys.get(key.as_str()).map_err(io_error)? {
                    None => None,
                    Some(value) => Some(codec::decode_idempotent_record(value.value())?),
                };
                if let Some(response) = decide_idempotent(existing, command, timestamp_ms) {
                    return Ok(response);
                }
            }
            let mut index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
            let current = stream_summary(&index, command.stream.as_str())?;
            let decision = decide_append(machine.head_position, current, command, timestamp_ms);
            if let Some(writes) = decision.writes {
                let mut events = txn.open_table(EVENTS).map_err(io_error)?;
                for event in &writes.events {
                    events
                        .insert(event.position, codec::encode_event(event).as_slice())
                        .map_err(io_error)?;
                    index
                        .insert(
                            (writes.stream.as_str(), event.stream_version),
                            event.position,
                        )
                        .map_err(io_error)?;
                }
                machine.head_position = writes.info.last_position;
                machine.last_timestamp_ms = timestamp_ms;
                if let (Some(key), CommandResponse::Appended(outcome)) =
                    (&command.idempotency_key, &decision.response)
                {
                    remember_key(
                        txn,
                        key,
                        entry.log_id.index,
                        command,
                        timestamp_ms,
                        *outcome,
                    )?;
                }
            }
            Ok(decision.response)
        }
    }
}

/// Keeps an idempotency key's outcome, and expires the oldest keys (a bounded number per call).
fn remember_key(
    txn: &WriteTransaction,
    key: &str,
    log_index: u64,
    command: &crate::types::AppendCommand,
    timestamp_ms: u64,
    outcome: crate::types::AppendOutcome,
) -> io::Result<()> {
    let mut keys = txn.open_table(IDEMPOTENCY).map_err(io_error)?;
    let mut order = txn.open_table(IDEMPOTENCY_ORDER).map_err(io_error)?;
    let record = IdempotentRecord {
        fingerprint: command.request_fingerprint,
        outcome,
        log_index,
        timestamp_ms,
    };
    // A key seen before but expired: drop its old place in the expiry order.
    if let Some(old) = keys
        .insert(key, codec::encode_idempotent_record(&record).as_slice())
        .map_err(io_error)?
    {
        let old = codec::decode_idempotent_record(old.value())?;
        order.remove(old.log_index).map_err(io_error)?;
    }
    order.insert(log_index, key).map_err(io_error)?;
    for _ in 0..IDEMPOTENCY_MAX_EXPIRED_PER_APPLY {
        let Some((oldest_index, oldest_key)) = order
            .first()
            .map_err(io_error)?
            .map(|(i, k)| (i.value(), k.value().to_string()))
        else {
            break;
        };
        let oldest = match keys.get(oldest_key.as_str()).map_err(io_error)? {
            Some(value) => codec::decode_idempotent_record(value.value())?,
            None => {
                return Err(io::Error::other(format!(
                    "idempotency order names missing key {oldest_key:?}"
                )));
            }
        };
        let count = keys.len().map_err(io_error)?;
        if !should_expire(
            &oldest,
            count,
            timestamp_ms,
            command.idempotency.window_ms,
            command.idempotency.max_keys,
        ) {
            break;
        }
        keys.remove(oldest_key.as_str()).map_err(io_error)?;
        order.remove(oldest_index).map_err(io_error)?;
    }
    Ok(())
}

/// Reads a stream's summary in a read transaction.
pub(crate) fn stream_info(
    txn: &redb::ReadTransaction,
    stream: &str,
) -> io::Result<Option<StreamInfo>> {
    let index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
    stream_summary(&index, stream)
}

/// A stream's summary from the stream index, `None` if it has no events: its version and last
/// position are its last entry, its first position its first (versions start at 1, and no
/// event is ever removed, so the entries run 1..=version without a gap).
pub(crate) fn stream_summary(
    index: &impl ReadableTable<(&'static str, u64), u64>,
    stream: &str,
) -> io::Result<Option<StreamInfo>> {
    let mut entries = index
        .range((stream, 1)..=(stream, u64::MAX))
        .map_err(io_error)?;
    let Some(first) = entries.next() else {
        return Ok(None);
    };
    let (first_key, first_position) = first.map_err(io_error)?;
    let first_position = first_position.value();
    let (version, last_position) = match entries.next_back() {
        Some(last) => {
            let (key, position) = last.map_err(io_error)?;
            (key.value().1, position.value())
        }
        None => (first_key.value().1, first_position),
    };
    Ok(Some(StreamInfo {
        version,
        first_position,
        last_position,
    }))
}
