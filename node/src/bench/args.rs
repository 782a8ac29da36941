//! `evlog bench`'s flags, and the validated [`BenchConfig`] they resolve to.

use std::time::Duration;

use clap::Args;
use clap::ValueEnum;

/// What the events' data looks like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// "evlog-bench " repeated (compresses to almost nothing).
    #[default]
    Text,
    /// A JSON object (an order with line items: the same keys in every event, varying values).
    Json,
    /// Random bytes (do not compress).
    Random,
}

/// What each request of the benchmark does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Appends of `--batch` events each (default 1).
    Append,
    /// Appends of `--batch` events each (default 100).
    Batch,
    /// Linearizable reads of one page of a stream, spread over all endpoints.
    Read,
    /// Appends and linearizable reads, one to one.
    Mixed,
    /// Appends (as `append`) while `--subscribers` subscriptions deliver them: delivery
    /// latency (append sent -> delivered), and catch-up speed with `--subscribe-from
    /// beginning` (`--concurrency 0`: catch-up alone).
    Subscribe,
    /// A KEYED consumer group of `--members` members consumes `--preload` events per stream
    /// over `--streams` streams (appended first, interleaved), acking each, while
    /// `--concurrency` clients append through the client library (0: none): deliveries acked
    /// per second, ack -> settled latency, lag left.
    Consume,
}

impl BenchMode {
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Append => "append",
            BenchMode::Batch => "batch",
            BenchMode::Read => "read",
            BenchMode::Mixed => "mixed",
            BenchMode::Subscribe => "subscribe",
            BenchMode::Consume => "consume",
        }
    }

    /// Whether the mode appends (and so cares about `--target`).
    pub fn appends(self) -> bool {
        !matches!(self, BenchMode::Read)
    }

    /// Whether the mode reads (and so needs events to read: `--preload`).
    pub fn reads(self) -> bool {
        matches!(self, BenchMode::Read | BenchMode::Mixed)
    }
}

/// Where the subscriptions of `--mode subscribe` start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SubscribeFrom {
    /// After the head when the run starts: only the run's appends.
    Head,
    /// The first event: they catch up over the log first.
    Beginning,
}

impl SubscribeFrom {
    pub fn name(self) -> &'static str {
        match self {
            SubscribeFrom::Head => "head",
            SubscribeFrom::Beginning => "beginning",
        }
    }
}

/// Where appends go. Reads always go to every endpoint in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchTarget {
    /// The leader only, found with Cluster.Status before the run.
    Leader,
    /// Every endpoint in turn (followers forward appends to the leader).
    All,
}

impl BenchTarget {
    pub fn name(self) -> &'static str {
        match self {
            BenchTarget::Leader => "leader",
            BenchTarget::All => "all",
        }
    }
}

/// How appends travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchVia {
    /// One unary `Append` RPC per append, on the raw gRPC stub (the shape of etcd's Put).
    Unary,
    /// Through `evlog-client`, which coalesces the appends of concurrent tasks into
    /// `AppendMany` calls (no retries: one attempt, like the unary path).
    Client,
}

impl BenchVia {
    pub fn name(self) -> &'static str {
        match self {
            BenchVia::Unary => "unary",
            BenchVia::Client => "client",
        }
    }
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadConsistency {
    /// The serving node confirms a read index with the leader and waits until it applied it.
    Linearizable,
    /// The serving node's local state (may be stale); to compare against linearizable reads.
    Local,
}

impl ReadConsistency {
    pub fn name(self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Local => "local",
        }
    }
}

