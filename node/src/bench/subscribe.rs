//! `evlog bench --mode subscribe`: subscribers beside the appenders.
//!
//! `--subscribers` subscriptions, spread over the endpoints, start before any append is sent
//! (from the head, or from the first event with `--subscribe-from beginning`). Each append of
//! the run carries its send time (µs since the run began, metadata `bench-sent-us`), so a
//! subscriber measures append sent → event delivered for every event it receives. When the
//! appenders stop, every subscriber reads on until it has the last acknowledged position
//! (bounded by the request deadline), and counts the events of its range it never received.
//! With `--concurrency 0` nothing is appended: the subscribers catch up over what the log
//! holds (`--preload`) and stop when caught up, which measures catch-up alone.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_proto::v1 as pb;
use evlog_proto::v1::event_log_client::EventLogClient;
use tokio::sync::watch;
use tokio::time::Instant;

use super::args::BenchConfig;
use super::args::SubscribeFrom;
use super::recorder::Recorder;

/// The metadata key carrying an append's send time.
pub const SENT_KEY: &str = "bench-sent-us";

/// What every subscriber and appender shares: the run's clock, and the last acknowledged
/// position.
#[derive(Debug)]
pub struct Clock {
    /// Send times are µs since this.
    pub epoch: Instant,
    /// The highest `last_position` an append of the run got back.
    pub last_acknowledged: AtomicU64,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_acknowledged: AtomicU64::new(0),
        }
    }

    /// Now, as µs since the epoch (the value appends carry).
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn acknowledged(&self, last_position: u64) {
        self.last_acknowledged
            .fetch_max(last_position, Ordering::Relaxed);
    }
}

/// When a subscriber stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Still appending: read on.
    Running,
    /// Stop once this position has been delivered (or the deadline passes).
    Position { position: u64, deadline: Instant },
}

/// What one subscriber measured.
#[derive(Debug)]
pub struct SubscriberResult {
    /// Deliveries of events sent after the warm-up: latency append sent → delivered.
    pub deliveries: Recorder,
    /// Events delivered, all of them.
    pub events: u64,
    /// Where it started (the first position it was to deliver).
    pub start: u64,
    /// Positions from `start` to the last acknowledged one it did not receive in order: skipped
    /// or repeated between deliveries, or not delivered by the deadline.
    pub missing: u64,
    /// Catching up: events delivered before the first `caught_up`, and how long that took.
    pub caught_up: Option<(u64, Duration)>,
    /// How the subscription failed, if it did.
    pub error: Option<tonic::Status>,
}

/// Starts a subscription for `config` on `client`; resolves to the subscription stream and
/// where it starts.
pub async fn open(
    config: &BenchConfig,
    mut client: EventLogClient<evlog_client::Transport>,
) -> Result<(tonic::Streaming<pb::SubscribeResponse>, u64), tonic::Status> {
    let start = match config.subscribe_from {
        SubscribeFrom::Head => Some(pb::subscribe_request::Start::Head(pb::StartAtHead {})),
        SubscribeFrom::Beginning => None,
    };
    let request = pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::All(pb::AllStreams {})),
        start,
        filter: None,
        max_batch_events: config.subscribe_batch,
        at_least_position: 0,
    };
    let mut stream = tokio::time::timeout(config.setup_timeout, client.subscribe(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("subscribing took too long"))??
        .into_inner();
    match tokio::time::timeout(config.setup_timeout, stream.message()).await {
        Ok(Ok(Some(pb::SubscribeResponse {
            item: Some(pb::subscribe_response::Item::Subscribed(subscribed)),
        }))) => Ok((stream, subscribed.next_from)),
        Ok(Err(status)) => Err(status),
        Ok(Ok(other)) => Err(tonic::Status::internal(format!(
            "the first item was not `subscribed`: {other:?}"
        ))),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "no `subscribed` item in time",
        )),
    }
}

