//! Consumer groups against real clusters: every matching event is settled exactly once and an
//! acked one never comes back; KEYED keeps one unsettled event per stream, in version order;
//! a poison event is delivered `max_deliveries` times with its backoff, then dead-lettered
//! with its history while its stream moves on; a settlement of an attempt redelivered since is
//! stale; lag with no member connected; redrive runs once per id; a leader kill redelivers at
//! most what was in flight; bad requests get their own status.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use evlog_client::ClientOptions;
use evlog_client::ConsumeOptions;
use evlog_client::EvlogClient;
use evlog_client::SettleStatus;
use evlog_cluster_tests::proto::{
    AllStreams, ConsumerInfo, ConsumerSettings, CreateConsumerRequest, DispatchMode,
    GetConsumerRequest, ListDeadLettersRequest, RedriveRequest, create_consumer_request,
    redrive_request,
};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, timeouts, wait_for};
use tonic::Code;

/// How long a group may take to settle what a test waits for.
const SETTLE: Duration = Duration::from_secs(60);

fn client(cluster: &Cluster, nodes: &[u64]) -> EvlogClient {
    let endpoints: Vec<String> = nodes.iter().map(|id| cluster.address(*id)).collect();
    EvlogClient::new(&endpoints, ClientOptions::default()).expect("client")
}

fn group(name: &str, mode: DispatchMode, settings: ConsumerSettings) -> CreateConsumerRequest {
    CreateConsumerRequest {
        name: name.to_string(),
        target: Some(create_consumer_request::Target::All(AllStreams {})),
        filter: None,
        start: None,
        settings: Some(ConsumerSettings {
            mode: mode as i32,
            ..settings
        }),
    }
}

async fn create(
    client: &EvlogClient,
    request: CreateConsumerRequest,
) -> Result<ConsumerInfo, tonic::Status> {
    client
        .consumers_call(request, |mut grpc, request| async move {
            grpc.create(request).await
        })
        .await
}

async fn get(client: &EvlogClient, name: &str) -> Result<ConsumerInfo, tonic::Status> {
    client
        .consumers_call(
            GetConsumerRequest {
                name: name.to_string(),
            },
            |mut grpc, request| async move { grpc.get(request).await },
        )
        .await
}

/// Waits until the group has settled `total` events and has nothing left.
async fn wait_settled(client: &EvlogClient, name: &str, acked: u64, dead: u64) -> ConsumerInfo {
    wait_for(SETTLE, "the group to settle everything", async || {
        let info = get(client, name)
            .await
            .map_err(|status| status.to_string())?;
        if info.acked_total == acked && info.dead_lettered_total == dead && info.lag_events == 0 {
            Ok(info)
        } else {
            Err(format!(
                "acked {} of {acked}, dead-lettered {} of {dead}, lag {}",
                info.acked_total, info.dead_lettered_total, info.lag_events
            ))
        }
    })
    .await
}

/// A cluster with a SHARED group `name` (`ack_wait_ms`, redelivered at once) over one event,
/// an admin client, and a member of the group on the leader.
async fn one_event_shared_group(
    name: &str,
    ack_wait_ms: u32,
) -> (Cluster, EvlogClient, evlog_client::Consumer) {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let admin = client(&cluster, &cluster.node_ids());
    create(
        &admin,
        group(
            name,
            DispatchMode::Shared,
            ConsumerSettings {
                ack_wait_ms,
                backoff_ms: vec![0],
                ..ConsumerSettings::default()
            },
        ),
    )
    .await
    .expect("create");
    cluster
        .append(leader, "jobs", vec![event("only", "T", "x")])
        .await
        .expect("append");
    let consumer = client(&cluster, &[leader]).consume(name, ConsumeOptions::default());
    (cluster, admin, consumer)
}

async fn append_spread(cluster: &Cluster, node: u64, streams: usize, per_stream: usize) {
    append_rounds(cluster, node, streams, 0..per_stream).await;
}

async fn append_rounds(
    cluster: &Cluster,
    node: u64,
    streams: usize,
    rounds: std::ops::Range<usize>,
) {
    for round in rounds {
        for stream in 0..streams {
            cluster
                .append(
                    node,
                    &format!("orders-{stream}"),
                    vec![event(
                        format!("e-{stream}-{round}"),
                        "Placed",
                        format!("{round}"),
                    )],
                )
                .await
                .expect("append");
        }
    }
}

