//! A member caught up through a snapshot that takes longer to arrive than the leader takes to
//! write the entries it keeps after a snapshot must still catch up while the writes go on.
//! openraft's own purge kept a count of entries and nothing else: by the time the member had
//! installed snapshot `S`, the leader had purged past `S` and sent the next snapshot, stale in
//! its turn, for as long as the writes went on (the chaos campaign's `wipe-rejoin` fault under
//! the `coalesced` load: AddLearner timed out after 120 s, the new node installing a snapshot
//! every 3-4 s). The leader now keeps the log after a snapshot it is sending until the member
//! has caught up on it or the hold runs out (`node/src/raft/log_purge.rs`).
//!
//! Here a follower is down while the leader snapshots and purges past it, then comes back over
//! a link that holds every chunk for [`LINK_DELAY`] each way, so a snapshot takes longer to
//! arrive than the writers take to write [`LOG_KEEP_AFTER_SNAPSHOT`] entries. While they write
//! on, the follower must apply [`AHEAD`] entries past where the leader was at its first install
//! with at most [`MAX_LATER_INSTALLS`] snapshots more (without the hold: one stale snapshot after
//! another, for as long as the writes go on), and end with the whole log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evlog_cluster_tests::proxy::LinkMode;
use evlog_cluster_tests::writers::{Writers, append_from_writers};
use evlog_cluster_tests::{Cluster, ClusterOptions, timeouts, wait_for, wait_until};

const SNAPSHOT_THRESHOLD: u64 = 20;
const LOG_KEEP_AFTER_SNAPSHOT: u64 = 5;
/// Appends while the follower is down: many snapshots' worth, so it needs one to catch up.
const APPENDS_WHILE_DOWN: usize = 200;
/// What the leader's link to the follower holds each chunk for, each way: a snapshot takes at
/// least twice this to arrive and be answered, and an AppendEntries round trip stays under the
/// 2 s deadline (`--peer-rpc-timeout-ms`).
const LINK_DELAY: Duration = Duration::from_millis(400);
/// Concurrent writers: a few hundred entries a second, many thresholds' worth per snapshot sent.
const WRITERS: usize = 4;
/// How far past the leader's last entry at the follower's first install the follower must
/// apply: fifty snapshots' worth, a few seconds of the writers' appends, several times what
/// the leader writes while a snapshot is on its way (so stale snapshots, each a jump of about
/// that much, cannot get there within [`MAX_LATER_INSTALLS`]).
const AHEAD: u64 = 50 * SNAPSHOT_THRESHOLD;
/// How long the follower gets to apply that far.
const CATCH_UP: Duration = Duration::from_secs(60);
/// Installs allowed after the first while the writers go on (without the hold, one about every
/// second here).
const MAX_LATER_INSTALLS: f64 = 1.0;
const INSTALLS: &str = "evlog_raft_snapshots_installed_total";
/// How long one scrape of `/metrics` may take.
const SCRAPE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_snapshot_outlasts_the_kept_log_still_catches_up() {
    let mut cluster = Cluster::start(ClusterOptions {
        proxied: true,
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        log_keep_after_snapshot: Some(LOG_KEEP_AFTER_SNAPSHOT),
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster.follower_of(leader);
    let had = cluster
        .status(follower)
        .await
        .expect("the follower answers Status")
        .last_log_index;
    cluster.kill(follower).await;
    let cluster = Arc::new(cluster);
    let appended = append_from_writers(
        &cluster,
        leader,
        Writers {
            tasks: WRITERS,
            count: Some(APPENDS_WHILE_DOWN),
            until: None,
            stop: None,
        },
    )
    .await;
    assert_eq!(
        appended, APPENDS_WHILE_DOWN,
        "every append while down is acknowledged"
    );
    // The log purge runs every so often: wait for it to pass what the follower has.
    wait_until(
        timeouts::CATCH_UP,
        "the leader to purge past the follower",
        async || {
            cluster
                .status(leader)
                .await
                .is_ok_and(|status| status.purged_index > had)
        },
    )
    .await;
    let mut cluster = Arc::into_inner(cluster).expect("no other handle to the cluster is left");
    cluster.network().expect("the cluster is proxied").set_link(
        leader,
        follower,
        LinkMode::Delay {
            base: LINK_DELAY,
            jitter: Duration::ZERO,
        },
    );
    cluster.restart(follower);
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn({
        let (cluster, stop) = (Arc::clone(&cluster), Arc::clone(&stop));
        async move {
            let writers = Writers {
                tasks: WRITERS,
                count: None,
                until: None,
                stop: Some(stop),
            };
            append_from_writers(&cluster, leader, writers).await
        }
    });

    let first = wait_for(
        timeouts::CATCH_UP,
        "the follower's first snapshot",
        async || match installs(&cluster, follower).await? {
            0.0 => Err("none installed yet".to_owned()),
            installed => Ok(installed),
        },
    )
    .await;
    // Well past where the leader was when the first snapshot arrived: reached by replication
    // with the hold; without it, only through one stale snapshot after another.
    let target = cluster
        .status(leader)
        .await
        .expect("the leader answers Status")
        .last_log_index
        + AHEAD;
    wait_for(
        CATCH_UP,
        "the follower to apply past the target",
        async || {
            let later = installs(&cluster, follower).await? - first;
            assert!(
                later <= MAX_LATER_INSTALLS,
                "the follower installed {later} more snapshots while the writes went on: each was \
             stale (the leader had purged past it) by the time it arrived"
            );
            let applied = cluster
                .status(follower)
                .await
                .map_err(|status| format!("the follower's Status: {status}"))?
                .applied_index;
            if applied >= target {
                Ok(later)
            } else {
                Err(format!(
                    "applied {applied} of {target}, {later} more installs"
                ))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let later = installs(&cluster, follower).await.unwrap_or(f64::NAN) - first;
    let written = writing.await.expect("the writers do not panic");
    eprintln!(
        "{written} appends while the follower caught up: {first} snapshot(s) installed first, \
         {later} after"
    );
    assert!(
        written > 0,
        "the writers appended while the follower caught up"
    );

    cluster.network().expect("the cluster is proxied").heal();
    let applied = cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let status = cluster
        .status(follower)
        .await
        .expect("the follower answers Status");
    assert_eq!(status.applied_index, applied);
}

/// The snapshots node `id` has installed since it started, or why it did not say.
async fn installs(cluster: &Cluster, id: u64) -> Result<f64, String> {
    let status = cluster
        .status(id)
        .await
        .map_err(|status| format!("node {id}'s Status: {status}"))?;
    let metrics = evlog_cluster_tests::http::get(&status.http_address, "/metrics", SCRAPE)
        .await
        .map_err(|error| format!("scraping node {id}: {error}"))?;
    Ok(evlog_cluster_tests::http::sample_value(&metrics.body, INSTALLS).unwrap_or(0.0))
}
