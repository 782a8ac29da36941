//! The storage engine: one redb database, the state its handles share, and the one thread
//! that writes to it.
//!
//! - `open.rs`: opening a data directory, refusing a damaged or foreign one.
//! - `writer.rs`: the writer thread. Every change is a [`WriteOp`] on a bounded channel; the
//!   thread carries out every op waiting in one transaction, commits it in two steps
//!   (readable, then durable) and answers each op as soon as it may be.
//! - `stats.rs`: what the writer did lately.
//!
//! The writer knows ops, batching and durability; what an op changes is the log's
//! (`log_store::txn`) or the state machine's (`state_machine::store`) business.
//!
//! Reads never go through the writer: they open redb read transactions (MVCC snapshots that
//! never wait for it) on blocking threads.
//!
//! The engine stops at its first failure: a failed write or fsync is never retried (a failed
//! fsync may have dropped pages the kernel had accepted, so a retry would "succeed" over lost
//! data), and a broken invariant means the code or the disk is wrong. [`Engine::failure`] says
//! why; the node then exits.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicBool;

use openraft::storage::ApplyResponder;
use openraft::storage::IOFlushed;
use redb::Database;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;

use crate::error::OpenError;
use crate::error::StoreError;
use crate::log_store::LogMeta;
use crate::log_store::Tail;
use crate::state_machine::MachineMeta;
use crate::type_config::Entry;
use crate::type_config::LogId;
use crate::type_config::SnapshotMeta;
use crate::type_config::TypeConfig;
use crate::type_config::Vote;
use crate::types::AppliedState;

pub mod compact;
pub mod journal;
mod open;
mod stats;
mod writer;

pub use journal::JournalFile;
pub use open::RestoreError;

/// Most ops carried out in one transaction.
pub const MAX_BATCH_OPS: usize = 1024;
/// Capacity of the channel to the writer thread.
const WRITE_QUEUE_CAPACITY: usize = 4096;

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
    /// What a store created by this open is: `true`, one of a new cluster's founding members
    /// (it may vote once it has confirmed no peer committed anything); `false`, a node
    /// joining a cluster that exists, or one that lost its data: it must catch up with a
    /// leader before it votes ([`Engine::needs_catch_up`]). A store that exists keeps what it
    /// recorded.
    pub founding: bool,
    /// Told how long each commit and fsync took and how full each batch was (metrics).
    pub observer: Option<Arc<dyn StoreObserver>>,
    /// While set, the writer deletes no rows of removed events (a test seam: tests hold it to
    /// show that reads never depend on the rows being gone). Never set by the node.
    pub hold_reclaim: Arc<AtomicBool>,
}

/// What the store's writer reports as it works, for metrics. Called on the writer thread:
/// implementations must return at once (atomics, no locks held for long, no I/O).
pub trait StoreObserver: Send + Sync + std::fmt::Debug {
    /// A commit that made writes readable without an fsync took `took`.
    fn commit(&self, took: std::time::Duration);
    /// A sync that made writes durable (the journal's, or a durable commit of the database)
    /// took `took`.
    fn fsync(&self, took: std::time::Duration);
    /// A durable commit of the database (which writes out every page the commits since the
    /// last one changed, and holds the writer while it does) took `took`; also told to
    /// [`Self::fsync`].
    fn db_sync(&self, took: std::time::Duration);
    /// The writer took a batch of `ops` ops; `queued` more were waiting behind it.
    fn batch(&self, ops: usize, queued: usize);
}

/// The default of [`StoreConfig::cache_bytes`]: 128 MiB (redb's own default is 1 GiB, which
/// a node fills as its log grows).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

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
            founding: true,
            observer: None,
            hold_reclaim: Arc::new(AtomicBool::new(false)),
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
    /// (`testing::CrashBackend`). It must hold this data directory's database. The log's
    /// journal is its own file (`<data_dir>/evlog.journal`), or the one given, which must lose
    /// power with the database (`CrashBackend::journal`).
    Custom(SharedBackend, Option<Arc<dyn JournalFile>>),
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreBackend::File => f.write_str("File"),
            StoreBackend::Custom(backend, journal) => {
                write!(f, "Custom({:?}, journal {journal:?})", backend.0)
            }
        }
    }
}

impl StoreBackend {
    /// A backend of the caller's.
    pub fn custom(backend: impl redb::StorageBackend) -> Self {
        StoreBackend::Custom(SharedBackend(Arc::new(backend)), None)
    }

    /// A backend of the caller's, with the log's journal in `journal`.
    pub fn custom_with_journal(
        backend: impl redb::StorageBackend,
        journal: impl JournalFile + 'static,
    ) -> Self {
        StoreBackend::Custom(SharedBackend(Arc::new(backend)), Some(Arc::new(journal)))
    }
}

/// A storage backend shared between the config that names it and the database that uses it.
#[derive(Clone, Debug)]
pub struct SharedBackend(Arc<dyn redb::StorageBackend>);

type LockRange = std::ops::Bound<u64>;

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

    fn try_lock_range(&self, start: LockRange, end: LockRange) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: LockRange,
        end: LockRange,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: LockRange, end: LockRange) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: LockRange,
        end: LockRange,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: LockRange, end: LockRange) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: LockRange,
        end: LockRange,
    ) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// State shared by the engine's handles.