/// What the members saw, checked as it happens.
#[derive(Default)]
struct Seen {
    /// Streams with a delivery out (KEYED allows one).
    outstanding: HashMap<String, u64>,
    /// Per stream, the versions acked OK, in order.
    acked: BTreeMap<String, Vec<u64>>,
    /// Positions acked OK, and how often.
    acked_positions: BTreeMap<u64, u32>,
    deliveries: u64,
    violations: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_members_settle_every_event_once_one_per_stream_in_version_order() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    // Created and consumed through a follower too: it hands every call to the leader.
    let admin = client(&cluster, &[follower]);
    create(
        &admin,
        group("billing", DispatchMode::Keyed, ConsumerSettings::default()),
    )
    .await
    .expect("create");
    // Half before the members join, half while they work (new events of a stream with one
    // out must be held).
    append_rounds(&cluster, leader, 8, 0..12).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut members = Vec::new();
    for (index, node) in [leader, follower, follower].into_iter().enumerate() {
        let member = client(&cluster, &[node]);
        let seen = Arc::clone(&seen);
        members.push(tokio::spawn(async move {
            let mut consumer = member.consume(
                "billing",
                ConsumeOptions {
                    credit: 8,
                    member_name: format!("m{index}"),
                    ..ConsumeOptions::default()
                },
            );
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.expect("delivery");
                let stream = delivery.event.stream.clone();
                {
                    let mut seen = seen.lock().expect("lock");
                    seen.deliveries += 1;
                    if let Some(other) = seen
                        .outstanding
                        .insert(stream.clone(), delivery.event.stream_version)
                    {
                        let message = format!(
                            "two unsettled deliveries of {stream}: versions {other} and {} (attempt {}, member {index})",
                            delivery.event.stream_version, delivery.attempt
                        );
                        seen.violations.push(message);
                    }
                }
                // Work takes a moment, so deliveries overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                // Removed before the ack is sent: the next event of the stream may come as soon
                // as the ack commits.
                seen.lock().expect("lock").outstanding.remove(&stream);
                let status = delivery.ack().await.expect("ack");
                let mut seen = seen.lock().expect("lock");
                if status == SettleStatus::Ok {
                    seen.acked
                        .entry(stream)
                        .or_default()
                        .push(delivery.event.stream_version);
                    *seen
                        .acked_positions
                        .entry(delivery.event.position)
                        .or_default() += 1;
                }
            }
        }));
    }
    append_rounds(&cluster, leader, 8, 12..25).await;
    let info = wait_settled(&admin, "billing", 200, 0).await;
    for member in &members {
        member.abort();
    }
    let seen = seen.lock().expect("lock");
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert_eq!(seen.acked_positions.len(), 200, "every event acked");
    assert!(
        seen.acked_positions.values().all(|count| *count == 1),
        "each acked once"
    );
    for (stream, versions) in &seen.acked {
        assert_eq!(
            versions,
            &(1..=25).collect::<Vec<u64>>(),
            "{stream} acked in version order"
        );
    }
    assert_eq!(
        info.delivered_total, 200,
        "nothing was redelivered: {info:?}"
    );
    assert_eq!((info.in_flight, info.tracked, info.ack_floor), (0, 0, 201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_retried_with_backoff_then_dead_lettered_and_its_stream_moves_on() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let admin = client(&cluster, &cluster.node_ids());
    let backoff = [300u32, 600];
    create(
        &admin,
        group(
            "poison",
            DispatchMode::Keyed,
            ConsumerSettings {
                max_deliveries: 3,
                backoff_ms: backoff.to_vec(),
                ..ConsumerSettings::default()
            },
        ),
    )
    .await
    .expect("create");
    cluster
        .append(
            leader,
            "cart-1",
            vec![event("bad", "Poison", "x"), event("good", "Fine", "y")],
        )
        .await
        .expect("append");
    let member = client(&cluster, &[leader]);
    let mut consumer = member.consume("poison", ConsumeOptions::default());
    let mut poison_times = Vec::new();
    let mut later = None;
    while later.is_none() {
        let delivery = tokio::time::timeout(SETTLE, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("open")
            .expect("delivery");
        if delivery.event.r#type == "Poison" {
            poison_times.push((Instant::now(), delivery.attempt));
            assert_eq!(delivery.retry(None).await.expect("retry"), SettleStatus::Ok);
        } else {
            later = Some(Instant::now());
            delivery.ack().await.expect("ack");
        }
    }
    assert_eq!(
        poison_times
            .iter()
            .map(|(_, attempt)| *attempt)
            .collect::<Vec<_>>(),
        vec![1, 2, 3],
        "delivered exactly max_deliveries times before its stream moved on"
    );
    for (pair, gap) in poison_times.windows(2).zip(backoff) {
        let waited = pair[1].0 - pair[0].0;
        assert!(
            waited >= Duration::from_millis(u64::from(gap)),
            "redelivered after {waited:?}, before its backoff of {gap} ms"
        );
    }
    let info = wait_settled(&admin, "poison", 1, 1).await;
    assert_eq!(
        (
            info.delivered_total,
            info.redelivered_total,
            info.dead_letters
        ),
        (4, 2, 1)
    );
    let dead = admin
        .consumers_call(
            ListDeadLettersRequest {
                consumer: "poison".to_string(),
                from: 0,
                max_count: 10,
            },
            |mut grpc, request| async move { grpc.list_dead_letters(request).await },
        )
        .await
        .expect("dead letters");
    assert_eq!(dead.dead_letters.len(), 1);
    let letter = &dead.dead_letters[0];
    assert_eq!(
        letter.event.as_ref().map(|event| event.id.as_str()),
        Some("bad")
    );
    assert!(
        letter.reason.contains("delivered 3 times"),
        "{}",
        letter.reason
    );
    assert_eq!(
        letter
            .attempts
            .iter()
            .map(|attempt| attempt.outcome.as_str())
            .collect::<Vec<_>>(),
        vec!["retry", "retry", "retry"]
    );
    // Given back once per redrive id: delivered again from attempt 1.
    let redrive = |id: &str| RedriveRequest {
        consumer: "poison".to_string(),
        redrive_id: id.to_string(),
        selection: Some(redrive_request::Selection::All(100)),
    };
    let first = admin
        .consumers_call(redrive("r1"), |mut grpc, request| async move {
            grpc.redrive(request).await
        })
        .await
        .expect("redrive");
    let again = admin
        .consumers_call(redrive("r1"), |mut grpc, request| async move {
            grpc.redrive(request).await
        })
        .await
        .expect("redrive again");
    assert_eq!((first.redriven, first.repeated), (1, false));
    assert_eq!((again.redriven, again.repeated), (1, true));
    let delivery = tokio::time::timeout(SETTLE, consumer.next())
        .await
        .expect("the redriven event in time")
        .expect("open")
        .expect("delivery");
    assert_eq!((delivery.event.id.as_str(), delivery.attempt), ("bad", 1));
    delivery.ack().await.expect("ack");
    wait_settled(&admin, "poison", 2, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_of_an_attempt_redelivered_since_is_stale() {
    let (_cluster, admin, mut consumer) = one_event_shared_group("slow", 300).await;
    let first = consumer.next().await.expect("open").expect("delivery");
    assert_eq!(first.attempt, 1);
    // Not settled within ack_wait: delivered again.
    let second = tokio::time::timeout(SETTLE, consumer.next())
        .await
        .expect("redelivered in time")
        .expect("open")
        .expect("delivery");
    assert_eq!((second.event.id.as_str(), second.attempt), ("only", 2));
    assert_eq!(first.ack().await.expect("late ack"), SettleStatus::Stale);
    assert_eq!(second.ack().await.expect("ack"), SettleStatus::Ok);
    assert_eq!(second.ack().await.expect("ack again"), SettleStatus::Stale);
    let info = wait_settled(&admin, "slow", 1, 0).await;
    assert_eq!(info.redelivered_total, 1);
    // Deleted under its member: the member is told (revoked, NOT_FOUND) and stops.
    admin
        .consumers_call(
            evlog_cluster_tests::proto::DeleteConsumerRequest {
                name: "slow".to_string(),
            },
            |mut grpc, request| async move { grpc.delete(request).await },
        )
        .await
        .expect("delete");
    let ended = tokio::time::timeout(SETTLE, consumer.next())
        .await
        .expect("the member hears in time")
        .expect("an answer")
        .expect_err("the group is gone");
    assert_eq!(ended.code(), Code::NotFound, "{ended:?}");
    assert_eq!(
        get(&admin, "slow").await.expect_err("gone").code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_exact_with_no_member_connected_and_bad_requests_get_their_status() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let admin = client(&cluster, &[follower]);
    cluster
        .append(leader, "before", vec![event("b", "T", "x")])
        .await
        .expect("append");
    let mut request = group("lagging", DispatchMode::Keyed, ConsumerSettings::default());
    request.filter = Some(evlog_cluster_tests::proto::SubscribeFilter {
        stream_prefixes: vec!["pay-".to_string()],
        event_types: vec![],
    });
    request.start = Some(create_consumer_request::Start::Head(
        evlog_cluster_tests::proto::StartAtHead {},
    ));
    create(&admin, request.clone()).await.expect("create");
    assert!(
        create(&admin, request.clone()).await.is_ok(),
        "the same create again is OK"
    );
    let mut other = request.clone();
    other.settings = Some(ConsumerSettings {
        max_deliveries: 9,
        ..ConsumerSettings::default()
    });
    assert_eq!(
        create(&admin, other)
            .await
            .expect_err("other settings")
            .code(),
        Code::AlreadyExists
    );
    for i in 0..30 {
        let stream = if i % 3 == 0 { "other-1" } else { "pay-1" };
        cluster
            .append(leader, stream, vec![event(format!("e{i}"), "T", "x")])
            .await
            .expect("append");
    }
    let info = get(&admin, "lagging").await.expect("get");
    assert_eq!((info.lag_events, info.lag_exact), (20, true), "{info:?}");
    assert!(info.lag_seconds > 0.0, "{info:?}");
    assert!(info.members.is_empty());
    // Consume 5, then leave: lag 15 and still counted with nobody connected.
    let member = client(&cluster, &[leader]);
    {
        let mut consumer = member.consume("lagging", ConsumeOptions::default());
        for _ in 0..5 {
            let delivery = consumer.next().await.expect("open").expect("delivery");
            assert!(delivery.event.stream.starts_with("pay-"));
            assert_eq!(delivery.ack().await.expect("ack"), SettleStatus::Ok);
        }
    }
    let info = wait_for(SETTLE, "the lag after 5 acks", async || {
        let info = get(&admin, "lagging")
            .await
            .map_err(|status| status.to_string())?;
        if info.acked_total == 5 && info.members.is_empty() {
            Ok(info)
        } else {
            Err(format!("{info:?}"))
        }
    })
    .await;
    // The member left with deliveries out: they go back (counted), not lost.
    assert_eq!(info.lag_events, 15, "{info:?}");
    let status = |result: Result<ConsumerInfo, tonic::Status>| result.expect_err("refused").code();
    assert_eq!(status(get(&admin, "missing").await), Code::NotFound);
    assert_eq!(
        status(
            create(
                &admin,
                group(
                    "bad name!",
                    DispatchMode::Keyed,
                    ConsumerSettings::default()
                )
            )
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        status(
            create(
                &admin,
                group(
                    "too-many",
                    DispatchMode::Keyed,
                    ConsumerSettings {
                        max_deliveries: 1_000,
                        ..ConsumerSettings::default()
                    }
                )
            )
            .await
        ),
        Code::InvalidArgument
    );
    let mut missing = member.consume(
        "missing",
        ConsumeOptions {
            rejoin_deadline: Duration::from_secs(1),
            ..ConsumeOptions::default()
        },
    );
    let refused = missing
        .next()
        .await
        .expect("an answer")
        .expect_err("no such group");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_redelivers_at_most_what_was_in_flight() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let all = cluster.node_ids();
    let admin = client(&cluster, &all);
    create(
        &admin,
        group(
            "failover",
            DispatchMode::Shared,
            ConsumerSettings {
                ack_wait_ms: 2_000,
                backoff_ms: vec![0],
                ..ConsumerSettings::default()
            },
        ),
    )
    .await
    .expect("create");
    append_spread(&cluster, leader, 10, 30).await;
    const CREDIT: u32 = 4;
    const MEMBERS: usize = 2;
    let in_flight_at_kill = || u64::from(CREDIT) * MEMBERS as u64;
    let acked: Arc<Mutex<BTreeMap<u64, u32>>> = Default::default();
    let deliveries: Arc<Mutex<u64>> = Default::default();
    let mut tasks = Vec::new();
    for _ in 0..MEMBERS {
        let member = client(&cluster, &all);
        let acked = Arc::clone(&acked);
        let deliveries = Arc::clone(&deliveries);
        tasks.push(tokio::spawn(async move {
            let mut consumer = member.consume(
                "failover",
                ConsumeOptions {
                    credit: CREDIT,
                    ..ConsumeOptions::default()
                },
            );
            while let Some(Ok(delivery)) = consumer.next().await {
                *deliveries.lock().expect("lock") += 1;
                if acked
                    .lock()
                    .expect("lock")
                    .contains_key(&delivery.event.position)
                {
                    // An event whose ack was answered OK came back: counted as a second OK,
                    // which the assertions below refuse.
                    *acked
                        .lock()
                        .expect("lock")
                        .entry(delivery.event.position)
                        .or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let Ok(SettleStatus::Ok) = delivery.ack().await {
                    *acked
                        .lock()
                        .expect("lock")
                        .entry(delivery.event.position)
                        .or_default() += 1;
                }
            }
        }));
    }
    wait_for(SETTLE, "100 acks before the kill", async || {
        let count = acked.lock().expect("lock").len();
        if count >= 100 {
            Ok(())
        } else {
            Err(format!("{count} acked"))
        }
    })
    .await;
    cluster.kill(leader).await;
    let survivors: Vec<u64> = cluster.live_node_ids();
    let admin = client(&cluster, &survivors);
    let info = wait_settled(&admin, "failover", 300, 0).await;
    for task in &tasks {
        task.abort();
    }
    let acked = acked.lock().expect("lock");
    // The server acked all 300 (above); an ack whose answer was lost with the killed leader
    // is sent again through the new one and answered STALE, so a few may not show OK here.
    assert!(
        acked.len() as u64 >= 300 - in_flight_at_kill(),
        "{} acked OK",
        acked.len()
    );
    assert!(
        acked.values().all(|count| *count == 1),
        "an event acked OK was delivered again, or acked OK twice"
    );
    // At most the credit of every member was in flight at the kill.
    let in_flight_at_kill = in_flight_at_kill();
    assert!(
        info.redelivered_total <= in_flight_at_kill,
        "{} redeliveries after a kill with at most {in_flight_at_kill} in flight",
        info.redelivered_total
    );
    assert_eq!(info.delivered_total, 300 + info.redelivered_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_delivery_is_not_redelivered_past_its_ack_wait() {
    let (_cluster, admin, mut consumer) = one_event_shared_group("long-work", 400).await;
    let delivery = consumer.next().await.expect("open").expect("delivery");
    // Works five times its ack_wait, extending it every 100 ms: never redelivered.
    let worked = Instant::now();
    while worked.elapsed() < Duration::from_millis(2_000) {
        delivery.extend().await.expect("extend");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .is_err(),
        "an extended delivery came again"
    );
    assert_eq!(delivery.ack().await.expect("ack"), SettleStatus::Ok);
    let info = wait_settled(&admin, "long-work", 1, 0).await;
    assert_eq!((info.delivered_total, info.redelivered_total), (1, 0));
}

/// A step lost between its planning and its commit (a failpoint plays the leader dying there)
/// sent nothing: every delivery a member sees was counted first, so no event is delivered
/// twice under one attempt number. The lost step is the second that delivers anything, so it
/// comes while the member's stream is up (a step lost during the join is retried with a new
/// stream, which would hide what the first one was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_lost_before_its_commit_delivered_nothing() {
    evlog_cluster_tests::require_failpoints();
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    // Every node loses the second delivering step it plans.
    for id in cluster.node_ids() {
        cluster.kill(id).await;
        cluster.restart_with_env(
            id,
            &[(
                "FAILPOINTS".to_string(),
                "consumers::step-lost=1*off->1*return".to_string(),
            )],
        );
        cluster.wait_for_convergence(timeouts::LEADER).await;
    }
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let admin = client(&cluster, &cluster.node_ids());
    create(
        &admin,
        group("lost", DispatchMode::Shared, ConsumerSettings::default()),
    )
    .await
    .expect("create");
    let append = async |from: usize, to: usize| {
        for i in from..to {
            cluster
                .append(
                    leader,
                    &format!("s-{i}"),
                    vec![event(format!("e{i}"), "T", "x")],
                )
                .await
                .expect("append");
        }
    };
    append(0, 5).await;
    let member = client(&cluster, &cluster.node_ids());
    let mut consumer = member.consume("lost", ConsumeOptions::default());
    let mut seen: BTreeMap<(u64, u32), u32> = BTreeMap::new();
    let mut acked = 0;
    let mut appended_more = false;
    while acked < 10 {
        // The first 5 in (the first delivering step commits), the next 5 come in the lost one.
        if acked == 5 && !appended_more {
            append(5, 10).await;
            appended_more = true;
        }
        let delivery = tokio::time::timeout(SETTLE, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("open")
            .expect("delivery");
        *seen
            .entry((delivery.event.position, delivery.attempt))
            .or_default() += 1;
        if delivery.ack().await.expect("ack") == SettleStatus::Ok {
            acked += 1;
        }
    }
    assert!(
        cluster.node_ids().iter().any(|id| cluster
            .log_tail(*id, 2_000)
            .contains("lost before it committed")),
        "no step was lost: the failpoint never fired"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered twice under one attempt: {twice:?}"
    );
    let info = wait_settled(&admin, "lost", 10, 0).await;
    assert_eq!(info.redelivered_total, 0, "{info:?}");
}