/// `evlog bench`: drive a running cluster and report throughput and latency.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The cluster's endpoints, comma-separated (all of them: reads are spread over every one).
    #[arg(long, env = "EVLOG_ENDPOINTS", value_delimiter = ',', default_value = evlog_client::DEFAULT_ENDPOINTS)]
    pub endpoints: Vec<String>,
    #[command(flatten)]
    pub tls: crate::cli::ClientTlsArgs,
    /// What each request does.
    #[arg(long, value_enum, default_value = "append")]
    pub mode: BenchMode,
    /// Requests in flight: this many tasks, each sending one request at a time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Bytes of data in each event.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// What the events' data looks like (for compression: `json` compresses, `random` does
    /// not); each event of an append has its own.
    #[arg(long, value_enum, default_value = "text")]
    pub payload: Payload,
    /// Events per append [default: 1; 100 with --mode batch].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Streams written and read: each once per round, in a scattered order.
    #[arg(long, default_value_t = 10)]
    pub streams: u64,
    /// Stream names are this prefix followed by 0..streams.
    #[arg(long, default_value = "bench-")]
    pub stream_prefix: String,
    /// Seconds measured (after the warm-up); the run ends at this or at --count, whichever
    /// comes first.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Requests measured (after the warm-up); ends the run early when reached.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds of load before measuring; not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Where appends go: the leader (found with Cluster.Status) or every endpoint in turn.
    #[arg(long, value_enum, default_value = "leader")]
    pub target: BenchTarget,
    /// How appends travel: one RPC each, or through the client library's coalescing.
    #[arg(long, value_enum, default_value = "unary")]
    pub via: BenchVia,
    /// With `--via client`: append calls the client keeps on the wire.
    #[arg(long, default_value_t = evlog_client::ClientOptions::default().append_calls_in_flight)]
    pub client_calls_in_flight: usize,
    /// With `--via unary` and `--target leader`: connections to the leader that appends take
    /// in turn (each one HTTP/2 connection carrying its share of the calls).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Events asked for by each read (`max_count`).
    #[arg(long, default_value_t = 10)]
    pub page_size: u32,
    /// How reads are served.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ReadConsistency,
    /// Events appended to each stream before a read or mixed run, so reads return data
    /// [default: --page-size in read and mixed modes, else 0].
    #[arg(long)]
    pub preload: Option<u64>,
    /// Deadline of each request; a request past it counts as a DEADLINE_EXCEEDED error.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How long to look for a leader before the run (and to retry each preload append).
    #[arg(long, default_value_t = 30_000)]
    pub setup_timeout_ms: u64,
    /// Subscriptions in `--mode subscribe`, spread over the endpoints.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Where they start.
    #[arg(long, value_enum, default_value = "head")]
    pub subscribe_from: SubscribeFrom,
    /// Events per subscription batch (`max_batch_events`; 0: the server's default, 256).
    #[arg(long, default_value_t = 0)]
    pub subscribe_batch: u32,
    /// `--mode consume`: members of the group, each its own client.
    #[arg(long, default_value_t = 4)]
    pub members: usize,
    /// `--mode consume`: each member's credit (deliveries unsettled at once); the client
    /// library's default.
    #[arg(long, default_value_t = evlog_client::ConsumeOptions::default().credit)]
    pub credit: u32,
    /// `--mode consume`: join this existing group instead (nothing is created or appended
    /// first); the run lasts --duration.
    #[arg(long)]
    pub group: Option<String>,
    /// `--mode consume`: dead-letter every delivery instead of acking it (fills the group's
    /// dead-letter queue, e.g. to measure `evlog consumer dlq redrive`).
    #[arg(long)]
    pub dead_letter: bool,
    /// Print exactly one JSON object (one line) at the end instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The most requests in flight: far above what one client machine sensibly drives.
const MAX_CONCURRENCY: usize = 100_000;
/// The most subscriptions: a node serves 4,096 by default.
const MAX_SUBSCRIBERS: usize = 10_000;

/// A benchmark run, resolved from [`BenchArgs`] and validated.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub endpoints: Vec<String>,
    pub mode: BenchMode,
    /// Tasks, each with one request in flight.
    pub concurrency: usize,
    /// Bytes of data per event.
    pub size: usize,
    pub payload: Payload,
    /// Events per append.
    pub batch: usize,
    pub streams: u64,
    pub stream_prefix: String,
    /// Measured time, at most.
    pub duration: Duration,
    /// Measured requests, at most.
    pub count: Option<u64>,
    pub warmup: Duration,
    pub target: BenchTarget,
    pub via: BenchVia,
    pub client_calls_in_flight: usize,
    pub connections: usize,
    pub page_size: u32,
    pub consistency: ReadConsistency,
    /// Events appended to each stream before the run.
    pub preload: u64,
    pub request_timeout: Duration,
    pub setup_timeout: Duration,
    /// `--mode subscribe` only.
    pub subscribers: usize,
    pub subscribe_from: SubscribeFrom,
    pub subscribe_batch: u32,
    /// `--mode consume` only.
    pub members: usize,
    pub credit: u32,
    pub dead_letter: bool,
    pub group: Option<String>,
    pub json: bool,
    /// TLS to the endpoints (`--ca`, `--cert`, `--key`), or plaintext.
    pub tls: Option<evlog_client::ClientTls>,
    /// `--token`: for a cluster with access control on.
    pub token: Option<String>,
}

