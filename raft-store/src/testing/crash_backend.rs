//! A file-backed redb storage backend that can lose power.
//!
//! Every write goes to the file as usual. Before a page is first changed after a sync, the
//! backend keeps what it held at that sync (its durable bytes); a sync forgets them, since the
//! file is then durable as it is. Losing power writes every kept page back, cuts the file to
//! its length at the last sync, and turns the backend off: from then on every call fails, as
//! a machine without power does nothing. Reopening the file afterwards shows exactly the bytes
//! of the last sync: what a disk holds after a power cut that took its volatile cache.
//!
//! (redb's own `tests/crash_consistency.rs` keeps a live and a durable image in memory; this
//! keeps the live image in the file and only the pages that differ in memory, so a real node
//! can run on it with a log of any size.)

use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use redb::BackendError;
use redb::StorageBackend;
use redb::backends::FileBackend;

/// The granularity at which durable bytes are kept.
const PAGE_BYTES: u64 = 4096;

/// How much a power loss took back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Pages written back to what they held at the last sync.
    pub pages: u64,
    /// Bytes of those pages, plus bytes the file had grown by since the last sync.
    pub bytes: u64,
}

struct State {
    file: FileBackend,
    /// The file's length at the last sync.
    durable_len: u64,
    /// Page number -> the page's bytes at the last sync (cut at `durable_len`), for every
    /// page changed since.
    durable_pages: BTreeMap<u64, Vec<u8>>,
    /// False once power is lost: every call then fails.
    powered: bool,
    /// `sync_data` calls so far (failed ones included).
    syncs: u64,
    /// When `Some(n)`: sync number `n` (counting from 1 at open) never happens; power is lost
    /// instead.
    lose_power_at_sync: Option<u64>,
    /// When `Some(why)`: a power loss also ends the process (a node under test), saying why.
    abort_on_loss: Option<String>,
    /// When `Some(bytes)`: the disk holds no more; a write or growth past it fails with
    /// "no space left on device", as a full disk does.
    capacity: Option<u64>,
    /// The log's journal, on the same (simulated) disk: it loses power with the database.
    journal: Option<JournalState>,
}

