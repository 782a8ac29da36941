//! A snapshot is a consistent view of the state machine at its meta, even while entries apply:
//! built (a read transaction) while the writer commits apply batches, and later sent and
//! installed on a fresh store, it gives that store exactly the state of its meta, events up to
//! the head included, nothing after. The current snapshot is never older than one built before.

use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::types::Command;
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
            encoding: Default::default(),
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

fn config(dir: &tempfile::TempDir, node_id: u64) -> StoreConfig {
    StoreConfig::new(dir.path(), node_id, "snapshot-state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_applying_installs_exactly_its_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_engine, _log, mut machine, _reader) =
        evlog_raft_store::open(&config(&dir, 1)).expect("a fresh store opens");
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
            .unwrap_or_else(|| panic!("round {round}: no current snapshot after applying"));
        assert!(
            current.meta.last_log_id >= built.meta.last_log_id,
            "round {round}: current snapshot {:?} is older than the one just built {:?}",
            current.meta.last_log_id,
            built.meta.last_log_id
        );

        // Installed on a fresh store, the built snapshot gives exactly its state: one event
        // per applied entry (entry i appended event e-i), none applied after it.
        let other_dir = tempfile::tempdir().expect("temp dir");
        let (_other_engine, _other_log, mut other, other_reader) =
            evlog_raft_store::open(&config(&other_dir, 2)).expect("a fresh store opens");
        other
            .install_snapshot(&built.meta, built.snapshot)
            .await
            .unwrap_or_else(|error| panic!("round {round}: install failed: {error}"));
        let (applied, _) = other.applied_state().await.expect("applied state");
        assert_eq!(applied, built.meta.last_log_id, "round {round}");
        let upto = built.meta.last_log_id.map(|id| id.index).unwrap_or(0);
        let page = other_reader
            .read(
                ReadTarget::All,
                ReadStart::Edge,
                evlog_raft_store::PageLimit::count(10_000),
                false,
            )
            .await
            .expect("read the installed store");
        let ids: Vec<String> = page.events.iter().map(|event| event.id.clone()).collect();
        let expected: Vec<String> = (1..=upto).map(|i| format!("e-{i}")).collect();
        assert_eq!(ids, expected, "round {round}: snapshot at index {upto}");
    }
}

/// An append applied after a snapshot install is checked against the snapshot's streams, not
/// against what the store had applied before (its writer remembers recent streams' versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_after_a_snapshot_install_sees_the_snapshots_streams() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let (_source_engine, _source_log, mut source, _source_reader) =
        evlog_raft_store::open(&config(&source_dir, 1)).expect("a fresh store opens");
    // Entries 1..=9 give s-0, s-1 and s-2 three events each.
    let entries: Vec<_> = (1..=9).map(|i| Ok((append(i), None))).collect();
    source
        .apply(futures::stream::iter(entries))
        .await
        .expect("the entries apply");
    let built = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("the snapshot builds");

    let dir = tempfile::tempdir().expect("temp dir");
    let (_engine, _log, mut machine, reader) =
        evlog_raft_store::open(&config(&dir, 2)).expect("a fresh store opens");
    // This store applied s-1 and s-2 at version 1 before it is given the snapshot.
    let entries: Vec<_> = (1..=2).map(|i| Ok((append(i), None))).collect();
    machine
        .apply(futures::stream::iter(entries))
        .await
        .expect("the entries apply");
    machine
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .expect("the snapshot installs");

    let mut next = append(10);
    if let openraft::EntryPayload::Normal(Command::Append(command)) = &mut next.payload {
        assert_eq!(command.stream, "s-1");
        command.expected_version = Some(3);
    }
    machine
        .apply(futures::stream::iter(vec![Ok((next, None))]))
        .await
        .expect("the append applies");
    let page = reader
        .read(
            ReadTarget::Stream("s-1".to_string()),
            ReadStart::Edge,
            evlog_raft_store::PageLimit::count(100),
            false,
        )
        .await
        .expect("read s-1");
    let ids: Vec<&str> = page.events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(
        ids,
        ["e-1", "e-4", "e-7", "e-10"],
        "the append at expected version 3 (the snapshot's) is appended"
    );
}

