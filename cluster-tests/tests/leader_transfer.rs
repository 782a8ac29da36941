//! A planned leader change costs no election timeout: `Cluster.TransferLeader` hands the
//! leadership to the voter named (or, unnamed, to the most caught-up one) and answers once it
//! leads, and refuses a target that cannot lead; a leader that gets SIGTERM hands its
//! leadership over before it stops, so appends through the followers go on with no gap of an
//! election timeout and nothing but retryable `UNAVAILABLE` refusals.

use std::time::Duration;
use std::time::Instant;

use evlog_cluster_tests::proto::{
    AddLearnerRequest, Consistency, TransferLeaderRequest, TransferLeaderResponse,
};
use evlog_cluster_tests::{
    Cluster, ClusterOptions, Outcome, Workload, WorkloadOptions, checker, event, timeouts,
};

/// The test clusters' Raft timing (the harness default): a follower that stops hearing from
/// its leader waits the leader lease (the upper election timeout, 2 s) and then 1-2 s more
/// before it campaigns. A change faster than this was no election timeout.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Acknowledgements to see in each phase: enough to show the cluster is really serving.
const ACKS_PER_PHASE: usize = 30;

async fn transfer(
    cluster: &Cluster,
    via: u64,
    to: Option<u64>,
) -> Result<TransferLeaderResponse, tonic::Status> {
    let timeout = Duration::from_secs(20);
    let mut request = tonic::Request::new(TransferLeaderRequest { to });
    request.set_timeout(timeout);
    let mut client = cluster.cluster_client(via);
    tokio::time::timeout(timeout, client.transfer_leader(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer from TransferLeader"))?
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_hands_leadership_to_the_named_or_the_most_caught_up_voter() {
    let mut cluster = Cluster::start(ClusterOptions {
        spare_nodes: 1,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let term = cluster.status(leader).await.expect("leader status").term;
    let followers: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    cluster
        .append(leader, "before", vec![event("b1", "T", "x")])
        .await
        .expect("append");

    // Named, asked of the other follower: forwarded to the leader, answered once it moved.
    let (target, via) = (followers[0], followers[1]);
    let started = Instant::now();
    let moved = transfer(&cluster, via, Some(target))
        .await
        .expect("TransferLeader to a voter");
    let took = started.elapsed();
    assert_eq!(moved.leader_id, target, "the named voter leads");
    assert_eq!(moved.previous_leader_id, leader);
    assert!(moved.term > term, "a new term: {} after {term}", moved.term);
    assert_eq!(cluster.wait_for_leader(timeouts::LEADER).await, target);
    eprintln!("leadership moved from {leader} to {target} in {took:.1?}");
    assert!(
        took < ELECTION_TIMEOUT,
        "a transfer must not wait for an election timeout; it took {took:?}"
    );

    // Unnamed: the most caught-up voter. Of the two followers, the one with the lower id is
    // paused and misses what comes next, so the other must take over (a choice by id alone
    // would pick the paused one).
    let (lagging, caught_up) = (leader.min(via), leader.max(via));
    cluster.pause(lagging);
    for n in 0..5 {
        cluster
            .append(target, "lagging", vec![event(format!("l{n}"), "T", "x")])
            .await
            .expect("append with one follower paused");
    }
    let moved_again = transfer(&cluster, target, None)
        .await
        .expect("TransferLeader to the most caught-up voter");
    assert_eq!(
        moved_again.leader_id, caught_up,
        "the follower that has every entry leads, not the paused one"
    );
    cluster.resume(lagging);
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    assert_eq!(leader, caught_up);

    // The leader itself: nothing to do, it says so.
    let same = transfer(&cluster, leader, Some(leader))
        .await
        .expect("TransferLeader to the leader");
    assert_eq!((same.leader_id, same.previous_leader_id), (leader, leader));

    // A learner cannot lead; an unknown id is no member; 0 is no id.
    let learner = cluster.start_spare();
    let mut client = cluster.cluster_client(leader);
    let mut add = tonic::Request::new(AddLearnerRequest {
        node_id: learner,
        address: cluster.address(learner),
        peer_address: cluster.peer_address(learner),
    });
    add.set_timeout(Duration::from_secs(60));
    client.add_learner(add).await.expect("AddLearner");
    let refused = transfer(&cluster, followers[0], Some(learner))
        .await
        .expect_err("a learner cannot lead");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("learner"), "{refused:?}");
    let unknown = transfer(&cluster, leader, Some(99))
        .await
        .expect_err("node 99 is no member");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let zero = transfer(&cluster, leader, Some(0))
        .await
        .expect_err("0 is no node id");
    assert_eq!(zero.code(), tonic::Code::InvalidArgument, "{zero:?}");
    assert_eq!(
        cluster.wait_for_leader(timeouts::LEADER).await,
        leader,
        "a refused transfer leaves the leader in place"
    );

    // A voter that does not answer is not offered the leadership (the leader would stop
    // heartbeats for nobody and an election would follow): UNAVAILABLE, same leader, same term.
    let term = cluster.status(leader).await.expect("leader status").term;
    let silent = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader && *id != learner)
        .expect("a follower");
    cluster.pause(silent);
    let unanswered = transfer(&cluster, leader, Some(silent))
        .await
        .expect_err("a paused voter cannot take over");
    assert_eq!(
        unanswered.code(),
        tonic::Code::Unavailable,
        "{unanswered:?}"
    );
    cluster.resume(silent);
    assert_eq!(cluster.wait_for_leader(timeouts::LEADER).await, leader);
    assert_eq!(
        cluster.status(leader).await.expect("leader status").term,
        term,
        "no election followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leader_hands_leadership_over_with_no_election_timeout() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let followers: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();

    // Clients append through the followers, which forward to whoever leads.
    let started = Instant::now();
    let workload = Workload::start(
        &cluster,
        WorkloadOptions {
            appenders_per_node: 4,
            nodes: followers.clone(),
            ..WorkloadOptions::default()
        },
    );
    workload
        .wait_for_acknowledged_since(started, ACKS_PER_PHASE, timeouts::ACKS)
        .await;

    let terminated_at = Instant::now();
    let exit = cluster.terminate(leader).await;
    assert!(exit.success(), "a SIGTERMed node exits cleanly: {exit:?}");
    let new_leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let leader_known_after = terminated_at.elapsed();
    assert!(followers.contains(&new_leader));
    workload
        .wait_for_acknowledged_since(terminated_at, ACKS_PER_PHASE, timeouts::ACKS)
        .await;

    let history = workload.stop().await;
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster
        .read_all_from_live_nodes(Consistency::Linearizable)
        .await;
    assert_eq!(logs.len(), 2, "both followers are live");
    let report = checker::assert_valid(&history, &logs);
    eprintln!("{}", history.summary());
    eprintln!(
        "node {new_leader} leads {leader_known_after:.3?} after SIGTERM to leader {leader}; {} \
         acknowledged appends found in place",
        report.acknowledged
    );

    // The longest wait for an acknowledgement: the node keeps answering the appends it has
    // in flight for a moment after the signal, so the outage, if any, comes after it.
    let gap = history
        .longest_ack_gap()
        .expect("acknowledgements on both sides of the SIGTERM");
    eprintln!(
        "longest gap between acknowledgements: {:.3?}, from {:.3?} after the SIGTERM",
        gap.duration(),
        gap.from.saturating_duration_since(terminated_at)
    );
    assert!(
        gap.duration() < ELECTION_TIMEOUT / 2,
        "a leader that stops hands over its leadership: no gap of an election timeout, got {:?}",
        gap.duration()
    );
    // Nothing but a retryable refusal: no deadline passed, no outcome left unknown by a stall.
    let other_failures: Vec<String> = history
        .operations()
        .iter()
        .filter_map(|operation| match &operation.outcome {
            Outcome::Acknowledged { .. } => None,
            Outcome::Unknown {
                code: Some(tonic::Code::Unavailable),
                ..
            } => None,
            other => Some(format!("{other:?}")),
        })
        .collect();
    assert!(
        other_failures.is_empty(),
        "appends failed with more than a retryable UNAVAILABLE: {other_failures:?}"
    );
}
