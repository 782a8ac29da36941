//! `evlog bench`: drives a running cluster and reports requests/s, events/s, bytes/s, latency
//! percentiles from an HDR histogram, and errors by gRPC status code.
//!
//! How a run goes:
//!
//! 1. One gRPC channel per endpoint (HTTP/2 carries every in-flight request of the run).
//! 2. With `--target leader`, the leader is found with `Cluster.Status`; appends go there
//!    only. With `--target all`, appends go to every endpoint in turn (followers forward them).
//!    Reads always go to every endpoint in turn.
//!    With `--via client`, appends go through one shared `evlog-client` over those endpoints
//!    (one attempt each), which coalesces concurrent appends into `AppendMany` calls.
//! 3. In read and mixed modes, `--preload` events are first appended to each stream (through
//!    the retrying client), so the reads return data.
//! 4. `--concurrency` tasks each send one request at a time, for the warm-up (not recorded)
//!    and then until `--duration` passes or `--count` measured requests have started. Every
//!    request is one RPC with a deadline; failures are counted, never retried.
//! 5. With `--mode subscribe`, `--subscribers` subscriptions start before step 4 and read on
//!    after it until they have the last acknowledged append (see `subscribe.rs`).
//! 6. The tasks' recorders are merged into one [`Report`]: one JSON line with `--json`,
//!    else a table (and a progress bar on stderr while it runs, when stderr is a terminal).
//!
//! The bench measures what a client sees, so it is only as good as the machine it runs on:
//! on a small machine the bench, the three nodes and their fsyncs share the same cores.

mod args;
mod consume;
mod recorder;
mod report;
mod subscribe;
mod worker;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::TryStreamExt;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::args::BenchArgs;
pub use self::args::BenchConfig;
pub use self::args::BenchMode;
pub use self::args::BenchTarget;
pub use self::args::BenchVia;
pub use self::args::ReadConsistency;
pub use self::args::SubscribeFrom;
use self::recorder::Recorder;
use self::report::Report;
use self::subscribe::Clock;
use self::subscribe::SubscribeSummary;
use self::subscribe::Until;
use self::worker::Progress;
use self::worker::Schedule;
use self::worker::TaskResult;
use self::worker::Workload;
use evlog_client::ClientOptions;
use evlog_client::EvlogClient;
use evlog_proto::v1 as pb;

/// How often the leader search asks the endpoints again, and the progress bar redraws.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Subscriptions sharing one connection (`--mode subscribe`): under a node's default limit of
/// 256 calls per connection. Connections go to the endpoints in turn.
const SUBSCRIBERS_PER_CONNECTION: usize = 200;

/// Most events per preload append, and about the most data bytes per preload append.
const PRELOAD_MAX_EVENTS: usize = 100;
const PRELOAD_MAX_BYTES: usize = 1 << 20;

/// Runs the benchmark the flags describe and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.config().map_err(anyhow::Error::msg)?;
    if config.mode == BenchMode::Consume {
        return consume::run(config).await;
    }
    let client = EvlogClient::new(
        &config.endpoints,
        ClientOptions {
            deadline: config.setup_timeout,
            ..config.client_options()
        },
    )
    .map_err(anyhow::Error::msg)?;
    let mut event_logs: Vec<_> = (0..config.endpoints.len())
        .map(|index| client.event_log(index))
        .collect();

    let (append_endpoints, leader) =
        if config.mode.appends() && config.target == BenchTarget::Leader {
            let leader = find_leader(&client, config.setup_timeout).await?;
            let index = match leader.index {
                Some(index) => index,
                None => {
                    // The leader advertises an address the endpoints do not spell the same
                    // way: talk to it at that address.
                    let extra = EvlogClient::new(
                        std::slice::from_ref(&leader.address),
                        config.client_options(),
                    )
                    .map_err(anyhow::Error::msg)?;
                    event_logs.push(extra.event_log(0));
                    event_logs.len() - 1
                }
            };
            let mut indexes = vec![index];
            if config.via == BenchVia::Unary {
                let address = config
                    .endpoints
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| leader.address.clone());
                for _ in 1..config.connections {
                    let extra =
                        EvlogClient::new(std::slice::from_ref(&address), config.client_options())
                            .map_err(anyhow::Error::msg)?;
                    event_logs.push(extra.event_log(0));
                    indexes.push(event_logs.len() - 1);
                }
            }
            (indexes, Some(leader.address))
        } else {
            ((0..config.endpoints.len()).collect(), None)
        };
    // `--via client`: one shared client over the append endpoints, one attempt per append.
    let appender = match config.via {
        BenchVia::Unary => None,
        BenchVia::Client => {
            let addresses: Vec<String> = match (&leader, append_endpoints.as_slice()) {
                (Some(address), [index]) => vec![
                    config
                        .endpoints
                        .get(*index)
                        .cloned()
                        .unwrap_or_else(|| address.clone()),
                ],
                _ => config.endpoints.clone(),
            };
            let options = ClientOptions {
                deadline: config.request_timeout,
                max_attempts: 1,
                append_calls_in_flight: config.client_calls_in_flight,
                ..config.client_options()
            };
            Some(EvlogClient::new(&addresses, options).map_err(anyhow::Error::msg)?)
        }
    };

    if config.preload > 0 {
        preload(&client, &config).await?;
    }

    let report = measure(config, event_logs, append_endpoints, appender, leader).await?;
    if report.config.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// Where the leader is: its index among the endpoints, and its address.
