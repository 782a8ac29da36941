//! A replication stream left behind by a purge must end, so that the follower is caught up by a
//! snapshot. openraft adopts a new plan (a snapshot in place of entries purged meanwhile) only
//! between streams, and reads a purged range as empty: a stream that outlived the entries it was
//! about to send went on sending entry-less requests, which the follower answered, for ever (the
//! chaos campaign's `bridge` fault left a follower behind for good that way). A stream therefore
//! takes requests for at most `MAX_STREAM_SESSION` (1 s, `node/src/raft/transport/client.rs`).
//!
//! Here the leader's link to one follower is held (the proxy stops reading, so the stream's
//! requests back up, and no answer comes) for less than an AppendEntries deadline, so the stream
//! stays open, while appends make the leader snapshot and purge far past what the stream had
//! sent; then the link passes again. The follower must end with the whole log.

use std::sync::Arc;
use std::time::Duration;

use evlog_cluster_tests::proxy::LinkMode;
use evlog_cluster_tests::writers::{Writers, append_from_writers};
use evlog_cluster_tests::{Cluster, ClusterOptions, timeouts};
use tokio::time::Instant;

const SNAPSHOT_THRESHOLD: u64 = 20;
const LOG_KEEP_AFTER_SNAPSHOT: u64 = 5;
/// Times the link is held.
const HOLDS: usize = 5;
/// Appends per round while the link is held (rounds go on until the leader purged past what
/// the stream had sent).
const APPENDS_PER_ROUND: usize = 40;
/// The longest a hold lasts: under the 2 s AppendEntries deadline (`--peer-rpc-timeout-ms`),
/// past which the stream would end by itself.
const MAX_HOLD: Duration = Duration::from_millis(1_500);
/// Appends between holds, the link passing.
const APPENDS_BETWEEN: usize = 20;
/// Concurrent writers, so a hold sees enough appends.
const WRITERS: usize = 8;
/// How long the follower gets to catch up once the link passes for good: a new stream, a
/// snapshot and its install take well under this.
const CATCH_UP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_behind_by_a_purge_ends_and_the_follower_catches_up() {
    let cluster = Arc::new(
        Cluster::start(ClusterOptions {
            proxied: true,
            snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
            log_keep_after_snapshot: Some(LOG_KEEP_AFTER_SNAPSHOT),
            ..ClusterOptions::default()
        })
        .await,
    );
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    let network = cluster.network().expect("the cluster is proxied");
    append_some(&cluster, leader, APPENDS_BETWEEN, None).await;
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;

    let mut behind_a_purge = false;
    for hold in 0..HOLDS {
        // Everything the stream can have sent before the hold is at or below this index.
        let sent = cluster
            .status(leader)
            .await
            .expect("the leader answers Status")
            .last_log_index;
        network.set_link(leader, follower, LinkMode::Blackhole);
        let held = Instant::now();
        let mut appended = 0;
        let mut purged = 0;
        // Appends until the leader purged past everything the stream had sent (so the next
        // range it reads is gone), within a bounded time.
        while purged <= sent && held.elapsed() < MAX_HOLD {
            appended +=
                append_some(&cluster, leader, APPENDS_PER_ROUND, Some(held + MAX_HOLD)).await;
            purged = cluster
                .status(leader)
                .await
                .expect("the leader answers Status")
                .purged_index;
        }
        network.set_link(leader, follower, LinkMode::Pass);
        eprintln!(
            "hold {hold}: {appended} appends in {:?}; the stream had at most {sent}, the leader \
             purged up to {purged}",
            held.elapsed()
        );
        behind_a_purge |= purged > sent;
        append_some(&cluster, leader, APPENDS_BETWEEN, None).await;
    }
    // Otherwise the stream never had a purged range to read, and this proves nothing.
    assert!(
        behind_a_purge,
        "the leader never purged past what the stream to the held follower had sent"
    );

    network.heal();
    let applied = cluster.wait_for_convergence(CATCH_UP).await;
    let status = cluster
        .status(follower)
        .await
        .expect("the follower answers Status");
    assert_eq!(status.applied_index, applied);
}

/// Appends `count` single events through node `node` from [`WRITERS`] tasks, stopping early at
/// `until`; returns how many were acknowledged.
async fn append_some(
    cluster: &Arc<Cluster>,
    node: u64,
    count: usize,
    until: Option<Instant>,
) -> usize {
    append_from_writers(
        cluster,
        node,
        Writers {
            tasks: WRITERS,
            count: Some(count),
            until,
            stop: None,
        },
    )
    .await
}
