//! `evlog bench --mode consume`: a KEYED consumer group drains what was appended, while
//! appenders (optionally) keep appending.
//!
//! A new group is created at the head; then `--preload` events per stream are appended over
//! `--streams` streams, interleaved (round after round over the streams, through the client
//! library's coalescing); then `--members` members (each its own client, `--credit` each)
//! consume, acking (or with `--dead-letter`, dead-lettering) every delivery at once (without waiting for the answer, so a member has up
//! to its credit out). With `--concurrency N`, N tasks append (one event each, coalesced)
//! while the members consume. The run ends when the group has acked everything appended
//! before the run and the appenders have stopped (at `--duration`), or at `--duration` plus
//! the request timeout. With `--group NAME` the members join that group instead (nothing is
//! created or appended first) and the run lasts `--duration`. Reported: deliveries acked per second, ack -> `Settled` latency,
//! appends per second, the group's lag at the end, and this process's CPU.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_client::ClientOptions;
use evlog_client::ConsumeOptions;
use evlog_client::EvlogClient;
use evlog_client::SettleStatus;
use evlog_proto::v1 as pb;
use futures::StreamExt;
use tokio::time::Instant;

use super::args::BenchConfig;
use super::recorder::Recorder;

/// Most preload appends in flight.
const PRELOAD_IN_FLIGHT: usize = 256;

