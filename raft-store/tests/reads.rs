//! The read path on a real store: seek by time (forward and backward, whole log and one
//! stream), timestamps that never go backwards even when a proposer's clock does, and stream
//! listing by prefix in pages.

use evlog_raft_store::EventReader;
use evlog_raft_store::PageLimit;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::schema;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::NewEvent;
use evlog_raft_store::types::StreamInfo;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use redb::ReadableDatabase;
use redb::TableHandle;
use tempfile::TempDir;

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::new(dir, 1, "reads")
}

struct Store {
    dir: TempDir,
    machine: StateMachine,
    reader: EventReader,
    next_index: u64,
}

impl Store {
    fn open() -> Store {
        Store::open_in(tempfile::tempdir().expect("temp dir")).expect("a fresh store opens")
    }

    /// Opens the store in `dir`; a refusal hands the directory back with the error.
    fn open_in(dir: TempDir) -> Result<Store, (evlog_raft_store::OpenError, TempDir)> {
        let (_engine, _log, machine, reader) = match evlog_raft_store::open(&config(dir.path())) {
            Ok(opened) => opened,
            Err(error) => return Err((error, dir)),
        };
        let applied = reader.applied().log_index;
        Ok(Store {
            dir,
            machine,
            reader,
            next_index: applied + 1,
        })
    }

    /// Closes the store, keeping its directory.
    fn close(self) -> TempDir {
        self.dir
    }

    /// Applies an append of `count` events to `stream`, proposed at `timestamp_ms`.
    async fn append(&mut self, stream: &str, count: usize, timestamp_ms: u64) {
        self.append_sized(stream, count, timestamp_ms, 1).await;
    }

