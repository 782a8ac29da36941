//! A node that lost its data never votes before it has caught up, and a cluster whose every
//! node lost its data waits rather than serve an empty log.
//!
//! A node cannot tell "new" from "lost" by its data directory alone; only the operator can,
//! with `--bootstrap` when the cluster is created (the harness passes it at an initial
//! member's first start only). A restart on an emptied directory is a node that lost its data.

use std::time::{Duration, Instant};

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::{
    Cluster, ClusterOptions, RecordingWriter, checker, event, timeouts, wait_for,
};

/// How long the tests watch for a leader that must not arise: three upper election timeouts
/// of the harness's timing (a node that could win would have within one or two).
fn no_leader_window(options: &ClusterOptions) -> Duration {
    Duration::from_millis(3 * options.election_timeout_max_ms.unwrap_or(2_000))
}

/// Waits until node `id` reports that it does not vote, for the empty start.
async fn wait_until_not_voting(cluster: &Cluster, id: u64) {
    wait_for(
        timeouts::LEADER,
        &format!("node {id} to report that it does not vote"),
        async || {
            let status = cluster
                .status(id)
                .await
                .map_err(|error| format!("node {id}: {error}"))?;
            if !status.voting
                && !status.serving
                && status.not_serving_reason.contains("empty data directory")
            {
                Ok(())
            } else {
                Err(format!("node {id}: {status:?}"))
            }
        },
    )
    .await;
}

/// Waits until node `id` answers `Status` (it is up, and can be asked for a vote).
async fn wait_until_answering(cluster: &Cluster, id: u64) {
    wait_for(
        timeouts::LEADER,
        &format!("node {id} to answer"),
        async || cluster.status(id).await.map_err(|error| error.to_string()),
    )
    .await;
}

/// Watches `nodes` for `window`: none may become leader.
async fn assert_no_leader_for(cluster: &Cluster, nodes: &[u64], window: Duration, why: &str) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        for id in nodes {
            if let Ok(status) = cluster.status(*id).await {
                assert_ne!(
                    status.role,
                    "leader",
                    "node {id} became leader in term {}: {why} (cluster in {})",
                    status.term,
                    cluster.path().display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Entries only the leader and one follower hold; both die, the follower loses its data and
/// comes back empty beside the other follower, which lacks the entries. If the emptied node
/// voted, the lagging follower would win an election without them and they would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_does_not_vote_before_it_has_caught_up() {
    lost_data_then_no_vote(&[]).await;
}

/// The same, with the emptied node restarted with `--bootstrap` still set (an orchestrator
/// restarting it with the environment it was created with): a peer has committed entries, so
/// it knows the cluster exists and waits to be caught up all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_and_is_told_to_found_again_does_not_vote_either() {
    lost_data_then_no_vote(&[("EVLOG_BOOTSTRAP".to_owned(), "true".to_owned())]).await;
}

async fn lost_data_then_no_vote(restart_env: &[(String, String)]) {
    let options = ClusterOptions::default();
    let mut cluster = Cluster::start(options.clone()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let followers: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (wiped, lagging) = (followers[0], followers[1]);

    cluster.pause(lagging);
    let mut writer = RecordingWriter::new("wiped");
    for index in 0..10 {
        writer
            .append(&cluster, leader, &format!("accounts-{}", index % 3), 1)
            .await;
    }
    cluster.kill(leader).await;
    cluster.kill(wiped).await;
    cluster.wipe_data(wiped);
    cluster.resume(lagging);
    cluster.restart_with_env(wiped, restart_env);
    wait_until_answering(&cluster, wiped).await;
    assert_no_leader_for(
        &cluster,
        &[wiped, lagging],
        no_leader_window(&options),
        "a node that lost its data voted for one that lacks acknowledged entries",
    )
    .await;
    wait_until_not_voting(&cluster, wiped).await;
    let refused = cluster
        .append(lagging, "accounts-0", vec![event("no-quorum", "T", "x")])
        .await
        .expect_err("no leader: no append");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{refused:?}"
    );

    // The old leader comes back: it leads (its log is the longest), the emptied node catches
    // up and votes again, and nothing acknowledged is lost.
    cluster.restart(leader);
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    wait_for(
        timeouts::CATCH_UP,
        &format!("node {wiped} to vote again once caught up"),
        async || match cluster.status(wiped).await {
            Ok(status) if status.voting && status.serving => Ok(()),
            Ok(status) => Err(format!("{status:?}")),
            Err(error) => Err(error.to_string()),
        },
    )
    .await;
    let logs = cluster
        .read_all_from_live_nodes(Consistency::Linearizable)
        .await;
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.acknowledged, 10);
}

/// Every node loses its data: they start on empty directories without `--bootstrap`, and
/// wait to be caught up. None initializes a new cluster, none leads, nothing is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_every_node_lost_its_data_waits_rather_than_serve_an_empty_log() {
    // A short request timeout: an append with no leader anywhere is refused after it.
    let options = ClusterOptions {
        request_timeout_ms: Some(3_000),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(options.clone()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let mut writer = RecordingWriter::new("lost");
    for index in 0..5 {
        writer
            .append(&cluster, leader, &format!("accounts-{index}"), 1)
            .await;
    }
    let nodes = cluster.node_ids();
    for &id in &nodes {
        cluster.kill(id).await;
        cluster.wipe_data(id);
    }
    for &id in &nodes {
        cluster.restart(id);
    }
    for &id in &nodes {
        wait_until_answering(&cluster, id).await;
    }
    assert_no_leader_for(
        &cluster,
        &nodes,
        no_leader_window(&options),
        "nodes that lost their data started a new cluster",
    )
    .await;
    for &id in &nodes {
        wait_until_not_voting(&cluster, id).await;
    }
    for &id in &nodes {
        let refused = cluster
            .append(id, "accounts-0", vec![event("after-loss", "T", "x")])
            .await
            .expect_err("no append is taken");
        assert!(
            matches!(
                refused.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            "node {id}: {refused:?}"
        );
        for consistency in [Consistency::Linearizable, Consistency::Local] {
            let read = cluster
                .try_read_pages(
                    id,
                    evlog_cluster_tests::proto::read_request::Target::All(
                        evlog_cluster_tests::proto::AllStreams {},
                    ),
                    consistency,
                )
                .await;
            assert!(
                read.is_err(),
                "node {id} served a {consistency:?} read of an empty log: {read:?}"
            );
        }
    }
}

/// A follower whose data is wiped while the leader goes on is caught up from the start of the
/// log by the leader, with no new write to prompt it, and votes again once it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_data_is_caught_up_without_a_new_write() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut writer = RecordingWriter::new("reverted");
    for index in 0..10 {
        writer
            .append(&cluster, leader, &format!("accounts-{}", index % 3), 1)
            .await;
    }
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    cluster.kill(follower).await;
    cluster.wipe_data(follower);
    cluster.restart(follower);
    // No write from here on: the leader must notice the follower's empty log by itself.
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    wait_for(
        timeouts::CATCH_UP,
        &format!("node {follower} to vote again once caught up"),
        async || match cluster.status(follower).await {
            Ok(status) if status.voting && status.serving => Ok(()),
            Ok(status) => Err(format!("{status:?}")),
            Err(error) => Err(error.to_string()),
        },
    )
    .await;
    assert_eq!(cluster.wait_for_leader(timeouts::LEADER).await, leader);
    let logs = cluster
        .read_all_from_live_nodes(Consistency::Linearizable)
        .await;
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.acknowledged, 10);
}
