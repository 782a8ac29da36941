//! One benchmark task: it sends one request at a time until the run ends, and records the
//! requests that started after the warm-up. Each request is exactly one RPC (no retries), with
//! a deadline; a failure is counted, never retried, and never stops the run.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_client::EvlogClient;
use evlog_proto::v1 as pb;
use evlog_proto::v1::event_log_client::EventLogClient;
use tokio::time::Instant;
use tonic::Status;

use super::args::BenchConfig;
use super::args::BenchMode;
use super::args::Payload;
use super::args::ReadConsistency;
use super::recorder::Recorder;
use super::subscribe::Clock;
use super::subscribe::SENT_KEY;

/// Which RPC a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Append,
    Read,
}

/// When the run measures, and when it stops.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Requests that start before this are warm-up: sent, not recorded.
    pub measure_from: Instant,
    /// No request starts at or after this.
    pub end: Instant,
    /// No more than this many measured requests start.
    pub count: Option<u64>,
}

/// Counters every task updates as it goes, for the progress bar and `--count`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Measured requests started (`--count` is checked against it).
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
}

/// What every task shares: the clients, the prepared request body, and the
/// cursors that spread streams and endpoints.
pub struct Workload {
    pub config: BenchConfig,
    /// One event-log client per endpoint (clones share the endpoint's one channel).
    pub event_logs: Vec<EventLogClient<evlog_client::Transport>>,
    /// Indexes into `event_logs` that appends go to: the leader, or all.
    pub append_endpoints: Vec<usize>,
    /// `--via client`: the shared client appends go through instead (it coalesces them).
    pub appender: Option<EvlogClient>,
    /// The events of each append (`batch` events of `size` bytes; the data is shared).
    pub events: Vec<pb::EventData>,
    /// The run's clock: appends of `--mode subscribe` carry their send time, and every
    /// append's acknowledged position is noted.
    pub clock: Arc<Clock>,
    next_stream: AtomicU64,
    next_append_endpoint: AtomicU64,
    next_read_endpoint: AtomicU64,
}

impl Workload {
    pub fn new(
        config: BenchConfig,
        event_logs: Vec<EventLogClient<evlog_client::Transport>>,
        append_endpoints: Vec<usize>,
        appender: Option<EvlogClient>,
        clock: Arc<Clock>,
    ) -> Self {
        let events = (0..config.batch)
            .map(|index| pb::EventData {
                id: String::new(),
                r#type: "BenchEvent".to_string(),
                content_type: "application/octet-stream".to_string(),
                data: bytes::Bytes::from(payload(config.size, config.payload, index as u64)),
                metadata: Default::default(),
            })
            .collect();
        Self {
            config,
            event_logs,
            append_endpoints,
            appender,
            events,
            clock,
            next_stream: AtomicU64::new(0),
            next_append_endpoint: AtomicU64::new(0),
            next_read_endpoint: AtomicU64::new(0),
        }
    }

    fn next_stream(&self) -> String {
        self.config
            .stream(self.next_stream.fetch_add(1, Ordering::Relaxed))
    }

    fn pick(cursor: &AtomicU64, len: usize) -> usize {
        let len = u64::try_from(len.max(1)).unwrap_or(u64::MAX);
        usize::try_from(cursor.fetch_add(1, Ordering::Relaxed) % len).unwrap_or(0)
    }

    /// One append: one RPC, or one place in a coalesced call with `--via client`. Returns the
    /// events and data bytes appended.
    async fn append(&self) -> Result<(u64, u64), Status> {
        let slot = Self::pick(&self.next_append_endpoint, self.append_endpoints.len());
        let endpoint = self.append_endpoints.get(slot).copied().unwrap_or(0);
        let mut events = self.events.clone();
        if self.config.mode == BenchMode::Subscribe {
            let sent = self.clock.now_us().to_string();
            for event in &mut events {
                event.metadata.insert(SENT_KEY.to_string(), sent.clone());
            }
        }
        let request = pb::AppendRequest {
            stream: self.next_stream(),
            events,
            expected_version: None,
            idempotency_key: None,
        };
        let events = self.events.len() as u64;
        let bytes = self
            .events
            .iter()
            .map(|event| event.data.len() as u64)
            .sum();
        let timeout = self.config.request_timeout;
        let response = match &self.appender {
            Some(appender) => appender.append(request).await?,
            None => {
                let mut client = self.client(endpoint)?;
                deadline(timeout, client.append(with_timeout(request, timeout))).await?
            }
        };
        self.clock.acknowledged(response.last_position);
        Ok((events, bytes))
    }

    /// One read (linearizable unless `--consistency local`) of the first page of a stream,
    /// one RPC, from the next endpoint. Returns the events and data bytes read.
    async fn read(&self) -> Result<(u64, u64), Status> {
        let endpoint = Self::pick(&self.next_read_endpoint, self.event_logs.len());
        let request = pb::ReadRequest {
            target: Some(pb::read_request::Target::Stream(self.next_stream())),
            from: Some(1),
            max_count: self.config.page_size,
            direction: pb::Direction::Forward as i32,
            consistency: match self.config.consistency {
                ReadConsistency::Linearizable => pb::Consistency::Linearizable,
                ReadConsistency::Local => pb::Consistency::Local,
            } as i32,
            ..pb::ReadRequest::default()
        };
        let mut client = self.client(endpoint)?;
        let timeout = self.config.request_timeout;
        let response = deadline(timeout, client.read(with_timeout(request, timeout))).await?;
        let bytes = response
            .events
            .iter()
            .map(|event| event.data.len() as u64)
            .sum();
        Ok((response.events.len() as u64, bytes))
    }

