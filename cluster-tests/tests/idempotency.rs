//! An append retried with the same idempotency key returns the original result and appends
//! nothing: on another node, after a leader kill, and after a full cluster restart. The same
//! key with a different request is refused. Of concurrent appends at one expected version
//! exactly one wins, also when they race through a leader failover.

use std::time::Duration;

use evlog_cluster_tests::proto::{AppendRequest, AppendResponse, Consistency};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, is_retryable, timeouts, wait_for};

fn keyed(data: &str) -> AppendRequest {
    AppendRequest {
        stream: "payments-1".to_string(),
        events: vec![
            event("", "PaymentTaken", data),
            event("", "ReceiptSent", data),
        ],
        expected_version: None,
        idempotency_key: Some("payment-7f3a".to_string()),
    }
}

/// Sends `request` to `node` until it gets a definite answer (bounded by `timeouts::ACKS`).
async fn send(
    cluster: &Cluster,
    node: u64,
    request: AppendRequest,
) -> Result<AppendResponse, tonic::Status> {
    wait_for(
        timeouts::ACKS,
        &format!("a definite answer from node {node}"),
        async || match cluster.append_request(node, request.clone()).await {
            Err(status) if is_retryable(&status) => Err(format!("{status}")),
            other => Ok(other),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_key_returns_the_original_result_everywhere_and_always() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let followers: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();

    let first = send(&cluster, followers[0], keyed("x"))
        .await
        .expect("first append");
    assert!(!first.deduplicated);
    assert_eq!(
        (
            first.first_position,
            first.last_position,
            first.stream_version
        ),
        (1, 2, 2)
    );

    let expect_same = |again: AppendResponse, when: &str| {
        assert!(
            again.deduplicated,
            "{when}: the retry must be reported as deduplicated"
        );
        assert_eq!(
            (
                again.first_position,
                again.last_position,
                again.stream_version
            ),
            (
                first.first_position,
                first.last_position,
                first.stream_version
            ),
            "{when}: the retry must return the original positions"
        );
    };
    expect_same(
        send(&cluster, followers[1], keyed("x"))
            .await
            .expect("retry"),
        "on another node",
    );
    expect_same(
        send(&cluster, leader, keyed("x")).await.expect("retry"),
        "on the leader",
    );

    let reused = send(&cluster, leader, keyed("different"))
        .await
        .expect_err("a reused key must be refused");
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused}");

    cluster.kill(leader).await;
    let new_leader = cluster.wait_for_leader(timeouts::LEADER).await;
    expect_same(
        send(&cluster, new_leader, keyed("x")).await.expect("retry"),
        "after a leader kill",
    );
    cluster.restart(leader);
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;

    let nodes = cluster.node_ids();
    for &node in &nodes {
        let exit = cluster.terminate(node).await;
        assert!(exit.success(), "node {node} exited with {exit}");
    }
    for &node in &nodes {
        cluster.restart(node);
    }
    cluster.wait_for_leader(timeouts::LEADER).await;
    expect_same(
        send(&cluster, nodes[2], keyed("x")).await.expect("retry"),
        "after a full restart",
    );

    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    for node in nodes {
        let log = cluster.read_all(node, Consistency::Linearizable).await;
        assert_eq!(
            log.len(),
            2,
            "node {node}: the keyed append is in the log exactly once"
        );
    }
}

/// Sends 20 concurrent appends of a claim on `stream` at `expected_version`, spread over
/// `nodes`, each with its own idempotency key (so a retry of the winner is recognised rather
/// than refused as a conflict), and checks that exactly one wins and every loser is told the
/// actual version. Returns the winner's index.
async fn contend(cluster: &Cluster, nodes: &[u64], round: &str, expected_version: u64) -> usize {
    let attempts = (0..20).map(|i| {
        let request = AppendRequest {
            stream: "seat-14C".to_string(),
            events: vec![event(
                format!("{round}-claim-{i}"),
                "SeatClaimed",
                format!("passenger {i}"),
            )],
            expected_version: Some(expected_version),
            idempotency_key: Some(format!("{round}-claim-{i}")),
        };
        let node = nodes[i % nodes.len()];
        async move { send(cluster, node, request).await }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, result)| result.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{round}: exactly one append at expected version {expected_version} succeeds: {results:?}"
    );
    let after = (expected_version + 1).to_string();
    for result in &results {
        if let Err(status) = result {
            assert_eq!(
                status.code(),
                tonic::Code::FailedPrecondition,
                "{round}: {status}"
            );
            let actual = status
                .metadata()
                .get("evlog-actual-version")
                .and_then(|v| v.to_str().ok());
            assert_eq!(
                actual,
                Some(after.as_str()),
                "{round}: the loser is told the actual version: {status}"
            );
        }
    }
    winners[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_appends_at_one_expected_version_exactly_one_wins() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let first = contend(&cluster, &nodes, "calm", 0).await;

    // Again while there is no leader: the old one is killed just before the appends go out,
    // so they are retried through the election and contend on the new leader.
    cluster.kill(leader).await;
    let live = cluster.live_node_ids();
    let second = contend(&cluster, &live, "failover", 1).await;

    let log = cluster.read_all(live[0], Consistency::Linearizable).await;
    let ids: Vec<&str> = log.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            format!("calm-claim-{first}").as_str(),
            format!("failover-claim-{second}").as_str()
        ],
        "the log holds exactly the two winners, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_least_read_on_another_node_sees_the_append() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let appended = send(&cluster, nodes[0], keyed("ryw"))
        .await
        .expect("append");
    let mut client = cluster.client(nodes[2]);
    let mut request = tonic::Request::new(evlog_cluster_tests::proto::ReadRequest {
        filter: None,
        target: Some(evlog_cluster_tests::proto::read_request::Target::Stream(
            "payments-1".to_string(),
        )),
        from: None,
        max_count: 10,
        direction: 0,
        consistency: Consistency::AtLeast as i32,
        at_least_position: appended.last_position,
        from_timestamp_ms: None,
    });
    request.set_timeout(Duration::from_secs(30));
    let page = client
        .read(request)
        .await
        .expect("at-least read")
        .into_inner();
    assert_eq!(
        page.events.len(),
        2,
        "node {} sees the append it was told about",
        nodes[2]
    );
    assert!(page.head_position >= appended.last_position);
}