impl BenchConfig {
    /// The default client options, with this run's TLS.
    pub fn client_options(&self) -> evlog_client::ClientOptions {
        evlog_client::ClientOptions {
            tls: self.tls.clone(),
            token: self.token.clone(),
            ..evlog_client::ClientOptions::default()
        }
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a number of seconds, 0 or more, got {value}"))
}

impl BenchArgs {
    /// Fills in the mode-dependent defaults and checks every bound.
    pub fn config(&self) -> Result<BenchConfig, String> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|endpoint| endpoint.trim().to_string())
            .filter(|endpoint| !endpoint.is_empty())
            .collect();
        let config = BenchConfig {
            endpoints,
            tls: self
                .tls
                .client_tls()
                .map_err(|error| format!("{error:#}"))?,
            token: self.tls.token.clone(),
            mode: self.mode,
            concurrency: self.concurrency,
            size: self.size,
            payload: self.payload,
            batch: self.batch.unwrap_or(match self.mode {
                BenchMode::Batch => 100,
                _ => 1,
            }),
            streams: self.streams,
            stream_prefix: self.stream_prefix.clone(),
            duration: seconds("--duration", self.duration)?,
            count: self.count,
            warmup: seconds("--warmup", self.warmup)?,
            target: self.target,
            via: self.via,
            client_calls_in_flight: self.client_calls_in_flight,
            connections: self.connections,
            page_size: self.page_size,
            consistency: self.consistency,
            preload: self.preload.unwrap_or(if self.mode.reads() {
                u64::from(self.page_size)
            } else {
                0
            }),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            setup_timeout: Duration::from_millis(self.setup_timeout_ms),
            subscribers: if self.mode == BenchMode::Subscribe {
                self.subscribers
            } else {
                0
            },
            subscribe_from: self.subscribe_from,
            subscribe_batch: self.subscribe_batch,
            members: self.members,
            credit: self.credit,
            dead_letter: self.dead_letter,
            group: self.group.clone(),
            json: self.json,
        };
        config.validate()?;
        Ok(config)
    }
}

impl BenchConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("--endpoints: give at least one endpoint".to_string());
        }
        // Catch-up alone: subscribers over what the log holds, nothing appended.
        let catch_up_only = self.mode == BenchMode::Subscribe
            && self.subscribe_from == SubscribeFrom::Beginning
            && self.subscribers > 0;
        let consume_only = self.mode == BenchMode::Consume;
        if (self.concurrency == 0 && !catch_up_only && !consume_only)
            || self.concurrency > MAX_CONCURRENCY
        {
            return Err(format!(
                "--concurrency must be 1 to {MAX_CONCURRENCY} (0 only with --mode subscribe \
                 --subscribe-from beginning), got {}",
                self.concurrency
            ));
        }
        if self.subscribers > MAX_SUBSCRIBERS {
            return Err(format!(
                "--subscribers must be at most {MAX_SUBSCRIBERS}, got {}",
                self.subscribers
            ));
        }
        if self.subscribe_batch > 4_096 {
            return Err(format!(
                "--subscribe-batch must be at most 4096, got {}",
                self.subscribe_batch
            ));
        }
        if self.mode == BenchMode::Consume
            && (!(1..=64).contains(&self.members) || !(1..=10_000).contains(&self.credit))
        {
            return Err(format!(
                "--members must be 1 to 64 and --credit 1 to 10000, got {} and {}",
                self.members, self.credit
            ));
        }
        if self.batch == 0 {
            return Err("--batch must be 1 or more".to_string());
        }
        if !(1..=1_024).contains(&self.client_calls_in_flight) {
            return Err(format!(
                "--client-calls-in-flight must be 1 to 1024, got {}",
                self.client_calls_in_flight
            ));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(format!(
                "--connections must be 1 to 64, got {}",
                self.connections
            ));
        }
        if self.connections > 1
            && (self.via != BenchVia::Unary
                || self.target != BenchTarget::Leader
                || !self.mode.appends())
        {
            return Err(
                "--connections applies to unary appends to the leader (a mode that appends, \
                 --via unary, --target leader)"
                    .to_string(),
            );
        }
        if self.streams == 0 {
            return Err("--streams must be 1 or more".to_string());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0 seconds".to_string());
        }
        if self.count == Some(0) {
            return Err("--count must be 1 or more".to_string());
        }
        if self.page_size == 0 {
            return Err("--page-size must be 1 or more".to_string());
        }
        if self.request_timeout.is_zero() || self.setup_timeout.is_zero() {
            return Err(
                "--request-timeout-ms and --setup-timeout-ms must be 1 or more".to_string(),
            );
        }
        Ok(())
    }

    /// The name of the `index`th stream taken. Every `streams` consecutive indexes name each
    /// stream once, in a scattered order: `index × P mod streams` for a prime P that does not
    /// divide `streams`. Taken in numeric order (`bench-1000`, `bench-1001`, …), neighbouring
    /// appends would land on neighbouring keys of the stream tables, which flatters a store
    /// with many streams: real aggregates are written in no such order.
    pub fn stream(&self, index: u64) -> String {
        let streams = u128::from(self.streams);
        let prime = SCATTER_PRIMES
            .into_iter()
            .find(|prime| streams % u128::from(*prime) != 0)
            .map_or(1, u128::from);
        let scattered = (u128::from(index) % streams) * prime % streams;
        format!("{}{}", self.stream_prefix, scattered)
    }
}

