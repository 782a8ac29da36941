//! With frequent snapshots, a follower that was down while the leader snapshotted and purged
//! the log it missed can only catch up through a snapshot: it does, and ends identical. The
//! idempotency keys travel in the snapshot: a retry of the first append, sent to the rebuilt
//! follower, is deduplicated by every replica (a replica that had lost the key would append the
//! events again and its log would differ).

use evlog_cluster_tests::Outcome;
use evlog_cluster_tests::proto::{Consistency, StatusResponse};
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, checker, timeouts, wait_for};

const SNAPSHOT_THRESHOLD: u64 = 50;
const LOG_KEEP_AFTER_SNAPSHOT: u64 = 10;
const APPENDS_BEFORE: usize = 20;
/// Several snapshot thresholds' worth, so the leader purges well past the follower.
const APPENDS_WHILE_DOWN: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_purged_log_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start(ClusterOptions {
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        log_keep_after_snapshot: Some(LOG_KEEP_AFTER_SNAPSHOT),
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a three-node cluster has followers");
    let nodes = cluster.node_ids();
    let mut writer = RecordingWriter::new("snapshot-catch-up");
    for index in 0..APPENDS_BEFORE {
        writer
            .append(&cluster, nodes[index % nodes.len()], "before", 1)
            .await;
    }
    let follower_applied = cluster.wait_for_convergence(timeouts::CATCH_UP).await;

    cluster.kill(follower).await;
    let live = cluster.live_node_ids();
    for index in 0..APPENDS_WHILE_DOWN {
        let node = live[index % live.len()];
        writer
            .append(
                &cluster,
                node,
                &format!("while-down-{}", index % 3),
                index % 2 + 1,
            )
            .await;
    }

    // Only once the leader has purged the entries after the follower's last one is a snapshot
    // the only way to catch up.
    let leader_status: StatusResponse = wait_for(
        timeouts::CATCH_UP,
        &format!("the leader to purge its log past index {follower_applied}"),
        async || {
            let leader = cluster.wait_for_leader(timeouts::LEADER).await;
            let status = cluster
                .status(leader)
                .await
                .map_err(|error| format!("node {leader}: {error}"))?;
            if status.purged_index > follower_applied {
                Ok(status)
            } else {
                Err(format!(
                    "node {leader}: snapshot index {}, purged index {}, last log index {}",
                    status.snapshot_index, status.purged_index, status.last_log_index
                ))
            }
        },
    )
    .await;
    assert!(leader_status.snapshot_index > 0 || leader_status.purged_index > 0);
    eprintln!(
        "leader {}: snapshot index {}, purged index {}; the follower stopped at {follower_applied}",
        leader_status.node_id, leader_status.snapshot_index, leader_status.purged_index
    );

    cluster.restart(follower);
    let applied = cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let follower_status = cluster
        .status(follower)
        .await
        .expect("the restarted follower answers Status");
    assert_eq!(follower_status.applied_index, applied);
    assert!(
        follower_status.snapshot_index > follower_applied,
        "the follower should hold a snapshot past where it stopped ({follower_applied}), \
         but reports snapshot index {}",
        follower_status.snapshot_index
    );
    // The metrics count it: the follower installed a snapshot, a leader sent one.
    let follower_metrics = metrics_of(&cluster, follower).await;
    assert!(
        counter(&follower_metrics, "evlog_raft_snapshots_installed_total") >= 1.0,
        "the follower's metrics count no snapshot installed"
    );
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    assert!(
        counter(
            &metrics_of(&cluster, leader).await,
            "evlog_raft_snapshots_sent_total"
        ) >= 1.0,
        "the leader's metrics count no snapshot sent"
    );

    let Outcome::Acknowledged {
        first_position,
        last_position,
        ..
    } = writer.history().operations()[0].outcome.clone()
    else {
        panic!("the first append was acknowledged (the writer panics otherwise)");
    };
    let retried = cluster
        .append_request(follower, writer.request_of(0))
        .await
        .expect("the retry of the first append is answered");
    assert!(
        retried.deduplicated,
        "the retry through the rebuilt follower appended again: {retried:?}"
    );
    assert_eq!(
        (retried.first_position, retried.last_position),
        (first_position, last_position),
        "the retry returns the original positions"
    );
    let applied = cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    assert!(applied > follower_applied);

    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    assert_eq!(logs.len(), 3);
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.acknowledged, APPENDS_BEFORE + APPENDS_WHILE_DOWN);
}

async fn metrics_of(cluster: &Cluster, id: u64) -> String {
    let address = cluster.http_address(id).await;
    evlog_cluster_tests::http::get(&address, "/metrics", std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("scraping node {id}: {error}"))
        .body
}

fn counter(text: &str, sample: &str) -> f64 {
    evlog_cluster_tests::http::sample_value(text, sample)
        .unwrap_or_else(|| panic!("no {sample} in the scrape"))
}
