//! `evlog verify` against real clusters: members that hold the same log agree; a member that
//! stored different events (a divergent replica, made with a failpoint) is named, with the
//! first position where it differs; a check proposed through the log hashes every member's log
//! as it stood at the check entry, even on a member that applies it together with a retention
//! change that came after it.

use std::process::Stdio;
use std::time::Duration;

use evlog_cluster_tests::proto::{
    AppendRequest, ChecksumRequest, GetChecksumRequest, SetStreamMetadataRequest, StreamRetention,
};
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

/// A follower paused while the check entry and then a retention change commit applies both
/// together when it resumes; it still hashes the log as it stood at the check entry, like the
/// members that applied them one at a time, and `evlog verify` agrees afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_hashes_every_member_at_its_entry_whatever_retention_removes_after() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_events(&cluster, leader, "orders", 100).await;
    cluster.wait_for_convergence(timeouts::LEADER).await;
    let paused = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.pause(paused);

    let started = cluster
        .maintenance_client(leader)
        .start_checksum(ChecksumRequest {
            from_position: 1,
            to_position: 0,
            step: 10,
        })
        .await
        .expect("the leader starts a check")
        .into_inner();
    cluster
        .client(leader)
        .set_stream_metadata(SetStreamMetadataRequest {
            stream: "orders".to_string(),
            expected_metadata_version: None,
            retention: Some(StreamRetention {
                max_count: Some(10),
                ..Default::default()
            }),
        })
        .await
        .expect("max_count 10 commits without the paused follower");
    cluster.resume(paused);
    cluster.wait_for_convergence(timeouts::LEADER).await;

    let mut hashes = Vec::new();
    for id in cluster.node_ids() {
        let result = cluster
            .maintenance_client(id)
            .checksum(GetChecksumRequest {
                check_index: started.check_index,
                wait_ms: 10_000,
            })
            .await
            .expect("the member answers")
            .into_inner();
        assert!(
            result.done,
            "node {id} has not hashed the check: {result:?}"
        );
        assert_eq!(result.error, "", "node {id}");
        assert_eq!(
            (result.from_position, result.to_position, result.events),
            (1, 100, 100),
            "node {id} hashed another state than the log at the check entry"
        );
        assert_eq!(result.checkpoints.len(), 10, "node {id}");
        hashes.push((id, result.hash));
    }
    assert!(
        hashes.iter().all(|(_, hash)| *hash == hashes[0].1),
        "{hashes:?}"
    );
    // A check that was never applied here (no such entry) is refused with the reason.
    let refused = cluster
        .maintenance_client(leader)
        .checksum(GetChecksumRequest {
            check_index: 1,
            wait_ms: 1_000,
        })
        .await
        .expect_err("no check at index 1");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // The command agrees, on the 10 events left.
    let (ok, report) = verify(&cluster).await;
    assert!(ok, "{report}");
    for node in report["nodes"].as_array().expect("nodes") {
        assert_eq!(node["events"], 10, "{report}");
    }
}
