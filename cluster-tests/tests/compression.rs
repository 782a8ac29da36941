//! Compression (`--compression auto`) against real clusters: every event reads back, and is
//! delivered, exactly as it was appended, and the stored log (a backup of it) is smaller than
//! the same appends stored uncompressed; after the first 1,000 compressed events the leader
//! trains a dictionary, every member applies it, the events after it take less room still,
//! and a restarted node and a backup (checked by another process) read them.

use std::process::Stdio;
use std::time::Duration;

use evlog_cluster_tests::proto::{
    AppendRequest, Consistency, SubscribeRequest, subscribe_request, subscribe_response,
};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, evlog_binary, timeouts};
use serde_json::Value;

const JSON_EVENTS: u64 = 300;
const RANDOM_EVENTS: u64 = 50;

/// A 1 KiB JSON object with the same keys as every other, its values varying with `n`.
fn json(n: u64) -> Vec<u8> {
    let mut text = format!(
        "{{\"order_id\":\"ord-{n:08}\",\"customer\":{{\"id\":{},\"tier\":\"gold\"}},\"items\":[",
        n * 7919 % 100_000
    );
    let mut item = 0;
    while text.len() < 1000 {
        if item > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            "{{\"sku\":\"SKU-{:06}\",\"quantity\":{},\"unit_price\":{}.{:02}}}",
            (n * 31 + item) * 104_729 % 1_000_000,
            item % 9 + 1,
            (n + item) * 13 % 500,
            item * 7 % 100
        ));
        item += 1;
    }
    text.push_str("]}");
    text.into_bytes()
}

/// 1 KiB that does not compress.
fn random(n: u64) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..128)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect()
}

fn payloads() -> Vec<(String, Vec<u8>)> {
    (0..JSON_EVENTS)
        .map(|n| ("orders".to_owned(), json(n)))
        .chain((0..RANDOM_EVENTS).map(|n| ("blobs".to_owned(), random(n))))
        .collect()
}

