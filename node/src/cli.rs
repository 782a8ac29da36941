//! The `evlog` command line: `serve` runs a node; `append`, `read` and `status` are clients.

use std::io::BufRead;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use evlog_proto::v1 as pb;

use crate::client::ClientOptions;
use crate::client::EvlogClient;
use crate::config::Limits;
use crate::config::NodeConfig;
use crate::config::parse_members;
use crate::config::parse_routes;

#[derive(Debug, Parser)]
#[command(
    name = "evlog",
    version,
    about = "A replicated event log: serve a node, or talk to a cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run a node.
    Serve(ServeArgs),
    /// Append events to a stream (from arguments, or one JSON event per stdin line).
    Append(AppendArgs),
    /// Read events from a stream or the whole log.
    Read(ReadArgs),
    /// Show every endpoint's view of the cluster.
    Status(StatusArgs),
    /// List streams (by name prefix), or show one stream's summary.
    Streams(StreamsArgs),
    /// Drive a running cluster and report throughput and latency.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (1 or more), stable across restarts.
    #[arg(long = "id", env = "EVLOG_NODE_ID")]
    pub node_id: u64,
    /// Address the gRPC server (clients and peers) listens on.
    #[arg(long, env = "EVLOG_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: std::net::SocketAddr,
    /// Address other nodes and clients reach this node at [default: the listen address].
    #[arg(long, env = "EVLOG_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where this node keeps its data.
    #[arg(long, env = "EVLOG_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The initial members, this node included: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT.
    #[arg(long, env = "EVLOG_PEERS", default_value = "")]
    pub peers: String,
    /// The cluster's name; a data directory of another cluster is refused.
    #[arg(long, env = "EVLOG_CLUSTER_ID", default_value = "evlog")]
    pub cluster_id: String,
    #[arg(long, env = "EVLOG_HEARTBEAT_INTERVAL_MS", default_value_t = NodeConfig::default().heartbeat_interval_ms)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, env = "EVLOG_ELECTION_TIMEOUT_MIN_MS", default_value_t = NodeConfig::default().election_timeout_min_ms)]
    pub election_timeout_min_ms: u64,
    #[arg(long, env = "EVLOG_ELECTION_TIMEOUT_MAX_MS", default_value_t = NodeConfig::default().election_timeout_max_ms)]
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, env = "EVLOG_SNAPSHOT_THRESHOLD", default_value_t = NodeConfig::default().snapshot_threshold)]
    pub snapshot_threshold: u64,
    /// Log entries kept after a snapshot.
    #[arg(long, env = "EVLOG_LOG_KEEP_AFTER_SNAPSHOT", default_value_t = NodeConfig::default().log_keep_after_snapshot)]
    pub log_keep_after_snapshot: u64,
    /// Memory the store may use to cache database pages, in MiB (node memory is about this
    /// plus what requests in flight hold).
    #[arg(long, env = "EVLOG_STORE_CACHE_MIB", default_value_t = NodeConfig::default().store_cache_mib)]
    pub store_cache_mib: usize,
    /// Save the store's allocator state with every commit, so a node restarted after a crash
    /// opens at once instead of walking its whole database file; every commit costs more.
    #[arg(long, env = "EVLOG_STORE_QUICK_REPAIR", default_value_t = NodeConfig::default().store_quick_repair, action = clap::ArgAction::Set)]
    pub store_quick_repair: bool,
    /// How long a request may wait for a leader, a commit or a read index.
    #[arg(long, env = "EVLOG_REQUEST_TIMEOUT_MS", default_value_t = NodeConfig::default().request_timeout_ms)]
    pub request_timeout_ms: u64,
    #[arg(long, env = "EVLOG_MAX_EVENT_BYTES", default_value_t = Limits::default().max_event_bytes)]
    pub max_event_bytes: usize,
    #[arg(long, env = "EVLOG_MAX_EVENTS_PER_APPEND", default_value_t = Limits::default().max_events_per_append)]
    pub max_events_per_append: usize,
    #[arg(long, env = "EVLOG_MAX_APPEND_BYTES", default_value_t = Limits::default().max_append_bytes)]
    pub max_append_bytes: usize,
    #[arg(long, env = "EVLOG_MAX_READ_COUNT", default_value_t = Limits::default().max_read_count)]
    pub max_read_count: usize,
    /// Dial peers at other addresses than they advertise: ADVERTISED=DIALED,... (a proxy or a
    /// NAT in between; the chaos tests route every link through a fault-injecting proxy).
    #[arg(long, env = "EVLOG_ROUTES", default_value = "")]
    pub routes: String,
    /// How the leader confirms leadership for linearizable reads: read-index (a quorum round,
    /// shared by concurrent reads; always safe) or lease (no round while the leader lease
    /// holds; assumes bounded clock drift and pauses, see README).
    #[arg(
        long,
        env = "EVLOG_READ_POLICY",
        value_enum,
        default_value = "read-index"
    )]
    pub read_policy: crate::config::ReadPolicy,
    /// How long an idempotency key is remembered, in seconds of append timestamps.
    #[arg(long, env = "EVLOG_IDEMPOTENCY_WINDOW_SECS", default_value_t = Limits::default().idempotency.window_ms / 1000)]
    pub idempotency_window_secs: u64,
    /// Most idempotency keys remembered; the oldest expire first.
    #[arg(long, env = "EVLOG_IDEMPOTENCY_MAX_KEYS", default_value_t = Limits::default().idempotency.max_keys)]
    pub idempotency_max_keys: u64,
}

