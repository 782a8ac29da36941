//! `evlog tail` follows the log as a person runs it: it prints what is there, then what
//! arrives, and goes on when the node it reads from is killed.

use std::process::Stdio;
use std::time::Duration;

use evlog_cluster_tests::{Cluster, ClusterOptions, event, evlog_binary, timeouts};
use tokio::io::{AsyncBufReadExt, BufReader};

const LINE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_the_log_across_the_loss_of_its_node() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster
        .append(leader, "orders-1", vec![event("a", "Placed", "{\"n\":1}")])
        .await
        .expect("append");
    cluster
        .append(leader, "users-1", vec![event("b", "Joined", "x")])
        .await
        .expect("append");
    // The follower first: killing it makes tail move.
    let mut endpoints = vec![cluster.address(follower)];
    endpoints.extend(
        cluster
            .node_ids()
            .into_iter()
            .filter(|id| *id != follower)
            .map(|id| cluster.address(id)),
    );
    let mut child = tokio::process::Command::new(evlog_binary())
        .args([
            "tail",
            "--endpoints",
            &endpoints.join(","),
            "--all",
            "--prefix",
            "orders-",
            "--json",
            "--max-count",
            "3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("evlog tail starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next_event = async || -> serde_json::Value {
        let line = tokio::time::timeout(LINE_TIMEOUT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("stdout readable")
            .expect("tail still printing");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"))
    };
    let first = next_event().await;
    assert_eq!(first["stream"], "orders-1");
    assert_eq!(first["data"]["n"], 1);

    cluster.kill(follower).await;
    cluster
        .append(leader, "users-1", vec![event("c", "Joined", "y")])
        .await
        .expect("append");
    cluster
        .append(leader, "orders-2", vec![event("d", "Placed", "z")])
        .await
        .expect("append");
    cluster
        .append(leader, "orders-1", vec![event("e", "Paid", "w")])
        .await
        .expect("append");
    let second = next_event().await;
    let third = next_event().await;
    assert_eq!(
        (
            second["id"].as_str(),
            third["id"].as_str(),
            third["stream_version"].as_u64()
        ),
        (Some("d"), Some("e"), Some(2))
    );
    let status = tokio::time::timeout(LINE_TIMEOUT, child.wait())
        .await
        .expect("tail exits after --max-count")
        .expect("status");
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        err.read_to_string(&mut stderr).await.expect("stderr");
    }
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("resumed on node"), "{stderr}");
}
