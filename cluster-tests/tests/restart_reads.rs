//! A restarted node serves no read, not even a `LOCAL` one, until it has caught up with the
//! leader once. Its store shows applied state before the fsync (the log, durable on a quorum,
//! is what an acknowledgement stands on), so a crash can take back state the node had already
//! served; reading from what it recovered would go back in time.

use evlog_cluster_tests::proto::{
    AllStreams, Consistency, Direction, ReadRequest, ReadResponse, read_request,
};
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, timeouts, wait_for};
use tonic::Code;

const APPENDS: usize = 20;

async fn read(
    cluster: &Cluster,
    node: u64,
    consistency: Consistency,
    at_least_position: u64,
) -> Result<ReadResponse, tonic::Status> {
    cluster
        .read(
            node,
            ReadRequest {
                filter: None,
                target: Some(read_request::Target::All(AllStreams {})),
                from: None,
                max_count: 1,
                direction: Direction::Backward as i32,
                consistency: consistency as i32,
                at_least_position,
                from_timestamp_ms: None,
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_reads_only_once_it_has_caught_up_with_a_leader() {
    let mut cluster = Cluster::start(ClusterOptions {
        // A refused read comes back after this long.
        request_timeout_ms: Some(1_000),
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let mut writer = RecordingWriter::new("restart-reads");
    for _ in 0..APPENDS {
        writer.append(&cluster, leader, "orders", 1).await;
    }
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let node = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a three-node cluster has followers");
    let served = read(&cluster, node, Consistency::Local, 0)
        .await
        .expect("a running follower serves a LOCAL read");
    assert_eq!(served.head_position, APPENDS as u64);

    // Crash every node, then start the follower alone: it has nobody to catch up with.
    for id in cluster.node_ids() {
        cluster.kill(id).await;
    }
    cluster.restart(node);
    wait_for(
        timeouts::LEADER,
        "the restarted node to answer",
        async || {
            cluster
                .status(node)
                .await
                .map(|_| ())
                .map_err(|status| status.to_string())
        },
    )
    .await;
    for (consistency, at_least) in [(Consistency::Local, 0), (Consistency::AtLeast, 1)] {
        let refused = read(&cluster, node, consistency, at_least)
            .await
            .expect_err("a restarted node without a leader must refuse reads");
        assert_eq!(
            refused.code(),
            Code::Unavailable,
            "{consistency:?} read on a restarted node without a leader: {refused:?}"
        );
        assert!(
            refused.message().contains("caught up"),
            "the refusal should say why: {:?}",
            refused.message()
        );
    }

    // With a leader again, the node catches up once and serves LOCAL reads from then on,
    // never older than what it served before the crash.
    for id in cluster.node_ids() {
        if id != node {
            cluster.restart(id);
        }
    }
    cluster.wait_for_leader(timeouts::LEADER).await;
    let after = wait_for(
        timeouts::CATCH_UP,
        "a LOCAL read after catching up",
        async || {
            read(&cluster, node, Consistency::Local, 0)
                .await
                .map_err(|status| status.to_string())
        },
    )
    .await;
    assert!(
        after.head_position >= served.head_position,
        "node {node} served head {} before the crash and {} after it",
        served.head_position,
        after.head_position
    );
}