/// Multipliers for [`BenchConfig::stream`]: primes, so one of them does not divide any
/// `--streams` value (it would have to be a multiple of all three).
const SCATTER_PRIMES: [u64; 3] = [2_654_435_761, 2_246_822_519, 3_266_489_917];

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn config(args: &[&str]) -> Result<BenchConfig, String> {
        let command = Command::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map_err(|error| error.to_string())?;
        command.bench.config()
    }

    #[test]
    fn defaults_depend_on_the_mode() {
        let append = config(&[]).expect("the defaults are valid");
        assert_eq!(append.mode, BenchMode::Append);
        assert_eq!(
            (append.batch, append.preload, append.concurrency),
            (1, 0, 16)
        );
        assert_eq!(append.endpoints.len(), 3);
        assert_eq!(append.duration, Duration::from_secs(10));
        let batch = config(&["--mode", "batch"]).expect("valid");
        assert_eq!(batch.batch, 100);
        let read = config(&["--mode", "read", "--page-size", "7"]).expect("valid");
        assert_eq!(read.preload, 7);
    }

    #[test]
    fn bounds_are_checked() {
        for bad in [
            &["--concurrency", "0"][..],
            &["--batch", "0"],
            &["--streams", "0"],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--warmup", "NaN"],
            &["--count", "0"],
            &["--endpoints", ""],
            &["--connections", "0"],
            &["--connections", "65"],
            &["--connections", "2", "--via", "client"],
            &["--connections", "2", "--target", "all"],
            &["--connections", "2", "--mode", "read"],
        ] {
            assert!(config(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            config(&["--connections", "8"]).expect("valid").connections,
            8
        );
        // Nothing appended is only for subscribers catching up.
        assert!(config(&["--mode", "subscribe", "--concurrency", "0"]).is_err());
        let catch_up = config(&[
            "--mode",
            "subscribe",
            "--concurrency",
            "0",
            "--subscribe-from",
            "beginning",
        ])
        .expect("valid");
        assert_eq!((catch_up.subscribers, catch_up.concurrency), (1, 0));
        assert!(config(&["--mode", "subscribe", "--subscribe-batch", "4097"]).is_err());
        assert_eq!(
            config(&["--subscribers", "5"]).expect("valid").subscribers,
            0
        );
        let fractional = config(&["--duration", "0.5", "--warmup", "0"]).expect("valid");
        assert_eq!(fractional.duration, Duration::from_millis(500));
    }

    #[test]
    fn each_stream_is_taken_once_per_round_in_a_scattered_order() {
        for streams in [1_u64, 3, 10, 1_000, 2_654_435_761] {
            let count = streams.min(1_000);
            let arg = streams.to_string();
            let config = config(&["--streams", &arg, "--stream-prefix", "s-"]).expect("valid");
            let names: Vec<String> = (0..count).map(|index| config.stream(index)).collect();
            let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
            assert_eq!(distinct.len() as u64, count, "{streams} streams: {names:?}");
            assert!(
                names.iter().all(|name| name
                    .strip_prefix("s-")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n < streams)),
                "{streams} streams: {names:?}"
            );
            // The next round starts over, in the same order.
            assert_eq!(config.stream(streams), config.stream(0));
            if streams >= 1_000 {
                let numeric: Vec<String> = (0..count).map(|n| format!("s-{n}")).collect();
                assert_ne!(names, numeric, "not in numeric order");
            }
        }
    }
}