struct Leader {
    index: Option<usize>,
    address: String,
}

/// Asks every endpoint for its status until one says it leads (or names a leader), within
/// `timeout`.
async fn find_leader(client: &EvlogClient, timeout: Duration) -> anyhow::Result<Leader> {
    let deadline = Instant::now() + timeout;
    let mut last_view = String::from("no endpoint answered yet");
    loop {
        let mut named = None;
        let mut views = Vec::new();
        for (index, endpoint) in client.endpoints().iter().enumerate() {
            match client.status(index, Duration::from_secs(2)).await {
                Ok(status) if status.role == "leader" => {
                    return Ok(Leader {
                        index: Some(index),
                        address: endpoint.clone(),
                    });
                }
                Ok(status) => {
                    if status.leader_id != 0 && !status.leader_address.is_empty() {
                        named = Some(status.leader_address.clone());
                    }
                    views.push(format!(
                        "{endpoint}: {} (leader {})",
                        status.role, status.leader_id
                    ));
                }
                Err(error) => views.push(format!("{endpoint}: {}", error.message())),
            }
        }
        if let Some(address) = named {
            let index = endpoint_of(client.endpoints(), &address);
            return Ok(Leader { index, address });
        }
        last_view = if views.is_empty() {
            last_view
        } else {
            views.join("; ")
        };
        if Instant::now() + POLL_INTERVAL >= deadline {
            anyhow::bail!(
                "no leader found within {} ms ({last_view})",
                timeout.as_millis()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The index of the endpoint that is `address` (`host:port`), however the endpoint spells its
/// scheme.
fn endpoint_of(endpoints: &[String], address: &str) -> Option<usize> {
    endpoints.iter().position(|endpoint| {
        let bare = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .unwrap_or(endpoint);
        bare == address
    })
}

/// Appends `config.preload` events to every stream, through the retrying client (each append
/// with its own idempotency key, so a retry never doubles it).
async fn preload(client: &EvlogClient, config: &BenchConfig) -> anyhow::Result<()> {
    let chunk = PRELOAD_MAX_EVENTS
        .min(PRELOAD_MAX_BYTES / config.size.max(1))
        .max(1) as u64;
    if !config.json {
        eprintln!(
            "preloading {} events of {} B into each of {} streams",
            config.preload, config.size, config.streams
        );
    }
    let data = bytes::Bytes::from(vec![b'p'; config.size]);
    let appends = (0..config.streams).flat_map(|stream| {
        (0..config.preload)
            .step_by(usize::try_from(chunk).unwrap_or(1))
            .map(move |done| (stream, chunk.min(config.preload - done)))
    });
    futures::stream::iter(appends.map(Ok))
        .try_for_each_concurrent(config.concurrency.min(64), |(stream, count)| {
            let data = data.clone();
            async move {
                let stream = config.stream(stream);
                let events = (0..count)
                    .map(|_| pb::EventData {
                        id: String::new(),
                        r#type: "BenchPreload".to_string(),
                        content_type: "application/octet-stream".to_string(),
                        data: data.clone(),
                        metadata: Default::default(),
                    })
                    .collect();
                client
                    .append(pb::AppendRequest {
                        stream: stream.clone(),
                        events,
                        expected_version: None,
                        idempotency_key: None,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|status| {
                        anyhow::anyhow!(
                            "preloading {stream}: {:?}: {}",
                            status.code(),
                            status.message()
                        )
                    })
            }
        })
        .await
}

/// A progress bar on stderr when it is a terminal and the output is a table; else hidden.
fn progress_bar(config: &BenchConfig) -> ProgressBar {
    if config.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let length = u64::try_from(config.duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Runs the tasks and merges what they measured.
async fn measure(
    config: BenchConfig,
    event_logs: Vec<evlog_proto::v1::event_log_client::EventLogClient<evlog_client::Transport>>,
    append_endpoints: Vec<usize>,
    appender: Option<EvlogClient>,
    leader: Option<String>,
) -> anyhow::Result<Report> {
    // Latencies past twice the request deadline are recorded as that.
    let highest = config.request_timeout * 2 + Duration::from_secs(1);
    let new_recorder = || Recorder::new(highest).map_err(anyhow::Error::msg);
    let clock = Arc::new(Clock::new());
    // Subscribers first: every one has started before the first append is sent.
    let (until, until_watch) = tokio::sync::watch::channel(Until::Running);
    let mut subscribers = JoinSet::new();
    let catch_up_only = config.concurrency == 0;
    let mut opened = Vec::with_capacity(config.subscribers);
    // Spread over the endpoints in turn, on their own connections, each carrying at most
    // SUBSCRIBERS_PER_CONNECTION of them (a node takes 256 calls per connection by default).
    let mut connections: std::collections::HashMap<(usize, usize), EvlogClient> =
        std::collections::HashMap::new();
    for index in 0..config.subscribers {
        let endpoint = index % config.endpoints.len();
        let key = (
            endpoint,
            index / config.endpoints.len() / SUBSCRIBERS_PER_CONNECTION,
        );
        let connection = match connections.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                EvlogClient::new(
                    std::slice::from_ref(&config.endpoints[endpoint]),
                    config.client_options(),
                )
                .map_err(anyhow::Error::msg)?,
            ),
        };
        let client = connection.event_log(0);
        opened.push(subscribe::open(&config, client).await.map_err(|status| {
            anyhow::anyhow!(
                "subscriber {index}: {:?}: {}",
                status.code(),
                status.message()
            )
        })?);
    }
    let workload = Arc::new(Workload::new(
        config.clone(),
        event_logs,
        append_endpoints,
        appender.clone(),
        Arc::clone(&clock),
    ));
    let progress = Arc::new(Progress::default());
    let now = Instant::now();
    let schedule = Schedule {
        measure_from: now + config.warmup,
        end: now + config.warmup + config.duration,
        count: config.count,
    };
    let measure_from_us =
        u64::try_from((schedule.measure_from - clock.epoch).as_micros()).unwrap_or(u64::MAX);
    // This process's CPU time when the measured window begins (the warm-up's is not counted).
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(schedule.measure_from).await;
        process_cpu()
    });
    for (stream, start) in opened {
        subscribers.spawn(subscribe::run(
            stream,
            start,
            Arc::clone(&clock),
            measure_from_us,
            new_recorder()?,
            until_watch.clone(),
            catch_up_only,
        ));
    }
    drop(until_watch);
    let mut tasks = JoinSet::new();
    for task in 0..config.concurrency {
        let append = config.mode.appends().then(new_recorder).transpose()?;
        let read = config.mode.reads().then(new_recorder).transpose()?;
        tasks.spawn(worker::run_task(
            task,
            workload.clone(),
            schedule,
            progress.clone(),
            append,
            read,
        ));
    }

    let bar = progress_bar(&config);
    let mut results: Vec<TaskResult> = Vec::with_capacity(config.concurrency);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    // Bounded: every task ends at the schedule's end, plus one request deadline.
    while !tasks.is_empty() {
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(joined) = joined {
                    results.push(joined.map_err(|error| anyhow::anyhow!("a bench task failed: {error}"))?);
                }
            }
            _ = ticks.tick() => update_bar(&bar, schedule, &progress),
        }
    }
    bar.finish_and_clear();

    // The subscribers read on until they have the last acknowledged append (catching up
    // alone: until caught up), within a deadline.
    let drain_until = if catch_up_only {
        schedule.end + config.setup_timeout
    } else {
        subscribe::drain_deadline(&config)
    };
    if !catch_up_only {
        until.send_replace(Until::Position {
            position: clock.last_acknowledged.load(Ordering::Relaxed),
            deadline: drain_until,
        });
    }
    let mut subscriber_results = Vec::with_capacity(config.subscribers);
    while let Ok(Some(joined)) = tokio::time::timeout_at(
        drain_until + Duration::from_secs(1),
        subscribers.join_next(),
    )
    .await
    {
        subscriber_results
            .push(joined.map_err(|error| anyhow::anyhow!("a subscriber failed: {error}"))?);
    }
    subscribers.abort_all();
    let subscribe = (config.mode == BenchMode::Subscribe)
        .then(|| {
            SubscribeSummary::merge(subscriber_results, new_recorder()?).map_err(anyhow::Error::msg)
        })
        .transpose()?;

    let finished = results
        .iter()
        .map(|result| result.finished)
        .max()
        .unwrap_or_else(Instant::now);
    let elapsed = finished.saturating_duration_since(schedule.measure_from);
    let mut total = new_recorder()?;
    let mut append: Option<Recorder> = None;
    let mut read: Option<Recorder> = None;
    for result in &results {
        for (mine, merged) in [(&result.append, &mut append), (&result.read, &mut read)] {
            if let Some(mine) = mine {
                total.merge(mine).map_err(anyhow::Error::msg)?;
                match merged {
                    Some(merged) => merged.merge(mine).map_err(anyhow::Error::msg)?,
                    None => *merged = Some(mine.clone()),
                }
            }
        }
    }
    let client_cpu = match (cpu_at_start.await.ok().flatten(), process_cpu()) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        _ => None,
    };
    let appends_per_call = appender.map(|client| {
        let stats = client.coalescing_stats();
        let calls = stats.calls.load(Ordering::Relaxed).max(1);
        stats.appends.load(Ordering::Relaxed) as f64 / calls as f64
    });
    Ok(Report {
        config,
        leader,
        appends_per_call,
        client_cpu,
        elapsed,
        total,
        append,
        read,
        subscribe,
    })
}

