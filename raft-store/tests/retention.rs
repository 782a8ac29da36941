//! Retention and deletion on a real store: a boundary moves when its entry applies (reads stop
//! returning what lies below it at once, a read that starts there is told where the retained
//! events begin), the rows are deleted afterwards in the background, a stream whose every
//! event was removed keeps its version, and a snapshot carries what was removed, so a follower
//! that installs one never shows a removed event.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_raft_store::EventReader;
use evlog_raft_store::PageLimit;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::DELETIONS_STREAM;
use evlog_raft_store::types::NewEvent;
use evlog_raft_store::types::RetentionCommand;
use evlog_raft_store::types::StreamRetention;
use openraft::entry::RaftEntry;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;

struct Store {
    _dir: TempDir,
    machine: StateMachine,
    reader: EventReader,
    next_index: u64,
    /// While set, the writer deletes no removed rows: what reads return then is the boundary's
    /// doing alone.
    hold_reclaim: Arc<AtomicBool>,
}

impl Store {
    fn open(node_id: u64) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path(), node_id, "retention");
        let hold_reclaim = Arc::clone(&config.hold_reclaim);
        hold_reclaim.store(true, Ordering::Relaxed);
        let (_engine, _log, machine, reader) =
            evlog_raft_store::open(&config).expect("a fresh store opens");
        Store {
            _dir: dir,
            machine,
            reader,
            next_index: 1,
            hold_reclaim,
        }
    }

    /// Lets the writer delete removed rows from now on.
    fn release_reclaim(&self) {
        self.hold_reclaim.store(false, Ordering::Relaxed);
    }

    async fn apply(&mut self, command: Command) {
        self.apply_all(vec![command]).await;
    }

    /// Applies `commands` as consecutive entries, handed to the state machine in one call.
    async fn apply_all(&mut self, commands: Vec<Command>) {
        let mut entries = Vec::new();
        for command in commands {
            let log_id = LogId {
                leader_id: LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index: self.next_index,
            };
            self.next_index += 1;
            entries.push(Ok((Entry::new_normal(log_id, command), None)));
        }
        self.machine
            .apply(futures::stream::iter(entries))
            .await
            .expect("the entries apply");
    }

    async fn append(&mut self, stream: &str, count: usize) {
        let command = self.append_command(stream, count);
        self.apply(command).await
    }

    /// An append of `count` events to `stream`, as the next entry would carry it.
    fn append_command(&self, stream: &str, count: usize) -> Command {
        let index = self.next_index;
        Command::Append(AppendCommand {
            stream: stream.to_string(),
            events: (0..count)
                .map(|i| NewEvent {
                    id: format!("{stream}-{index}-{i}"),
                    event_type: "T".to_string(),
                    content_type: String::new(),
                    data: bytes::Bytes::from(vec![b'x'; 100]),
                    metadata: vec![],
                    encoding: Default::default(),
                })
                .collect(),
            expected_version: None,
            idempotency_key: None,
            request_fingerprint: 0,
            timestamp_ms: 1_000 + index,
            idempotency: Default::default(),
        })
    }

    /// The result of the check entry at log index `index` once this store has hashed it.
    async fn check(&self, index: u64) -> evlog_raft_store::reader::checksum::Checksum {
        let mut pending = self.reader.check(index).expect("the check was applied");
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), pending.wait_for(Option::is_some))
                .await
                .expect("the check is hashed in time")
                .expect("the check is kept")
                .clone();
        outcome
            .expect("the check succeeds")
            .expect("the check is done")
    }

    /// Versions (stream) or positions (all) of every event a forward read from `start` returns,
    /// or the first retained one when the read is out of range.
    async fn read(&self, target: ReadTarget, start: ReadStart) -> Result<Vec<u64>, u64> {
        let stream_target = matches!(target, ReadTarget::Stream(_));
        let page = self
            .reader
            .read(target, start, PageLimit::count(10_000), false)
            .await
            .expect("the read is served");
        if let Some(first) = page.out_of_range {
            assert!(page.events.is_empty());
            return Err(first);
        }
        Ok(page
            .events
            .iter()
            .map(|event| {
                if stream_target {
                    event.stream_version
                } else {
                    event.position
                }
            })
            .collect())
    }

    /// Lets the writer delete removed rows and waits until it deleted every one but `kept`.
    async fn wait_for_stored(&self, kept: u64) {
        self.release_reclaim();
        // An op wakes the writer for its first step (then it goes on while idle).
        let _ = self.reader.stored_events().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stored = self.reader.stored_events().await.expect("count");
            if stored == kept {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stored} event rows stored, expected {kept} once reclaimed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn stream(name: &str) -> ReadTarget {
    ReadTarget::Stream(name.to_string())
}

fn max_count(count: u64) -> Command {
    Command::Retention(RetentionCommand::SetMetadata {
        stream: "s".to_string(),
        expected_metadata_version: None,
        retention: StreamRetention {
            max_count: Some(count),
            ..Default::default()
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_count_removes_at_apply_and_the_rows_go_later() {
    let mut store = Store::open(1);
    for _ in 0..10 {
        store.append("s", 100).await;
    }
    store.append("other", 5).await;
    store.apply(max_count(10)).await;

    // At once: the stream reads 991..=1000, a read below is told where to start.
    assert_eq!(
        store.read(stream("s"), ReadStart::Edge).await,
        Ok((991..=1000).collect())
    );
    assert_eq!(store.read(stream("s"), ReadStart::From(5)).await, Err(991));
    let info = store
        .reader
        .stream("s".to_string())
        .await
        .expect("read")
        .expect("the stream exists");
    assert_eq!(
        (info.version, info.first_version, info.first_position),
        (1000, 991, 991)
    );
    // The whole log skips the removed events in the middle.
    assert_eq!(
        store.read(ReadTarget::All, ReadStart::Edge).await,
        Ok((991..=1005).collect())
    );
    // All of it with every row still stored: the boundary alone hides them.
    assert_eq!(store.reader.stored_events().await.expect("count"), 1005);
    // Appends go on removing the oldest.
    store.append("s", 3).await;
    assert_eq!(
        store.read(stream("s"), ReadStart::Edge).await,
        Ok((994..=1003).collect())
    );
    // The rows are deleted in the background: 10 of s, 5 of other.
    store.wait_for_stored(15).await;
    // `other` holds 1001..=1005, s the rest.
    assert_eq!(
        store.read(ReadTarget::All, ReadStart::Edge).await,
        Ok((994..=1008).collect())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_keeps_its_version_and_a_tombstone_refuses_appends() {
    let mut store = Store::open(1);
    store.append("s", 3).await;
    store.append("t", 2).await;
    store
        .apply(Command::Retention(RetentionCommand::Delete {
            stream: "s".to_string(),
            expected_version: Some(3),
            tombstone: true,
            timestamp_ms: 9_999,
        }))
        .await;
    // Refused: the head stays at the announcement (position 6).
    store.append("s", 1).await;
    assert_eq!(store.reader.applied().head_position, 6);
    assert_eq!(store.read(stream("s"), ReadStart::Edge).await, Ok(vec![]));
    assert_eq!(store.read(stream("s"), ReadStart::From(1)).await, Err(4));
    // The whole log: t's events and the announcement, never s's.
    assert_eq!(
        store.read(ReadTarget::All, ReadStart::Edge).await,
        Ok(vec![4, 5, 6])
    );
    assert_eq!(
        store.read(stream(DELETIONS_STREAM), ReadStart::Edge).await,
        Ok(vec![1])
    );
    assert_eq!(store.reader.stored_events().await.expect("count"), 6);
    // s's last event stays stored (it carries the stream's version), the others go.
    store.wait_for_stored(4).await;
    let info = store.reader.stream("s".to_string()).await.expect("read");
    assert_eq!(
        info.map(|info| (info.version, info.first_version)),
        Some((3, 4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_carries_what_was_removed() {
    let mut source = Store::open(1);
    for _ in 0..5 {
        source.append("s", 10).await;
        source.append("t", 10).await;
    }
    source.apply(max_count(5)).await;
    source
        .apply(Command::Retention(RetentionCommand::ExpireLog {
            before_position: 21,
        }))
        .await;
    // Built with every removed row still stored: the snapshot holds only what is retained,
    // plus each stream's last event.
    assert_eq!(source.reader.stored_events().await.expect("count"), 100);
    let built = source
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("the snapshot builds");
    let expected_all: Vec<u64> = (21..=100)
        .filter(|position| {
            // s holds positions 1-10, 21-30, ...: only its last 5 (versions 46-50) stay.
            let batch = (position - 1) / 10;
            batch % 2 == 1 || *position >= 86
        })
        .collect();
    assert_eq!(
        source.read(ReadTarget::All, ReadStart::Edge).await,
        Ok(expected_all.clone())
    );

    let follower = Store::open(2);
    let mut machine = follower.machine.clone();
    machine
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .expect("the snapshot installs");
    assert_eq!(
        follower.read(ReadTarget::All, ReadStart::Edge).await,
        Ok(expected_all)
    );
    assert_eq!(
        follower.read(ReadTarget::All, ReadStart::From(1)).await,
        Err(21)
    );
    assert_eq!(
        follower.read(stream("s"), ReadStart::Edge).await,
        Ok((46..=50).collect())
    );
    assert_eq!(
        follower.read(stream("s"), ReadStart::From(45)).await,
        Err(46)
    );
    assert_eq!(
        follower.read(stream("t"), ReadStart::Edge).await,
        Ok((11..=50).collect())
    );
    assert_eq!(
        follower.read(stream("t"), ReadStart::From(3)).await,
        Err(11)
    );
    let meta = follower
        .reader
        .stream_metadata("s".to_string())
        .await
        .expect("read");
    assert_eq!(
        (meta.metadata_version, meta.retention.max_count),
        (1, Some(5))
    );
    assert_eq!(follower.reader.first_position().await.expect("read"), 21);
}

/// Disk space comes back: with the log cut behind the appends, the writer deletes the rows and
/// redb reuses their pages, so the file stops growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_stops_growing_when_the_log_is_cut_behind_the_appends() {
    let mut store = Store::open(1);
    store.release_reclaim();
    let path = store._dir.path().join("evlog.redb");
    let mut sizes = Vec::new();
    for round in 0..400u64 {
        // 10 appends of 10 events of 100 bytes (about 15 KiB with their index entries).
        for _ in 0..10 {
            store.append("s", 10).await;
        }
        // Keep about the last 2,000 events.
        store
            .apply(Command::Retention(RetentionCommand::ExpireLog {
                before_position: (round * 100 + 100).saturating_sub(2_000),
            }))
            .await;
        if round % 50 == 49 {
            sizes.push(std::fs::metadata(&path).expect("the file").len());
        }
    }
    eprintln!("file sizes: {sizes:?}");
    // Pages freed are reused only after the database's next durable commit (every second or
    // so, the journal making appends durable in between), so the file settles a little later
    // and larger than it would with a durable commit per batch: compare the second half.
    let last = *sizes.last().expect("sizes");
    assert!(last <= sizes[3] * 3 / 2, "the file kept growing: {sizes:?}");
}

/// A check entry hashes the log as it stands at the entry, even when the entries after it,
/// handed over in the same apply call, remove events: every replica hashes the same state
/// whenever it applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_hashes_the_log_as_it_stands_at_its_entry() {
    let mut store = Store::open(1);
    let first = store.append_command("s", 100);
    store.apply_all(vec![first]).await;
    let check = Command::Check(evlog_raft_store::types::CheckRange {
        from: 1,
        to: 0,
        step: 10,
    });
    let check_index = store.next_index;
    let more = store.append_command("s", 5);
    store
        .apply_all(vec![check.clone(), max_count(10), more])
        .await;
    let at_check = store.check(check_index).await;
    assert_eq!((at_check.from, at_check.to, at_check.events), (1, 100, 100));
    assert_eq!(at_check.checkpoints.len(), 10);

    // A check after them sees what they left: 10 events, the last 10 of 105.
    let later_index = store.next_index;
    store.apply(check).await;
    let later = store.check(later_index).await;
    assert_eq!((later.from, later.to, later.events), (1, 105, 10));
    assert_ne!(later.hash, at_check.hash);
    // Nothing in a range past the head: refused, with the head named.
    let past_index = store.next_index;
    store
        .apply(Command::Check(evlog_raft_store::types::CheckRange {
            from: 1,
            to: 200,
            step: 0,
        }))
        .await;
    let mut pending = store.reader.check(past_index).expect("applied");
    let outcome = pending
        .wait_for(Option::is_some)
        .await
        .expect("kept")
        .clone();
    let error = outcome.expect("done").expect_err("past the head");
    assert!(error.contains("past the log's head 105"), "{error}");
}
