//! Retention and deletion on a real cluster: stream metadata set through any node takes effect
//! when it commits (reads return only the retained events at once, on every node), a read or
//! subscription below the retained events is refused with where they begin, every replica
//! removes exactly the same events under load, and a tombstoned stream takes no appends while
//! the whole log never shows its events again.

use std::collections::BTreeMap;

use evlog_cluster_tests::proto::{
    AllStreams, Consistency, DeleteStreamRequest, Direction, GetStreamMetadataRequest,
    GetStreamRequest, ReadRequest, RecordedEvent, SetStreamMetadataRequest, StreamRetention,
    SubscribeRequest, read_request, subscribe_request,
};
use evlog_cluster_tests::{Cluster, ClusterOptions, Workload, WorkloadOptions, event, timeouts};
use tonic::Code;

fn read_stream_from(stream: &str, from: Option<u64>) -> ReadRequest {
    ReadRequest {
        filter: None,
        target: Some(read_request::Target::Stream(stream.to_string())),
        from,
        max_count: 1_000,
        direction: Direction::Forward as i32,
        consistency: Consistency::Linearizable as i32,
        at_least_position: 0,
        from_timestamp_ms: None,
    }
}

fn max_count(stream: &str, count: u64, expected: Option<u64>) -> SetStreamMetadataRequest {
    SetStreamMetadataRequest {
        stream: stream.to_string(),
        expected_metadata_version: expected,
        retention: Some(StreamRetention {
            max_count: Some(count),
            ..Default::default()
        }),
    }
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.stream_version).collect()
}

