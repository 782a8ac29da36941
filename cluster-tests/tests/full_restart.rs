//! Shutting every node down gracefully (SIGTERM) and starting them again keeps every event,
//! and the log goes on from where it stopped.

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, checker, timeouts};

const APPENDS: usize = 30;
const STREAMS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_keeps_every_event() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let mut writer = RecordingWriter::new("full-restart");
    for index in 0..APPENDS {
        let node = nodes[index % nodes.len()];
        let stream = format!("accounts-{}", index % STREAMS);
        writer.append(&cluster, node, &stream, index % 3 + 1).await;
    }
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let before = cluster.read_all(leader, Consistency::Linearizable).await;

    for &node in &nodes {
        let status = cluster.terminate(node).await;
        assert!(
            status.success(),
            "node {node} should exit cleanly on SIGTERM, but exited with {status} (log: {})",
            cluster.log_path(node).display()
        );
    }
    for &node in &nodes {
        cluster.restart(node);
    }
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;

    for &node in &nodes {
        let after = cluster.read_all(node, Consistency::Linearizable).await;
        assert_eq!(
            after.len(),
            before.len(),
            "node {node} holds {} events after the restart, {} before",
            after.len(),
            before.len()
        );
        assert!(
            after == before,
            "node {node}'s log changed across the restart"
        );
    }

    // The log goes on where it stopped: the next position, the stream's next version.
    let stream = "accounts-0";
    let stream_version_before = before.iter().filter(|event| event.stream == stream).count() as u64;
    let response = writer.append(&cluster, leader, stream, 1).await;
    assert_eq!(response.first_position, before.len() as u64 + 1);
    assert_eq!(response.stream_version, stream_version_before + 1);

    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.acknowledged, APPENDS + 1);
}
