//! A five-node cluster survives two failures at once: with the leader and a follower
//! SIGKILLed, the three others elect a leader and take appends, and every acknowledged append
//! is read back, exactly once, in the same log on every survivor.

use std::time::Instant;

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::{Cluster, ClusterOptions, Workload, WorkloadOptions, checker, timeouts};

/// Acknowledgements to see in each phase: enough to show the cluster is really serving.
const ACKS_PER_PHASE: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_failures() {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let started = Instant::now();
    let workload = Workload::start(
        &cluster,
        WorkloadOptions {
            appenders_per_node: 1,
            ..WorkloadOptions::default()
        },
    );
    workload
        .wait_for_acknowledged_since(started, ACKS_PER_PHASE, timeouts::ACKS)
        .await;

    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let killed_at = Instant::now();
    cluster.kill(follower).await;
    cluster.kill(leader).await;
    let new_leader = cluster.wait_for_leader(timeouts::LEADER).await;
    eprintln!(
        "node {new_leader} leads {:.1?} after nodes {leader} (the leader) and {follower} were \
         killed",
        killed_at.elapsed()
    );
    workload
        .wait_for_acknowledged_since(killed_at, ACKS_PER_PHASE, timeouts::ACKS)
        .await;

    let history = workload.stop().await;
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster
        .read_all_from_live_nodes(Consistency::Linearizable)
        .await;
    assert_eq!(logs.len(), 3, "three of five nodes are live");
    let report = checker::assert_valid(&history, &logs);
    assert!(
        history.acknowledged_since(killed_at) >= ACKS_PER_PHASE,
        "appends go on with two of five nodes dead"
    );
    eprintln!(
        "{}; {} acknowledged appends found in place on the three survivors",
        history.summary(),
        report.acknowledged
    );
}