    fn client(&self, endpoint: usize) -> Result<EventLogClient<evlog_client::Transport>, Status> {
        self.event_logs
            .get(endpoint)
            .cloned()
            .ok_or_else(|| Status::internal(format!("the bench has no endpoint {endpoint}")))
    }
}

/// Event data of `size` bytes, the `n`th of its kind: text is printable, so a human reading
/// the log back sees what it is.
fn payload(size: usize, kind: Payload, n: u64) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (n + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    match kind {
        Payload::Text => b"evlog-bench ".iter().copied().cycle().take(size).collect(),
        Payload::Random => (0..size.div_ceil(8))
            .flat_map(|_| next().to_le_bytes())
            .take(size)
            .collect(),
        Payload::Json => {
            let mut text = format!(
                "{{\"order_id\":\"ord-{:010}\",\"customer\":{{\"id\":{},\"tier\":\"{}\"}},\
                 \"status\":\"placed\",\"currency\":\"EUR\",\"items\":[",
                next() % 10_000_000_000,
                next() % 1_000_000,
                ["gold", "silver", "bronze"][(next() % 3) as usize]
            );
            let mut first = true;
            while text.len() < size {
                if !first {
                    text.push(',');
                }
                first = false;
                text.push_str(&format!(
                    "{{\"sku\":\"SKU-{:06}\",\"quantity\":{},\"unit_price\":{}.{:02},\
                     \"warehouse\":\"wh-{}\"}}",
                    next() % 1_000_000,
                    next() % 10 + 1,
                    next() % 500,
                    next() % 100,
                    next() % 20
                ));
            }
            text.push_str("]}");
            text.into_bytes()
        }
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The RPC's result, or DEADLINE_EXCEEDED when it did not answer within `timeout` (the
/// server gives up too: the request carries the same deadline).
async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let expired =
        || Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis()));
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        // tonic's channel enforces the request's deadline itself and reports it as
        // CANCELLED "Timeout expired"; gRPC calls that DEADLINE_EXCEEDED.
        Ok(Err(status)) if client_deadline_passed(&status) => Err(expired()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(expired()),
    }
}

/// Whether `status` is tonic's report of the client-side deadline passing.
fn client_deadline_passed(status: &Status) -> bool {
    status.code() == tonic::Code::Cancelled
        && status.message() == tonic::TimeoutExpired(()).to_string()
}

/// What one task measured.
pub struct TaskResult {
    /// Present when the mode appends.
    pub append: Option<Recorder>,
    /// Present when the mode reads.
    pub read: Option<Recorder>,
    /// When the task's last request finished.
    pub finished: Instant,
}

/// Runs one task until the schedule ends. `task` (its index) decides where in the append/read
/// alternation of the mixed mode it starts, so half the tasks start with each.
pub async fn run_task(
    task: usize,
    workload: Arc<Workload>,
    schedule: Schedule,
    progress: Arc<Progress>,
    mut append: Option<Recorder>,
    mut read: Option<Recorder>,
) -> TaskResult {
    let mut sent: usize = task;
    loop {
        let started = Instant::now();
        if started >= schedule.end {
            break;
        }
        let measured = started >= schedule.measure_from;
        if measured
            && let Some(count) = schedule.count
            && progress.started.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        let kind = match workload.config.mode {
            // Consume runs apart (`consume.rs`); its appenders append.
            BenchMode::Append | BenchMode::Batch | BenchMode::Subscribe | BenchMode::Consume => {
                OpKind::Append
            }
            BenchMode::Read => OpKind::Read,
            BenchMode::Mixed if sent.is_multiple_of(2) => OpKind::Append,
            BenchMode::Mixed => OpKind::Read,
        };
        sent = sent.wrapping_add(1);
        let outcome = match kind {
            OpKind::Append => workload.append().await,
            OpKind::Read => workload.read().await,
        };
        let recorder = match kind {
            OpKind::Append => append.as_mut(),
            OpKind::Read => read.as_mut(),
        };
        let Some(recorder) = recorder.filter(|_| measured) else {
            continue;
        };
        match outcome {
            Ok((events, bytes)) => {
                recorder.record_success(started.elapsed(), events, bytes);
                progress.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                recorder.record_error(&status);
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    TaskResult {
        append,
        read,
        finished: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size() {
        assert_eq!(payload(0, Payload::Text, 0).len(), 0);
        assert_eq!(payload(5, Payload::Text, 0), b"evlog");
        assert_eq!(payload(1_024, Payload::Text, 0).len(), 1_024);
        assert_eq!(payload(1_000, Payload::Random, 3).len(), 1_000);
        let json = payload(1_024, Payload::Json, 1);
        assert!(json.len() >= 1_024 && json.len() < 1_200, "{}", json.len());
        assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
        assert_ne!(json, payload(1_024, Payload::Json, 2));
    }

    #[test]
    fn a_client_side_timeout_is_a_deadline_exceeded() {
        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(client_deadline_passed(&timeout), "{timeout:?}");
        assert!(!client_deadline_passed(&Status::cancelled(
            "the client went away"
        )));
    }

    #[test]
    fn picking_goes_round_robin() {
        let cursor = AtomicU64::new(0);
        let picks: Vec<usize> = (0..5).map(|_| Workload::pick(&cursor, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1]);
    }
}
