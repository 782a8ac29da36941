//! The client API beyond append and read: stream summaries and listing, seek by time, and what
//! the node does with bad input and hostile clients (every violation gets its own status and a
//! message, nothing is partly written, and garbage, malformed protobuf or a client that hangs up
//! mid-call leave the node serving).

use std::time::Duration;
use std::time::SystemTime;

use evlog_cluster_tests::proto::{
    AllStreams, AppendRequest, Consistency, Direction, EventData, GetStreamRequest,
    ListStreamsRequest, ReadRequest, read_request,
};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, timeouts, wait_until};
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tonic::Code;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

fn append(stream: &str, events: Vec<EventData>) -> AppendRequest {
    AppendRequest {
        stream: stream.to_string(),
        events,
        expected_version: None,
        idempotency_key: None,
    }
}

fn read_stream(stream: &str) -> ReadRequest {
    ReadRequest {
        filter: None,
        target: Some(read_request::Target::Stream(stream.to_string())),
        from: None,
        max_count: 0,
        direction: Direction::Forward as i32,
        consistency: Consistency::Linearizable as i32,
        at_least_position: 0,
        from_timestamp_ms: None,
    }
}

fn read_all() -> ReadRequest {
    ReadRequest {
        target: Some(read_request::Target::All(AllStreams {})),
        ..read_stream("unused")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_summarized_listed_and_sought_by_time() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();

    // Two generations of appends, the second recorded strictly later than the first.
    let mut first_generation = Vec::new();
    for (index, stream) in ["orders-1", "orders-2", "users-1"].iter().enumerate() {
        let response = cluster
            .append_request(
                nodes[index % nodes.len()],
                append(stream, vec![event(format!("{stream}-a"), "Created", "a")]),
            )
            .await
            .expect("append");
        first_generation.push(response);
    }
    let first_page = cluster.read(nodes[0], read_all()).await.expect("read all");
    let first_time = first_page
        .events
        .iter()
        .map(|e| e.timestamp_ms)
        .max()
        .expect("three events");
    wait_until(
        Duration::from_secs(5),
        "the wall clock to pass the first generation's timestamp",
        async || now_ms() > first_time,
    )
    .await;
    let second = cluster
        .append_request(
            nodes[1],
            append(
                "orders-1",
                vec![
                    event("orders-1-b", "Paid", "b"),
                    event("orders-1-c", "Shipped", "c"),
                ],
            ),
        )
        .await
        .expect("append");
    assert_eq!(second.stream_version, 3);

    // GetStream on every node.
    for &node in &nodes {
        let mut client = cluster.client(node);
        let summary = client
            .get_stream(GetStreamRequest {
                stream: "orders-1".to_string(),
                consistency: Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .expect("get stream")
            .into_inner();
        let stream = summary.stream.expect("a summary");
        assert_eq!(stream.stream, "orders-1");
        assert_eq!(stream.version, 3);
        assert_eq!(stream.first_position, first_generation[0].first_position);
        assert_eq!(stream.last_position, second.last_position);
        assert_eq!(summary.served_by, node);
        assert!(summary.head_position >= second.last_position);

        let missing = client
            .get_stream(GetStreamRequest {
                stream: "orders-404".to_string(),
                consistency: Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .expect_err("a stream with no events");
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        assert!(missing.message().contains("orders-404"), "{missing:?}");
    }

    // ListStreams by prefix, one per page.
    let mut client = cluster.client(nodes[2]);
    let mut names = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = client
            .list_streams(ListStreamsRequest {
                prefix: "orders-".to_string(),
                after: after.clone(),
                max_count: 1,
                consistency: Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .expect("list streams")
            .into_inner();
        names.extend(page.streams.iter().map(|s| (s.stream.clone(), s.version)));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        names,
        vec![("orders-1".to_string(), 3), ("orders-2".to_string(), 1)]
    );

    // Seek by time: from the second generation's time, only its events; backward from the
    // first generation's time, only the first generation.
    let second_page = cluster
        .read(
            nodes[2],
            ReadRequest {
                from_timestamp_ms: Some(first_time + 1),
                ..read_all()
            },
        )
        .await
        .expect("seek forward");
    let positions: Vec<u64> = second_page.events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (second.first_position..=second.last_position).collect::<Vec<_>>()
    );
    let stream_page = cluster
        .read(
            nodes[0],
            ReadRequest {
                from_timestamp_ms: Some(first_time + 1),
                ..read_stream("orders-1")
            },
        )
        .await
        .expect("seek a stream forward");
    let versions: Vec<u64> = stream_page
        .events
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, vec![2, 3]);
    let backward = cluster
        .read(
            nodes[1],
            ReadRequest {
                from_timestamp_ms: Some(first_time),
                direction: Direction::Backward as i32,
                ..read_all()
            },
        )
        .await
        .expect("seek backward");
    let positions: Vec<u64> = backward.events.iter().map(|e| e.position).collect();
    let mut expected: Vec<u64> = first_generation.iter().map(|r| r.first_position).collect();
    expected.reverse();
    assert_eq!(positions, expected);

    let both = cluster
        .read(
            nodes[0],
            ReadRequest {
                from: Some(1),
                from_timestamp_ms: Some(1),
                ..read_all()
            },
        )
        .await
        .expect_err("from and from_timestamp_ms together");
    assert_eq!(both.code(), Code::InvalidArgument, "{both:?}");
}

/// Sends `body` as the raw message of a gRPC call to `path`.
async fn raw_call(
    cluster: &Cluster,
    node: u64,
    path: &'static str,
    body: Vec<u8>,
) -> tonic::Status {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address(node)))
            .expect("a loopback URI")
            .connect()
            .await
            .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("the channel is ready");
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(10));
    grpc.unary::<_, Vec<u8>, _>(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        raw::RawCodec,
    )
    .await
    .expect_err("a malformed message is refused")
}

mod raw {
    //! A codec that sends and receives message bytes as they are.
    use bytes::Buf;
    use bytes::BufMut;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    pub struct RawCodec;
    pub struct Raw;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut item = vec![0; src.remaining()];
            src.copy_to_slice(&mut item);
            Ok(Some(item))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_hostile_clients_get_clear_errors_and_leave_the_node_healthy() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let nodes = cluster.node_ids();
    let ok = || vec![event("", "T", "x")];
    let big = |bytes: usize| vec![event("", "T", vec![b'x'; bytes])];

    // Every violation, on a follower and on the leader: its status, and a message that names
    // the problem.
    let cases: Vec<(&str, AppendRequest, Code, &str)> = vec![
        (
            "empty stream name",
            append("", ok()),
            Code::InvalidArgument,
            "stream",
        ),
        (
            "reserved name",
            append("$system", ok()),
            Code::InvalidArgument,
            "$",
        ),
        (
            "bad character",
            append("a b", ok()),
            Code::InvalidArgument,
            "stream",
        ),
        (
            "name too long",
            append(&"s".repeat(201), ok()),
            Code::InvalidArgument,
            "200",
        ),
        (
            "no events",
            append("s", vec![]),
            Code::InvalidArgument,
            "at least one event",
        ),
        (
            "event too large",
            append("s", big((1 << 20) + 1)),
            Code::ResourceExhausted,
            "limit",
        ),
        (
            "too many events",
            append("s", (0..1_001).map(|_| event("", "T", "x")).collect()),
            Code::ResourceExhausted,
            "1000",
        ),
        (
            "append too large",
            append(
                "s",
                (0..5)
                    .map(|_| event("", "T", vec![b'x'; 900_000]))
                    .collect(),
            ),
            Code::ResourceExhausted,
            "limit",
        ),
        (
            "idempotency key too long",
            AppendRequest {
                idempotency_key: Some("k".repeat(201)),
                ..append("s", ok())
            },
            Code::InvalidArgument,
            "key",
        ),
    ];
    for &node in &nodes {
        for (name, request, code, words) in &cases {
            let status = cluster
                .append_request(node, request.clone())
                .await
                .expect_err(name);
            assert_eq!(status.code(), *code, "{name} on node {node}: {status:?}");
            assert!(
                status.message().contains(words),
                "{name} on node {node}: the message {:?} should mention {words:?}",
                status.message()
            );
        }
    }
    let read_cases: Vec<(&str, ReadRequest, Code)> = vec![
        (
            "no target",
            ReadRequest {
                target: None,
                ..read_all()
            },
            Code::InvalidArgument,
        ),
        (
            "max_count over the limit",
            ReadRequest {
                max_count: 10_001,
                ..read_all()
            },
            Code::ResourceExhausted,
        ),
        (
            "unknown consistency",
            ReadRequest {
                consistency: 9,
                ..read_all()
            },
            Code::InvalidArgument,
        ),
        (
            "unknown direction",
            ReadRequest {
                direction: 7,
                ..read_all()
            },
            Code::InvalidArgument,
        ),
        (
            "bad stream name",
            read_stream("no spaces please"),
            Code::InvalidArgument,
        ),
    ];
    for (name, request, code) in &read_cases {
        let status = cluster
            .read(nodes[1], request.clone())
            .await
            .expect_err(name);
        assert_eq!(status.code(), *code, "{name}: {status:?}");
        assert!(!status.message().is_empty(), "{name}: an empty message");
    }

    // The refused appends and reads left every log as it was: empty.
    for &node in &nodes {
        let page = cluster
            .read(node, read_all())
            .await
            .expect("read after bad input");
        assert!(
            page.events.is_empty() && page.head_position == 0,
            "node {node}: refused appends wrote {} events (head {})",
            page.events.len(),
            page.head_position
        );
    }

    // Malformed and truncated protobuf.
    let valid = append("hostile", ok()).encode_to_vec();
    let truncated = valid[..valid.len() - 3].to_vec();
    for (name, body) in [
        ("truncated", truncated),
        ("garbage", vec![0xff; 64]),
        (
            "wrong field types",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
    ] {
        let status = raw_call(&cluster, nodes[0], "/evlog.v1.EventLog/Append", body).await;
        eprintln!("{name} protobuf: {status:?}");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains("protobuf"), "{name}: {status:?}");
    }

    // Garbage on the port, and a connection that says the HTTP/2 preface and then hangs up.
    for payload in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x5a; 4096],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00".to_vec(),
    ] {
        let mut socket = tokio::net::TcpStream::connect(cluster.address(nodes[1]))
            .await
            .expect("connect");
        socket.write_all(&payload).await.ok();
        socket.shutdown().await.ok();
        let mut answer = Vec::new();
        // The node answers or closes; either way within the deadline.
        let started = std::time::Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
            .await
            .is_ok();
        eprintln!(
            "garbage of {} bytes: {} bytes back, closed by the node: {closed} after {:?}",
            payload.len(),
            answer.len(),
            started.elapsed()
        );
    }

    // Clients that give up mid-call: the append's future is dropped after its request went
    // out (an HTTP/2 reset of the stream).
    for index in 0..50 {
        let mut client = cluster.client(nodes[index % nodes.len()]);
        let request = append(
            "abandoned",
            vec![event(format!("abandoned-{index}"), "T", "x")],
        );
        let _ = tokio::time::timeout(Duration::from_millis(1), client.append(request)).await;
    }

    // Nothing of the refused appends was written, and every node still serves.
    for &node in &nodes {
        for stream in ["s", "hostile"] {
            let page = cluster
                .read(node, read_stream(stream))
                .await
                .expect("read after bad input");
            assert!(
                page.events.is_empty(),
                "node {node}: stream {stream} holds {} events of refused appends",
                page.events.len()
            );
        }
        let response = cluster
            .append_request(node, append("healthy", ok()))
            .await
            .expect("an append after the hostile clients");
        assert!(response.first_position >= 1);
    }
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    let first = logs.first().expect("three logs").1.clone();
    for (node, log) in &logs {
        assert_eq!(log, &first, "node {node} holds a different log");
        let abandoned = log.iter().filter(|e| e.stream == "abandoned").count();
        assert!(abandoned <= 50, "more abandoned appends than were sent");
    }
}