/// The whole log as node `id` serves it: what identifies each event.
async fn log_of(cluster: &Cluster, id: u64) -> Vec<(u64, String, u64, String)> {
    cluster
        .read_all(id, Consistency::Linearizable)
        .await
        .into_iter()
        .map(|event| (event.position, event.stream, event.stream_version, event.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_count_keeps_the_latest_events_on_every_replica() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let follower = cluster.follower_of(leader);

    for batch in 0..10 {
        let events = (0..100)
            .map(|i| event(format!("o-{}", batch * 100 + i), "Ordered", "x"))
            .collect();
        cluster
            .append(nodes[batch % nodes.len()], "orders", events)
            .await
            .expect("append");
    }

    // Set through a follower, which hands it to the leader.
    let meta = cluster
        .client(follower)
        .set_stream_metadata(max_count("orders", 10, Some(0)))
        .await
        .expect("metadata set")
        .into_inner();
    assert_eq!(
        (meta.metadata_version, meta.first_version),
        (1, 991),
        "{meta:?}"
    );

    // At once, on every node: versions 991-1000, and GetStream says the first is 991.
    for id in &nodes {
        let page = cluster
            .read(*id, read_stream_from("orders", None))
            .await
            .expect("read");
        assert_eq!(
            versions(&page.events),
            (991..=1000).collect::<Vec<_>>(),
            "node {id}"
        );
        let summary = cluster
            .client(*id)
            .get_stream(GetStreamRequest {
                stream: "orders".to_string(),
                consistency: Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .expect("get stream")
            .into_inner()
            .stream
            .expect("a summary");
        assert_eq!(
            (
                summary.version,
                summary.first_version,
                summary.first_position
            ),
            (1000, 991, page.events[0].position),
            "node {id}"
        );
    }

    // Below the retained events: OUT_OF_RANGE with where they begin, never a silent jump.
    let refused = cluster
        .read(follower, read_stream_from("orders", Some(1)))
        .await
        .expect_err("a read below the retained events is refused");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("991"), "{}", refused.message());
    assert_eq!(
        refused
            .metadata()
            .get("evlog-first-retained")
            .and_then(|value| value.to_str().ok()),
        Some("991")
    );
    let subscribe = SubscribeRequest {
        target: Some(subscribe_request::Target::Stream("orders".to_string())),
        start: Some(subscribe_request::Start::From(500)),
        filter: None,
        max_batch_events: 0,
        at_least_position: 0,
    };
    let refused = cluster
        .subscribe(leader, subscribe)
        .await
        .expect_err("a subscription below the retained events is refused");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");

    // Compare-and-set: the old metadata version is refused, naming the current one.
    let refused = cluster
        .client(leader)
        .set_stream_metadata(max_count("orders", 5, Some(0)))
        .await
        .expect_err("a stale metadata version is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("metadata version 1"),
        "{}",
        refused.message()
    );
    let invalid = cluster
        .client(leader)
        .set_stream_metadata(max_count("orders", 0, None))
        .await
        .expect_err("max_count 0 is refused");
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");

    // Under load: limits set on streams being appended to; every replica removes the same.
    let workload = Workload::start(
        &cluster,
        WorkloadOptions {
            appenders_per_node: 2,
            streams: 3,
            ..Default::default()
        },
    );
    workload
        .wait_for_acknowledged_since(std::time::Instant::now(), 50, timeouts::ACKS)
        .await;
    for (stream, count) in [("load-0", 5), ("load-1", 7)] {
        cluster
            .client(nodes[0])
            .set_stream_metadata(max_count(stream, count, None))
            .await
            .expect("metadata set under load");
    }
    for batch in 0..5 {
        let events = (0..10)
            .map(|i| event(format!("o-late-{}", batch * 10 + i), "Ordered", "x"))
            .collect();
        cluster
            .append(nodes[batch % nodes.len()], "orders", events)
            .await
            .expect("append under load");
    }
    workload
        .wait_for_acknowledged_since(std::time::Instant::now(), 50, timeouts::ACKS)
        .await;
    let _history = workload.stop().await;
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;

    let mut logs = BTreeMap::new();
    for id in &nodes {
        logs.insert(*id, log_of(&cluster, *id).await);
    }
    let first = &logs[&nodes[0]];
    for (id, log) in &logs {
        assert_eq!(
            log, first,
            "node {id} holds another log than node {}",
            nodes[0]
        );
    }
    for (stream, count) in [("orders", 10u64), ("load-0", 5), ("load-1", 7)] {
        let kept: Vec<u64> = first
            .iter()
            .filter(|(_, name, _, _)| name == stream)
            .map(|(_, _, version, _)| *version)
            .collect();
        let last = *kept.last().expect("events kept");
        assert_eq!(
            kept,
            ((last + 1 - count)..=last).collect::<Vec<_>>(),
            "{stream} keeps exactly its latest {count}"
        );
    }
    let unlimited = first
        .iter()
        .filter(|(_, name, _, _)| name == "load-2")
        .count();
    assert!(unlimited > 0, "load-2 has no limit and keeps its events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstoned_stream_refuses_appends_and_all_never_returns_its_events() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let follower = cluster.follower_of(leader);

    let doomed: Vec<_> = (0..5).map(|i| event(format!("d-{i}"), "T", "x")).collect();
    cluster
        .append(leader, "doomed", doomed)
        .await
        .expect("append");
    cluster
        .append(leader, "kept", vec![event("k-0", "T", "x")])
        .await
        .expect("append");
    cluster
        .append(
            leader,
            "soft",
            vec![event("s-0", "T", "x"), event("s-1", "T", "x")],
        )
        .await
        .expect("append");

    let delete = |stream: &str, expected_version, tombstone| DeleteStreamRequest {
        stream: stream.to_string(),
        expected_version,
        tombstone,
    };
    let refused = cluster
        .client(follower)
        .delete_stream(delete("doomed", Some(4), true))
        .await
        .expect_err("a wrong expected version is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let deleted = cluster
        .client(follower)
        .delete_stream(delete("doomed", Some(5), true))
        .await
        .expect("tombstoned")
        .into_inner();
    assert_eq!(deleted.version, 5);

    // Appends and metadata changes are refused from now on, through any node.
    for id in &nodes {
        let refused = cluster
            .append(*id, "doomed", vec![event(format!("again-{id}"), "T", "x")])
            .await
            .expect_err("a tombstoned stream takes no appends");
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "node {id}: {refused:?}"
        );
    }
    let refused = cluster
        .client(leader)
        .set_stream_metadata(max_count("doomed", 3, None))
        .await
        .expect_err("a tombstoned stream takes no metadata");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let metadata = cluster
        .client(follower)
        .get_stream_metadata(GetStreamMetadataRequest {
            stream: "doomed".to_string(),
            consistency: Consistency::Linearizable as i32,
            at_least_position: 0,
        })
        .await
        .expect("metadata")
        .into_inner();
    assert!(
        metadata.tombstoned && metadata.first_version == 6,
        "{metadata:?}"
    );

    // A soft delete: the stream goes on from its version.
    cluster
        .client(leader)
        .delete_stream(delete("soft", None, false))
        .await
        .expect("soft deleted");
    let again = cluster
        .append_request(
            follower,
            evlog_cluster_tests::proto::AppendRequest {
                stream: "soft".to_string(),
                events: vec![event("s-2", "T", "x")],
                expected_version: Some(2),
                idempotency_key: None,
            },
        )
        .await
        .expect("a soft-deleted stream goes on");
    assert_eq!(again.stream_version, 3);

    // The whole log, on every node, read and subscribed: never an event of `doomed`, and the
    // deletions announced.
    for id in &nodes {
        let log = cluster.read_all(*id, Consistency::Linearizable).await;
        assert!(
            log.iter().all(|event| event.stream != "doomed"),
            "node {id} returned a deleted event"
        );
        assert!(
            !log.iter()
                .any(|event| event.stream == "soft" && event.stream_version < 3),
            "node {id} returned a soft-deleted event"
        );
        let announced: Vec<String> = log
            .iter()
            .filter(|event| event.stream == "$deleted-streams")
            .map(|event| String::from_utf8_lossy(&event.data).to_string())
            .collect();
        assert_eq!(
            announced,
            vec![
                r#"{"stream":"doomed","version":5,"tombstone":true}"#.to_string(),
                r#"{"stream":"soft","version":2,"tombstone":false}"#.to_string(),
            ],
            "node {id}"
        );
        let mut subscription = cluster
            .subscribe(
                *id,
                SubscribeRequest {
                    target: Some(subscribe_request::Target::All(AllStreams {})),
                    start: None,
                    filter: None,
                    max_batch_events: 0,
                    at_least_position: 0,
                },
            )
            .await
            .expect("subscribed");
        let mut delivered = Vec::new();
        while let Some(item) = subscription.message().await.expect("an item") {
            use evlog_cluster_tests::proto::subscribe_response::Item;
            match item.item {
                Some(Item::Events(batch)) => delivered.extend(batch.events),
                Some(Item::CaughtUp(_)) => break,
                _ => {}
            }
        }
        assert_eq!(
            delivered.iter().map(|e| e.position).collect::<Vec<_>>(),
            log.iter().map(|e| e.position).collect::<Vec<_>>(),
            "node {id}: the subscription delivers what the read returns"
        );
    }
    let refused = cluster
        .read(leader, read_stream_from("doomed", Some(1)))
        .await
        .expect_err("reading a deleted stream's events is refused");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    let deletions = cluster
        .read(leader, read_stream_from("$deleted-streams", None))
        .await
        .expect("the system stream reads");
    assert_eq!(deletions.events.len(), 2);

    // The same from the command line.
    let evlog = |args: &[&str]| {
        let output = std::process::Command::new(evlog_cluster_tests::evlog_binary())
            .args(args)
            .args(["--json", "--endpoints", &cluster.endpoints()])
            .output()
            .expect("evlog runs");
        assert!(
            output.status.success(),
            "evlog {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    let set = evlog(&[
        "stream-meta",
        "kept",
        "--max-count",
        "1",
        "--expected-metadata-version",
        "0",
    ]);
    assert_eq!(
        (set["metadata_version"].as_u64(), set["max_count"].as_u64()),
        (Some(1), Some(1))
    );
    let shown = evlog(&["stream-meta", "kept"]);
    assert_eq!(shown, set);
    let deleted = evlog(&["delete-stream", "kept", "--tombstone"]);
    assert_eq!(deleted["version"].as_u64(), Some(1));
    assert_eq!(
        evlog(&["stream-meta", "kept"])["tombstoned"].as_bool(),
        Some(true)
    );
}

/// The events' ages as the leader sees them, by their recorded timestamps: a stream's
/// `max_age_s` removes its old events on every node (the leader proposes it), and the stream
/// keeps its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_expires_a_streams_old_events_on_every_replica() {
    let cluster = Cluster::start(ClusterOptions {
        extra_args: vec!["--retention-check-interval-ms".into(), "100".into()],
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let events = (0..20).map(|i| event(format!("a-{i}"), "T", "x")).collect();
    cluster
        .append(leader, "aged", events)
        .await
        .expect("append");
    cluster
        .append(leader, "ageless", vec![event("b-0", "T", "x")])
        .await
        .expect("append");
    cluster
        .client(leader)
        .set_stream_metadata(SetStreamMetadataRequest {
            stream: "aged".to_string(),
            expected_metadata_version: Some(0),
            retention: Some(StreamRetention {
                max_age_s: Some(1),
                ..Default::default()
            }),
        })
        .await
        .expect("metadata set");
    for id in &nodes {
        evlog_cluster_tests::wait_until(
            timeouts::ACKS,
            &format!("node {id} no longer returns the aged events"),
            async || {
                cluster
                    .read(*id, read_stream_from("aged", None))
                    .await
                    .is_ok_and(|page| page.events.is_empty())
            },
        )
        .await;
        let summary = cluster
            .client(*id)
            .get_stream(GetStreamRequest {
                stream: "aged".to_string(),
                consistency: Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .expect("get stream")
            .into_inner()
            .stream
            .expect("a summary");
        assert_eq!(
            (summary.version, summary.first_version),
            (20, 21),
            "node {id}"
        );
        let log = cluster.read_all(*id, Consistency::Linearizable).await;
        assert_eq!(
            log.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>(),
            vec!["ageless"],
            "node {id}: a stream without a max age keeps its events"
        );
    }
}

/// `--retention-max-bytes` keeps the database file bounded under a steady append load: the
/// leader cuts the oldest events, every node removes them and deletes their rows, and redb
/// reuses the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_keeps_the_database_file_bounded_under_load() {
    const MAX_BYTES: u64 = 8 << 20;
    let cluster = Cluster::start(ClusterOptions {
        // A short Raft log: the file holds it too.
        snapshot_threshold: Some(100),
        log_keep_after_snapshot: Some(20),
        extra_args: vec![
            "--retention-max-bytes".into(),
            "8MiB".into(),
            "--retention-check-interval-ms".into(),
            "100".into(),
        ],
        ..ClusterOptions::default()
    })
    .await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    // 24 MiB in appends of 6 events of 1 KiB: three times the limit.
    let payload = vec![b'p'; 1 << 10];
    let appenders: Vec<_> = (0..4)
        .map(|task| {
            let client = cluster.client(nodes[task % nodes.len()]);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut client = client;
                for round in 0..1_024 {
                    let events = (0..6)
                        .map(|i| event(format!("t{task}-{round}-{i}"), "Load", payload.clone()))
                        .collect();
                    client
                        .append(evlog_cluster_tests::proto::AppendRequest {
                            stream: format!("bulk-{task}"),
                            events,
                            expected_version: None,
                            idempotency_key: None,
                        })
                        .await
                        .expect("append under retention");
                }
            })
        })
        .collect();
    // The largest each node's file gets while the load runs, sampled every 50 ms.
    let files: Vec<_> = nodes
        .iter()
        .map(|id| cluster.data_dir(*id).join("evlog.redb"))
        .collect();
    let sampler = tokio::spawn(async move {
        let mut largest = vec![0u64; files.len()];
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            ticks.tick().await;
            for (file, largest) in files.iter().zip(largest.iter_mut()) {
                if let Ok(metadata) = std::fs::metadata(file) {
                    *largest = (*largest).max(metadata.len());
                }
            }
            if largest.iter().any(|size| *size >= MAX_BYTES * 3 / 2) {
                return largest;
            }
        }
    });
    for appender in appenders {
        appender.await.expect("the appender finishes");
    }
    assert!(
        !sampler.is_finished(),
        "a database file reached 1.5 x {MAX_BYTES} under load: {:?}",
        sampler.await
    );
    sampler.abort();
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    // The leader cuts at its next check; then every node deletes the rows.
    for id in &nodes {
        evlog_cluster_tests::wait_until(
            timeouts::ACKS,
            &format!("node {id} keeps at most about 4 MiB of events"),
            async || {
                let page = cluster
                    .read(
                        *id,
                        ReadRequest {
                            target: Some(read_request::Target::All(AllStreams {})),
                            ..read_stream_from("unused", None)
                        },
                    )
                    .await;
                page.is_ok_and(|page| page.events.first().is_some_and(|e| e.position > 16_000))
            },
        )
        .await;
    }
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    for id in &nodes {
        let path = cluster.data_dir(*id).join("evlog.redb");
        let size = std::fs::metadata(&path).expect("the database file").len();
        assert!(
            size < MAX_BYTES * 3 / 2,
            "node {id}'s database file is {size} bytes, past 1.5 x {MAX_BYTES}"
        );
    }

    // `evlog compact` refuses a running node's database, and shrinks a stopped one's; the node
    // then serves the same log.
    let data_dir = cluster.data_dir(nodes[2]);
    let compact = || {
        std::process::Command::new(evlog_cluster_tests::evlog_binary())
            .args(["compact", "--json", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("evlog compact runs")
    };
    let refused = compact();
    assert!(
        !refused.status.success(),
        "a running node's database is refused"
    );
    let mut cluster = cluster;
    cluster.terminate(nodes[2]).await;
    let compacted = compact();
    assert!(
        compacted.status.success(),
        "{}",
        String::from_utf8_lossy(&compacted.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&compacted.stdout).expect("a JSON report");
    let before = report["bytes_before"].as_u64().expect("bytes_before");
    let after = report["bytes_after"].as_u64().expect("bytes_after");
    assert!(
        after < before,
        "compacting did not shrink the file: {report}"
    );
    eprintln!("evlog compact: {report}");
    cluster.restart(nodes[2]);
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    // The same log as another node's, read at the same time: the leader may have cut a little
    // more meanwhile (a new leader counts the bytes afresh, at its own marks).
    evlog_cluster_tests::wait_for(
        timeouts::CATCH_UP,
        "the compacted node serves the same log as the others",
        async || {
            let reference = log_of(&cluster, nodes[0]).await;
            let compacted = log_of(&cluster, nodes[2]).await;
            if compacted == reference && !reference.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "node {} starts at {:?}, node {} at {:?}",
                    nodes[2],
                    compacted.first(),
                    nodes[0],
                    reference.first()
                ))
            }
        },
    )
    .await;
}

/// A consumer group whose frontier lies below what retention removed moves past the removed
/// events (never stuck, never a crash) and delivers the retained ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_behind_retention_goes_on_from_the_retained_events() {
    use evlog_cluster_tests::proto::{
        ConsumerSettings, CreateConsumerRequest, DispatchMode, create_consumer_request,
    };
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let endpoints: Vec<String> = cluster
        .node_ids()
        .iter()
        .map(|id| cluster.address(*id))
        .collect();
    let client = evlog_client::EvlogClient::new(&endpoints, Default::default()).expect("client");
    let events = (0..50)
        .map(|i| event(format!("j-{i}"), "Job", "x"))
        .collect();
    cluster
        .append(leader, "jobs", events)
        .await
        .expect("append");
    // The group is created at the start of the stream, then retention keeps the last 5.
    client
        .consumers_call(
            CreateConsumerRequest {
                name: "workers".to_string(),
                target: Some(create_consumer_request::Target::Stream("jobs".to_string())),
                filter: None,
                start: None,
                settings: Some(ConsumerSettings {
                    mode: DispatchMode::Shared as i32,
                    ..ConsumerSettings::default()
                }),
            },
            |mut grpc, request| async move { grpc.create(request).await },
        )
        .await
        .expect("group created");
    cluster
        .client(leader)
        .set_stream_metadata(max_count("jobs", 5, None))
        .await
        .expect("metadata set");
    let mut consumer = client.consume("workers", evlog_client::ConsumeOptions::default());
    let mut delivered = Vec::new();
    while delivered.len() < 5 {
        let delivery = tokio::time::timeout(timeouts::ACKS, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("the member goes on")
            .expect("a delivery");
        delivered.push(delivery.event.stream_version);
        delivery.ack().await.expect("acked");
    }
    assert_eq!(delivered, (46..=50).collect::<Vec<_>>());
    // The group records what it lost (replicated: in its state, not the leader's memory).
    let info = client
        .consumers_call(
            evlog_cluster_tests::proto::GetConsumerRequest {
                name: "workers".to_string(),
            },
            |mut grpc, request| async move { grpc.get(request).await },
        )
        .await
        .expect("the group");
    assert_eq!(
        (
            info.skipped_by_retention,
            info.last_skipped_from,
            info.last_skipped_to
        ),
        (45, 1, 46),
        "{info:?}"
    );
}