pub async fn run(config: BenchConfig) -> anyhow::Result<()> {
    let client = EvlogClient::new(
        &config.endpoints,
        ClientOptions {
            deadline: config.setup_timeout,
            ..config.client_options()
        },
    )
    .map_err(anyhow::Error::msg)?;
    let existing = config.group.clone();
    let group = existing
        .clone()
        .unwrap_or_else(|| format!("bench-{}", uuid::Uuid::now_v7().simple()));
    if existing.is_none() {
        client
            .consumers_call(
                pb::CreateConsumerRequest {
                    name: group.clone(),
                    target: Some(pb::create_consumer_request::Target::All(pb::AllStreams {})),
                    filter: Some(pb::SubscribeFilter {
                        stream_prefixes: vec![config.stream_prefix.clone()],
                        event_types: vec![],
                    }),
                    start: Some(pb::create_consumer_request::Start::Head(pb::StartAtHead {})),
                    settings: Some(pb::ConsumerSettings {
                        mode: pb::DispatchMode::Keyed as i32,
                        max_in_flight: 10_000,
                        ..pb::ConsumerSettings::default()
                    }),
                },
                |mut grpc, request| async move { grpc.create(request).await },
            )
            .await
            .map_err(|status| anyhow::anyhow!("creating the group: {}", status.message()))?;
    }
    let data = bytes::Bytes::from(vec![b'c'; config.size]);
    let event = |data: bytes::Bytes| pb::EventData {
        id: String::new(),
        r#type: "BenchConsume".to_string(),
        content_type: "application/octet-stream".to_string(),
        data,
        metadata: Default::default(),
    };
    let preloaded = if existing.is_some() {
        0
    } else {
        config.preload * config.streams
    };
    if !config.json {
        eprintln!(
            "appending {preloaded} events of {} B over {} streams, then consuming them with {} \
             members",
            config.size, config.streams, config.members
        );
    }
    let appends = (0..preloaded).map(|index| config.stream(index % config.streams));
    futures::stream::iter(appends)
        .map(|stream| {
            let client = client.clone();
            let events = vec![event(data.clone())];
            async move {
                client
                    .append(pb::AppendRequest {
                        stream,
                        events,
                        expected_version: None,
                        idempotency_key: None,
                    })
                    .await
            }
        })
        .buffer_unordered(PRELOAD_IN_FLIGHT)
        .for_each(|result| async move {
            if let Err(status) = result {
                eprintln!("a preload append failed: {}", status.message());
            }
        })
        .await;

    let started = Instant::now();
    let stop_appending = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(
        Recorder::new(Duration::from_secs(60)).map_err(anyhow::Error::msg)?,
    ));
    let cpu_start = super::process_cpu();
    let mut tasks = tokio::task::JoinSet::new();
    for member in 0..config.members {
        let member_client = EvlogClient::new(&config.endpoints, config.client_options())
            .map_err(anyhow::Error::msg)?;
        let group = group.clone();
        let acked = Arc::clone(&acked);
        let stale = Arc::clone(&stale);
        let latencies = Arc::clone(&latencies);
        let credit = config.credit;
        let dead_letter = config.dead_letter;
        tasks.spawn(async move {
            let mut consumer = member_client.consume(
                &group,
                ConsumeOptions {
                    credit,
                    member_name: format!("bench-{member}"),
                    ..ConsumeOptions::default()
                },
            );
            while let Some(Ok(delivery)) = consumer.next().await {
                let acked = Arc::clone(&acked);
                let stale = Arc::clone(&stale);
                let latencies = Arc::clone(&latencies);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let settled = if dead_letter {
                        delivery.dead_letter("bench").await
                    } else {
                        delivery.ack().await
                    };
                    match settled {
                        Ok(SettleStatus::Ok) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut latencies) = latencies.lock() {
                                latencies.record_success(sent.elapsed(), 1, 0);
                            }
                        }
                        Ok(SettleStatus::Stale) => {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {}
                    }
                });
            }
        });
    }
    let appender = EvlogClient::new(
        &config.endpoints,
        ClientOptions {
            deadline: config.request_timeout,
            max_attempts: 1,
            ..config.client_options()
        },
    )
    .map_err(anyhow::Error::msg)?;
    for task in 0..config.concurrency {
        let appender = appender.clone();
        let stop = Arc::clone(&stop_appending);
        let appended = Arc::clone(&appended);
        let stream_count = config.streams;
        let config = config.clone();
        let data = data.clone();
        tasks.spawn(async move {
            let mut next = task as u64;
            while !stop.load(Ordering::Relaxed) {
                let result = appender
                    .append(pb::AppendRequest {
                        stream: config.stream(next % stream_count),
                        events: vec![event(data.clone())],
                        expected_version: None,
                        idempotency_key: None,
                    })
                    .await;
                if result.is_ok() {
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                next = next.wrapping_add(7_919);
            }
        });
    }
    // Until the appenders' time is up and the group acked what was there before them.
    let appenders_stop = started + config.duration;
    let give_up = appenders_stop + config.request_timeout;
    let mut appends_elapsed = None;
    loop {
        let now = Instant::now();
        if now >= appenders_stop && appends_elapsed.is_none() {
            stop_appending.store(true, Ordering::Relaxed);
            appends_elapsed = Some(now.saturating_duration_since(started));
        }
        let done = if existing.is_some() {
            appends_elapsed.is_some()
        } else {
            acked.load(Ordering::Relaxed) >= preloaded
                && (config.concurrency == 0 || appends_elapsed.is_some())
        };
        if done || now >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let consumed = acked.load(Ordering::Relaxed);
    let cpu = match (cpu_start, super::process_cpu()) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        _ => None,
    };
    let info = client
        .consumers_call(
            pb::GetConsumerRequest {
                name: group.clone(),
            },
            |mut grpc, request| async move { grpc.get(request).await },
        )
        .await
        .ok();
    tasks.abort_all();
    let latencies = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("a member panicked"))?
        .clone();
    let appends_seconds = appends_elapsed.unwrap_or(elapsed).as_secs_f64();
    let rate = consumed as f64 / elapsed.as_secs_f64();
    let append_rate = appended.load(Ordering::Relaxed) as f64 / appends_seconds;
    let lag = info.as_ref().map_or(0, |info| info.lag_events);
    let redelivered = info.as_ref().map_or(0, |info| info.redelivered_total);
    let p50 = latencies.quantile_us(0.5) as f64 / 1e3;
    let p99 = latencies.quantile_us(0.99) as f64 / 1e3;
    let cpu_us = cpu.map(|cpu| cpu.as_micros() as f64 / consumed.max(1) as f64);
    if config.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "consume",
                "members": config.members,
                "credit": config.credit,
                "streams": config.streams,
                "preloaded": preloaded,
                "concurrency": config.concurrency,
                "elapsed_s": elapsed.as_secs_f64(),
                "group": group,
                "dead_letter": config.dead_letter,
                "acked": consumed,
                "acked_per_s": rate,
                "ack_settled_p50_ms": p50,
                "ack_settled_p99_ms": p99,
                "stale": stale.load(Ordering::Relaxed),
                "redelivered": redelivered,
                "appends_per_s": append_rate,
                "lag_events_at_end": lag,
                "client_cpu_us_per_ack": cpu_us,
            })
        );
    } else {
        println!(
            "consume: {consumed} acked in {:.1} s = {rate:.0}/s; ack -> settled p50 {p50:.1} ms, \
             p99 {p99:.1} ms; {} stale, {redelivered} redelivered; appends {append_rate:.0}/s \
             ({} clients); lag at the end {lag}; client CPU {} µs per ack",
            elapsed.as_secs_f64(),
            stale.load(Ordering::Relaxed),
            config.concurrency,
            cpu_us.map_or("?".to_string(), |us| format!("{us:.0}"))
        );
    }
    // The group stays for a look (`evlog consumer show`); delete it with `evlog consumer rm`.
    if !config.json {
        eprintln!("group {group} kept; remove it with `evlog consumer rm {group}`");
    }
    Ok(())
}
