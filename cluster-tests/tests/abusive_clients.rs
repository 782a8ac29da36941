//! A node survives any client. One client floods the leader with 64 concurrent 4 MiB appends
//! over one HTTP/2 connection, again and again, and never reads an answer; a thousand idle
//! connections sit open beside it. Meanwhile a normal client appends small events: it keeps
//! getting acknowledgements, every node stays under 512 MiB of memory, nothing crashes, and
//! every acknowledged append is on every node.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use evlog_cluster_tests::proto::{AppendRequest, Consistency, EventData};
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, timeouts};
use tokio::net::TcpStream;

/// How long the abuse lasts.
const ABUSE: Duration = Duration::from_secs(10);
/// Concurrent appends per round of the flood, and their size.
const FLOOD_CALLS: usize = 64;
const EVENT_BYTES: usize = (1 << 20) - 1_024;
/// Idle connections held open.
const IDLE_CONNECTIONS: usize = 1_000;
/// The memory no node may pass.
const MAX_RSS_BYTES: u64 = 512 << 20;

/// A gRPC frame: flag, length, message.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len()).expect("fits").to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

/// Rounds of `FLOOD_CALLS` 4 MiB appends on one HTTP/2 connection, until `stop`; the
/// answers are kept and never read. Returns how many calls were sent.
async fn flood(address: String, stop: Arc<AtomicBool>) -> usize {
    let tcp = TcpStream::connect(&address)
        .await
        .expect("the flood connects");
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .expect("the HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let data = Bytes::from(vec![0xABu8; EVENT_BYTES]);
    let mut never_read = Vec::new();
    let mut sent = 0;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) && round < 100 {
        for call in 0..FLOOD_CALLS {
            let append = AppendRequest {
                stream: format!("flood-{round}-{call}"),
                events: (0..4)
                    .map(|n| EventData {
                        id: format!("flood-{round}-{call}-{n}"),
                        r#type: "Flood".to_string(),
                        content_type: String::new(),
                        data: data.clone(),
                        metadata: Default::default(),
                    })
                    .collect(),
                expected_version: None,
                idempotency_key: None,
            };
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("http://{address}/evlog.v1.EventLog/Append"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("a request");
            // Bounded: a connection that takes no more streams ends the flood.
            let Ok(Ok(mut ready)) =
                tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
            else {
                return sent;
            };
            let Ok((response, mut body)) = ready.send_request(request, false) else {
                return sent;
            };
            if body.send_data(grpc_frame(&append), true).is_err() {
                return sent;
            }
            never_read.push((response, body));
            sent += 1;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_and_idle_connections_do_not_stop_a_normal_client() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let address = cluster.address(leader);

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(
            TcpStream::connect(&address)
                .await
                .expect("an idle connection opens"),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = tokio::spawn(flood(address.clone(), Arc::clone(&stop)));

    let mut peak_rss: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut writer = RecordingWriter::new("normal");
    let started = Instant::now();
    let mut last_ack = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut acked = 0;
    while started.elapsed() < ABUSE {
        writer
            .append(&cluster, leader, &format!("normal-{}", acked % 4), 1)
            .await;
        acked += 1;
        longest_gap = longest_gap.max(last_ack.elapsed());
        last_ack = Instant::now();
        for id in cluster.node_ids() {
            if let Some(rss) = cluster.rss_bytes(id) {
                let peak = peak_rss.entry(id).or_default();
                *peak = (*peak).max(rss);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.await.expect("the flood task ends");
    drop(idle);
    let peak = peak_rss.values().copied().max().unwrap_or(0);
    let peaks: Vec<String> = peak_rss
        .iter()
        .map(|(id, rss)| {
            format!(
                "node {id}{}: {} MiB",
                if *id == leader { " (leader)" } else { "" },
                rss >> 20
            )
        })
        .collect();
    eprintln!(
        "abuse: {sent} flood calls sent, {acked} normal appends acknowledged, longest gap \
         {longest_gap:?}, peak RSS {}",
        peaks.join(", ")
    );
    assert!(sent >= FLOOD_CALLS, "the flood sent {sent} calls");
    assert!(acked >= 20, "only {acked} normal appends in {ABUSE:?}");
    assert!(
        longest_gap < Duration::from_secs(5),
        "the normal client waited {longest_gap:?} for an acknowledgement"
    );
    assert!(
        peak < MAX_RSS_BYTES,
        "a node passed {} MiB of memory: {}",
        MAX_RSS_BYTES >> 20,
        peaks.join(", ")
    );
    assert!(cluster.exited_nodes().is_empty(), "a node crashed");

    // Every acknowledged normal append is on every node, once.
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let acknowledged: BTreeSet<String> = writer
        .history()
        .operations()
        .iter()
        .flat_map(|operation| operation.events.iter().map(|event| event.id.clone()))
        .collect();
    for (id, log) in cluster
        .read_all_from_live_nodes(Consistency::Linearizable)
        .await
    {
        let normal: Vec<String> = log
            .iter()
            .filter(|event| event.stream.starts_with("normal-"))
            .map(|event| event.id.clone())
            .collect();
        assert_eq!(normal.len(), acknowledged.len(), "node {id}: once each");
        assert_eq!(
            normal.into_iter().collect::<BTreeSet<_>>(),
            acknowledged,
            "node {id} holds every acknowledged normal append"
        );
    }
}

/// Opens appends that declare `declared` bytes each and send only the 5-byte prefix, then
/// nothing, each on a connection of its own: the calls are returned, kept open.
async fn stall(
    address: &str,
    calls: usize,
    declared: u32,
) -> Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)> {
    let mut open = Vec::new();
    for _ in 0..calls {
        let tcp = TcpStream::connect(address).await.expect("connects");
        let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}/evlog.v1.EventLog/Append"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a request");
        let mut ready = tokio::time::timeout(Duration::from_secs(5), client.ready())
            .await
            .expect("a stream in time")
            .expect("the connection takes streams");
        let (response, mut body) = ready.send_request(request, false).expect("sent");
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&declared.to_be_bytes());
        body.send_data(Bytes::from(prefix), false)
            .expect("prefix sent");
        open.push((response, body));
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_never_send_their_message_give_their_bytes_back() {
    // 6 MiB in flight, a 1 s request timeout: a stalled append holds its bytes for 2 s.
    let options = ClusterOptions {
        request_timeout_ms: Some(1_000),
        extra_args: vec![
            "--max-append-bytes-in-flight".to_owned(),
            (6 << 20).to_string(),
            "--max-append-bytes".to_owned(),
            (1 << 20).to_string(),
        ],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let address = cluster.address(leader);
    // Five 1 MiB declarations take 5 of the 6 MiB, 64 KiB ones the rest (and the small
    // appends' reserve).
    let large = stall(&address, 5, 1 << 20).await;
    let small = stall(&address, 90, 64 << 10).await;
    let mut client = cluster.client(leader);
    // 100 KiB: too large for the small appends' reserve, so it needs room in the budget.
    let append = AppendRequest {
        stream: "normal".to_owned(),
        events: vec![evlog_cluster_tests::event("n1", "T", vec![b'x'; 100 << 10])],
        expected_version: None,
        idempotency_key: None,
    };
    let refused = evlog_cluster_tests::wait_for(
        Duration::from_secs(30),
        "the stalled calls to hold the budget",
        async || match client.append(append.clone()).await {
            Err(status) => Ok(status),
            Ok(_) => Err("an append was admitted".to_owned()),
        },
    )
    .await;
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.metadata().get("evlog-busy").is_some());
    // The stalled calls are cut off after twice the request timeout; their bytes come back
    // while their connections stay open.
    let cut = Instant::now();
    evlog_cluster_tests::wait_for(
        Duration::from_secs(30),
        "an append admitted again",
        async || match client.append(append.clone()).await {
            Ok(_) => Ok(()),
            Err(status) => Err(status.to_string()),
        },
    )
    .await;
    eprintln!(
        "stalled appends gave their bytes back after {:?}",
        cut.elapsed()
    );
    drop((large, small));
}