/// Reads a subscription until `until` says to stop (or, with `catch_up_only`, until caught up).
pub async fn run(
    mut stream: tonic::Streaming<pb::SubscribeResponse>,
    start: u64,
    clock: Arc<Clock>,
    measure_from_us: u64,
    mut deliveries: Recorder,
    mut until: watch::Receiver<Until>,
    catch_up_only: bool,
) -> SubscriberResult {
    let began = Instant::now();
    let mut events = 0u64;
    // Positions skipped (or repeated) between consecutive deliveries.
    let mut missing = 0u64;
    let mut delivered_to = start.saturating_sub(1);
    let mut caught_up = None;
    let mut error = None;
    loop {
        if let Until::Position { position, deadline } = *until.borrow()
            && (delivered_to >= position || Instant::now() >= deadline)
        {
            break;
        }
        let message = tokio::select! {
            message = stream.message() => message,
            changed = until.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let item = match message {
            Ok(Some(pb::SubscribeResponse { item: Some(item) })) => item,
            Ok(Some(pb::SubscribeResponse { item: None })) => continue,
            Ok(None) => {
                error = Some(tonic::Status::unknown("the subscription ended"));
                break;
            }
            Err(status) => {
                error = Some(status);
                break;
            }
        };
        match item {
            pb::subscribe_response::Item::Events(batch) => {
                let now_us = clock.now_us();
                for event in &batch.events {
                    events += 1;
                    missing += event.position.abs_diff(delivered_to + 1);
                    delivered_to = event.position;
                    let sent_us = event
                        .metadata
                        .get(SENT_KEY)
                        .and_then(|sent| sent.parse::<u64>().ok());
                    if let Some(sent_us) = sent_us.filter(|sent| *sent >= measure_from_us) {
                        deliveries.record_success(
                            Duration::from_micros(now_us.saturating_sub(sent_us)),
                            1,
                            event.data.len() as u64,
                        );
                    }
                }
            }
            pb::subscribe_response::Item::CaughtUp(_) => {
                if caught_up.is_none() {
                    caught_up = Some((events, began.elapsed()));
                }
                if catch_up_only {
                    break;
                }
            }
            _ => {}
        }
    }
    if let Until::Position { position, .. } = *until.borrow() {
        missing += position.saturating_sub(delivered_to);
    }
    SubscriberResult {
        deliveries,
        events,
        start,
        missing,
        caught_up,
        error,
    }
}

/// The subscribers of a run, merged.
#[derive(Debug)]
pub struct SubscribeSummary {
    pub subscribers: usize,
    pub deliveries: Recorder,
    pub events: u64,
    pub missing: u64,
    /// Catch-up rate (events/s) of each subscriber that caught up, ascending.
    pub catch_up_rates: Vec<f64>,
    pub errors: Vec<String>,
}

impl SubscribeSummary {
    pub fn merge(results: Vec<SubscriberResult>, empty: Recorder) -> Result<Self, String> {
        let mut summary = SubscribeSummary {
            subscribers: results.len(),
            deliveries: empty,
            events: 0,
            missing: 0,
            catch_up_rates: Vec::new(),
            errors: Vec::new(),
        };
        for result in results {
            summary.deliveries.merge(&result.deliveries)?;
            summary.events += result.events;
            summary.missing += result.missing;
            if let Some((events, took)) = result.caught_up
                && events > 0
            {
                summary
                    .catch_up_rates
                    .push(events as f64 / took.as_secs_f64().max(1e-6));
            }
            if let Some(status) = result.error {
                summary.errors.push(format!(
                    "subscriber from {}: {:?}: {}",
                    result.start,
                    status.code(),
                    status.message()
                ));
            }
        }
        summary.catch_up_rates.sort_by(f64::total_cmp);
        Ok(summary)
    }

    /// The median catch-up rate, if any subscriber caught up over events.
    pub fn median_catch_up_rate(&self) -> Option<f64> {
        let rates = &self.catch_up_rates;
        (!rates.is_empty()).then(|| rates[rates.len() / 2])
    }
}

/// How long subscribers may take to receive the last acknowledged append once the appenders
/// stopped.
pub fn drain_deadline(config: &BenchConfig) -> Instant {
    Instant::now() + config.request_timeout.max(Duration::from_secs(30))
}
