//! The peer port apart from the client port: the Raft peer protocol (`evlog.internal.v1`) is
//! served only on `--peer-listen`, never on the client port and never listed by reflection;
//! the client port serves the client services only. Every peer message carries the cluster
//! id: a node of another cluster is refused (and counted), so it cannot take over a member.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use evlog_cluster_tests::proto::cluster_client::ClusterClient;
use evlog_cluster_tests::proto::event_log_client::EventLogClient;
use evlog_cluster_tests::proto::{AddLearnerRequest, ReadRequest, StatusRequest};
use evlog_cluster_tests::{Cluster, ClusterOptions, evlog_binary, timeouts, wait_for};
use evlog_proto::internal::v1::raft_peer_client::RaftPeerClient;
use evlog_proto::internal::v1::{PeerHeader, ReadIndexRequest};
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The cluster id the harness's nodes run with (evlog's default).
const CLUSTER_ID: &str = "evlog";

fn channel(address: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

fn header(cluster_id: &str) -> Option<PeerHeader> {
    Some(PeerHeader {
        cluster_id: cluster_id.to_owned(),
        group_id: 0,
        sender_id: 0,
    })
}

async fn read_index(address: &str, cluster_id: &str) -> Result<u64, tonic::Status> {
    let mut client = RaftPeerClient::new(channel(address));
    let request = ReadIndexRequest {
        header: header(cluster_id),
    };
    Ok(client.read_index(request).await?.into_inner().read_index)
}

/// The services gRPC reflection lists at `address`.
async fn reflected_services(address: &str) -> Result<BTreeSet<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel(address));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await?
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("reflection answers")?
        .message_response;
    match answer {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect()),
        other => panic!("reflection answered {other:?} to ListServices"),
    }
}

/// Whether reflection at `address` knows the symbol `symbol`.
async fn reflection_knows(address: &str, symbol: &str) -> bool {
    let mut client = ServerReflectionClient::new(channel(address));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection is served on the client port")
        .into_inner();
    match answers.next().await.expect("reflection answers") {
        Ok(answer) => matches!(
            answer.message_response,
            Some(MessageResponse::FileDescriptorResponse(_))
        ),
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("reflection failed: {status}"),
    }
}

/// A node's `evlog_peer_messages_refused_total{reason="cluster_id"}`.
async fn refused_as_another_cluster(cluster: &Cluster, id: u64) -> f64 {
    cluster
        .metric(
            id,
            "evlog_peer_messages_refused_total{reason=\"cluster_id\"}",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_rpcs_are_served_on_the_peer_port_only_and_never_reflected() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let client_address = cluster.address(leader);
    let peer_address = cluster.peer_address(leader);

    // The peer port answers the peer protocol: a read index for a message of this cluster.
    let index = read_index(&peer_address, CLUSTER_ID)
        .await
        .expect("the leader's peer port serves ReadIndex");
    assert!(index >= 1, "read index {index}");

    // The client port does not serve it at all: UNIMPLEMENTED, as for any unknown service,
    // whatever the message says.
    let refused = read_index(&client_address, CLUSTER_ID)
        .await
        .expect_err("the client port does not serve the peer protocol");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused}");
    let mut client = RaftPeerClient::new(channel(&client_address));
    let append = evlog_proto::internal::v1::RaftMessage {
        header: header(CLUSTER_ID),
        payload: Default::default(),
    };
    let refused = client
        .append_entries(append)
        .await
        .expect_err("no AppendEntries on the client port");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused}");

    // Reflection on the client port lists the client services and nothing of the peer
    // protocol, by service or by symbol.
    let services = reflected_services(&client_address)
        .await
        .expect("reflection is served on the client port");
    assert!(services.contains("evlog.v1.EventLog"), "{services:?}");
    assert!(services.contains("evlog.v1.Cluster"), "{services:?}");
    assert!(
        services
            .iter()
            .all(|service| !service.contains("internal") && !service.contains("RaftPeer")),
        "reflection lists the peer protocol: {services:?}"
    );
    assert!(reflection_knows(&client_address, "evlog.v1.EventLog").await);
    assert!(!reflection_knows(&client_address, "evlog.internal.v1.RaftPeer").await);

    // And the peer port serves no client service, no reflection.
    let refused = EventLogClient::new(channel(&peer_address))
        .read(ReadRequest::default())
        .await
        .expect_err("the peer port serves no client service");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused}");
    let refused = reflected_services(&peer_address)
        .await
        .expect_err("the peer port serves no reflection");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused}");

    // A peer message of another cluster is refused on the peer port, and counted.
    let before = refused_as_another_cluster(&cluster, leader).await;
    let refused = read_index(&peer_address, "another-cluster")
        .await
        .expect_err("a message of another cluster is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(
        refused.message().contains("another-cluster"),
        "the refusal names the cluster: {refused}"
    );
    assert_eq!(
        refused_as_another_cluster(&cluster, leader).await,
        before + 1.0
    );
}

