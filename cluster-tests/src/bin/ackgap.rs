//! `ackgap`: a steady append load that measures availability as a client sees it, while an
//! operator (or a script) stops, restarts or moves the leader: the longest time between two
//! acknowledged appends, and every error, retried or not.
//!
//! Each of `--clients` tasks sends one append at a time (one event, an idempotency key of its
//! own) to the endpoints in turn. What `evlog-client` retries (`UNAVAILABLE`, and a call a
//! stopping node never processed) is retried on the next endpoint
//! with the same key after a 10 ms pause, and counted as retried, apart by kind; any other
//! error counts as failed and the task goes on with a new append. The run is bounded by `--duration-secs` and
//! `--max-appends`. It prints one JSON object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use evlog_cluster_tests::proto::event_log_client::EventLogClient;
use evlog_cluster_tests::proto::{AppendRequest, EventData};
use tonic::transport::{Channel, Endpoint};

/// The pause before a retried `UNAVAILABLE` append goes to the next endpoint.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// The deadline of one append attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Gaps longer than this are listed one by one (at most `MAX_LISTED_GAPS`).
const LISTED_GAP: Duration = Duration::from_millis(20);
const MAX_LISTED_GAPS: usize = 20;

#[derive(Debug, Parser)]
#[command(
    name = "ackgap",
    about = "Steady append load; reports the longest gap between acknowledged appends and \
             every error (UNAVAILABLE retried on the next endpoint)"
)]
struct Args {
    /// Endpoints, comma-separated; appends go to them in turn.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Concurrent clients, each one append at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long the load runs.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// The most appends acknowledged before the load stops.
    #[arg(long, default_value_t = 1_000_000)]
    max_appends: u64,
    /// Bytes of data per event.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Stop when this file exists (a script creates it when its work is done).
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Tally {
    /// Acknowledgement instants, from the start, in microseconds.
    acks_us: Vec<u64>,
    retried_unavailable: u64,
    /// Calls a stopping node never processed (cancelled unsent as its connection closed, or
    /// refused by its GOAWAY), retried as `evlog-client` retries them.
    retried_unprocessed: u64,
    failed: BTreeMap<String, u64>,
    /// The first message of each failure code.
    first_failure: BTreeMap<String, String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.endpoints.is_empty(), "--endpoints is required");
    let channels: Vec<Channel> = args
        .endpoints
        .iter()
        .map(|endpoint| {
            Ok(Endpoint::from_shared(format!("http://{endpoint}"))?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy())
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let end = started + Duration::from_secs(args.duration_secs);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let data = bytes::Bytes::from(vec![b'x'; args.size]);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let channels = channels.clone();
        let stop = Arc::clone(&stop);
        let acknowledged = Arc::clone(&acknowledged);
        let tally = Arc::clone(&tally);
        let data = data.clone();
        let max_appends = args.max_appends;
        tasks.push(tokio::spawn(async move {
            let mut next = client;
            let mut sequence: u64 = 0;
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < end
                && acknowledged.load(Ordering::Relaxed) < max_appends
            {
                sequence += 1;
                let request = AppendRequest {
                    stream: format!("ackgap-{}", client % 8),
                    events: vec![EventData {
                        id: String::new(),
                        r#type: "AckGap".to_owned(),
                        content_type: "application/octet-stream".to_owned(),
                        data: data.clone(),
                        metadata: Default::default(),
                    }],
                    expected_version: None,
                    idempotency_key: Some(format!(
                        "ackgap-{}-{client}-{sequence}",
                        std::process::id()
                    )),
                };
                // The same append until it is answered for good, or the run ends.
                loop {
                    let mut grpc = tonic::Request::new(request.clone());
                    grpc.set_timeout(ATTEMPT_TIMEOUT);
                    let mut stub = EventLogClient::new(channels[next % channels.len()].clone());
                    let result = tokio::time::timeout(ATTEMPT_TIMEOUT, stub.append(grpc)).await;
                    let retry = {
                        let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
                        match result {
                            Ok(Ok(_)) => {
                                tally.acks_us.push(started.elapsed().as_micros() as u64);
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                                false
                            }
                            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                                tally.retried_unavailable += 1;
                                true
                            }
                            Ok(Err(status)) if evlog_client::retryable(&status) => {
                                tally.retried_unprocessed += 1;
                                true
                            }
                            Ok(Err(status)) => {
                                let code = format!("{:?}", status.code());
                                *tally.failed.entry(code.clone()).or_default() += 1;
                                tally
                                    .first_failure
                                    .entry(code)
                                    .or_insert_with(|| format!("{status:?}"));
                                false
                            }
                            Err(_) => {
                                *tally.failed.entry("ClientTimeout".to_owned()).or_default() += 1;
                                false
                            }
                        }
                    };
                    if !retry || Instant::now() >= end || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    next += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }));
    }
    if let Some(stop_file) = &args.stop_file {
        while Instant::now() < end && !stop_file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    tally.acks_us.sort_unstable();
    let mut gaps: Vec<(u64, u64)> = tally
        .acks_us
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[0]))
        .collect();
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    let longest = gaps.first().copied();
    let listed: Vec<_> = gaps
        .iter()
        .take_while(|(gap, _)| *gap >= LISTED_GAP.as_micros() as u64)
        .take(MAX_LISTED_GAPS)
        .map(|(gap, from)| {
            serde_json::json!({"gap_ms": *gap as f64 / 1000.0, "from_s": *from as f64 / 1e6})
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "started_unix_s": started_unix_s,
            "clients": args.clients,
            "endpoints": args.endpoints,
            "elapsed_s": elapsed.as_secs_f64(),
            "acknowledged": tally.acks_us.len(),
            "acks_per_sec": tally.acks_us.len() as f64 / elapsed.as_secs_f64(),
            "longest_gap_ms": longest.map(|(gap, _)| gap as f64 / 1000.0),
            "longest_gap_from_s": longest.map(|(_, from)| from as f64 / 1e6),
            "gaps_over_20ms": listed,
            "retried_unavailable": tally.retried_unavailable,
            "retried_unprocessed": tally.retried_unprocessed,
            "failed": tally.failed,
            "first_failure": tally.first_failure,
        })
    );
    Ok(())
}
