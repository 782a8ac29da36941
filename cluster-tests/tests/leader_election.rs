//! A three-node cluster elects one leader, and every node reports that leader, itself at its
//! own address, and the same three voters.

use std::collections::BTreeMap;

use evlog_cluster_tests::{Cluster, ClusterOptions, timeouts, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_that_every_node_reports() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let voters: BTreeMap<u64, String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| (id, cluster.address(id)))
        .collect();

    // Followers learn the membership from the leader's log, so wait for every node to report
    // it rather than asserting on the first answer.
    wait_for(
        timeouts::LEADER,
        "every node to report the same leader and three voters",
        async || {
            let mut problems = Vec::new();
            for id in cluster.node_ids() {
                let status = cluster
                    .status(id)
                    .await
                    .map_err(|error| format!("node {id}: {error}"))?;
                let expected_role = if id == leader { "leader" } else { "follower" };
                let reported_voters: BTreeMap<u64, String> = status
                    .members
                    .iter()
                    .filter(|member| member.role == "voter")
                    .map(|member| (member.node_id, member.address.clone()))
                    .collect();
                let checks = [
                    (status.node_id == id, format!("node_id {}", status.node_id)),
                    (
                        status.address == voters[&id],
                        format!("address {}", status.address),
                    ),
                    (
                        status.role == expected_role,
                        format!("role {}", status.role),
                    ),
                    (
                        status.leader_id == leader,
                        format!("leader {}", status.leader_id),
                    ),
                    (
                        status.leader_address == voters[&leader],
                        format!("leader address {:?}", status.leader_address),
                    ),
                    (
                        status.members.len() == voters.len() && reported_voters == voters,
                        format!("members {:?}", status.members),
                    ),
                ];
                for (ok, observed) in checks {
                    if !ok {
                        problems.push(format!("node {id}: {observed}"));
                    }
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "expected leader {leader} and voters {voters:?}; {}",
                    problems.join("; ")
                ))
            }
        },
    )
    .await;
}
