//! Appends sent to every node (followers forward them to the leader) are readable at once with
//! linearizable reads from every node, in order, at dense positions 1..n, with each stream's
//! versions rising by one; with the read-index policy and with lease reads.

use evlog_cluster_tests::proto::{AllStreams, Consistency, Direction, ReadRequest, read_request};
use evlog_cluster_tests::{
    Cluster, ClusterOptions, RecordingWriter, checker, is_retryable, timeouts, wait_for,
};

const ROUNDS: usize = 8;
const STREAMS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_any_node_are_linearizably_readable_from_every_node() {
    appends_are_readable(ClusterOptions::default()).await;
}

/// The same with leader lease reads (`--read-policy lease`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lease_reads_appends_are_readable_from_every_node() {
    appends_are_readable(ClusterOptions {
        extra_args: vec!["--read-policy".to_string(), "lease".to_string()],
        ..ClusterOptions::default()
    })
    .await;
}

async fn appends_are_readable(options: ClusterOptions) {
    let cluster = Cluster::start(options).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let mut writer = RecordingWriter::new("append-and-read");
    let mut expected_events = 0;

    for round in 0..ROUNDS {
        for &node in &nodes {
            let stream = format!("orders-{}", (round + node as usize) % STREAMS);
            let count = round % 3 + 1;
            let response = writer.append(&cluster, node, &stream, count).await;
            expected_events += count;
            let sent_ids: Vec<String> = writer
                .history()
                .operations()
                .last()
                .expect("the writer recorded the append")
                .events
                .iter()
                .map(|event| event.id.clone())
                .collect();

            // Read-your-writes on every node, including the ones that did not take the write:
            // a linearizable read that starts after the acknowledgement must see it.
            for &reader in &nodes {
                let read = ReadRequest {
                    filter: None,
                    target: Some(read_request::Target::All(AllStreams {})),
                    from: Some(response.first_position),
                    max_count: count as u32,
                    direction: Direction::Forward as i32,
                    consistency: Consistency::Linearizable as i32,
                    at_least_position: 0,
                    from_timestamp_ms: None,
                };
                let page = wait_for(
                    timeouts::LEADER,
                    &format!("a linearizable read from node {reader}"),
                    async || match cluster.read(reader, read.clone()).await {
                        Ok(page) => Ok(page),
                        Err(status) if is_retryable(&status) => Err(status.to_string()),
                        Err(status) => panic!("reading from node {reader}: {status}"),
                    },
                )
                .await;
                let read_ids: Vec<&str> =
                    page.events.iter().map(|event| event.id.as_str()).collect();
                assert_eq!(
                    read_ids,
                    sent_ids,
                    "node {reader} (serving {}) must see the append acknowledged by node {node} \
                     at {}..={} (head {})",
                    page.served_by,
                    response.first_position,
                    response.last_position,
                    page.head_position
                );
            }
        }
    }
    eprintln!(
        "{} appends, {expected_events} events, {} retries",
        writer.history().len(),
        writer.retries()
    );

    let mut logs = Vec::new();
    for &node in &nodes {
        logs.push((
            node,
            cluster.read_all(node, Consistency::Linearizable).await,
        ));
    }
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.events, expected_events);
    assert_eq!(report.acknowledged, ROUNDS * nodes.len());

    // Each stream read on its own holds exactly its events from the whole log, versions 1..n.
    let (_, whole_log) = &logs[0];
    for stream in (0..STREAMS).map(|index| format!("orders-{index}")) {
        let expected: Vec<_> = whole_log
            .iter()
            .filter(|event| event.stream == stream)
            .cloned()
            .collect();
        for &node in &nodes {
            let events = cluster
                .read_stream(node, &stream, Consistency::Linearizable)
                .await;
            assert_eq!(events, expected, "stream {stream} read from node {node}");
            let versions: Vec<u64> = events.iter().map(|event| event.stream_version).collect();
            let dense: Vec<u64> = (1..=expected.len() as u64).collect();
            assert_eq!(versions, dense, "versions of {stream} on node {node}");
        }
    }
}
