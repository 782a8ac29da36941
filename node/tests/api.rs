//! The node in-process: three `app::run` nodes on port-0 listeners in this test's runtime,
//! talked to over real gRPC on loopback. Between the unit tests and the multi-process cluster
//! tests: forwarding, the error codes and their metadata, the settle loop, health.

use std::collections::BTreeMap;
use std::time::Duration;

use evlog::config::NodeConfig;
use evlog_proto::metadata;
use evlog_proto::v1 as pb;
use evlog_proto::v1::cluster_client::ClusterClient;
use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_raft_store::type_config::MemberNode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

/// A node running in this process.
struct TestNode {
    id: u64,
    address: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    channel: Channel,
}

impl TestNode {
    fn event_log(&self) -> EventLogClient<Channel> {
        EventLogClient::new(self.channel.clone())
    }

    fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }

    /// Shuts the node down gracefully and waits until it has stopped.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        let stopped = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the node stops within 30 s")
            .expect("the node task does not panic");
        stopped.expect("the node stops without an error");
    }
}

struct TestCluster {
    nodes: Vec<TestNode>,
    _dir: tempfile::TempDir,
}

/// Starts `count` nodes as one new cluster and waits until they agree on a leader.
async fn start_cluster(count: u64, tune: impl Fn(&mut NodeConfig)) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut listeners = BTreeMap::new();
    for id in 1..=count {
        let bind = async || {
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binds port 0")
        };
        let (client, peer) = (bind().await, bind().await);
        listeners.insert(id, evlog::app::Listeners { client, peer });
    }
    let local = |listener: &TcpListener| listener.local_addr().expect("local address");
    let members: BTreeMap<u64, MemberNode> = listeners
        .iter()
        .map(|(id, listeners)| {
            let node = MemberNode::new(
                local(&listeners.client).to_string(),
                local(&listeners.peer).to_string(),
            );
            (*id, node)
        })
        .collect();
    let mut nodes = Vec::new();
    for (id, listeners) in listeners {
        let address = members[&id].client_address.clone();
        let mut config = NodeConfig {
            node_id: id,
            listen_addr: local(&listeners.client),
            advertise_addr: address.clone(),
            peer_listen_addr: local(&listeners.peer),
            data_dir: dir.path().join(format!("node-{id}")),
            initial_members: members.clone(),
            bootstrap: true,
            ..NodeConfig::default()
        };
        tune(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(evlog::app::run(config, listeners, async {
            stopped.await.ok();
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("a valid address")
            .connect_lazy();
        nodes.push(TestNode {
            id,
            address,
            stop: Some(stop),
            task,
            channel,
        });
    }
    let cluster = TestCluster { nodes, _dir: dir };
    cluster.leader().await;
    cluster
}

impl TestCluster {
    fn node(&self, id: u64) -> &TestNode {
        &self.nodes[usize::try_from(id - 1).expect("an id")]
    }

    /// The leader every node agrees on, once they do (bounded wait).
    async fn leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut leaders = Vec::new();
            for node in &self.nodes {
                if node.stop.is_none() {
                    continue;
                }
                match node.cluster().status(pb::StatusRequest {}).await {
                    Ok(status) => leaders.push(status.into_inner().leader_id),
                    Err(_) => leaders.push(0),
                }
            }
            if let Some(&first) = leaders.first()
                && first != 0
                && leaders.iter().all(|leader| *leader == first)
            {
                return first;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within 60 s: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A node that is not the leader.
    async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        self.nodes
            .iter()
            .map(|node| node.id)
            .find(|id| *id != leader)
            .expect("a follower")
    }

    async fn stop_all(mut self) {
        for node in &mut self.nodes {
            if node.stop.is_some() {
                node.stop().await;
            }
        }
    }
}

fn event(data: &str) -> pb::EventData {
    pb::EventData {
        id: String::new(),
        r#type: "T".to_string(),
        content_type: "text/plain".to_string(),
        data: data.as_bytes().to_vec().into(),
        metadata: Default::default(),
    }
}

fn append(stream: &str, events: Vec<pb::EventData>) -> pb::AppendRequest {
    pb::AppendRequest {
        stream: stream.to_string(),
        events,
        expected_version: None,
        idempotency_key: None,
    }
}

fn read_stream(stream: &str) -> pb::ReadRequest {
    pb::ReadRequest {
        filter: None,
        target: Some(pb::read_request::Target::Stream(stream.to_string())),
        from: None,
        max_count: 0,
        direction: pb::Direction::Forward as i32,
        consistency: pb::Consistency::Linearizable as i32,
        at_least_position: 0,
        from_timestamp_ms: None,
    }
}

fn metadata_value(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_appends_and_passes_the_leaders_answers_on() {
    let cluster = start_cluster(3, |_| {}).await;
    let follower = cluster.node(cluster.follower().await);

    // Acknowledged through the follower, readable on it.
    let appended = follower
        .event_log()
        .append(append("orders-1", vec![event("a"), event("b")]))
        .await
        .expect("appended through a follower")
        .into_inner();
    assert_eq!((appended.first_position, appended.last_position), (1, 2));
    let leader = cluster.leader().await;
    assert_eq!(
        appended.receipt.expect("a receipt").leader_id,
        leader,
        "the leader appended it"
    );
    let read = follower
        .event_log()
        .read(read_stream("orders-1"))
        .await
        .expect("read on the follower")
        .into_inner();
    assert_eq!(read.events.len(), 2);
    assert_eq!(read.served_by, follower.id);

    // A wrong expected version, decided on the leader, reaches the client through the
    // follower with the actual version.
    let mut conflicting = append("orders-1", vec![event("c")]);
    conflicting.expected_version = Some(1);
    let status = follower
        .event_log()
        .append(conflicting)
        .await
        .expect_err("wrong expected version");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        metadata_value(&status, metadata::ACTUAL_VERSION).as_deref(),
        Some("2")
    );
    assert!(
        status.message().contains("version 2"),
        "{}",
        status.message()
    );

    // A key reused for another request, likewise.
    let mut keyed = append("orders-2", vec![event("x")]);
    keyed.idempotency_key = Some("key-1".to_string());
    follower
        .event_log()
        .append(keyed.clone())
        .await
        .expect("keyed append");
    let retried = follower
        .event_log()
        .append(keyed.clone())
        .await
        .expect("a retry is answered")
        .into_inner();
    assert!(retried.deduplicated);
    keyed.events = vec![event("y")];
    let status = follower
        .event_log()
        .append(keyed)
        .await
        .expect_err("key reused");
    assert_eq!(status.code(), Code::AlreadyExists);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes_on_any_node() {
    let cluster = start_cluster(3, |config| config.limits.max_event_bytes = 1_000).await;
    let follower = cluster.node(cluster.follower().await);
    let mut client = follower.event_log();

    let status = client
        .append(append("has space", vec![event("a")]))
        .await
        .expect_err("bad name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("stream name"),
        "{}",
        status.message()
    );

    let status = client
        .append(append("s", vec![]))
        .await
        .expect_err("no events");
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = client
        .append(append("s", vec![event(&"x".repeat(2_000))]))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("1000 bytes"),
        "{}",
        status.message()
    );

    let mut unknown = read_stream("s");
    unknown.consistency = 42;
    let status = client.read(unknown).await.expect_err("unknown consistency");
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut too_many = read_stream("s");
    too_many.max_count = 1_000_000;
    let status = client.read(too_many).await.expect_err("page too large");
    assert_eq!(status.code(), Code::ResourceExhausted);

    let status = client
        .get_stream(pb::GetStreamRequest {
            stream: "nothing-here".to_string(),
            consistency: pb::Consistency::Linearizable as i32,
            at_least_position: 0,
        })
        .await
        .expect_err("no such stream");
    assert_eq!(status.code(), Code::NotFound);
    cluster.stop_all().await;
}

/// A leader cut off from its quorum takes no write once its lease has run out: the append is
/// proposed again while leadership might settle, then refused with a definite UNAVAILABLE
/// (nothing appended) well before the request deadline, rather than left to time out with an
/// unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_refuses_appends_definitely_after_settling() {
    let mut cluster = start_cluster(3, |config| config.request_timeout_ms = 20_000).await;
    let leader = cluster.leader().await;
    for node in &mut cluster.nodes {
        if node.id != leader {
            node.stop().await;
        }
    }
    let leader = cluster.node(leader);
    // Wait until the leader knows it has lost its lease (the election timeout max).
    let lease = Duration::from_millis(NodeConfig::default().election_timeout_max_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = leader
            .cluster()
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let lost = status
            .millis_since_quorum_ack
            .is_none_or(|age| age > lease.as_millis() as u64 * 2);
        if status.role != "leader" || lost {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = tokio::time::Instant::now();
    let status = leader
        .event_log()
        .append(append("s", vec![event("a")]))
        .await
        .expect_err("no quorum: refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}, not left to the 20 s deadline",
        started.elapsed()
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving_once_the_node_has_caught_up() {
    let cluster = start_cluster(3, |_| {}).await;
    for node in &cluster.nodes {
        let mut health = tonic_health::pb::health_client::HealthClient::new(node.channel.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "evlog.v1.EventLog".to_string(),
                })
                .await
                .expect("health answers")
                .into_inner();
            if answer.status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} not serving after 30 s",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = node
            .cluster()
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert!(status.serving, "node {}: {status:?}", node.id);
        assert_eq!(status.not_serving_reason, "");
        assert!(!node.address.is_empty());
    }
    cluster.stop_all().await;
}

/// Appends take their bytes from the node's budget before their message is read: past it
/// they are refused at once as busy (nothing appended), never queued; the rest are appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_past_the_bytes_in_flight_are_refused_as_busy() {
    let cluster = start_cluster(3, |config| {
        config.limits.max_append_bytes = 1 << 20;
        config.max_append_bytes_in_flight = 2 << 20;
    })
    .await;
    let leader = cluster.node(cluster.leader().await);
    let big = || pb::EventData {
        data: vec![7u8; (1 << 20) - 1_000].into(),
        ..event("")
    };
    let calls = (0..32).map(|index| {
        // One connection each, so the calls arrive together.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", leader.address))
            .expect("a valid address")
            .connect_lazy();
        let request = append(&format!("big-{index}"), vec![big()]);
        async move {
            EventLogClient::new(channel)
                .max_encoding_message_size(4 << 20)
                .append(request)
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let appended = results.iter().filter(|result| result.is_ok()).count();
    let busy: Vec<&tonic::Status> = results
        .iter()
        .filter_map(|result| result.as_ref().err())
        .collect();
    for status in &busy {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("node busy"),
            "{}",
            status.message()
        );
    }
    assert!(appended >= 1, "some appends went through");
    assert!(
        !busy.is_empty(),
        "32 appends of 1 MiB at once into a 2 MiB budget: some busy"
    );
    // Exactly the appended ones are in the log.
    let mut all = read_stream("x");
    all.target = Some(pb::read_request::Target::All(pb::AllStreams {}));
    all.max_count = 100;
    let read = leader
        .event_log()
        .max_decoding_message_size(64 << 20)
        .read(all)
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.events.len(), appended);
    cluster.stop_all().await;
}

/// A read page holds at most `max_read_bytes` of events (at least one), and says where to go
/// on; paging reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_page_stops_at_its_byte_limit() {
    let cluster = start_cluster(3, |config| {
        config.limits.max_event_bytes = 2_000;
        config.limits.max_read_bytes = 5_000;
    })
    .await;
    let node = cluster.node(cluster.follower().await);
    for _ in 0..5 {
        let events = (0..2).map(|_| event(&"y".repeat(1_000))).collect();
        node.event_log()
            .append(append("pages", events))
            .await
            .expect("appended");
    }
    let mut request = read_stream("pages");
    request.max_count = 100;
    let mut versions = Vec::new();
    let mut pages = 0;
    loop {
        let page = node
            .event_log()
            .read(request.clone())
            .await
            .expect("read")
            .into_inner();
        pages += 1;
        assert!(
            page.events.len() <= 4,
            "a page of {} events of 1 KB passes 5,000 bytes",
            page.events.len()
        );
        versions.extend(page.events.iter().map(|event| event.stream_version));
        match page.next_from {
            Some(next) => request.from = Some(next),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
    assert!(
        pages >= 3,
        "10 events of 1 KB take several pages of 5,000 bytes"
    );
    cluster.stop_all().await;
}

/// Past `max_pending_appends` appends proposed and not yet answered, the leader refuses more
/// at once as busy (`RESOURCE_EXHAUSTED`, `evlog-busy`) and does nothing with them; the others
/// are appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_too_many_appends_pending_refuses_more_as_busy() {
    let cluster = start_cluster(3, |config| {
        config.limits.max_pending_appends = 2;
    })
    .await;
    let leader = cluster.node(cluster.leader().await);
    let calls: Vec<_> = (0..64)
        .map(|n| {
            let mut client = leader.event_log();
            tokio::spawn(async move {
                let stream = format!("pending-{n}");
                let result = client.append(append(&stream, vec![event("x")])).await;
                (stream, result)
            })
        })
        .collect();
    let (mut appended, mut refused) = (Vec::new(), Vec::new());
    for call in calls {
        let (stream, result) = call.await.expect("a call");
        match result {
            Ok(_) => appended.push(stream),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                assert!(status.metadata().get(metadata::BUSY).is_some(), "{status}");
                refused.push(stream);
            }
        }
    }
    assert!(
        !refused.is_empty(),
        "64 appends at once, 2 pending at most: none refused"
    );
    assert!(!appended.is_empty(), "none appended");
    for stream in &appended {
        let page = leader
            .event_log()
            .read(read_stream(stream))
            .await
            .expect("read")
            .into_inner();
        assert_eq!(page.events.len(), 1, "{stream} was acknowledged");
    }
    for stream in &refused {
        let page = leader
            .event_log()
            .read(read_stream(stream))
            .await
            .expect("read")
            .into_inner();
        assert!(page.events.is_empty(), "{stream} was refused, yet appended");
    }
    cluster.stop_all().await;
}
