//! A purge takes effect at once (the log starts after the purge point, also after a restart),
//! while the purged entries are deleted a bounded run per transaction, never all in the
//! purge's own.

mod common;

use common::append_flushed;
use common::entry;
use common::log_id;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::Vote;
use openraft::RaftLogReader;
use openraft::storage::RaftLogStorage;
use redb::ReadableDatabase;
use redb::ReadableTable;

const ENTRIES: u64 = 5_000;
const PURGED: u64 = 4_000;

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::new(dir, 1, "purge")
}

async fn append(log: &mut evlog_raft_store::LogStore, from: u64, to: u64) {
    let entries: Vec<Entry> = (from..=to).map(entry).collect();
    append_flushed(log, entries)
        .await
        .expect("appended and flushed");
}

/// The first index still stored in the log table (purged or not), read from the file.
fn first_stored(dir: &std::path::Path) -> Option<u64> {
    let db = redb::Database::open(dir.join("evlog.redb")).expect("the database opens");
    let txn = db.begin_read().expect("read");
    let table = txn
        .open_table(evlog_raft_store::schema::LOG)
        .expect("log table");
    table
        .first()
        .expect("first")
        .map(|(index, _)| index.value())
}

async fn readable_indexes(log: &mut evlog_raft_store::LogStore) -> Vec<u64> {
    let mut reader = log.get_log_reader().await;
    reader
        .try_get_log_entries(0..)
        .await
        .expect("log read")
        .iter()
        .map(|entry| entry.log_id.index)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_takes_effect_at_once_and_its_entries_go_a_run_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (_engine, mut log, _sm, _reader) =
            evlog_raft_store::open(&config(dir.path())).expect("a fresh store opens");
        append(&mut log, 1, ENTRIES).await;
        log.purge(log_id(PURGED)).await.expect("purge");
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(PURGED)));
        assert_eq!(
            readable_indexes(&mut log).await,
            (PURGED + 1..=ENTRIES).collect::<Vec<_>>(),
            "a purge takes effect at once"
        );
    }
    // The purge's transaction deleted one run; the rest is still stored, and a restart reads
    // the log from after the purge point all the same.
    let first = first_stored(dir.path()).expect("entries are stored");
    assert!(
        first > 1 && first <= PURGED,
        "one run of purged entries is deleted with the purge, not all: first stored {first}"
    );
    let (_engine, mut log, _sm, _reader) =
        evlog_raft_store::open(&config(dir.path())).expect("a store with purged entries opens");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(PURGED)));
    assert_eq!(state.last_log_id, Some(log_id(ENTRIES)));
    assert_eq!(
        readable_indexes(&mut log).await,
        (PURGED + 1..=ENTRIES).collect::<Vec<_>>()
    );
    // Each later transaction deletes another run, until none is left. (A batch of appends
    // alone writes the journal, not the database: a vote's transaction follows each here.)
    for index in ENTRIES + 1..=ENTRIES + 8 {
        append(&mut log, index, index).await;
        log.save_vote(&Vote::new(1, 1))
            .await
            .expect("the vote saves");
    }
    drop((_engine, log, _sm, _reader));
    assert_eq!(first_stored(dir.path()), Some(PURGED + 1));

    // A purge past everything stored (as after a snapshot install): the log goes on after it.
    let beyond = ENTRIES + 100_000;
    let (_engine, mut log, _sm, _reader) =
        evlog_raft_store::open(&config(dir.path())).expect("the store opens again");
    log.purge(log_id(beyond)).await.expect("purge past the log");
    append(&mut log, beyond + 1, beyond + 1).await;
    assert_eq!(readable_indexes(&mut log).await, vec![beyond + 1]);
    drop((_engine, log, _sm, _reader));
    assert_eq!(first_stored(dir.path()), Some(beyond + 1));
}