/// An `evlog serve` of another cluster id, founding its own one-node cluster: killed on drop.
struct Stranger {
    child: Child,
    client_address: String,
    _data: tempfile::TempDir,
}

impl Stranger {
    fn start(cluster_id: &str, node_id: u64) -> Stranger {
        // Ports chosen by the kernel, read back, released for the child to bind.
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("binds port 0"))
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|listener| listener.local_addr().expect("local address").to_string())
            .collect();
        drop(listeners);
        let data = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(data.path().join("stranger.log")).expect("a log file");
        let child = Command::new(evlog_binary())
            .args([
                "serve",
                "--id",
                &node_id.to_string(),
                "--listen",
                &addresses[0],
                "--peer-listen",
                &addresses[1],
                "--http-listen",
                "off",
                "--data-dir",
                &data.path().join("data").display().to_string(),
                "--cluster-id",
                cluster_id,
                "--bootstrap",
                "--peers",
                &format!("{node_id}={}/{}", addresses[0], addresses[1]),
                "--heartbeat-interval-ms",
                "100",
                "--election-timeout-min-ms",
                "1000",
                "--election-timeout-max-ms",
                "2000",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file handle"))
            .stderr(log)
            .spawn()
            .expect("starting the stranger");
        Stranger {
            child,
            client_address: addresses[0].clone(),
            _data: data,
        }
    }

    fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(channel(&self.client_address))
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_as_a_peer() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let term = cluster.status(leader).await.expect("leader status").term;
    let members: BTreeSet<u64> = cluster.node_ids().into_iter().collect();

    // A node of another cluster leads a cluster of its own, then takes every member of ours
    // for a learner of its: it sends them entries (and, once refused, campaigns at higher
    // terms), as a node given the wrong --peers or a reused address would.
    let stranger = Stranger::start("stranger", 9);
    wait_for(
        timeouts::LEADER,
        "the stranger to lead itself",
        async || {
            let status = stranger
                .cluster()
                .status(StatusRequest {})
                .await
                .map_err(|status| status.to_string())?
                .into_inner();
            if status.leader_id == 9 {
                Ok(())
            } else {
                Err(format!("its leader is {}", status.leader_id))
            }
        },
    )
    .await;
    for id in cluster.node_ids() {
        let mut add = tonic::Request::new(AddLearnerRequest {
            node_id: id,
            address: cluster.address(id),
            peer_address: cluster.peer_address(id),
        });
        // The learner is added in the stranger's membership whatever the call answers (it
        // may answer before the learner caught up, or end at its deadline).
        add.set_timeout(Duration::from_secs(2));
        let added = stranger.cluster().add_learner(add).await;
        eprintln!("peer_port: the stranger added node {id}: {added:?}");
    }

    // Every member refuses the stranger's messages and counts them; none follows it.
    let mut refused = Vec::new();
    wait_for(
        timeouts::LEADER,
        "every member to refuse the stranger's messages, or one to follow it",
        async || {
            refused.clear();
            for id in cluster.node_ids() {
                let status = cluster
                    .status(id)
                    .await
                    .map_err(|status| status.to_string())?;
                if status.leader_id != leader || status.term != term {
                    return Ok(());
                }
                refused.push(refused_as_another_cluster(&cluster, id).await);
            }
            if refused.iter().all(|count| *count >= 5.0) {
                Ok(())
            } else {
                Err(format!("refused per member: {refused:?}"))
            }
        },
    )
    .await;
    for id in cluster.node_ids() {
        let status = cluster.status(id).await.expect("status");
        assert_eq!(
            (status.leader_id, status.term),
            (leader, term),
            "node {id} left its leader (node {leader}, term {term}) for the stranger's"
        );
        let seen: BTreeSet<u64> = status.members.iter().map(|member| member.node_id).collect();
        assert_eq!(seen, members, "node {id} sees members {seen:?}");
    }
    assert!(
        refused.iter().all(|count| *count >= 5.0),
        "messages refused as another cluster's, per member: {refused:?}"
    );

    // The cluster still takes appends, from its own leader.
    let appended = cluster
        .append(
            leader,
            "after-the-stranger",
            vec![evlog_cluster_tests::event("1", "t", "x")],
        )
        .await;
    assert!(appended.is_ok(), "append after the stranger: {appended:?}");
}