impl ServeArgs {
    pub fn config(&self) -> Result<NodeConfig, String> {
        let defaults = NodeConfig::default();
        Ok(NodeConfig {
            node_id: self.node_id,
            listen_addr: self.listen,
            advertise_addr: self
                .advertise
                .clone()
                .unwrap_or_else(|| self.listen.to_string()),
            data_dir: self.data_dir.clone(),
            initial_members: parse_members(&self.peers)
                .map_err(|error| format!("--peers: {error}"))?,
            cluster_id: self.cluster_id.clone(),
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_threshold: self.snapshot_threshold,
            log_keep_after_snapshot: self.log_keep_after_snapshot,
            request_timeout_ms: self.request_timeout_ms,
            store_cache_mib: self.store_cache_mib,
            store_quick_repair: self.store_quick_repair,
            routes: parse_routes(&self.routes).map_err(|error| format!("--routes: {error}"))?,
            read_policy: self.read_policy,
            limits: Limits {
                max_event_bytes: self.max_event_bytes,
                max_events_per_append: self.max_events_per_append,
                max_append_bytes: self.max_append_bytes,
                max_read_count: self.max_read_count,
                idempotency: evlog_raft_store::types::IdempotencyPolicy {
                    window_ms: self.idempotency_window_secs.saturating_mul(1000),
                    max_keys: self.idempotency_max_keys,
                },
                ..Limits::default()
            },
            ..defaults
        })
    }
}

/// The endpoints of the local cluster `scripts/cluster.sh up` starts.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053";

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The cluster's endpoints, comma-separated.
    #[arg(long, env = "EVLOG_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Total time for the command, retries included.
    #[arg(long, default_value_t = 15_000)]
    pub timeout_ms: u64,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<EvlogClient> {
        let options = ClientOptions {
            deadline: Duration::from_millis(self.timeout_ms),
            ..ClientOptions::default()
        };
        EvlogClient::new(&self.endpoints, options).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The stream to append to.
    pub stream: String,
    /// Event payloads, one event each. None: read JSON events from stdin, one per line, e.g.
    /// {"type":"OrderPlaced","data":{"total":3},"id":"…","metadata":{"k":"v"}}.
    pub data: Vec<String>,
    /// The type of events given as arguments.
    #[arg(long = "type", default_value = "Event")]
    pub event_type: String,
    /// The content type of events given as arguments.
    #[arg(long, default_value = "text/plain")]
    pub content_type: String,
    /// Append only if the stream has exactly this many events (0: it must not exist).
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Retries with the same key append once.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Local,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read this stream (from stream versions).
    #[arg(long, conflicts_with = "all")]
    pub stream: Option<String>,
    /// Read the whole log (from global positions).
    #[arg(long)]
    pub all: bool,
    /// First version (stream) or position (all) to read.
    #[arg(long, conflicts_with = "from_time")]
    pub from: Option<u64>,
    /// Start at a time (milliseconds since the Unix epoch): forward, at the first event
    /// recorded at or after it; backward, at the last one at or before it.
    #[arg(long)]
    pub from_time: Option<u64>,
    /// Most events to print in all (pages through the log).
    #[arg(long, default_value_t = 1_000)]
    pub max_count: u64,
    /// Newest first.
    #[arg(long)]
    pub backward: bool,
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
}

