//! Durability under power loss. The store runs on `testing::CrashBackend`, which takes back
//! every write since the last sync when the power goes (unlike SIGKILL, which leaves the
//! kernel's page cache alone): so these tests fail on a store that acknowledges before it
//! syncs.
//!
//! What must hold after a power cut:
//! - an entry whose flush callback (`IOFlushed`) fired is there, intact, with no hole before it;
//! - a vote whose `save_vote` returned is there;
//! - applied state may be behind the durable log but never ahead of it, and holds exactly the
//!   events of the entries it applied, nothing else;
//! - a purge that returned is there, and never outruns the applied state;
//! - cut at any sync point of a scripted sequence (votes, appends, applies, a conflicting
//!   truncation, purges, a snapshot install), the store reopens, shows all of the above, and
//!   keeps working.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::append_flushed;
use common::apply;
use common::entry;
use common::entry_in;
use common::event_id;
use common::log_id;
use common::log_id_in;
use evlog_raft_store::EventReader;
use evlog_raft_store::LogStore;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::testing::CrashBackend;
use evlog_raft_store::testing::PowerSwitch;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::type_config::Vote;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use openraft::type_config::TypeConfigExt;

/// A store on a crash backend, with its power switch.
struct Store {
    engine: evlog_raft_store::Engine,
    log: LogStore,
    machine: StateMachine,
    reader: EventReader,
    switch: PowerSwitch,
}

fn open(dir: &Path) -> Store {
    let (backend, switch) = CrashBackend::for_data_dir(dir).expect("the crash backend opens");
    let config = StoreConfig {
        backend,
        ..StoreConfig::new(dir, 1, "power-loss")
    };
    let (engine, log, machine, reader) =
        evlog_raft_store::open(&config).expect("the store opens after a power loss");
    Store {
        engine,
        log,
        machine,
        reader,
        switch,
    }
}

/// What a reopened store holds.
struct Found {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    last_log: Option<LogId>,
    /// Every readable log entry, by index.
    entries: BTreeMap<u64, Entry>,
    applied: Option<LogId>,
    /// The ids of every event, in position order.
    event_ids: Vec<String>,
}

async fn inspect(store: &mut Store) -> Found {
    let state = store.log.get_log_state().await.expect("log state");
    let vote = store.log.read_vote().await.expect("vote");
    let entries: Vec<Entry> = store
        .log
        .try_get_log_entries(0..)
        .await
        .expect("the log reads");
    let (applied, _) = store.machine.applied_state().await.expect("applied state");
    let page = store
        .reader
        .read(
            ReadTarget::All,
            ReadStart::Edge,
            evlog_raft_store::PageLimit::count(100_000),
            false,
        )
        .await
        .expect("the events read");
    assert_eq!(page.next_from, None, "every event fits one page");
    Found {
        vote,
        last_purged: state.last_purged_log_id,
        last_log: state.last_log_id,
        entries: entries
            .into_iter()
            .map(|entry| (entry.log_id.index, entry))
            .collect(),
        applied,
        event_ids: page.events.into_iter().map(|event| event.id).collect(),
    }
}

/// Every entry the test appends carries one event, so the events of a store that applied up
/// to index `n` are those of entries 1..=n, in order, whatever their terms. `terms` gives the
/// term of the entry that was applied at each index (the test knows what it applied).
/// Applied state is never ahead of the durable log, except where it came from an installed
/// `snapshot` (openraft then purges the log up to it at start).
fn check_applied(
    found: &Found,
    terms: &BTreeMap<u64, u64>,
    snapshot: Option<LogId>,
    context: &str,
) {
    let applied = found.applied.map_or(0, |id| id.index);
    let last_log = found.last_log.map_or(0, |id| id.index);
    assert!(
        applied <= last_log || (snapshot.is_some() && found.applied == snapshot),
        "{context}: applied {applied} is ahead of the durable log, which ends at {last_log}"
    );
    let purged = found.last_purged.map_or(0, |id| id.index);
    assert!(
        purged <= applied,
        "{context}: the log is purged up to {purged} but applied state only reaches {applied}"
    );
    let expected: Vec<String> = (1..=applied)
        .map(|index| {
            let term = terms.get(&index).copied().unwrap_or_else(|| {
                panic!("{context}: index {index} is applied but the test never applied it")
            });
            event_id(term, index)
        })
        .collect();
    assert_eq!(
        found.event_ids, expected,
        "{context}: the events are exactly those of the applied entries"
    );
    // Applied entries still in the log are the ones applied (no event the log does not hold).
    for (index, entry) in found.entries.range(..=applied) {
        assert_eq!(
            Some(&entry.log_id.leader_id.term),
            terms.get(index),
            "{context}: the log holds another entry at applied index {index}"
        );
    }
}

