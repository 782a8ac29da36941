//! The writer thread: takes every op waiting (at most [`MAX_BATCH_OPS`]), carries them out in
//! one transaction, commits it in two steps and answers each op as soon as it may be (see
//! [`write_batch`]). What an op changes is decided elsewhere: the log's ops in
//! `log_store::txn`, applies and snapshot installs in `state_machine::store`. This file knows
//! ops, batching and durability.
//!
//! The first failure stops the thread for good: the ops of the failed batch and every op
//! queued after it get the error, [`Shared::fail`] records it (the node watches it and
//! exits), and nothing is retried.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use openraft::storage::ApplyResponder;
use openraft::storage::IOFlushed;
use redb::Durability;
use redb::WriteTransaction;
use tokio::sync::mpsc;

use super::Done;
use super::MAX_BATCH_OPS;
use super::Shared;
use super::WriteOp;
use super::journal;
use super::journal::Journal;
use super::stats::BatchKinds;
use super::stats::WriterStats;
use crate::error::StoreError;
use crate::failpoint::crash_point;
use crate::log_store::LogMeta;
use crate::log_store::txn;
use crate::state_machine::MachineMeta;
use crate::state_machine::cache::WriterCache;
use crate::state_machine::execute as machine_store;
use crate::state_machine::reclaim;
use crate::type_config::Entry;
use crate::type_config::LogId;
use crate::type_config::SnapshotMeta;
use crate::type_config::TypeConfig;
use crate::type_config::Vote;
use crate::types::AppliedState;
use crate::types::CommandResponse;

/// How long applied state may wait for its fsync while the writer has nothing else to do.
const IDLE_SYNC_DELAY: Duration = Duration::from_millis(10);

/// Most log entries waiting in [`DeferredLog`]; past it, a batch of appends writes the
/// database too.
const MAX_DEFERRED_ENTRIES: usize = 4_096;
/// Most bytes of records waiting in [`DeferredLog`].
const MAX_DEFERRED_BYTES: usize = 4 << 20;

/// How log changes become durable: the journal, synced per batch, and the database's durable
/// commits now and then (see `journal.rs`).
struct DurableState {
    journal: Journal,
    /// When the database last committed durably.
    last_db_sync: Instant,
    /// Log entries in the journal and not yet in the database.
    deferred: DeferredLog,
}

/// Log entries a batch of nothing but appends made durable in the journal without writing
/// the database (a transaction and its commit cost more than the entries' rows): the next
/// transaction of any kind writes them first, so the database sees every change in log order.
/// Meanwhile openraft reads them from the pending tail, which keeps them until that
/// transaction committed.
#[derive(Default)]
struct DeferredLog {
    records: Vec<txn::StagedEntry>,
    log_ids: Vec<LogId>,
    bytes: usize,
}

impl DeferredLog {
    /// Whether another batch of appends may wait here.
    fn has_room(&self) -> bool {
        self.records.len() < MAX_DEFERRED_ENTRIES && self.bytes < MAX_DEFERRED_BYTES
    }
}

impl DurableState {
    /// Whether the database is due a durable commit: it has gone [`journal::DB_SYNC_INTERVAL`]
    /// without one, or the journal has grown past [`journal::MAX_JOURNAL_BYTES`].
    fn db_sync_due(&self) -> bool {
        self.last_db_sync.elapsed() >= journal::DB_SYNC_INTERVAL
            || self.journal.len() >= journal::MAX_JOURNAL_BYTES
    }

    /// The database just committed durably, recording `generation`: the journal holds nothing
    /// it lacks.
    fn db_synced(&mut self, generation: u64) {
        self.journal.begin_generation(generation);
        self.last_db_sync = Instant::now();
    }

    /// Begins a write transaction holding the deferred log entries; returns it and their log
    /// ids, for [`forget_pending`] once it committed.
    fn begin(&mut self, shared: &Shared) -> Result<(WriteTransaction, Vec<LogId>), StoreError> {
        let mut txn = shared.db.begin_write().map_err(StoreError::db)?;
        txn.set_quick_repair(shared.quick_repair);
        let deferred = std::mem::take(&mut self.deferred);
        txn::insert_staged(&txn, &deferred.records)?;
        Ok((txn, deferred.log_ids))
    }