#[derive(Debug, Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show this stream's summary instead of a list.
    pub stream: Option<String>,
    /// List only streams whose names start with this.
    #[arg(long, default_value = "", conflicts_with = "stream")]
    pub prefix: String,
    /// Most streams to list (pages through them).
    #[arg(long, default_value_t = 1_000)]
    pub max_count: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

fn event_json(event: &pb::RecordedEvent) -> serde_json::Value {
    let data = match std::str::from_utf8(&event.data) {
        Ok(text) => serde_json::from_str(text)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
        Err(_) => serde_json::Value::String(format!("<{} bytes>", event.data.len())),
    };
    serde_json::json!({
        "position": event.position,
        "stream": event.stream,
        "stream_version": event.stream_version,
        "id": event.id,
        "type": event.r#type,
        "content_type": event.content_type,
        "data": data,
        "metadata": event.metadata,
        "timestamp_ms": event.timestamp_ms,
    })
}

/// Parses one stdin line into an event.
fn parse_event_line(line: &str) -> anyhow::Result<pb::EventData> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|error| anyhow::anyhow!("not JSON ({error}): {line}"))?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let data = match value.get("data") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let content_type = match (text("content_type"), value.get("data")) {
        (given, _) if !given.is_empty() => given,
        (_, Some(serde_json::Value::String(_))) | (_, None) => "text/plain".to_string(),
        _ => "application/json".to_string(),
    };
    let metadata = value
        .get("metadata")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let event_type = text("type");
    Ok(pb::EventData {
        id: text("id"),
        r#type: if event_type.is_empty() {
            "Event".to_string()
        } else {
            event_type
        },
        content_type,
        data: data.into(),
        metadata,
    })
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn append(args: AppendArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let events = if args.data.is_empty() {
        let mut events = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                events.push(parse_event_line(&line)?);
            }
        }
        events
    } else {
        args.data
            .iter()
            .map(|data| pb::EventData {
                id: String::new(),
                r#type: args.event_type.clone(),
                content_type: args.content_type.clone(),
                data: data.clone().into_bytes().into(),
                metadata: Default::default(),
            })
            .collect()
    };
    let request = pb::AppendRequest {
        stream: args.stream.clone(),
        events,
        expected_version: args.expected_version,
        idempotency_key: args.idempotency_key.clone(),
    };
    let response = client.append(request).await.map_err(status_error)?;
    let receipt = response.receipt.unwrap_or_default();
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "stream": args.stream,
                "first_position": response.first_position,
                "last_position": response.last_position,
                "stream_version": response.stream_version,
                "deduplicated": response.deduplicated,
                "receipt": {"term": receipt.term, "log_index": receipt.log_index, "leader_id": receipt.leader_id},
            })
        );
    } else {
        println!(
            "appended to {}: positions {}..={}, stream version {}{} (log index {}, term {}, leader {})",
            args.stream,
            response.first_position,
            response.last_position,
            response.stream_version,
            if response.deduplicated {
                ", deduplicated: already appended"
            } else {
                ""
            },
            receipt.log_index,
            receipt.term,
            receipt.leader_id
        );
    }
    Ok(())
}

pub async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let target = match (&args.stream, args.all) {
        (Some(stream), false) => pb::read_request::Target::Stream(stream.clone()),
        (None, true) => pb::read_request::Target::All(pb::AllStreams {}),
        _ => anyhow::bail!("say what to read: --stream NAME or --all"),
    };
    let consistency = match args.consistency {
        ConsistencyArg::Linearizable => pb::Consistency::Linearizable,
        ConsistencyArg::Local => pb::Consistency::Local,
    };
    let mut from = args.from;
    let mut from_timestamp_ms = args.from_time;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Bounded: at most max_count events, in pages of at most 1,000.
    while printed < args.max_count {
        let page_size = (args.max_count - printed).min(1_000) as u32;
        let response = client
            .read(pb::ReadRequest {
                target: Some(target.clone()),
                from,
                from_timestamp_ms,
                max_count: page_size,
                direction: if args.backward {
                    pb::Direction::Backward
                } else {
                    pb::Direction::Forward
                } as i32,
                consistency: consistency as i32,
                at_least_position: 0,
            })
            .await
            .map_err(status_error)?;
        for event in &response.events {
            if args.client.json {
                writeln!(out, "{}", event_json(event))?;
            } else {
                writeln!(
                    out,
                    "#{:<6} {}@{} {} {}",
                    event.position,
                    event.stream,
                    event.stream_version,
                    event.r#type,
                    String::from_utf8_lossy(&event.data)
                )?;
            }
        }
        printed += response.events.len() as u64;
        match response.next_from {
            Some(next) if !response.events.is_empty() => {
                from = Some(next);
                from_timestamp_ms = None;
            }
            _ => break,
        }
    }
    Ok(())
}