pub(crate) struct Shared {
    pub db: Database,
    pub data_dir: PathBuf,
    pub quick_repair: bool,
    /// See [`StoreConfig::hold_reclaim`].
    pub hold_reclaim: Arc<AtomicBool>,
    pub log: Mutex<LogMeta>,
    pub machine: Mutex<MachineMeta>,
    /// The log's tail as openraft sees it: appended entries the writer has not committed yet
    /// (so `append()` returns at once and they are readable meanwhile), and the last log id.
    pub tail: Mutex<Tail>,
    pub applied: watch::Sender<AppliedState>,
    /// The failure that stopped the store, once there is one.
    pub failure: watch::Sender<Option<StoreError>>,
    /// The store was created empty and has not caught up with a leader (or confirmed a new
    /// cluster)
    /// since: its node must not vote.
    pub needs_catch_up: std::sync::atomic::AtomicBool,
    /// This open created the store.
    pub created: bool,
    /// The store was created as a founding member.
    pub founding_member: bool,
    /// See [`StoreConfig::observer`].
    pub observer: Option<Arc<dyn StoreObserver>>,
    /// Replica checks this node applied (see [`crate::reader::checks`]).
    pub checks: Arc<crate::reader::checks::Checks>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Tells the observer, if there is one.
    pub fn observe(&self, tell: impl FnOnce(&dyn StoreObserver)) {
        if let Some(observer) = &self.observer {
            tell(observer.as_ref());
        }
    }

    pub fn log(&self) -> MutexGuard<'_, LogMeta> {
        locked(&self.log)
    }

    pub fn machine(&self) -> MutexGuard<'_, MachineMeta> {
        locked(&self.machine)
    }

    pub fn tail(&self) -> MutexGuard<'_, Tail> {
        locked(&self.tail)
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Records the store's first failure (later ones are consequences of it).
    pub fn fail(&self, error: StoreError) {
        self.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            tracing::error!("the store stops: {error}");
            *failure = Some(error);
            true
        });
    }

    /// The error for work asked of a store that has stopped.
    pub fn stopped(&self) -> StoreError {
        match &*self.failure.borrow() {
            Some(failure) => StoreError::Stopped(failure.to_string()),
            None => StoreError::Stopped("the store is closing".to_string()),
        }
    }
}

/// The answer to an op, sent once it is committed (or failed).
pub(crate) type Done = oneshot::Sender<Result<(), StoreError>>;

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
    /// The node caught up with a leader: its store no longer needs to (durable once answered).
    MarkCaughtUp {
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
        let (shared, journal) = open::open(config)?;
        let shared = Arc::new(shared);
        let (writer, queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("evlog-store-writer".to_string())
            .spawn(move || writer::run(&thread_shared, queue, journal))
            .map_err(|source| OpenError::Storage {
                path: config.data_dir.clone(),
                source,
            })?;
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
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        self.writer
            .send(op)
            .await
            .map_err(|_| self.shared.stopped())
    }

    /// Sends an op built around a fresh `done` channel and waits for its commit.
    pub(crate) async fn write(&self, op: impl FnOnce(Done) -> WriteOp) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.submit(op(done)).await?;
        committed.await.map_err(|_| self.shared.stopped())?
    }

    /// Watches the applied log index and head position (updated after each apply commit).
    pub fn applied(&self) -> watch::Receiver<AppliedState> {
        self.shared.applied.subscribe()
    }

    /// Watches for the failure that stops the store (`None` while it runs). Once set, the
    /// store takes no more writes; the node must stop.
    pub fn failure(&self) -> watch::Receiver<Option<StoreError>> {
        self.shared.failure.subscribe()
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// Whether this open created the store (the data directory held none).
    pub fn created(&self) -> bool {
        self.shared.created
    }

    /// Whether the store was created as one of a new cluster's founding members.
    pub fn founding_member(&self) -> bool {
        self.shared.founding_member
    }

    /// Whether the store was created empty and its node has not since caught up with a
    /// leader, nor (a founding member) confirmed that its cluster has committed nothing. Its
    /// node must not vote nor campaign until then: a directory that lost its data looks new,
    /// it may lack entries a quorum acknowledged, and a vote it gave before is gone too.
    pub fn needs_catch_up(&self) -> bool {
        self.shared
            .needs_catch_up
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records, durably, that the node has caught up with a leader (it applied a read index
    /// the leader confirmed after it started, and every entry it holds is on its disk once
    /// this returns): from now on it may vote.
    pub async fn mark_caught_up(&self) -> Result<(), StoreError> {
        if !self.needs_catch_up() {
            return Ok(());
        }
        self.write(|done| WriteOp::MarkCaughtUp { done }).await?;
        self.shared
            .needs_catch_up
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// Creates a new store in `config.data_dir` (absent or empty; anything in it is refused)
/// holding the backup file `file` as the state of a new cluster of `members` (node id ->
/// addresses; `config.node_id` among them), at log epoch `epoch` (default: the backup's plus
/// one). The file is checked whole (checksum) before anything commits; nothing is left behind
/// on failure. Blocking.
pub fn restore(
    config: &StoreConfig,
    file: &Path,
    members: &BTreeMap<u64, crate::type_config::MemberNode>,
    epoch: Option<u64>,
) -> Result<crate::snapshot::BackupSummary, RestoreError> {
    open::restore(config, file, members, epoch)
}

/// Runs `work` on a blocking thread (every redb transaction off the tokio workers).
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Io(format!("storage task failed: {error}")))?
}
