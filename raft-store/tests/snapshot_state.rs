//! The store keeps knowing its newest snapshot while it applies: the snapshot builder records
//! the snapshot from its own thread while the writer thread commits apply batches, and an apply
//! must never make the store forget it (a leader that forgot its snapshot could not send it to a
//! follower behind its purged log, and openraft stops on that storage error).

use evlog_raft_store::StoreConfig;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::Entry;
use evlog_raft_store::types::LeaderId;
use evlog_raft_store::types::LogId;
use openraft::entry::RaftEntry;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

fn append(index: u64) -> Entry {
    let command = Command::Append(evlog_raft_store::types::AppendCommand {
        stream: format!("s-{}", index % 3),
        events: vec![evlog_raft_store::types::NewEvent {
            id: format!("e-{index}"),
            event_type: "T".to_string(),
            content_type: String::new(),
            data: bytes::Bytes::from(vec![index as u8; 16]),
            metadata: Default::default(),
        }],
        expected_version: None,
        idempotency_key: None,
        request_fingerprint: 0,
        timestamp_ms: 1_000 + index,
        idempotency: Default::default(),
    });
    let log_id = LogId {
        leader_id: LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    };
    Entry::new_normal(log_id, command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_never_forgets_the_newest_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        node_id: 1,
        cluster_id: "snapshot-state".to_string(),
    };
    let (_engine, _log, mut machine, _reader) =
        evlog_raft_store::open(&config).expect("a fresh store opens");
    let mut next = 1;
    for round in 0..20u64 {
        // Apply while a snapshot is being built: the two finish in either order.
        let entries: Vec<_> = (next..next + 10).map(|i| Ok((append(i), None))).collect();
        next += 10;
        let mut builder = machine.get_snapshot_builder().await;
        let mut applier = machine.clone();
        let (built, applied) = tokio::join!(
            builder.build_snapshot(),
            applier.apply(futures::stream::iter(entries))
        );
        let built = built.expect("the snapshot builds");
        applied.expect("the entries apply");
        let current = machine
            .get_current_snapshot()
            .await
            .expect("the current snapshot is readable")
            .unwrap_or_else(|| panic!("round {round}: the store forgot the snapshot it built"));
        assert!(
            current.meta.last_log_id >= built.meta.last_log_id,
            "round {round}: current snapshot {:?} is older than the one just built {:?}",
            current.meta.last_log_id,
            built.meta.last_log_id
        );
        assert!(
            current.snapshot.path.exists(),
            "round {round}: the current snapshot's file {} is gone",
            current.snapshot.path.display()
        );
    }
}
