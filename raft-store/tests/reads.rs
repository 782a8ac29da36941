//! The read path on a real store: seek by time (forward and backward, whole log and one
//! stream), timestamps that never go backwards even when a proposer's clock does, and stream
//! listing by prefix in pages.

use evlog_raft_store::EventReader;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::Entry;
use evlog_raft_store::types::LeaderId;
use evlog_raft_store::types::LogId;
use evlog_raft_store::types::NewEvent;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;

struct Store {
    _dir: TempDir,
    machine: StateMachine,
    reader: EventReader,
    next_index: u64,
}

impl Store {
    fn open() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: 1,
            cluster_id: "reads".to_string(),
            cache_bytes: evlog_raft_store::engine::DEFAULT_CACHE_BYTES,
            quick_repair: false,
        };
        let (_engine, _log, machine, reader) =
            evlog_raft_store::open(&config).expect("a fresh store opens");
        Store {
            _dir: dir,
            machine,
            reader,
            next_index: 1,
        }
    }

    /// Applies an append of `count` events to `stream`, proposed at `timestamp_ms`.
    async fn append(&mut self, stream: &str, count: usize, timestamp_ms: u64) {
        let index = self.next_index;
        self.next_index += 1;
        let command = Command::Append(AppendCommand {
            stream: stream.to_string(),
            events: (0..count)
                .map(|i| NewEvent {
                    id: format!("{stream}-{index}-{i}"),
                    event_type: "T".to_string(),
                    content_type: String::new(),
                    data: bytes::Bytes::from_static(b"x"),
                    metadata: vec![],
                })
                .collect(),
            expected_version: None,
            idempotency_key: None,
            request_fingerprint: 0,
            timestamp_ms,
            idempotency: Default::default(),
        });
        let log_id = LogId {
            leader_id: LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        };
        self.machine
            .apply(futures::stream::iter([Ok((
                Entry::new_normal(log_id, command),
                None,
            ))]))
            .await
            .expect("the append applies");
    }

    /// Positions (all) or versions (stream) a read starting at `start` returns.
    async fn read(&self, target: ReadTarget, start: ReadStart, backward: bool) -> Vec<u64> {
        let stream_target = matches!(target, ReadTarget::Stream(_));
        self.reader
            .read(target, start, 100, backward)
            .await
            .expect("the read is served")
            .events
            .iter()
            .map(|event| {
                if stream_target {
                    event.stream_version
                } else {
                    event.position
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn timestamps_never_go_backwards_along_the_log() {
    let mut store = Store::open();
    store.append("a", 1, 1_000).await;
    // A new leader whose clock is behind proposes an earlier time.
    store.append("a", 1, 400).await;
    store.append("b", 1, 2_000).await;
    let page = store
        .reader
        .read(ReadTarget::All, ReadStart::Edge, 10, false)
        .await
        .expect("read");
    let times: Vec<u64> = page.events.iter().map(|e| e.timestamp_ms).collect();
    assert_eq!(times, vec![1_000, 1_000, 2_000]);
}

#[tokio::test]
async fn seek_by_time_finds_the_first_event_at_or_after_and_the_last_at_or_before() {
    let mut store = Store::open();
    // Positions 1-2 at t=100 (stream a v1-2), 3 at t=200 (b v1), 4-5 at t=300 (a v3-4),
    // 6 at t=300 (b v2).
    store.append("a", 2, 100).await;
    store.append("b", 1, 200).await;
    store.append("a", 2, 300).await;
    store.append("b", 1, 300).await;

    let all = || ReadTarget::All;
    assert_eq!(
        store.read(all(), ReadStart::Time(0), false).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        store.read(all(), ReadStart::Time(150), false).await,
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        store.read(all(), ReadStart::Time(200), false).await,
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        store.read(all(), ReadStart::Time(301), false).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        store.read(all(), ReadStart::Time(250), true).await,
        vec![3, 2, 1]
    );
    assert_eq!(
        store.read(all(), ReadStart::Time(99), true).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        store.read(all(), ReadStart::Time(1_000), true).await,
        vec![6, 5, 4, 3, 2, 1]
    );

    let a = || ReadTarget::Stream("a".to_string());
    assert_eq!(
        store.read(a(), ReadStart::Time(101), false).await,
        vec![3, 4]
    );
    assert_eq!(
        store.read(a(), ReadStart::Time(299), true).await,
        vec![2, 1]
    );
    let missing = || ReadTarget::Stream("missing".to_string());
    assert_eq!(
        store.read(missing(), ReadStart::Time(0), false).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        store.read(missing(), ReadStart::Time(0), true).await,
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn streams_list_by_prefix_in_pages() {
    let mut store = Store::open();
    for (t, stream) in ["orders-2", "users-1", "orders-1", "orders-3", "ordersx"]
        .iter()
        .enumerate()
    {
        store.append(stream, 1, t as u64).await;
    }
    store.append("orders-1", 2, 10).await;

    let (page, next) = store
        .reader
        .list_streams("orders-".to_string(), None, 2)
        .await
        .expect("list");
    let names: Vec<&str> = page.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["orders-1", "orders-2"]);
    assert_eq!(page[0].1.version, 3);
    assert_eq!(page[0].1.first_position, 3);
    assert_eq!(page[0].1.last_position, 7);
    assert_eq!(next.as_deref(), Some("orders-2"));

    let (page, next) = store
        .reader
        .list_streams("orders-".to_string(), next, 2)
        .await
        .expect("list");
    let names: Vec<&str> = page.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["orders-3"]);
    assert_eq!(next, None);

    let (page, next) = store
        .reader
        .list_streams(String::new(), None, 10)
        .await
        .expect("list");
    assert_eq!(page.len(), 5);
    assert_eq!(next, None);
}
