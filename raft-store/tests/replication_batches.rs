//! Replication reads the log in batches bounded in bytes: openraft asks for up to 300 entries
//! at a time, and 300 large appends would make a message of gigabytes on both ends. A full
//! read (apply, the storage suite) still gets every entry asked for.

mod common;

use evlog_raft_store::StoreConfig;
use evlog_raft_store::log_store::MAX_REPLICATION_BATCH_BYTES;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::NewEvent;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;

const ENTRY_BYTES: usize = 3 << 20;

fn big(index: u64) -> Entry {
    let mut entry = common::entry(index);
    if let openraft::EntryPayload::Normal(Command::Append(command)) = &mut entry.payload {
        command.events = vec![NewEvent {
            id: format!("big-{index}"),
            event_type: "T".to_string(),
            content_type: String::new(),
            data: bytes::Bytes::from(vec![7u8; ENTRY_BYTES]),
            metadata: vec![],
            encoding: Default::default(),
        }];
    }
    entry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_batches_are_bounded_in_bytes_and_full_reads_are_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_engine, mut log, _machine, _reader) =
        evlog_raft_store::open(&StoreConfig::new(dir.path(), 1, "batches")).expect("opens");
    // Most stored (flushed), the rest still in the pending tail when read.
    common::append_flushed(&mut log, (1..=8).map(big).collect())
        .await
        .expect("flushed");
    let (tx, _rx) = TypeConfig::oneshot();
    log.append(
        (9..=12).map(big).collect::<Vec<_>>(),
        IOFlushed::<TypeConfig>::signal(tx),
    )
    .await
    .expect("appended");
    let mut reader = log.get_log_reader().await;
    let fits = MAX_REPLICATION_BATCH_BYTES / ENTRY_BYTES;
    // Batches all stored (and cut short by the budget), across both, and all pending.
    for start in [1u64, 4, 6, 9, 12] {
        let batch = reader
            .limited_get_log_entries(start, 13)
            .await
            .expect("a batch");
        let indexes: Vec<u64> = batch.iter().map(|entry| entry.log_id.index).collect();
        let expected: Vec<u64> = (start..=12).take(fits).collect();
        assert_eq!(
            indexes, expected,
            "a batch from {start} holds what fits 16 MiB"
        );
    }
    let all = reader
        .try_get_log_entries(1..13)
        .await
        .expect("a full read");
    assert_eq!(all.len(), 12, "a full read is not bounded");
    // An entry larger than the budget still goes, alone: replication always moves on.
    assert!(fits >= 1);
}
