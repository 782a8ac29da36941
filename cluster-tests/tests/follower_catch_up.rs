//! A follower SIGKILLed while the others keep taking appends restarts on its data and catches
//! up from the leader's log, ending with the same log as everyone.

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, checker, timeouts};

const APPENDS_BEFORE: usize = 20;
const APPENDS_WHILE_DOWN: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_catches_up_after_restart() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a three-node cluster has followers");
    let mut writer = RecordingWriter::new("follower-catch-up");
    let nodes = cluster.node_ids();
    for index in 0..APPENDS_BEFORE {
        let node = nodes[index % nodes.len()];
        writer
            .append(&cluster, node, &format!("s-{}", index % 2), 1)
            .await;
    }

    cluster.kill(follower).await;
    let live = cluster.live_node_ids();
    for index in 0..APPENDS_WHILE_DOWN {
        let node = live[index % live.len()];
        writer
            .append(&cluster, node, &format!("s-{}", index % 2), index % 2 + 1)
            .await;
    }

    cluster.restart(follower);
    let applied = cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let status = cluster
        .status(follower)
        .await
        .expect("the restarted follower answers Status");
    assert_eq!(status.applied_index, applied);

    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    assert_eq!(logs.len(), 3);
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.acknowledged, APPENDS_BEFORE + APPENDS_WHILE_DOWN);
}