    /// Whether `batch` may skip the database: nothing but appends (and commit-index saves),
    /// room for them among the deferred entries, and no durable commit due.
    fn may_defer(&self, batch: &[WriteOp]) -> bool {
        batch.iter().any(|op| matches!(op, WriteOp::Append { .. }))
            && batch
                .iter()
                .all(|op| matches!(op, WriteOp::Append { .. } | WriteOp::SaveCommitted { .. }))
            && self.deferred.has_room()
            && !self.db_sync_due()
    }
}

/// The writer thread's loop, until every engine handle is gone or the store fails.
pub(super) fn run(shared: &Shared, mut queue: mpsc::Receiver<WriteOp>, journal: Journal) {
    let mut durable = DurableState {
        journal,
        last_db_sync: Instant::now(),
        deferred: DeferredLog::default(),
    };
    let mut batch = Vec::with_capacity(MAX_BATCH_OPS);
    let mut stats = WriterStats::new();
    // Only for waiting on the queue with a timeout; nothing else runs on it.
    let waiter = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            shared.fail(StoreError::Io(format!(
                "the store writer cannot start its timer: {error}"
            )));
            refuse_queued(shared, &mut queue);
            return;
        }
    };
    // Applied state committed without fsync, waiting for the next durable commit.
    let mut unsynced = false;
    let mut cache = WriterCache::default();
    loop {
        // Between batches, while no op waits: a bounded step of deleting removed rows (not
        // once every handle is gone: closing does not wait for it, the next open goes on).
        if cache.reclaim.pending && queue.is_empty() && !queue.is_closed() && !reclaim_held(shared)
        {
            match reclaim_alone(shared, &mut cache, &mut durable) {
                Ok(()) => unsynced = true,
                Err(error) => {
                    shared.fail(error);
                    break;
                }
            }
            continue;
        }
        let first = if unsynced {
            let next = waiter
                .block_on(async { tokio::time::timeout(IDLE_SYNC_DELAY, queue.recv()).await });
            match next {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(_idle) => {
                    if let Err(error) = sync(shared, &mut durable) {
                        shared.fail(error);
                        break;
                    }
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
        shared.observe(|observer| observer.batch(batch.len(), queue.len()));
        let kinds = BatchKinds::of(&batch);
        let started = Instant::now();
        match write_batch(shared, &mut batch, unsynced, &mut cache, &mut durable) {
            Ok(still_unsynced) => unsynced = still_unsynced,
            Err(error) => {
                shared.fail(error);
                break;
            }
        }
        stats.record(kinds, started.elapsed());
    }
    if shared.failure.borrow().is_some() {
        refuse_queued(shared, &mut queue);
        return;
    }
    if unsynced && let Err(error) = sync(shared, &mut durable) {
        shared.fail(error);
    }
    tracing::debug!("store writer thread stops: every handle is gone");
}

/// After a failure: every op queued, and every op sent later, gets the "stopped" error.
fn refuse_queued(shared: &Shared, queue: &mut mpsc::Receiver<WriteOp>) {
    queue.close();
    while let Ok(op) = queue.try_recv() {
        split(op).1.fail(&shared.stopped());
    }
}

/// Whether a test holds the deletion of removed rows ([`crate::StoreConfig::hold_reclaim`]).
fn reclaim_held(shared: &Shared) -> bool {
    shared
        .hold_reclaim
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// One bounded step of deleting removed rows (`state_machine::reclaim`), in a transaction of
/// its own, committed without fsync: like applied state, it needs none (a crash only leaves
/// rows that are deleted again later).
fn reclaim_alone(
    shared: &Shared,
    cache: &mut WriterCache,
    durable: &mut DurableState,
) -> Result<(), StoreError> {
    let machine = shared.machine().clone();
    let (mut txn, written) = durable.begin(shared)?;
    let deleted = reclaim::step(
        &txn,
        &machine,
        &mut cache.reclaim,
        reclaim::MIN_ROWS_PER_STEP,
    )?;
    txn.set_durability(Durability::None)
        .map_err(StoreError::db)?;
    let started = Instant::now();
    txn.commit().map_err(StoreError::db)?;
    shared.observe(|observer| observer.commit(started.elapsed()));
    forget_pending(shared, &written);
    tracing::trace!(deleted, "deleted removed rows");
    Ok(())
}

/// Makes every commit so far durable with a durable commit, and starts the journal's next
/// generation.
fn sync(shared: &Shared, durable: &mut DurableState) -> Result<(), StoreError> {
    durable_commit(shared, durable)?;
    crash_point("store::after-commit");
    Ok(())
}

/// Writes the batch's journal records and syncs them: its log changes are durable.
fn sync_journal(shared: &Shared, journal: &mut Journal) -> Result<(), StoreError> {
    crash_point("store::before-fsync");
    let started = Instant::now();
    journal.write_and_sync()?;
    shared.observe(|observer| observer.fsync(started.elapsed()));
    crash_point("store::after-commit");
    Ok(())
}

/// A commit with fsync that records the journal's next generation: it makes every commit
/// before it durable, and the journal starts over.
fn durable_commit(shared: &Shared, durable: &mut DurableState) -> Result<(), StoreError> {
    let generation = durable.journal.next_generation();
    let (mut flush, written) = durable.begin(shared)?;
    txn::write_journal_generation(&flush, generation)?;
    flush
        .set_durability(Durability::Immediate)
        .map_err(StoreError::db)?;
    crash_point("store::before-fsync");
    let started = Instant::now();
    flush.commit().map_err(StoreError::db)?;
    observe_db_sync(shared, started.elapsed());
    forget_pending(shared, &written);
    durable.db_synced(generation);
    Ok(())
}

/// Tells the observer a durable commit of the database took `took` (a sync, and one of the
/// database's own).
fn observe_db_sync(shared: &Shared, took: std::time::Duration) {
    shared.observe(|observer| {
        observer.fsync(took);
        observer.db_sync(took);
    });
}

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

    /// Tells the op's caller it failed.
    fn fail(self, error: &StoreError) {
        match self {
            Completion::Done(done) | Completion::Saved(done) | Completion::Apply(done, _) => {
                done.send(Err(error.clone())).ok();
            }
            Completion::Append(flushed) => flushed.io_completed(Err(error.clone().into())),
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
        epoch: machine.epoch,
        dictionary: machine.dictionary,
        access_revision: machine.access.revision,
    };
    *shared.machine() = machine.clone();
    shared.applied.send_if_modified(|current| {
        let changed = *current != applied;
        *current = applied;
        changed
    });
}

/// Carries a batch out and answers its ops, each as soon as it may be. `unsynced` says whether
/// earlier commits of the database still wait for a durable commit; returns whether they (or
/// this batch's) do now.
///
/// A batch commits in two steps: first without fsync, which makes its writes readable, then
/// its log appends and truncations are written to the journal and synced (see `journal.rs`),
/// or, for a batch holding a vote, a purge or a caught-up mark, or when the database is due
/// one, a durable commit makes it and every commit before it durable (and starts the journal's
/// next generation). Between the two:
/// - the batch's log entries move from the log store's pending tail to the database (openraft
///   read them from the tail until now); it hears they are flushed (`IOFlushed`, what counts
///   toward commit) only after the journal's fsync.
/// - applies are answered and shown to readers. Applied state needs no fsync of its own: every
///   entry it comes from is committed, so on a quorum's disks, and a node that loses applied
///   state in a crash applies it again from the log (openraft re-applies up to the saved commit
///   index at start, the leader's commit index brings the rest). What it must not do is serve a
///   read older than one it served before the crash: the node serves no read until it has
///   confirmed a read index with the leader once since it started (`RaftHandle::catch_up` in
///   the node).
///   And nothing that depends on applied state can be durable without it: the log is purged in
///   a later commit of the same database, which commits durably, and a durable commit makes
///   every commit before it durable.
///
/// Votes, truncation, purge and appends are answered after their sync (appends of a batch
/// without applies before the database commit: see below). A batch with nothing else (applies
/// and commit-index saves) needs none: the database's next durable commit covers it, within
/// [`journal::DB_SYNC_INTERVAL`], or once the writer has been idle for [`IDLE_SYNC_DELAY`].
/// A batch that installs a snapshot commits once, durably, before anything is answered or
/// shown. A batch of nothing but appends (and commit-index saves) runs no transaction at all
/// while it may ([`DurableState::may_defer`]): see [`defer_appends`].
///
/// On failure every op of the batch not answered yet gets the error, which is returned: the
/// writer stops.
fn write_batch(
    shared: &Shared,
    batch: &mut Vec<WriteOp>,
    unsynced: bool,
    cache: &mut WriterCache,
    durable: &mut DurableState,
) -> Result<bool, StoreError> {
    if batch
        .iter()
        .all(|op| matches!(op, WriteOp::SaveCommitted { .. }))
    {
        save_commit_index_later(shared, batch);
        return Ok(unsynced);
    }
    if durable.may_defer(batch) {
        return defer_appends(shared, batch, durable);
    }
    let mut log = shared.log().clone();
    let mut machine = shared.machine().clone();
    let mut completions = Vec::with_capacity(batch.len());
    let one_durable_commit = batch
        .iter()
        .any(|op| matches!(op, WriteOp::InstallSnapshot { .. }));
    // A vote, a purge and a caught-up mark are kept in the database alone: they need its
    // durable commit.
    let db_sync_needed = batch.iter().any(|op| {
        matches!(
            op,
            WriteOp::SaveVote { .. } | WriteOp::Purge { .. } | WriteOp::MarkCaughtUp { .. }
        )
    });
    let mut synced = false;
    let result = (|| -> Result<(), StoreError> {
        // Deferred entries first: the database takes every change in log order.
        let (mut txn, mut appended) = durable.begin(shared)?;
        let mut points = BatchPoints::default();
        for op in batch.drain(..) {
            let (work, completion) = split(op);
            points.note(&work);
            if let Work::Append(entries) = &work {
                appended.extend(entries.iter().map(|entry| entry.log_id));
            }
            match carry_out(
                &txn,
                work,
                &mut log,
                &mut machine,
                cache,
                &mut durable.journal,
            ) {
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
            txn::write_commit_index(&txn, log.committed)?;
            log.committed_unwritten = false;
        }
        txn::delete_purged(&txn, &mut log)?;
        if !reclaim_held(shared) {
            let events_applied = machine
                .head_position
                .saturating_sub(shared.machine().head_position);
            reclaim::step(
                &txn,
                &machine,
                &mut cache.reclaim,
                reclaim::budget(events_applied),
            )?;
        }
        points.before_commit();
        if one_durable_commit {
            let generation = durable.journal.next_generation();
            txn::write_journal_generation(&txn, generation)?;
            txn.set_durability(Durability::Immediate)
                .map_err(StoreError::db)?;
            let started = Instant::now();
            txn.commit().map_err(StoreError::db)?;
            observe_db_sync(shared, started.elapsed());
            durable.db_synced(generation);
            synced = true;
            forget_pending(shared, &appended);
            crash_point("store::after-commit");
            return Ok(());
        }
        let db_sync = db_sync_needed || durable.db_sync_due();
        // A batch that applies nothing (a follower's appends, as a rule) syncs its journal
        // first and tells openraft its entries are flushed before the database commit, which
        // then runs while the reply travels. (A batch with applies commits first: their
        // answers must not wait for the fsync.) Truncations are answered after the commit,
        // whose reads must no longer show what they removed.
        let mut journal_synced = false;
        if !db_sync
            && !points.apply
            && completions
                .iter()
                .any(|completion| matches!(completion, Completion::Append(_)))
        {
            sync_journal(shared, &mut durable.journal)?;
            journal_synced = true;
            for completion in &mut completions {
                if matches!(completion, Completion::Append(_)) {
                    std::mem::replace(completion, Completion::Answered).answer();
                }
            }
        }
        txn.set_durability(Durability::None)
            .map_err(StoreError::db)?;
        let started = Instant::now();
        txn.commit().map_err(StoreError::db)?;
        shared.observe(|observer| observer.commit(started.elapsed()));
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
        let waiting = completions
            .iter()
            .any(|completion| !matches!(completion, Completion::Answered));
        if db_sync {
            durable_commit(shared, durable)?;
            synced = true;
            crash_point("store::after-commit");
        } else if waiting && !journal_synced {
            sync_journal(shared, &mut durable.journal)?;
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
            // Only a durable commit leaves the database with nothing waiting for one.
            Ok(!synced)
        }
        Err(error) => Err(refuse_batch(
            shared,
            completions,
            error,
            "store write transaction failed",
        )),
    }
}

/// Carries out a batch of nothing but appends (and commit-index saves) without the database:
/// its entries are written to the journal and synced, then reported flushed, and wait in
/// [`DeferredLog`] for the next transaction. Returns that the database has writes waiting (so
/// the writer, once idle, commits durably, which writes them).
fn defer_appends(
    shared: &Shared,
    batch: &mut Vec<WriteOp>,
    durable: &mut DurableState,
) -> Result<bool, StoreError> {
    let mut log = shared.log().clone();
    let mut completions = Vec::with_capacity(batch.len());
    let result = (|| -> Result<(), StoreError> {
        for op in batch.drain(..) {
            let (work, completion) = split(op);
            completions.push(completion);
            match work {
                Work::Append(entries) => {
                    let deferred = &mut durable.deferred;
                    let from = deferred.records.len();
                    txn::stage_append(
                        &entries,
                        &mut log,
                        &mut durable.journal,
                        &mut deferred.records,
                    )?;
                    deferred.bytes += deferred.records[from..]
                        .iter()
                        .map(|(_, record)| record.len())
                        .sum::<usize>();
                    deferred
                        .log_ids
                        .extend(entries.iter().map(|entry| entry.log_id));
                }
                Work::SaveCommitted(committed) => log.stage_committed(committed),
                _ => {
                    return Err(StoreError::Invariant(
                        "a deferred batch holds more than appends".into(),
                    ));
                }
            }
        }
        crash_point("store::before-commit");
        sync_journal(shared, &mut durable.journal)
    })();
    completions.extend(batch.drain(..).map(|op| split(op).1));
    match result {
        Ok(()) => {
            *shared.log() = log;
            for completion in completions {
                completion.answer();
            }
            Ok(true)
        }
        Err(error) => Err(refuse_batch(
            shared,
            completions,
            error,
            "store journal write failed",
        )),
    }
}

/// A batch failed (`what`): the store stops, and every op of it not answered yet gets the
/// error, which is returned.
fn refuse_batch(
    shared: &Shared,
    completions: Vec<Completion>,
    error: StoreError,
    what: &str,
) -> StoreError {
    tracing::error!(
        "{what}, {} ops refused, the store stops: {error}",
        completions.len()
    );
    // Recorded before anyone hears of the error, so the node sees the store's failure first
    // (and says so) rather than one of its consequences.
    shared.fail(error.clone());
    for completion in completions {
        completion.fail(&error);
    }
    error
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

/// The part of an op that changes the store.
enum Work {
    Append(Vec<Entry>),
    SaveVote(Vote),
    SaveCommitted(Option<LogId>),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
    Apply(Vec<(Entry, Option<ApplyResponder<TypeConfig>>)>),
    InstallSnapshot(SnapshotMeta, PathBuf),
    MarkCaughtUp,
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
        WriteOp::MarkCaughtUp { done } => (Work::MarkCaughtUp, Completion::Done(done)),
    }
}

/// Carries one op out inside `txn`, updating the staged in-memory state. Returns the
/// responses an apply decided.
fn carry_out(
    txn: &WriteTransaction,
    work: Work,
    log: &mut LogMeta,
    machine: &mut MachineMeta,
    cache: &mut WriterCache,
    journal: &mut Journal,
) -> Result<Vec<(ApplyResponder<TypeConfig>, CommandResponse)>, StoreError> {
    match work {
        Work::Append(entries) => txn::append(txn, &entries, log, journal)?,
        Work::SaveVote(vote) => txn::save_vote(txn, vote, log)?,
        // Written once, just before the batch commits (see `write_batch`).
        Work::SaveCommitted(committed) => log.stage_committed(committed),
        Work::TruncateAfter(last) => {
            txn::truncate_after(txn, last, log)?;
            journal.stage_truncate(last);
        }
        Work::Purge(upto) => txn::purge(txn, upto, log)?,
        Work::Apply(entries) => return machine_store::apply(txn, entries, machine, cache),
        Work::InstallSnapshot(meta, path) => {
            machine_store::install(txn, &meta, &path, machine, cache)?
        }
        Work::MarkCaughtUp => txn::clear_catch_up_required(txn)?,
    }
    Ok(Vec::new())
}
