//! A proxied cluster really sends its peer traffic through the link proxies: every link to and
//! from the leader carries bytes, and dropping every link of the leader makes the other two elect a new leader while
//! the old one is cut off. Healed, the cluster converges and the checker finds the history in
//! the log. Then a wiped node rejoins under a new id (AddLearner, ChangeMembership) through
//! the proxies too. Without this, a partition that did not partition would make every chaos
//! run pass vacuously.

use std::time::Instant;

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::proxy::LinkMode;
use evlog_cluster_tests::{
    Cluster, ClusterOptions, Workload, WorkloadOptions, checker, event, timeouts, wait_for,
};

/// Acknowledgements to see in each phase.
const ACKS_PER_PHASE: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_cross_the_proxies_and_a_wiped_node_rejoins_under_a_new_id() {
    let options = ClusterOptions {
        proxied: true,
        spare_nodes: 1,
        snapshot_threshold: Some(200),
        log_keep_after_snapshot: Some(50),
        // The cut-off leader's refusal below comes within this, well inside the client's 10 s.
        request_timeout_ms: Some(3_000),
        ..ClusterOptions::default()
    };
    // openraft's leader lease is the upper election timeout.
    let lease_ms = options
        .election_timeout_max_ms
        .expect("the tests set election timeouts");
    let mut cluster = Cluster::start(options).await;
    let old_leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let started = Instant::now();
    let workload = Workload::start(&cluster, WorkloadOptions::default());
    workload
        .wait_for_acknowledged_since(started, ACKS_PER_PHASE, timeouts::ACKS)
        .await;

    let network = cluster.network().expect("the cluster is proxied");
    // The leader replicates to each follower, and each follower forwards its appends to the
    // leader; followers do not talk to each other while the leader is up.
    let members = cluster.node_ids();
    for ((from, to), stats) in network.stats() {
        let leader_link = (from == old_leader || to == old_leader)
            && members.contains(&from)
            && members.contains(&to);
        if !leader_link {
            continue;
        }
        assert!(
            stats.connections >= 1 && stats.bytes > 0,
            "link {from}->{to} carried no traffic: {stats:?}"
        );
    }

    // Cut the leader off: the others elect one of themselves.
    let isolated_at = Instant::now();
    network.set_node(old_leader, LinkMode::Drop);
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != old_leader)
        .collect();
    let new_leader = wait_for(
        timeouts::LEADER,
        "the two connected nodes to agree on a new leader",
        async || {
            let mut leaders = Vec::new();
            for id in &others {
                let status = cluster
                    .status(*id)
                    .await
                    .map_err(|error| format!("node {id}: {error}"))?;
                leaders.push(status.leader_id);
            }
            match leaders.as_slice() {
                [a, b] if a == b && *a != old_leader && *a != 0 => Ok(*a),
                _ => Err(format!("nodes {others:?} name leaders {leaders:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "node {new_leader} leads {:.1?} after node {old_leader} was cut off",
        isolated_at.elapsed()
    );
    // The others can elect a leader after the lower election timeout, while the old leader's
    // lease (the upper one, counted from the last quorum acknowledgement) may still run: an
    // append it takes then can only time out, its outcome unknown. Wait until the old leader
    // reports that lease over (or that it stepped down).
    wait_for(
        timeouts::LEADER,
        "the cut-off leader's lease to run out",
        async || {
            let status = cluster
                .status(old_leader)
                .await
                .map_err(|error| format!("node {old_leader}: {error}"))?;
            match status.millis_since_quorum_ack {
                Some(age) if status.role == "leader" && age <= lease_ms => Err(format!(
                    "node {old_leader} heard from a quorum {age} ms ago (lease {lease_ms} ms)"
                )),
                _ => Ok(()),
            }
        },
    )
    .await;
    // Past its lease, the cut-off leader refuses an append outright (nothing appended, so
    // UNAVAILABLE: retry), after a short wait for the quorum to come back, instead of holding
    // it into an unknown outcome.
    let refused = cluster
        .append(
            old_leader,
            "cut-off",
            vec![event("to-the-cut-off-leader", "T", "x")],
        )
        .await
        .expect_err("a leader cut off from every peer cannot commit");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "the cut-off leader's answer: {refused:?}"
    );
    workload
        .wait_for_acknowledged_since(Instant::now(), ACKS_PER_PHASE, timeouts::ACKS)
        .await;
    network.heal();

    // A follower's data is lost; a fresh node takes its place under a new id.
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let victim = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a three-node cluster has followers");
    cluster.kill(victim).await;
    let joined = cluster.replace_node(victim).await;
    assert!(!cluster.node_ids().contains(&victim));
    assert!(cluster.node_ids().contains(&joined));
    // The new node learns the new membership from the log.
    wait_for(
        timeouts::CATCH_UP,
        "the new node to report itself a voter in the old node's place",
        async || {
            let status = cluster
                .status(joined)
                .await
                .map_err(|error| format!("node {joined}: {error}"))?;
            let voters: Vec<u64> = status
                .members
                .iter()
                .filter(|member| member.role == "voter")
                .map(|member| member.node_id)
                .collect();
            if voters.contains(&joined) && !voters.contains(&victim) {
                Ok(())
            } else {
                Err(format!("node {joined} reports voters {voters:?}"))
            }
        },
    )
    .await;

    let history = workload.stop().await;
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    assert_eq!(logs.len(), 3, "three members, the new one included");
    for (id, log) in &logs {
        assert!(
            log.iter()
                .all(|recorded| recorded.id != "to-the-cut-off-leader"),
            "node {id} holds the append the cut-off leader refused"
        );
    }
    let report = checker::assert_valid(&history, &logs);
    eprintln!(
        "{}; log: {} events; {} acknowledged appends in place",
        history.summary(),
        report.events,
        report.acknowledged
    );
}
