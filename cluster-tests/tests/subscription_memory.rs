//! What subscriptions cost a node: a subscriber that stops reading costs a waiting task, not
//! memory that grows with what it has not read (there is no queue of events per subscriber),
//! and it is told it fell behind, then caught up, and gets everything; idle subscriptions
//! cost little each.
//!
//! Memory is compared with the other follower, which applies the same log without the
//! subscribers: what both grow by (the store's page cache, the log) is not the
//! subscriptions'.

use std::time::Duration;

use evlog_cluster_tests::proto::event_log_client::EventLogClient;
use evlog_cluster_tests::proto::subscribe_response::Item;
use evlog_cluster_tests::subscriber::{Collected, collect_until, subscribe_all};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, timeouts};
use tonic::transport::Endpoint;

const MIB: u64 = 1 << 20;

/// The two followers of the cluster's leader.
async fn followers(cluster: &Cluster) -> (u64, u64) {
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    (others[0], others[1])
}

fn rss(cluster: &Cluster, id: u64) -> u64 {
    cluster.rss_bytes(id).expect("the node runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_costs_no_growing_memory_and_misses_nothing() {
    let options = ClusterOptions {
        extra_args: vec!["--subscription-window-events".to_owned(), "1000".to_owned()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let (serving, control) = followers(&cluster).await;
    let mut stream = cluster
        .subscribe(serving, subscribe_all(None))
        .await
        .expect("subscribe");
    let mut collected = Collected::default();
    collect_until(&mut stream, &mut collected, timeouts::ACKS, |c| {
        !c.caught_ups().is_empty()
    })
    .await
    .expect("caught up on an empty log");
    let (serving_before, control_before) = (rss(&cluster, serving), rss(&cluster, control));

    // The client stops reading (the stream is not polled) for at least 10 s while four
    // writers append 200,000 events of 100 bytes, 100 per append.
    let paused = tokio::time::Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let mut client = cluster.client(leader);
            tokio::spawn(async move {
                for i in 0..500 {
                    let events = (0..100)
                        .map(|j| event(format!("{writer}-{i}-{j}"), "T", vec![b'x'; 100]))
                        .collect();
                    let request = evlog_cluster_tests::proto::AppendRequest {
                        stream: format!("slow-{writer}"),
                        events,
                        expected_version: None,
                        idempotency_key: None,
                    };
                    client.append(request).await.expect("append");
                }
            })
        })
        .collect();
    let mut serving_peak = serving_before;
    let mut control_peak = control_before;
    let mut writers_done = false;
    while !writers_done || paused.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        serving_peak = serving_peak.max(rss(&cluster, serving));
        control_peak = control_peak.max(rss(&cluster, control));
        writers_done = writers.iter().all(|writer| writer.is_finished());
        assert!(
            paused.elapsed() < timeouts::CATCH_UP,
            "the writers took too long"
        );
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let serving_growth = serving_peak.saturating_sub(serving_before);
    let control_growth = control_peak.saturating_sub(control_before);
    eprintln!(
        "slow consumer: serving node grew {} MiB, the control follower {} MiB",
        serving_growth / MIB,
        control_growth / MIB
    );
    assert!(
        serving_growth < control_growth + 32 * MIB,
        "the serving node grew {serving_growth} bytes, the control {control_growth}"
    );

    // Reading again: everything, in order, after being told it fell behind and caught up.
    collect_until(&mut stream, &mut collected, timeouts::CATCH_UP, |c| {
        c.events.len() >= 200_000
    })
    .await
    .expect("the stream stayed up and delivers everything");
    let positions: Vec<u64> = collected.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=200_000).collect::<Vec<u64>>());
    collect_until(&mut stream, &mut collected, timeouts::CATCH_UP, |c| {
        c.caught_ups().len() >= 2
    })
    .await
    .expect("caught up again at the end");
    let fell_behind = collected
        .items
        .iter()
        .position(|item| matches!(item, Item::FellBehind(_)))
        .expect("told it fell behind");
    let Item::FellBehind(behind) = &collected.items[fell_behind] else {
        unreachable!()
    };
    assert!(behind.lag_events > 1_000, "{behind:?}");
    let caught_up_again = collected
        .items
        .iter()
        .rposition(|item| matches!(item, Item::CaughtUp(_)))
        .expect("caught up");
    assert!(caught_up_again > fell_behind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_subscriptions_cost_at_most_64_mib() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let (serving, _) = followers(&cluster).await;
    cluster
        .append(leader, "seed", vec![event("seed", "T", "x")])
        .await
        .expect("append");
    let before = rss(&cluster, serving);
    // A connection carries at most 256 calls at once (--max-concurrent-streams): 4 of them,
    // 250 subscriptions each, every one caught up and waiting at the head.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let channel = Endpoint::from_shared(format!("http://{}", cluster.address(serving)))
            .expect("uri")
            .connect_lazy();
        let client = EventLogClient::new(channel);
        for _ in 0..250 {
            let mut client = client.clone();
            let mut stream = client
                .subscribe(subscribe_all(None))
                .await
                .expect("subscribe")
                .into_inner();
            let mut collected = Collected::default();
            collect_until(&mut stream, &mut collected, timeouts::ACKS, |c| {
                !c.caught_ups().is_empty()
            })
            .await
            .expect("caught up");
            streams.push(stream);
        }
    }
    let after = rss(&cluster, serving);
    let growth = after.saturating_sub(before);
    eprintln!(
        "1,000 idle subscriptions: node RSS {} -> {} MiB",
        before / MIB,
        after / MIB
    );
    assert!(
        growth <= 64 * MIB,
        "1,000 idle subscriptions cost {growth} bytes"
    );
    // And they are live: one append reaches every one of them.
    let appended = cluster
        .append(leader, "wake", vec![event("wake", "T", "x")])
        .await
        .expect("append");
    for stream in &mut streams {
        let mut collected = Collected::default();
        collect_until(stream, &mut collected, timeouts::ACKS, |c| {
            !c.events.is_empty()
        })
        .await
        .expect("the new event");
        assert_eq!(collected.events[0].position, appended.first_position);
    }
}