/// Backs `cluster` up into `file`; returns the summary.
async fn back_up(cluster: &Cluster, file: &std::path::Path) -> Value {
    let output = tokio::process::Command::new(evlog_binary())
        .args([
            "backup",
            "--out",
            &file.display().to_string(),
            "--endpoints",
            &cluster.endpoints(),
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("evlog backup runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// Appends JSON events `numbers` to "orders" through `id`, 50 per append.
async fn append_json(cluster: &Cluster, id: u64, numbers: std::ops::Range<u64>) {
    let numbers: Vec<u64> = numbers.collect();
    for chunk in numbers.chunks(50) {
        cluster
            .append_request(
                id,
                AppendRequest {
                    stream: "orders".to_owned(),
                    events: chunk.iter().map(|n| event("", "T", json(*n))).collect(),
                    expected_version: None,
                    idempotency_key: None,
                },
            )
            .await
            .expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_dictionary_shrinks_later_events_and_travels_with_the_log() {
    let mut cluster = Cluster::start(ClusterOptions {
        extra_args: vec!["--compression".to_owned(), "auto".to_owned()],
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    // The first 1,000 compressed events train it.
    append_json(&cluster, leader, 0..1_000).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut dictionaries = Vec::new();
    loop {
        dictionaries.clear();
        for id in cluster.node_ids() {
            dictionaries.push(
                cluster
                    .status(id)
                    .await
                    .map_or(0, |status| status.compression_dictionary),
            );
        }
        if dictionaries.iter().all(|dictionary| *dictionary != 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dictionary applied on every node: {dictionaries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dictionaries
            .iter()
            .all(|dictionary| *dictionary == dictionaries[0]),
        "{dictionaries:?}"
    );
    // `evlog status --json` shows it.
    let output = tokio::process::Command::new(evlog_binary())
        .args(["status", "--json", "--endpoints", &cluster.address(leader)])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("evlog status runs");
    let status: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        status["compression_dictionary"], dictionaries[0],
        "{status}"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let before = back_up(&cluster, &dir.path().join("before.evlbak")).await;
    append_json(&cluster, leader, 1_000..2_000).await;
    let after_file = dir.path().join("after.evlbak");
    let after = back_up(&cluster, &after_file).await;
    let (before, after) = (
        before["bytes"].as_u64().expect("bytes"),
        after["bytes"].as_u64().expect("bytes"),
    );
    eprintln!(
        "dictionary: the first 1,000 events (each compressed alone) take {before} bytes of backup, \
         the next 1,000 (with the dictionary) {} bytes",
        after - before
    );
    assert!(
        (after - before) * 10 < before * 8,
        "with the dictionary {} bytes, before it {before}",
        after - before
    );

    // Every node reads every event back exactly, a restarted one too (its store brings the
    // dictionary to a process that never saw it).
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.terminate(follower).await;
    cluster.restart(follower);
    cluster.wait_for_convergence(timeouts::LEADER).await;
    for id in cluster.node_ids() {
        let log = cluster.read_all(id, Consistency::Local).await;
        assert_eq!(log.len(), 2_000, "node {id}");
        for (n, event) in log.iter().enumerate() {
            assert_eq!(
                event.data.as_ref(),
                json(n as u64).as_slice(),
                "node {id}, event {n}"
            );
        }
    }
    // The backup carries it: another process decodes every event of the file.
    let output = tokio::process::Command::new(evlog_binary())
        .args(["backup", "verify", &after_file.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("evlog backup verify runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Appends every payload (ten per append) through the leader; returns the backup's size.
async fn load_and_back_up(cluster: &Cluster) -> u64 {
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let payloads = payloads();
    for chunk in payloads.chunks(10) {
        cluster
            .append_request(
                leader,
                AppendRequest {
                    stream: chunk[0].0.clone(),
                    events: chunk
                        .iter()
                        .map(|(_, data)| event("", "T", data.clone()))
                        .collect(),
                    expected_version: None,
                    idempotency_key: None,
                },
            )
            .await
            .expect("append");
    }
    // Every node reads back exactly what was appended.
    cluster.wait_for_convergence(timeouts::LEADER).await;
    for id in cluster.node_ids() {
        let log = cluster.read_all(id, Consistency::Local).await;
        assert_eq!(log.len(), payloads.len(), "node {id}");
        for (event, (_, data)) in log.iter().zip(&payloads) {
            assert_eq!(
                event.data.as_ref(),
                data.as_slice(),
                "node {id}, {}",
                event.position
            );
        }
    }
    // A subscription delivers it exactly too.
    let mut stream = cluster
        .subscribe(
            leader,
            SubscribeRequest {
                target: Some(subscribe_request::Target::All(Default::default())),
                start: Some(subscribe_request::Start::From(1)),
                ..Default::default()
            },
        )
        .await
        .expect("subscribe");
    let mut delivered = Vec::new();
    while delivered.len() < payloads.len() {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an item in time")
            .expect("the subscription goes on")
            .expect("an item");
        if let Some(subscribe_response::Item::Events(batch)) = item.item {
            delivered.extend(batch.events.into_iter().map(|event| event.data));
        }
    }
    for (data, (_, payload)) in delivered.iter().zip(&payloads) {
        assert_eq!(data.as_ref(), payload.as_slice());
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    back_up(cluster, &dir.path().join("c.evlbak")).await["bytes"]
        .as_u64()
        .expect("bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_events_read_back_exactly_and_take_less_room() {
    let plain = Cluster::start(ClusterOptions::default()).await;
    let plain_bytes = load_and_back_up(&plain).await;
    drop(plain);
    let compressed = Cluster::start(ClusterOptions {
        extra_args: vec!["--compression".to_owned(), "auto".to_owned()],
        ..ClusterOptions::default()
    })
    .await;
    let compressed_bytes = load_and_back_up(&compressed).await;
    let raw: u64 = payloads().iter().map(|(_, data)| data.len() as u64).sum();
    eprintln!(
        "compression: {raw} bytes of data; stored {plain_bytes} bytes uncompressed, \
         {compressed_bytes} with --compression auto"
    );
    // The JSON (300 of the 350 KiB) shrinks at least twofold; the random data stays as it is.
    assert!(
        compressed_bytes * 10 < plain_bytes * 6,
        "compressed {compressed_bytes} bytes vs {plain_bytes} uncompressed"
    );
}