fn summary_json(stream: &pb::StreamSummary) -> serde_json::Value {
    serde_json::json!({
        "stream": stream.stream,
        "version": stream.version,
        "first_position": stream.first_position,
        "last_position": stream.last_position,
    })
}

pub async fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(stream) = args.stream {
        let response = client
            .get_stream(pb::GetStreamRequest {
                stream,
                consistency: pb::Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .map_err(status_error)?;
        let summary = response.stream.unwrap_or_default();
        if args.client.json {
            writeln!(out, "{}", summary_json(&summary))?;
        } else {
            writeln!(
                out,
                "{}: version {}, positions {}..{}",
                summary.stream, summary.version, summary.first_position, summary.last_position
            )?;
        }
        return Ok(());
    }
    let mut after = None;
    let mut printed = 0u64;
    // Bounded: at most max_count streams, in pages of at most 1,000.
    while printed < args.max_count {
        let page_size = (args.max_count - printed).min(1_000) as u32;
        let response = client
            .list_streams(pb::ListStreamsRequest {
                prefix: args.prefix.clone(),
                after: after.clone(),
                max_count: page_size,
                consistency: pb::Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .map_err(status_error)?;
        for summary in &response.streams {
            if args.client.json {
                writeln!(out, "{}", summary_json(summary))?;
            } else {
                writeln!(
                    out,
                    "{:<40} version {:<8} positions {}..{}",
                    summary.stream, summary.version, summary.first_position, summary.last_position
                )?;
            }
        }
        printed += response.streams.len() as u64;
        match response.next_after {
            Some(next) if !response.streams.is_empty() => after = Some(next),
            _ => break,
        }
    }
    Ok(())
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let mut failures = 0;
    for (index, endpoint) in client.endpoints().iter().enumerate() {
        match client.status(index, Duration::from_secs(2)).await {
            Ok(status) => {
                if args.client.json {
                    let members: Vec<_> = status
                        .members
                        .iter()
                        .map(|m| serde_json::json!({"node_id": m.node_id, "address": m.address, "role": m.role, "matched_index": m.matched_index, "replication_lag": m.replication_lag}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "endpoint": endpoint, "node_id": status.node_id, "role": status.role, "term": status.term,
                            "leader_id": status.leader_id, "leader_address": status.leader_address,
                            "last_log_index": status.last_log_index, "committed_index": status.committed_index,
                            "applied_index": status.applied_index, "head_position": status.head_position,
                            "snapshot_index": status.snapshot_index, "purged_index": status.purged_index,
                            "millis_since_quorum_ack": status.millis_since_quorum_ack, "members": members,
                        })
                    );
                } else {
                    let quorum_ack = status
                        .millis_since_quorum_ack
                        .map(|ms| format!(" quorum ack {ms} ms ago"))
                        .unwrap_or_default();
                    println!(
                        "{endpoint:<22} node {:<3} {:<9} term {:<4} leader {:<3} log {:<8} committed {:<8} applied {:<8} head position {}{quorum_ack}",
                        status.node_id,
                        status.role,
                        status.term,
                        status.leader_id,
                        status.last_log_index,
                        status.committed_index,
                        status.applied_index,
                        status.head_position
                    );
                }
            }
            Err(error) => {
                failures += 1;
                if args.client.json {
                    println!(
                        "{}",
                        serde_json::json!({"endpoint": endpoint, "error": error.message()})
                    );
                } else {
                    println!("{endpoint:<22} unreachable: {}", error.message());
                }
            }
        }
    }
    if failures == client.endpoints().len() {
        anyhow::bail!("no endpoint answered");
    }
    Ok(())
}
