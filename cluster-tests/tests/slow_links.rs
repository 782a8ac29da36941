//! Regression test for a stall the chaos campaign found: when every peer link is slow (each
//! chunk held 120-160 ms, so a round trip is well over the 100 ms heartbeat interval), the
//! leader must still replicate and acknowledge appends. It used to give every AppendEntries
//! call openraft's one-heartbeat budget as a hard deadline, so each call timed out and nothing
//! was acknowledged until the links healed. No timing is asserted: the appends only have to be
//! acknowledged while the links are slow, within the harness's usual deadline.

use std::time::Duration;

use evlog_cluster_tests::proto::Consistency;
use evlog_cluster_tests::proxy::LinkMode;
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, checker, timeouts};

const APPENDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_acknowledged_while_every_peer_link_is_slow() {
    let cluster = Cluster::start(ClusterOptions {
        proxied: true,
        ..ClusterOptions::default()
    })
    .await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let network = cluster.network().expect("the cluster is proxied");
    network.set_all(LinkMode::Delay {
        base: Duration::from_millis(120),
        jitter: Duration::from_millis(40),
    });
    let nodes = cluster.node_ids();
    let mut writer = RecordingWriter::new("slow-links");
    for index in 0..APPENDS {
        writer
            .append(&cluster, nodes[index % nodes.len()], "slow", 1)
            .await;
    }
    // Every append above was acknowledged through the delayed links (the writer retries for a
    // minute, then fails the test); only now do they heal.
    network.heal();
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    let report = checker::assert_valid(writer.history(), &logs);
    assert_eq!(report.acknowledged, APPENDS);
}