    /// Applies an append of `count` events of `data_bytes` each.
    async fn append_sized(
        &mut self,
        stream: &str,
        count: usize,
        timestamp_ms: u64,
        data_bytes: usize,
    ) {
        let index = self.next_index;
        self.next_index += 1;
        let command = Command::Append(AppendCommand {
            stream: stream.to_string(),
            events: (0..count)
                .map(|i| NewEvent {
                    id: format!("{stream}-{index}-{i}"),
                    event_type: "T".to_string(),
                    content_type: String::new(),
                    data: bytes::Bytes::from(vec![b'x'; data_bytes]),
                    metadata: vec![],
                    encoding: Default::default(),
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
            .read(target, start, PageLimit::count(100), backward)
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
        .read(
            ReadTarget::All,
            ReadStart::Edge,
            PageLimit::count(10),
            false,
        )
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

    let (page, next): (Vec<(String, StreamInfo)>, _) = store
        .reader
        .list_streams("orders-".to_string(), None, 2)
        .await
        .expect("list")
        .into();
    let names: Vec<&str> = page.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["orders-1", "orders-2"]);
    assert_eq!(page[0].1.version, 3);
    assert_eq!(page[0].1.first_position, 3);
    assert_eq!(page[0].1.last_position, 7);
    assert_eq!(next.as_deref(), Some("orders-2"));

    let (page, next): (Vec<(String, StreamInfo)>, _) = store
        .reader
        .list_streams("orders-".to_string(), next, 2)
        .await
        .expect("list")
        .into();
    let names: Vec<&str> = page.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["orders-3"]);
    assert_eq!(next, None);

    let (page, next): (Vec<(String, StreamInfo)>, _) = store
        .reader
        .list_streams(String::new(), None, 10)
        .await
        .expect("list")
        .into();
    assert_eq!(page.len(), 5);
    assert_eq!(next, None);
}

#[tokio::test]
async fn a_streams_summary_comes_from_its_index_entries() {
    let mut store = Store::open();
    store.append("s-1", 2, 1).await; // positions 1, 2
    store.append("s-10", 1, 2).await; // 3
    store.append("s-1", 1, 3).await; // 4
    store.append("s-1x", 1, 4).await; // 5
    store.append("s-2", 1, 5).await; // 6

    let summary = |version, first_position, last_position| StreamInfo {
        version,
        first_version: 1,
        first_position,
        last_position,
    };
    let info = |name: &str| store.reader.stream(name.to_string());
    assert_eq!(info("s-1").await.expect("read"), Some(summary(3, 1, 4)));
    assert_eq!(info("s-10").await.expect("read"), Some(summary(1, 3, 3)));
    assert_eq!(info("s-").await.expect("read"), None);
    assert_eq!(info("s-100").await.expect("read"), None);

    // Names that are prefixes of each other, a page of one at a time.
    let mut listed = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let (page, next): (Vec<(String, StreamInfo)>, _) = store
            .reader
            .list_streams("s-1".to_string(), after, 1)
            .await
            .expect("list")
            .into();
        listed.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        vec![
            ("s-1".to_string(), summary(3, 1, 4)),
            ("s-10".to_string(), summary(1, 3, 3)),
            ("s-1x".to_string(), summary(1, 5, 5)),
        ]
    );
}

/// Sets the stored format version; for format 2, adds its `streams` table with a row in it.
fn rewrite_as_format(dir: &std::path::Path, version: u64) {
    let db = redb::Database::create(dir.join("evlog.redb")).expect("the database opens");
    let txn = db.begin_write().expect("write");
    {
        let mut meta = txn.open_table(schema::META).expect("meta");
        meta.insert(
            schema::meta_key::FORMAT_VERSION,
            evlog_raft_store::codec::encode_u64(version).as_slice(),
        )
        .expect("insert");
        if version == 2 {
            let mut streams = txn.open_table(schema::FORMAT_2_STREAMS).expect("streams");
            streams.insert("a", b"format 2".as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn format_2_to_5_stores_are_upgraded_at_open_and_an_unknown_format_refused() {
    let mut store = Store::open();
    store.append("a", 2, 1).await;
    let dir = store.close();

    rewrite_as_format(dir.path(), 99);
    let (refused, dir) = Store::open_in(dir).err().expect("format 99 is refused");
    assert!(
        matches!(
            refused,
            evlog_raft_store::OpenError::UnknownFormat {
                found: 99,
                supported: schema::FORMAT_VERSION,
                ..
            }
        ),
        "{refused}"
    );

    rewrite_as_format(dir.path(), 2);
    let store = Store::open_in(dir).expect("a format 2 store opens");
    assert_eq!(
        store.reader.stream("a".to_string()).await.expect("read"),
        Some(StreamInfo {
            version: 2,
            first_version: 1,
            first_position: 1,
            last_position: 2
        })
    );
    let dir = store.close();
    let db = redb::Database::open(dir.path().join("evlog.redb")).expect("the database opens");
    let txn = db.begin_read().expect("read");
    let tables: Vec<String> = txn
        .list_tables()
        .expect("tables")
        .map(|table| table.name().to_string())
        .collect();
    assert!(!tables.contains(&"streams".to_string()), "{tables:?}");
    let meta = txn.open_table(schema::META).expect("meta");
    let version = meta
        .get(schema::meta_key::FORMAT_VERSION)
        .expect("get")
        .expect("a format version");
    assert_eq!(
        evlog_raft_store::codec::decode_u64("format version", version.value()).expect("decode"),
        u64::from(schema::FORMAT_VERSION)
    );
    drop(meta);
    drop(txn);
    drop(db);

    // Formats 3 (before entries of several appends), 4 (before consumer groups) and 8
    // (before the log's journal) open as they are and are stamped with the current format, so
    // an older evlog refuses them from then on; the consumer tables are there.
    let mut dir = dir;
    for format in [3, 4, 5, 8] {
        rewrite_as_format(dir.path(), format);
        let store = Store::open_in(dir).expect("an older store opens");
        assert_eq!(
            store.reader.stream("a".to_string()).await.expect("read"),
            Some(StreamInfo {
                version: 2,
                first_version: 1,
                first_position: 1,
                last_position: 2
            })
        );
        assert_eq!(
            store
                .reader
                .list_consumers(None, 10)
                .await
                .expect("list groups"),
            vec![],
            "format {format}"
        );
        dir = store.close();
        let db = redb::Database::open(dir.path().join("evlog.redb")).expect("the database opens");
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(schema::META).expect("meta");
        let version = meta
            .get(schema::meta_key::FORMAT_VERSION)
            .expect("get")
            .expect("a format version");
        assert_eq!(
            evlog_raft_store::codec::decode_u64("format version", version.value()).expect("decode"),
            u64::from(schema::FORMAT_VERSION),
            "format {format}"
        );
    }
}

#[tokio::test]
async fn a_page_stops_at_its_byte_limit_and_says_where_to_go_on() {
    let mut store = Store::open();
    for _ in 0..3 {
        store.append_sized("small", 2, 1, 1_000).await; // positions 1-2, 4-5, 7-8
        store.append_sized("big", 1, 1, 10_000).await; // 3, 6, 9
    }
    let limit = PageLimit {
        max_count: 100,
        max_bytes: 2_500,
    };
    let read = |target, start, backward| store.reader.read(target, start, limit, backward);
    let page = read(ReadTarget::All, ReadStart::Edge, false)
        .await
        .expect("read");
    let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        vec![1, 2],
        "two 1 KB events fit 2,500 bytes, a third does not"
    );
    assert_eq!(page.next_from, Some(3));
    // An event larger than the limit still makes a page of its own: reading always goes on.
    let page = read(ReadTarget::All, ReadStart::From(3), false)
        .await
        .expect("read");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].position, 3);
    assert_eq!(page.next_from, Some(4));
    // A stream, both ways.
    let page = read(
        ReadTarget::Stream("small".to_string()),
        ReadStart::Edge,
        false,
    )
    .await
    .expect("read");
    let versions: Vec<u64> = page.events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(page.next_from, Some(3));
    let page = read(
        ReadTarget::Stream("small".to_string()),
        ReadStart::Edge,
        true,
    )
    .await
    .expect("read");
    let versions: Vec<u64> = page.events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![6, 5]);
    assert_eq!(page.next_from, Some(4));
}

#[tokio::test]
async fn a_subscription_scan_filters_stops_where_it_looked_and_resolves_its_start() {
    use evlog_raft_store::reader::EventFilter;
    use evlog_raft_store::reader::SubscribeStart;
    use std::sync::Arc;

    let mut store = Store::open();
    // Positions 1-3 orders-a (t=10), 4-5 users-b (t=20), 6 orders-c (t=30), 7-8 users-b (t=40).
    store.append("orders-a", 3, 10).await;
    store.append("users-b", 2, 20).await;
    store.append("orders-c", 1, 30).await;
    store.append("users-b", 2, 40).await;
    let scan = |target, from, filter: EventFilter, max_looked_at| {
        store.reader.scan(
            target,
            from,
            PageLimit::count(100),
            Arc::new(filter),
            max_looked_at,
        )
    };
    let orders = EventFilter {
        stream_prefixes: vec!["orders-".to_string()],
        ..EventFilter::default()
    };
    let all = scan(ReadTarget::All, 1, orders.clone(), 100)
        .await
        .expect("scan");
    let positions: Vec<u64> = all.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 6]);
    assert_eq!(
        (all.next_from, all.head_position, all.target_head),
        (9, 8, 8)
    );
    assert!(all.reached_head());
    // Looking at 4 events from 2 delivers 2, 3 and says it got to 6 (it skipped 4-5 too).
    let part = scan(ReadTarget::All, 2, orders.clone(), 4)
        .await
        .expect("scan");
    let positions: Vec<u64> = part.events.iter().map(|e| e.position).collect();
    assert_eq!((positions, part.next_from), (vec![2, 3], 6));
    assert!(!part.reached_head());
    assert_eq!(part.lag(), 3);
    // A filter that skips everything it looks at still moves the cursor.
    let none = EventFilter {
        event_types: vec!["Other".to_string()],
        ..EventFilter::default()
    };
    let skipped = scan(ReadTarget::All, 1, none, 5).await.expect("scan");
    assert_eq!((skipped.events.len(), skipped.next_from), (0, 6));
    // A time bound on a stream: versions recorded at or after t=40.
    let late = EventFilter {
        min_timestamp_ms: 40,
        ..EventFilter::default()
    };
    let stream = scan(ReadTarget::Stream("users-b".to_string()), 1, late, 100)
        .await
        .expect("scan");
    let versions: Vec<u64> = stream.events.iter().map(|e| e.stream_version).collect();
    assert_eq!(
        (versions, stream.next_from, stream.target_head),
        (vec![3, 4], 5, 4)
    );
    // Starts: the beginning, a position past the head, a time, the head; and a stream with no
    // events yet starts at version 1 whichever way. (next_from, head position, target head)
    let all = || ReadTarget::All;
    let users = || ReadTarget::Stream("users-b".to_string());
    let nothing = || ReadTarget::Stream("nothing".to_string());
    let cases = [
        (all(), SubscribeStart::Beginning, (1, 8, 8)),
        (all(), SubscribeStart::From(20), (20, 8, 8)),
        (all(), SubscribeStart::Time(25), (6, 8, 8)),
        (all(), SubscribeStart::Time(99), (9, 8, 8)),
        (all(), SubscribeStart::Head, (9, 8, 8)),
        (users(), SubscribeStart::Head, (5, 8, 4)),
        (users(), SubscribeStart::Time(30), (3, 8, 4)),
        (nothing(), SubscribeStart::Head, (1, 8, 0)),
        (nothing(), SubscribeStart::Time(5), (1, 8, 0)),
    ];
    for (target, start, expected) in cases {
        let scan = store
            .reader
            .subscription_start(target.clone(), start)
            .await
            .expect("start resolved");
        assert_eq!(
            (scan.next_from, scan.head_position, scan.target_head),
            expected,
            "{target:?} {start:?}"
        );
    }
}
