//! `evlog verify` against real clusters: members that hold the same log agree; a member that
//! stored different events (a divergent replica, made with a failpoint) is named, with the
//! first position where it differs.

use std::process::Stdio;
use std::time::Duration;

use evlog_cluster_tests::proto::AppendRequest;
use evlog_cluster_tests::{
    Cluster, ClusterOptions, FAILPOINTS, event, evlog_binary, require_failpoints, timeouts,
};
use serde_json::Value;

/// Runs `evlog verify --json` against `cluster`; returns whether it succeeded and its report.
async fn verify(cluster: &Cluster) -> (bool, Value) {
    let output = tokio::process::Command::new(evlog_binary())
        .args(["verify", "--json", "--endpoints", &cluster.endpoints()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("evlog verify finishes")
        .expect("evlog verify runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|error| {
            panic!(
                "evlog verify printed no report ({error}): {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (output.status.success(), report)
}

/// Appends `count` events to `stream` through `id`, ten per append.
async fn append_events(cluster: &Cluster, id: u64, stream: &str, count: usize) {
    for batch in 0..count / 10 {
        let events = (0..10)
            .map(|n| {
                event(
                    format!("{stream}-{batch}-{n}"),
                    "T",
                    format!("{{\"n\":{n}}}"),
                )
            })
            .collect();
        cluster
            .append_request(
                id,
                AppendRequest {
                    stream: stream.to_owned(),
                    events,
                    expected_version: None,
                    idempotency_key: None,
                },
            )
            .await
            .expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_agrees_on_equal_replicas_and_names_the_first_divergent_position() {
    require_failpoints();
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_events(&cluster, leader, "orders", 2_500).await;
    cluster.wait_for_convergence(timeouts::LEADER).await;
    let (ok, report) = verify(&cluster).await;
    assert!(ok, "{report}");
    assert_eq!(report["agree"], true, "{report}");
    assert_eq!(report["up_to_position"], 2_500, "{report}");
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{report}");
    for node in nodes {
        assert_eq!(node["events"], 2_500, "{report}");
        assert_eq!(node["hash"], nodes[0]["hash"], "{report}");
    }

    // A follower restarted with the fault stores every event it applies from now on with other
    // data: its copy diverges from position 2,501.
    let divergent = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.terminate(divergent).await;
    cluster.restart_with_env(
        divergent,
        &[(
            FAILPOINTS.to_string(),
            "store::apply-divergent-event=return".to_string(),
        )],
    );
    cluster.wait_for_convergence(timeouts::LEADER).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_events(&cluster, leader, "payments", 100).await;
    cluster.wait_for_convergence(timeouts::LEADER).await;
    let (ok, report) = verify(&cluster).await;
    assert!(!ok, "verify succeeded on a divergent replica: {report}");
    assert_eq!(report["agree"], false, "{report}");
    assert_eq!(report["up_to_position"], 2_600, "{report}");
    for node in report["nodes"].as_array().expect("nodes") {
        let id = node["node_id"].as_u64().expect("node id");
        if id == divergent {
            assert_eq!(node["agrees"], false, "{report}");
            assert_eq!(node["first_difference"], 2_501, "{report}");
        } else {
            assert_eq!(node["agrees"], true, "{report}");
        }
    }
}
