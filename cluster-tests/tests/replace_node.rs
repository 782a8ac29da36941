//! Replacing a dead node, step by step as the README says, with the `evlog cluster` commands
//! an operator runs: remove the dead member, add a fresh node as a learner (it answers once
//! the learner has caught up), promote it. The new node then counts in the quorum: with it,
//! the cluster takes appends after losing another original node.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::{Cluster, ClusterOptions, event, evlog_binary, timeouts};

/// How long one `evlog cluster` command may take (adding a learner waits for its catch-up).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `evlog cluster --endpoints ENDPOINTS ARGS…` and returns its standard output.
///
/// # Panics
///
/// When it fails or does not finish in time.
async fn evlog_cluster(endpoints: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(evlog_binary());
    command
        .args(["cluster", "--endpoints", endpoints, "--timeout-ms", "60000"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("evlog cluster {args:?} did not finish in time"))
        .expect("evlog runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "evlog cluster {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("evlog cluster {args:?}: {}", stdout.trim());
    stdout
}

fn live_endpoints(cluster: &Cluster) -> String {
    cluster
        .live_node_ids()
        .into_iter()
        .map(|id| cluster.address(id))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_with_the_cluster_commands() {
    let mut cluster = Cluster::start(ClusterOptions {
        spare_nodes: 1,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let mut sent = Vec::new();
    for n in 0..20 {
        let id = format!("before-{n}");
        cluster
            .append(leader, "orders", vec![event(id.clone(), "Placed", "x")])
            .await
            .expect("append");
        sent.push(id);
    }
    let followers: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (dead, survivor) = (followers[0], followers[1]);
    cluster.kill(dead).await;

    // 1. Remove the dead member.
    evlog_cluster(&live_endpoints(&cluster), &["remove", &dead.to_string()]).await;
    cluster.retire(dead);
    // 2. Start a fresh node (empty data directory, new id) and add it as a learner.
    let new = cluster.start_spare();
    evlog_cluster(
        &live_endpoints(&cluster),
        &[
            "add-learner",
            &new.to_string(),
            &cluster.address(new),
            "--peer-address",
            &cluster.peer_address(new),
        ],
    )
    .await;
    // 3. Promote it.
    evlog_cluster(&live_endpoints(&cluster), &["promote", &new.to_string()]).await;

    let members = evlog_cluster(&live_endpoints(&cluster), &["members", "--json"]).await;
    let members: serde_json::Value = serde_json::from_str(&members).expect("members JSON");
    let voters: BTreeSet<u64> = members["members"]
        .as_array()
        .expect("a member list")
        .iter()
        .filter(|member| member["role"] == "voter")
        .map(|member| member["node_id"].as_u64().expect("a node id"))
        .collect();
    assert_eq!(voters, BTreeSet::from([leader, survivor, new]));
    cluster.wait_for_leader(timeouts::LEADER).await;

    // The new node counts in the quorum: without the survivor, leader and new node commit.
    cluster.kill(survivor).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    for n in 0..20 {
        let id = format!("after-{n}");
        cluster
            .append(leader, "orders", vec![event(id.clone(), "Placed", "x")])
            .await
            .expect("append with the replacement in the quorum");
        sent.push(id);
    }
    let events = cluster.read_all(new, Consistency::Linearizable).await;
    let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
    assert_eq!(
        ids, sent,
        "the new node holds every acknowledged event, in order"
    );
}