/// A forward read of `all` with a filter returns only matching events, in log order, a page at
/// a time through `next_from`; a filter elsewhere (a stream, backward) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_all_may_be_filtered_by_stream_prefix_and_type() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let mut client = cluster.client(leader);
    let mut expected = Vec::new();
    for n in 0..12u32 {
        let (stream, event_type) = match n % 3 {
            0 => (format!("orders-{}", n % 2), "Placed"),
            1 => (format!("payments-{n}"), "Paid"),
            _ => (format!("orders-{}", n % 2), "Shipped"),
        };
        let id = format!("00000000-0000-4000-8000-{:012}", 900 + n);
        let appended = client
            .append(append(&stream, vec![event(id, event_type, "{}")]))
            .await
            .expect("an append")
            .into_inner();
        if stream.starts_with("orders-") && event_type == "Placed" {
            expected.push(appended.last_position);
        }
    }
    // Pages of one event: each holds the next match, and says where to go on.
    let filter = evlog_cluster_tests::proto::SubscribeFilter {
        stream_prefixes: vec!["orders-".to_string()],
        event_types: vec!["Placed".to_string()],
    };
    let mut seen = Vec::new();
    let mut from = None;
    for _ in 0..20 {
        let page = client
            .read(ReadRequest {
                filter: Some(filter.clone()),
                from,
                max_count: 1,
                ..read_all()
            })
            .await
            .expect("a filtered read")
            .into_inner();
        for event in &page.events {
            assert!(event.stream.starts_with("orders-") && event.r#type == "Placed");
            seen.push(event.position);
        }
        match page.next_from {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // Prefixes alone: every orders- event.
    let orders = client
        .read(ReadRequest {
            filter: Some(evlog_cluster_tests::proto::SubscribeFilter {
                stream_prefixes: vec!["orders-".to_string()],
                event_types: vec![],
            }),
            ..read_all()
        })
        .await
        .expect("a filtered read")
        .into_inner();
    assert_eq!(orders.events.len(), 8);
    assert!(orders.next_from.is_none(), "the page reached the end");

    for (what, request) in [
        (
            "a stream",
            ReadRequest {
                filter: Some(filter.clone()),
                ..read_stream("orders-0")
            },
        ),
        (
            "backward",
            ReadRequest {
                filter: Some(filter.clone()),
                direction: Direction::Backward as i32,
                ..read_all()
            },
        ),
    ] {
        let status = client.read(request).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status}");
    }
}