/// Opens (or creates) the file at `path` and syncs it: what it holds now counts as durable.
/// Returns it with its length.
fn open_synced(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.sync_all()?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Keeps in `pages` what every page in `range` held at the last sync (cut at `durable_len`),
/// for those not kept yet, reading them with `read`: the database's and the journal's alike.
fn keep_durable_pages(
    pages: &mut BTreeMap<u64, Vec<u8>>,
    durable_len: u64,
    range: std::ops::Range<u64>,
    read: impl Fn(u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    let to = range.end.min(durable_len);
    if range.start >= to {
        return Ok(());
    }
    for page in range.start / PAGE_BYTES..=(to - 1) / PAGE_BYTES {
        if pages.contains_key(&page) {
            continue;
        }
        let start = page * PAGE_BYTES;
        let end = (start + PAGE_BYTES).min(durable_len);
        let mut bytes = vec![0u8; usize::try_from(end - start).map_err(io::Error::other)?];
        read(start, &mut bytes)?;
        pages.insert(page, bytes);
    }
    Ok(())
}

/// The journal file's durable state: its length at the last sync, and for every page changed
/// since, what it held then (the journal writes each generation over the last one's pages).
struct JournalState {
    file: File,
    durable_len: u64,
    durable_pages: BTreeMap<u64, Vec<u8>>,
}

impl JournalState {
    /// Keeps the durable bytes of every page in `from..to` not kept yet.
    fn keep_durable(&mut self, from: u64, to: u64) -> io::Result<()> {
        let file = &self.file;
        keep_durable_pages(
            &mut self.durable_pages,
            self.durable_len,
            from..to,
            |at, out| std::os::unix::fs::FileExt::read_exact_at(file, out, at),
        )
    }

    /// Puts the journal back as it was at its last sync; returns the bytes that took back.
    fn lose_power(&mut self) -> io::Result<u64> {
        let live_len = self.file.metadata()?.len();
        let mut lost = live_len.saturating_sub(self.durable_len);
        for (page, bytes) in std::mem::take(&mut self.durable_pages) {
            std::os::unix::fs::FileExt::write_all_at(&self.file, &bytes, page * PAGE_BYTES)?;
            lost += bytes.len() as u64;
        }
        self.file.set_len(self.durable_len)?;
        self.file.sync_data()?;
        Ok(lost)
    }
}

impl State {
    /// Refuses to make the file reach past `end` on a full (simulated) disk.
    fn check_space(&self, end: u64) -> io::Result<()> {
        match self.capacity {
            Some(capacity) if end > capacity => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no space left on device (the testing crash backend's disk holds {capacity} \
                     bytes)"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_power(&self) -> io::Result<()> {
        if self.powered {
            Ok(())
        } else {
            Err(io::Error::other(
                "the store's disk has lost power (simulated by the testing crash backend)",
            ))
        }
    }

    /// Keeps the durable bytes of every page in `from..to` not kept yet.
    fn keep_durable(&mut self, from: u64, to: u64) -> io::Result<()> {
        let file = &self.file;
        keep_durable_pages(
            &mut self.durable_pages,
            self.durable_len,
            from..to,
            |at, out| file.read(at, out),
        )
    }

    /// Loses power, and ends the process if it was asked to.
    fn lose_power_here(&mut self, at: &str) -> io::Result<Lost> {
        let lost = self.lose_power()?;
        if let Some(why) = &self.abort_on_loss {
            abort_after_power_loss(why, at, lost);
        }
        Ok(lost)
    }

    fn lose_power(&mut self) -> io::Result<Lost> {
        if !self.powered {
            return Ok(Lost::default());
        }
        self.powered = false;
        let mut lost = Lost::default();
        let live_len = self.file.len()?;
        lost.bytes += live_len.saturating_sub(self.durable_len);
        for (page, bytes) in std::mem::take(&mut self.durable_pages) {
            self.file.write(page * PAGE_BYTES, &bytes)?;
            lost.pages += 1;
            lost.bytes += bytes.len() as u64;
        }
        self.file.set_len(self.durable_len)?;
        // The image left behind must itself survive, whatever happens to this process next.
        self.file.sync_data()?;
        if let Some(journal) = &mut self.journal {
            lost.bytes += journal.lose_power()?;
        }
        Ok(lost)
    }

    /// A `sync_data` call of the database or the journal: counted, and where a power cut was
    /// asked for (at this sync, or by the `store::sync` failpoint), the power goes instead.
    fn sync_or_lose_power(&mut self) -> io::Result<()> {
        self.check_power()?;
        self.syncs += 1;
        let failpoint = failpoint_cuts_power();
        if failpoint && self.abort_on_loss.is_none() {
            self.abort_on_loss = Some("failpoint store::sync".to_string());
        }
        if self.lose_power_at_sync == Some(self.syncs) || failpoint {
            self.lose_power_here("at a sync")?;
            return Err(io::Error::other(format!(
                "power lost at sync {} (simulated by the testing crash backend)",
                self.syncs
            )));
        }
        Ok(())
    }
}

/// Ends a process whose store just lost power, saying how much it lost.
fn abort_after_power_loss(why: &str, at: &str, lost: Lost) -> ! {
    eprintln!(
        "{why}: power loss {at}: {} unsynced pages ({} bytes) lost, the store is back at its \
         last sync; aborting the process",
        lost.pages, lost.bytes
    );
    std::process::abort()
}

/// The backend redb writes through. Cloning it (or taking its [`PowerSwitch`]) shares one file.
#[derive(Clone)]
pub struct CrashBackend {
    state: Arc<Mutex<State>>,
}

/// Loses power for a [`CrashBackend`] from outside redb, and tells how many syncs it did.
#[derive(Clone)]
pub struct PowerSwitch {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for CrashBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("CrashBackend")
            .field("durable_len", &state.durable_len)
            .field("pages_since_sync", &state.durable_pages.len())
            .field("powered", &state.powered)
            .field("syncs", &state.syncs)
            .finish()
    }
}

impl CrashBackend {
    /// Opens (or creates) the database file at `path`. What it holds now counts as durable.
    pub fn open(path: &Path) -> io::Result<(Self, PowerSwitch)> {
        let (file, durable_len) = open_synced(path)?;
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        let state = Arc::new(Mutex::new(State {
            file,
            durable_len,
            durable_pages: BTreeMap::new(),
            powered: true,
            syncs: 0,
            lose_power_at_sync: None,
            abort_on_loss: None,
            capacity: None,
            journal: None,
        }));
        Ok((
            Self {
                state: Arc::clone(&state),
            },
            PowerSwitch { state },
        ))
    }
}

impl CrashBackend {
    /// The store of the data directory `dir` (created if missing) on one simulated disk: its
    /// database (`evlog.redb`) and its log's journal (`evlog.journal`), as a store backend,
    /// and the disk's power switch.
    pub fn for_data_dir(dir: &Path) -> io::Result<(crate::StoreBackend, PowerSwitch)> {
        std::fs::create_dir_all(dir)?;
        let (backend, switch) = Self::open(&dir.join(crate::schema::DATABASE_FILE))?;
        let journal = backend.journal(&dir.join(crate::engine::journal::JOURNAL_FILE))?;
        Ok((
            crate::StoreBackend::custom_with_journal(backend, journal),
            switch,
        ))
    }

    /// Opens (or creates) the log's journal at `path` on the same simulated disk: a power cut
    /// takes back what was written to it since its last sync, its syncs count with the
    /// database's (see [`PowerSwitch::lose_power_at_sync`]), and the `store::sync` failpoint
    /// stands before them too. What it holds now counts as durable. Give it to the store with
    /// `StoreBackend::custom_with_journal`.
    pub fn journal(&self, path: &Path) -> io::Result<CrashJournal> {
        let (file, durable_len) = open_synced(path)?;
        lock(&self.state).journal = Some(JournalState {
            file,
            durable_len,
            durable_pages: BTreeMap::new(),
        });
        Ok(CrashJournal {
            state: Arc::clone(&self.state),
        })
    }
}

/// The log's journal on a [`CrashBackend`]'s disk.
#[derive(Clone)]
pub struct CrashJournal {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for CrashJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashJournal")
    }
}

fn journal_of(state: &mut State) -> io::Result<&mut JournalState> {
    state.check_power()?;
    state
        .journal
        .as_mut()
        .ok_or_else(|| io::Error::other("the crash backend's journal is closed"))
}

impl crate::engine::JournalFile for CrashJournal {
    fn byte_len(&self) -> io::Result<u64> {
        let mut state = lock(&self.state);
        Ok(journal_of(&mut state)?.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut state = lock(&self.state);
        std::os::unix::fs::FileExt::read_exact_at(&journal_of(&mut state)?.file, out, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.state);
        let journal = journal_of(&mut state)?;
        journal.keep_durable(offset, offset.saturating_add(data.len() as u64))?;
        std::os::unix::fs::FileExt::write_all_at(&journal.file, data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        let journal = journal_of(&mut state)?;
        let live_len = journal.file.metadata()?.len();
        journal.keep_durable(len, live_len)?;
        journal.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.sync_or_lose_power()?;
        let journal = journal_of(&mut state)?;
        journal.file.sync_data()?;
        journal.durable_len = journal.file.metadata()?.len();
        journal.durable_pages.clear();
        Ok(())
    }
}

impl PowerSwitch {
    /// Cuts the power now: every write since the last sync is undone in the file, and the
    /// backend fails every later call. Losing power twice does nothing the second time.
    pub fn lose_power(&self) -> Lost {
        let mut state = lock(&self.state);
        match state.lose_power() {
            Ok(lost) => lost,
            Err(error) => {
                // The file could not be cut back: the simulation is void, so stop here rather
                // than let a test pass on a store that kept what it should have lost.
                panic!("the crash backend could not undo the unsynced writes: {error}")
            }
        }
    }

    /// Makes the `n`-th `sync_data` from now on (1: the next one) lose power instead of
    /// syncing: a power cut at that sync point, before the disk confirmed it.
    pub fn lose_power_at_sync(&self, n: u64) {
        let mut state = lock(&self.state);
        state.lose_power_at_sync = Some(state.syncs + n);
    }

    /// For a process under test: the next sync loses power and ends the process, saying
    /// `why`; if no sync comes within `within`, the power goes then anyway. A cut at a sync
    /// loses the most: everything the commit being made durable wrote is gone.
    pub fn lose_power_at_next_sync_and_abort(&self, why: &str, within: std::time::Duration) {
        {
            let mut state = lock(&self.state);
            state.abort_on_loss = Some(why.to_string());
            state.lose_power_at_sync = Some(state.syncs + 1);
        }
        let switch = self.clone();
        let why = why.to_string();
        let spawned = std::thread::Builder::new()
            .name("evlog-power-cut".to_string())
            .spawn(move || {
                std::thread::sleep(within);
                let mut state = lock(&switch.state);
                let lost = state.lose_power().unwrap_or_else(|error| {
                    panic!("the crash backend could not undo the unsynced writes: {error}")
                });
                abort_after_power_loss(&why, "while idle", lost);
            });
        if let Err(error) = spawned {
            panic!("cannot start the power cut's timer thread: {error}");
        }
    }

    /// Makes the disk full once the file would grow past its length now plus `free_bytes`:
    /// writes and growth past that fail with "no space left on device". (`None`: no limit.)
    pub fn set_free_space(&self, free_bytes: Option<u64>) -> io::Result<()> {
        let mut state = lock(&self.state);
        let len = state.file.len()?;
        state.capacity = free_bytes.map(|free| len.saturating_add(free));
        Ok(())
    }

    /// How many times redb asked for a sync so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// Whether the power is still on.
    pub fn powered(&self) -> bool {
        lock(&self.state).powered
    }
}

/// The `store::sync` failpoint (failpoints builds): armed with `return(power-loss)`, the sync
/// it stands before loses power, and the process ends (see [`crate::failpoint`]); with plain
/// `return`, the process aborts before the sync, its writes left to the kernel.
fn failpoint_cuts_power() -> bool {
    #[cfg(feature = "failpoints")]
    match fail::eval("store::sync", |argument| argument) {
        Some(Some(argument)) if argument == crate::failpoint::POWER_LOSS => {
            // The power goes inside the backend's lock, so no other write slips in.
            return true;
        }
        Some(_) => {
            eprintln!("failpoint store::sync: aborting the process (simulated crash)");
            std::process::abort();
        }
        None => {}
    }
    false
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, io::Error> {
        let state = lock(&self.state);
        state.check_power()?;
        state.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = lock(&self.state);
        state.check_power()?;
        state.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = lock(&self.state);
        state.check_power()?;
        let live_len = state.file.len()?;
        if len > live_len {
            state.check_space(len)?;
        }
        if len < live_len {
            // What is cut off may be durable: keep it, to put it back on a power loss.
            state.keep_durable(len, live_len)?;
        }
        state.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = lock(&self.state);
        state.sync_or_lose_power()?;
        state.file.sync_data()?;
        state.durable_len = state.file.len()?;
        state.durable_pages.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = lock(&self.state);
        state.check_power()?;
        state.check_space(offset.saturating_add(data.len() as u64))?;
        state.keep_durable(offset, offset.saturating_add(data.len() as u64))?;
        state.file.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        // Release the file lock even without power, so the file can be opened again.
        lock(&self.state).file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        lock(&self.state).file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        lock(&self.state).file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        lock(&self.state).file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        lock(&self.state).file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        lock(&self.state).file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        lock(&self.state).file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_file(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("the file reads")
    }

    #[test]
    fn a_power_loss_takes_back_exactly_what_was_written_since_the_last_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let (backend, switch) = CrashBackend::open(&path).expect("opens");
        backend.set_len(3 * PAGE_BYTES).expect("grows");
        backend.write(0, &[1u8; 10_000]).expect("writes");
        backend.sync_data().expect("syncs");
        let synced = read_file(&path);
        // Overwrite across a page boundary, grow, shrink below the synced length, grow again.
        backend.write(4090, &[2u8; 20]).expect("writes");
        backend.set_len(5 * PAGE_BYTES).expect("grows");
        backend.write(4 * PAGE_BYTES, &[3u8; 100]).expect("writes");
        backend.set_len(PAGE_BYTES + 5).expect("shrinks");
        backend.set_len(4 * PAGE_BYTES).expect("grows");
        backend.write(2 * PAGE_BYTES, &[4u8; 8]).expect("writes");
        assert_ne!(read_file(&path), synced);
        let lost = switch.lose_power();
        assert!(lost.pages >= 2, "{lost:?}");
        assert_eq!(
            read_file(&path),
            synced,
            "the file is back at its last sync"
        );
        assert!(backend.write(0, &[9]).is_err(), "no power, no writes");
        assert!(backend.sync_data().is_err(), "no power, no syncs");
        assert_eq!(read_file(&path), synced);
    }

    #[test]
    fn a_full_disk_refuses_growth_and_writes_past_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let (backend, switch) = CrashBackend::open(&path).expect("opens");
        backend.write(0, &[1u8; 100]).expect("writes");
        switch.set_free_space(Some(50)).expect("limits");
        backend.write(100, &[2u8; 50]).expect("fits exactly");
        let error = backend.write(150, &[3u8]).expect_err("the disk is full");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(backend.set_len(1_000).is_err(), "no growth past it either");
        backend
            .write(0, &[4u8; 10])
            .expect("overwriting within takes no space");
        switch.set_free_space(None).expect("space freed");
        backend.write(150, &[3u8]).expect("room again");
    }

    #[test]
    fn the_chosen_sync_loses_power_instead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let (backend, switch) = CrashBackend::open(&path).expect("opens");
        switch.lose_power_at_sync(2);
        backend.write(0, b"first").expect("writes");
        backend.sync_data().expect("the first sync happens");
        backend.write(0, b"later").expect("writes");
        assert!(backend.sync_data().is_err(), "the second sync loses power");
        assert!(!switch.powered());
        assert_eq!(read_file(&path), b"first");
    }
}