/// This process's CPU time so far (user and system, all threads), from `/proc/self/stat`
/// (in clock ticks of 1/100 s, Linux's `USER_HZ`); `None` where there is no such file.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses: state is the
    // 3rd field of the line, utime and stime the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn update_bar(bar: &ProgressBar, schedule: Schedule, progress: &Progress) {
    let now = Instant::now();
    if now < schedule.measure_from {
        bar.set_message("warming up");
        return;
    }
    let measured = now.saturating_duration_since(schedule.measure_from);
    bar.set_position(u64::try_from(measured.as_millis()).unwrap_or(u64::MAX));
    let succeeded = progress.succeeded.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    let rate = succeeded as f64 / measured.as_secs_f64().max(0.001);
    bar.set_message(format!("{succeeded} ops, {rate:.0} ops/s, {failed} errors"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cpu_time_is_read_and_grows() {
        let before = process_cpu().expect("Linux has /proc/self/stat");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = process_cpu().expect("still there");
        assert!(
            after > before,
            "{before:?} -> {after:?} after 60 ms of spinning"
        );
    }

    #[test]
    fn endpoints_match_addresses_with_or_without_a_scheme() {
        let endpoints = vec!["127.0.0.1:1".to_string(), "http://127.0.0.1:2".to_string()];
        assert_eq!(endpoint_of(&endpoints, "127.0.0.1:1"), Some(0));
        assert_eq!(endpoint_of(&endpoints, "127.0.0.1:2"), Some(1));
        assert_eq!(endpoint_of(&endpoints, "127.0.0.1:12"), None);
    }
}