fn consumer_entry(index: u64, command: evlog_raft_store::consumer::ConsumerCommand) -> Entry {
    let log_id = LogId {
        leader_id: LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    };
    Entry::new_normal(log_id, Command::Consumer(command))
}

/// Consumer groups (their records, tracked events and dead letters) travel in a snapshot,
/// and an install replaces the groups a store had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_travel_in_a_snapshot() {
    use evlog_raft_store::consumer::*;
    let create = |name: &str| ConsumerCommand::Create {
        name: name.to_string(),
        target: ConsumerTarget::All,
        filter: ConsumerFilter::default(),
        start: ConsumerStart::At(1),
        settings: ConsumerSettings::default(),
        timestamp_ms: 5,
    };
    let taken = |key: u64, member: Option<&str>| NewPending {
        key,
        position: key,
        stream: format!("s-{}", key % 3),
        event_timestamp_ms: 1_000 + key,
        event_bytes: 16,
        deliver_to: member.map(str::to_string),
    };
    let source_dir = tempfile::tempdir().expect("temp dir");
    let (_source_engine, _source_log, mut source, source_reader) =
        evlog_raft_store::open(&config(&source_dir, 1)).expect("a fresh store opens");
    let mut entries: Vec<Entry> = (1..=6).map(append).collect();
    entries.push(consumer_entry(7, create("g")));
    entries.push(consumer_entry(
        8,
        ConsumerCommand::Step {
            name: "g".to_string(),
            created_index: 7,
            revision: 1,
            settlements: vec![],
            redeliveries: vec![],
            advance: Some(Advance {
                from: 1,
                to: 5,
                taken: vec![
                    taken(1, Some("a")),
                    taken(2, Some("a")),
                    taken(3, Some("b")),
                    taken(4, None),
                ],
            }),
            timestamp_ms: 2_000,
        },
    ));
    entries.push(consumer_entry(
        9,
        ConsumerCommand::Step {
            name: "g".to_string(),
            created_index: 7,
            revision: 2,
            settlements: vec![
                Settlement {
                    key: 1,
                    attempt: 1,
                    outcome: Outcome::DeadLetter,
                    reason: "bad".to_string(),
                    member: "a".to_string(),
                },
                Settlement {
                    key: 2,
                    attempt: 1,
                    outcome: Outcome::Ack,
                    reason: String::new(),
                    member: "a".to_string(),
                },
            ],
            redeliveries: vec![],
            advance: None,
            timestamp_ms: 2_100,
        },
    ));
    source
        .apply(futures::stream::iter(
            entries.into_iter().map(|entry| Ok((entry, None))),
        ))
        .await
        .expect("the entries apply");
    let built = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("the snapshot builds");
    let expected = source_reader
        .consumer("g".to_string())
        .await
        .expect("read")
        .expect("the source has the group");
    assert_eq!(expected.0.stats.tracked, 2, "{expected:?}");
    assert_eq!(
        expected.1.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
        vec![3, 4]
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (_engine, _log, mut machine, reader) =
        evlog_raft_store::open(&config(&dir, 2)).expect("a fresh store opens");
    // This store had a group of its own before it is given the snapshot.
    machine
        .apply(futures::stream::iter(vec![Ok((
            consumer_entry(1, create("old")),
            None,
        ))]))
        .await
        .expect("the create applies");
    machine
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .expect("the snapshot installs");
    let installed = reader
        .consumer("g".to_string())
        .await
        .expect("read")
        .expect("the installed store has the group");
    assert_eq!(installed, expected);
    let dead = reader
        .dead_letters("g".to_string(), 0, 10)
        .await
        .expect("dead letters");
    assert_eq!(
        dead.iter()
            .map(|(key, record)| (*key, record.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "bad")]
    );
    assert!(
        reader
            .consumer("old".to_string())
            .await
            .expect("read")
            .is_none(),
        "an install replaces the groups the store had"
    );
    let listed = reader.list_consumers(None, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
}