/// Checks the log holds every entry of `flushed` (index -> entry, as acknowledged) above the
/// purge point, intact, and no hole from the purge point to its end.
fn check_log(found: &Found, flushed: &BTreeMap<u64, Entry>, context: &str) {
    let first = found.last_purged.map_or(1, |id| id.index + 1);
    let last = found.last_log.map_or(0, |id| id.index);
    let indexes: Vec<u64> = found.entries.keys().copied().collect();
    assert_eq!(
        indexes,
        (first..=last).collect::<Vec<_>>(),
        "{context}: the log runs from after the purge point to its end without a hole"
    );
    for (index, expected) in flushed.range(first..) {
        assert_eq!(
            found.entries.get(index),
            Some(expected),
            "{context}: flushed entry {index} survives the power loss intact"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_entries_survive_a_power_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut flushed: BTreeMap<u64, Entry> = BTreeMap::new();
    for round in 0..4u64 {
        let mut store = open(dir.path());
        let found = inspect(&mut store).await;
        check_log(&found, &flushed, &format!("round {round}, reopened"));
        let first = found.last_log.map_or(1, |id| id.index + 1);
        // Four appends in flight at a time, each reported once its callback fired.
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let mut log = store.log.clone();
        let appender = tokio::spawn(async move {
            let mut next = first;
            for _ in 0..10_000 {
                let mut waits = Vec::new();
                for _ in 0..4 {
                    let (tx, rx) = TypeConfig::oneshot();
                    if log
                        .append([entry(next)], IOFlushed::<TypeConfig>::signal(tx))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    waits.push((next, rx));
                    next += 1;
                }
                for (index, rx) in waits {
                    match rx.await {
                        Ok(Ok(())) => {
                            if report.send(index).is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            }
        });
        // Cut the power mid-stream, at a different point each round.
        let target = 50 + 37 * round;
        let mut count = 0;
        while let Some(index) = reports.recv().await {
            flushed.insert(index, entry(index));
            count += 1;
            if count == target {
                store.switch.lose_power();
                break;
            }
        }
        assert_eq!(count, target, "round {round}: the appender stopped early");
        tokio::time::timeout(Duration::from_secs(30), appender)
            .await
            .expect("the appender stops once the power is gone")
            .expect("the appender does not panic");
        // Callbacks that fired before the cut but were read after it count too.
        while let Ok(index) = reports.try_recv() {
            flushed.insert(index, entry(index));
        }
        drop(store);
        let mut store = open(dir.path());
        let found = inspect(&mut store).await;
        check_log(
            &found,
            &flushed,
            &format!("round {round}, after the power loss"),
        );
    }

    // And an append whose sync never happened is gone: the backend really loses what was not
    // synced (a store that never synced would keep it readable in the file or lose it all).
    let mut store = open(dir.path());
    let last = inspect(&mut store)
        .await
        .last_log
        .expect("entries survived")
        .index;
    store.switch.lose_power_at_sync(1);
    let result = append_flushed(&mut store.log, vec![entry(last + 1)]).await;
    assert!(
        result.is_err(),
        "the append's sync lost the power, so its flush fails"
    );
    drop(store);
    let mut store = open(dir.path());
    let found = inspect(&mut store).await;
    assert_eq!(
        found.last_log.map(|id| id.index),
        Some(last),
        "an append cut before its sync is gone"
    );
    check_log(&found, &flushed, "after the last cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_vote_survives_a_power_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut saved: Option<Vote> = None;
    for round in 0..3u64 {
        let mut store = open(dir.path());
        let found = inspect(&mut store).await;
        assert_eq!(
            found.vote, saved,
            "round {round}: the last saved vote survived"
        );
        let term = saved.map_or(1, |vote| vote.leader_id.term + 1);
        for step in 0..=round * 3 {
            let vote = if step % 2 == 0 {
                Vote::new(term + step, 1)
            } else {
                Vote::new_committed(term + step, 2)
            };
            store.log.save_vote(&vote).await.expect("the vote saves");
            saved = Some(vote);
        }
        // The next vote's sync is where the power goes: it must not return, and must not stay.
        store.switch.lose_power_at_sync(1);
        let next = Vote::new(term + 100, 3);
        let result = store.log.save_vote(&next).await;
        assert!(
            result.is_err(),
            "round {round}: a vote whose sync lost power is not reported saved"
        );
        assert!(!store.switch.powered());
    }
    let mut store = open(dir.path());
    assert_eq!(inspect(&mut store).await.vote, saved);
}

/// Where a test cuts the power.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// At the `n`-th sync from now: between a commit and its fsync.
    AtSync(u64),
    /// Right after the `n`-th batch was flushed, with the next one on its way.
    AfterBatch(u64),
}

/// A leader's pattern: entries are applied as soon as a quorum has them, which may be before
/// the leader's own flush; purges follow applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_state_never_runs_ahead_of_the_durable_log() {
    let cuts = [2u64, 3, 5, 8, 13, 21, 34]
        .into_iter()
        .map(Cut::AtSync)
        .chain([1u64, 4, 9, 16].into_iter().map(Cut::AfterBatch));
    for cut in cuts {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = open(dir.path());
        if let Cut::AtSync(n) = cut {
            store.switch.lose_power_at_sync(n);
        }
        let mut flushed: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut terms: BTreeMap<u64, u64> = BTreeMap::new();
        let mut purged: Option<LogId> = None;
        let mut next = 1u64;
        for batch in 1..=200u64 {
            let entries: Vec<Entry> = (next..next + 5).map(entry).collect();
            let (tx, rx) = TypeConfig::oneshot();
            if store
                .log
                .append(entries.clone(), IOFlushed::<TypeConfig>::signal(tx))
                .await
                .is_err()
            {
                break;
            }
            for entry in &entries {
                terms.insert(entry.log_id.index, 1);
            }
            if apply(&mut store.machine, entries.clone()).await.is_err() {
                break;
            }
            match rx.await {
                Ok(Ok(())) => flushed.extend(entries.into_iter().map(|e| (e.log_id.index, e))),
                _ => break,
            }
            next += 5;
            if batch % 3 == 0 {
                let upto = log_id(next - 8);
                if store.log.purge(upto).await.is_err() {
                    break;
                }
                purged = Some(upto);
            }
            if let Cut::AfterBatch(n) = cut
                && batch == n
            {
                // The next batch is appended and applied, not flushed, when the power goes.
                let entries: Vec<Entry> = (next..next + 5).map(entry).collect();
                let (tx, _unflushed) = TypeConfig::oneshot();
                let appended = store
                    .log
                    .append(entries.clone(), IOFlushed::<TypeConfig>::signal(tx))
                    .await;
                if appended.is_ok() && apply(&mut store.machine, entries.clone()).await.is_ok() {
                    terms.extend(entries.iter().map(|e| (e.log_id.index, 1)));
                }
                store.switch.lose_power();
                break;
            }
        }
        assert!(!store.switch.powered(), "{cut:?}: the power went");
        drop(store);
        let mut store = open(dir.path());
        let found = inspect(&mut store).await;
        let context = format!("power cut {cut:?}");
        assert!(
            found.last_purged >= purged,
            "{context}: a purge that returned survives ({:?} < {purged:?})",
            found.last_purged
        );
        check_log(&found, &flushed, &context);
        check_applied(&found, &terms, None, &context);
    }
}

/// What the scripted sequence was told succeeded before the power went.
#[derive(Default)]
struct Acknowledged {
    vote: Option<Vote>,
    /// Flushed entries, minus those a later truncation removed.
    flushed: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
    /// Index -> term of every entry applied (or installed by the snapshot).
    terms: BTreeMap<u64, u64>,
}

/// The sequence a node's store sees, each step awaited; stops at the first error (the power
/// is gone). Steps: votes, appends, applies, a commit index, a conflicting truncation in a new
/// term, purges, a snapshot install from another store, and more of each after it.
async fn script(store: &mut Store, other: &mut StateMachine, acked: &mut Acknowledged) {
    let run = async {
        let vote = Vote::new(1, 1);
        store.log.save_vote(&vote).await.ok()?;
        acked.vote = Some(vote);
        let vote = Vote::new_committed(1, 1);
        store.log.save_vote(&vote).await.ok()?;
        acked.vote = Some(vote);
        let first: Vec<Entry> = (1..=5).map(entry).collect();
        append_flushed(&mut store.log, first.clone()).await.ok()?;
        acked
            .flushed
            .extend(first.iter().map(|e| (e.log_id.index, e.clone())));
        store.log.save_committed(Some(log_id(5))).await.ok()?;
        apply(&mut store.machine, first.clone()).await.ok()?;
        acked.terms.extend((1..=5).map(|index| (index, 1)));
        // Entries 6..=10 of term 1 reach the log; a new leader of term 2 replaces 8.. of them.
        let doomed: Vec<Entry> = (6..=10).map(entry).collect();
        append_flushed(&mut store.log, doomed.clone()).await.ok()?;
        acked
            .flushed
            .extend(doomed.iter().map(|e| (e.log_id.index, e.clone())));
        let vote = Vote::new_committed(2, 1);
        store.log.save_vote(&vote).await.ok()?;
        acked.vote = Some(vote);
        store.log.truncate_after(Some(log_id(7))).await.ok()?;
        acked.flushed.retain(|index, _| *index <= 7);
        let replacement: Vec<Entry> = (8..=12).map(|index| entry_in(2, index)).collect();
        append_flushed(&mut store.log, replacement.clone())
            .await
            .ok()?;
        acked
            .flushed
            .extend(replacement.iter().map(|e| (e.log_id.index, e.clone())));
        let committed: Vec<Entry> = (6..=7).map(entry).chain(replacement.clone()).collect();
        apply(&mut store.machine, committed).await.ok()?;
        acked.terms.extend([(6, 1), (7, 1)]);
        acked.terms.extend((8..=12).map(|index| (index, 2)));
        store.log.purge(log_id(4)).await.ok()?;
        acked.purged = Some(log_id(4));
        // The other store has applied 1..=7 of term 1 and 8..=20 of term 2: its snapshot
        // replaces this state machine, and the log is purged up to it, as openraft does.
        let snapshot = other
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("the other store builds a snapshot");
        store
            .machine
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .ok()?;
        acked.terms.extend((13..=20).map(|index| (index, 2)));
        store.log.purge(log_id_in(2, 20)).await.ok()?;
        acked.purged = Some(log_id_in(2, 20));
        acked.flushed.retain(|index, _| *index > 20);
        let later: Vec<Entry> = (21..=30).map(|index| entry_in(2, index)).collect();
        append_flushed(&mut store.log, later.clone()).await.ok()?;
        acked
            .flushed
            .extend(later.iter().map(|e| (e.log_id.index, e.clone())));
        apply(&mut store.machine, later).await.ok()?;
        acked.terms.extend((21..=30).map(|index| (index, 2)));
        store.log.purge(log_id_in(2, 25)).await.ok()?;
        acked.purged = Some(log_id_in(2, 25));
        let vote = Vote::new_committed(3, 2);
        store.log.save_vote(&vote).await.ok()?;
        acked.vote = Some(vote);
        Some(())
    };
    run.await;
}

/// The snapshot source of the scripted sequence: entries 1..=7 of term 1, 8..=20 of term 2.
async fn snapshot_source(dir: &Path) -> (evlog_raft_store::Engine, StateMachine) {
    let config = StoreConfig::new(dir, 2, "power-loss");
    let (engine, _log, mut machine, _reader) =
        evlog_raft_store::open(&config).expect("the snapshot source opens");
    let entries: Vec<Entry> = (1..=7)
        .map(entry)
        .chain((8..=20).map(|index| entry_in(2, index)))
        .collect();
    apply(&mut machine, entries)
        .await
        .expect("the snapshot source applies");
    (engine, machine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_sync_of_a_scripted_sequence_leaves_a_store_that_works() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let (_source_engine, mut source) = snapshot_source(source_dir.path()).await;
    // Cut at sync 1, 2, 3, ... until the sequence runs to its end with the power on.
    for cut in 1..=200u64 {
        let cuts = cut - 1;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = open(dir.path());
        store.switch.lose_power_at_sync(cut);
        let mut acked = Acknowledged::default();
        script(&mut store, &mut source, &mut acked).await;
        if store.switch.powered() {
            assert!(
                cuts >= 10,
                "the sequence syncs at least 10 times, got {cuts}"
            );
            eprintln!("the sequence ran to its end after {cuts} power cuts, one at each sync");
            return;
        }
        drop(store);

        let context = format!("power cut at sync {cut}");
        let mut store = open(dir.path());
        let found = inspect(&mut store).await;
        assert!(
            found.vote >= acked.vote,
            "{context}: vote {:?} is older than the saved {:?}",
            found.vote,
            acked.vote
        );
        assert!(
            found.last_purged >= acked.purged,
            "{context}: purged {:?} < acknowledged {:?}",
            found.last_purged,
            acked.purged
        );
        check_log(&found, &acked.flushed, &context);
        let snapshot = Some(log_id_in(2, 20));
        check_applied(&found, &acked.terms, snapshot, &context);

        // The reopened store works on: it appends after its log, reads back, applies, votes.
        // An installed snapshot ahead of the log: openraft purges the log up to it at start.
        let mut last = found.last_log.map_or(0, |id| id.index);
        let applied = found.applied.map_or(0, |id| id.index);
        if applied > last {
            let applied_id = found.applied.expect("applied");
            store
                .log
                .purge(applied_id)
                .await
                .expect("purges up to the snapshot");
            last = applied;
        }
        let term = found.vote.map_or(1, |vote| vote.leader_id.term) + 1;
        let vote = Vote::new_committed(term, 1);
        store.log.save_vote(&vote).await.expect("votes again");
        let more: Vec<Entry> = (last + 1..=last + 3)
            .map(|index| entry_in(term, index))
            .collect();
        append_flushed(&mut store.log, more.clone())
            .await
            .expect("appends again");
        let mut to_apply: Vec<Entry> = found
            .entries
            .range(applied + 1..)
            .map(|(_, entry)| entry.clone())
            .collect();
        to_apply.extend(more.clone());
        apply(&mut store.machine, to_apply.clone())
            .await
            .expect("applies again");
        let mut terms = acked.terms.clone();
        for entry in &to_apply {
            terms.insert(entry.log_id.index, entry.log_id.leader_id.term);
        }
        let found = inspect(&mut store).await;
        assert_eq!(found.vote, Some(vote), "{context}: the new vote reads back");
        assert_eq!(found.last_log, Some(log_id_in(term, last + 3)), "{context}");
        assert_eq!(
            found.applied,
            Some(log_id_in(term, last + 3)),
            "{context}: everything applied"
        );
        let mut flushed = acked.flushed.clone();
        flushed.extend(more.into_iter().map(|e| (e.log_id.index, e)));
        check_log(&found, &flushed, &format!("{context}, working on"));
        check_applied(&found, &terms, snapshot, &format!("{context}, working on"));
    }
    panic!("the scripted sequence never ran to its end with the power on");
}

/// A failed sync stops the store for good: the op that needed it fails, the failure is
/// reported (the node exits on it), and every later write is refused, never retried over
/// what the failed sync may have lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_store_for_good() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path());
    append_flushed(&mut store.log, vec![entry(1)])
        .await
        .expect("the first append is flushed");
    assert!(store.engine.failure().borrow().is_none());
    store.switch.lose_power_at_sync(1);
    let error = append_flushed(&mut store.log, vec![entry(2)])
        .await
        .expect_err("the append whose sync failed");
    assert!(
        matches!(
            evlog_raft_store::StoreError::from(error),
            evlog_raft_store::StoreError::Io(_)
        ),
        "the append fails with the I/O error"
    );
    let failure = store
        .engine
        .failure()
        .wait_for(Option::is_some)
        .await
        .expect("the failure is reported")
        .clone();
    assert!(
        matches!(failure, Some(evlog_raft_store::StoreError::Io(_))),
        "{failure:?}"
    );
    let error = store
        .log
        .save_vote(&Vote::new(1, 1))
        .await
        .expect_err("a later write is refused");
    assert!(
        matches!(
            evlog_raft_store::StoreError::from(error),
            evlog_raft_store::StoreError::Stopped(_)
        ),
        "a later write gets the store's stopped error"
    );
}
