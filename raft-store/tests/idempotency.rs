//! Idempotency keys through the real store: a retry of a kept key appends nothing, and a key
//! pushed out by newer ones (past `max_keys`) is forgotten, so its retry appends again. The
//! store's writer remembers the oldest key between batches; these are the cases where that
//! memory must follow the tables.

use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::IdempotencyPolicy;
use evlog_raft_store::types::NewEvent;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;

const POLICY: IdempotencyPolicy = IdempotencyPolicy {
    window_ms: u64::MAX,
    max_keys: 2,
};

fn keyed(key: &str, id: &str) -> AppendCommand {
    AppendCommand {
        stream: "s".to_string(),
        events: vec![NewEvent {
            id: id.to_string(),
            event_type: "T".to_string(),
            content_type: String::new(),
            data: bytes::Bytes::new(),
            metadata: Default::default(),
            encoding: Default::default(),
        }],
        expected_version: None,
        idempotency_key: Some(key.to_string()),
        // The same request under the same key: a retry.
        request_fingerprint: key.len() as u64,
        timestamp_ms: 1_000,
        idempotency: POLICY,
    }
}

fn entry(index: u64, command: Command) -> Entry {
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
async fn keys_pushed_out_by_newer_ones_are_forgotten_and_kept_ones_answer_retries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_engine, _log, mut machine, reader) =
        evlog_raft_store::open(&StoreConfig::new(dir.path(), 1, "idempotency"))
            .expect("a fresh store opens");
    // One entry (one apply batch) at a time, so the writer carries what it remembers from
    // batch to batch; the last entry holds several appends.
    let commands = [
        Command::Append(keyed("k1", "e1")),
        Command::Append(keyed("k2", "e2")),
        // Past two keys: k1 expires.
        Command::Append(keyed("k3", "e3")),
        // k2 expires.
        Command::Append(keyed("k4", "e4")),
        // Retries: k2 was forgotten (appended again, and k3 expires); k4 is kept (nothing
        // appended), k1 was forgotten (appended again, and k4 expires).
        Command::Append(keyed("k2", "e2-again")),
        Command::Appends(vec![keyed("k4", "e4-again"), keyed("k1", "e1-again")].into()),
    ];
    for (index, command) in commands.into_iter().enumerate() {
        machine
            .apply(futures::stream::iter(vec![Ok((
                entry(index as u64 + 1, command),
                None,
            ))]))
            .await
            .expect("the entry applies");
    }
    let page = reader
        .read(
            ReadTarget::Stream("s".to_string()),
            ReadStart::Edge,
            evlog_raft_store::PageLimit::count(100),
            false,
        )
        .await
        .expect("read s");
    let ids: Vec<&str> = page.events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e2-again", "e1-again"]);
}
