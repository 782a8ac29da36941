//! `evlog serve`: the flags of a node, and the configuration they make.

use std::path::PathBuf;

use clap::Args;

use crate::config::Limits;
use crate::config::NodeConfig;
use crate::config::parse_members;
use crate::config::parse_routes;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (1 or more), stable across restarts.
    #[arg(long = "id", env = "EVLOG_NODE_ID")]
    pub node_id: u64,
    /// Address the client gRPC server (EventLog, Consumers, Cluster, Maintenance, health,
    /// reflection) listens on.
    #[arg(long, env = "EVLOG_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: std::net::SocketAddr,
    /// Address clients (and nodes forwarding client requests) reach this node at [default:
    /// the listen address].
    #[arg(long, env = "EVLOG_ADVERTISE")]
    pub advertise: Option<String>,
    /// The peer port (boxed: clap's parsed arguments are large enough as they are).
    #[command(flatten)]
    pub peer: Box<PeerArgs>,
    /// TLS (boxed, as the peer port).
    #[command(flatten)]
    pub tls: Box<TlsArgs>,
    /// Access control.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Address the HTTP server (/metrics, /status, /status.json, /healthz, /readyz) listens
    /// on, or `off` [default: the gRPC listen address with its port + 1000].
    #[arg(long, env = "EVLOG_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// How log lines (stderr) are written: text, or one JSON object per line.
    #[arg(long, env = "EVLOG_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
    /// Where this node keeps its data.
    #[arg(long, env = "EVLOG_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The initial members, this node included, each ID=CLIENT_ADDRESS or
    /// ID=CLIENT_ADDRESS/PEER_ADDRESS: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT (each peer address
    /// then the same host with the port + 2000, the default --peer-listen).
    #[arg(long, env = "EVLOG_PEERS", default_value = "")]
    pub peers: String,
    /// The cluster's name; a data directory of another cluster is refused.
    #[arg(long, env = "EVLOG_CLUSTER_ID", default_value = "evlog")]
    pub cluster_id: String,
    /// Found a new cluster with --peers if the data directory is empty (pass it when creating
    /// the cluster). The node votes once a peer answers and none has committed anything; if
    /// one has (a node that lost its data, started with the flag still set), it waits to be
    /// caught up like a node started without it. Without it, a node with an empty data
    /// directory waits to be caught up by a leader, and does not vote until then.
    #[arg(long, env = "EVLOG_BOOTSTRAP")]
    pub bootstrap: bool,
    /// How often the leader sends heartbeats.
    #[arg(long, env = "EVLOG_HEARTBEAT_INTERVAL_MS", default_value_t = NodeConfig::default().heartbeat_interval_ms)]
    pub heartbeat_interval_ms: u64,
    /// A follower that has heard nothing for the leader lease (the max) plus a random time in
    /// min..max starts an election; raise both on a slow or overloaded network.
    #[arg(long, env = "EVLOG_ELECTION_TIMEOUT_MIN_MS", default_value_t = NodeConfig::default().election_timeout_min_ms)]
    pub election_timeout_min_ms: u64,
    /// The upper election timeout, also the leader lease.
    #[arg(long, env = "EVLOG_ELECTION_TIMEOUT_MAX_MS", default_value_t = NodeConfig::default().election_timeout_max_ms)]
    pub election_timeout_max_ms: u64,
    /// Deadline of one peer RPC (replication, votes, read-index requests).
    #[arg(long, env = "EVLOG_PEER_RPC_TIMEOUT_MS", default_value_t = NodeConfig::default().peer_rpc_timeout_ms)]
    pub peer_rpc_timeout_ms: u64,
    /// Deadline of one snapshot transfer to a follower.
    #[arg(long, env = "EVLOG_SNAPSHOT_TRANSFER_TIMEOUT_MS", default_value_t = NodeConfig::default().snapshot_transfer_timeout_ms)]
    pub snapshot_transfer_timeout_ms: u64,
    /// Largest snapshot this node accepts from a leader, in bytes (it is written to the data
    /// directory before it is installed).
    #[arg(long, env = "EVLOG_MAX_SNAPSHOT_BYTES", default_value_t = NodeConfig::default().max_snapshot_bytes)]
    pub max_snapshot_bytes: u64,
    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, env = "EVLOG_SNAPSHOT_THRESHOLD", default_value_t = NodeConfig::default().snapshot_threshold)]
    pub snapshot_threshold: u64,
    /// Log entries kept after a snapshot (a leader also keeps those after a snapshot it is
    /// sending, until the member caught up on them or 60 s after the transfer).
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
    /// On SIGTERM, a leader hands leadership to its most caught-up voter and waits up to this
    /// long for it to take over before stopping (no election timeout for a planned stop); 0
    /// stops at once.
    #[arg(long, env = "EVLOG_LEADER_HANDOFF_TIMEOUT_MS", default_value_t = NodeConfig::default().leader_handoff_timeout_ms)]
    pub leader_handoff_timeout_ms: u64,
    /// Largest event (data + metadata + id + type + content type), in bytes.
    #[arg(long, env = "EVLOG_MAX_EVENT_BYTES", default_value_t = Limits::default().max_event_bytes)]
    pub max_event_bytes: usize,
    /// Most events in one append.
    #[arg(long, env = "EVLOG_MAX_EVENTS_PER_APPEND", default_value_t = Limits::default().max_events_per_append)]
    pub max_events_per_append: usize,
    /// Largest append (all its events), in bytes.
    #[arg(long, env = "EVLOG_MAX_APPEND_BYTES", default_value_t = Limits::default().max_append_bytes)]
    pub max_append_bytes: usize,
    /// Most events or streams one read returns.
    #[arg(long, env = "EVLOG_MAX_READ_COUNT", default_value_t = Limits::default().max_read_count)]
    pub max_read_count: usize,
    /// Events or streams a read returns when it does not say.
    #[arg(long, env = "EVLOG_DEFAULT_READ_COUNT", default_value_t = Limits::default().default_read_count)]
    pub default_read_count: usize,
    /// Most bytes of events one read page holds; a page stops early and says where to go on.
    #[arg(long, env = "EVLOG_MAX_READ_BYTES", default_value_t = Limits::default().max_read_bytes)]
    pub max_read_bytes: usize,
    /// Most subscriptions this node serves at once (past it RESOURCE_EXHAUSTED).
    #[arg(long, env = "EVLOG_MAX_SUBSCRIPTIONS", default_value_t = Limits::default().max_subscriptions)]
    pub max_subscriptions: usize,
    /// Most bytes of events in one subscription batch (capped at --max-read-bytes).
    #[arg(long, env = "EVLOG_MAX_BATCH_BYTES", default_value_t = Limits::default().max_batch_bytes)]
    pub max_batch_bytes: usize,
    /// A live subscription more than this many events behind the head gets `fell_behind`.
    #[arg(long, env = "EVLOG_SUBSCRIPTION_WINDOW_EVENTS", default_value_t = Limits::default().subscription_window_events)]
    pub subscription_window_events: u64,
    /// Appends proposed on the leader and not yet answered, past which it refuses more as busy.
    #[arg(long, env = "EVLOG_MAX_PENDING_APPENDS", default_value_t = Limits::default().max_pending_appends)]
    pub max_pending_appends: u64,
    /// Most bytes of appends this node holds in flight; past it an append is refused at once
    /// (RESOURCE_EXHAUSTED, node busy) before its message is read.
    #[arg(long, env = "EVLOG_MAX_APPEND_BYTES_IN_FLIGHT", default_value_t = NodeConfig::default().max_append_bytes_in_flight)]
    pub max_append_bytes_in_flight: usize,
    /// Most connections the client gRPC port keeps open; past it new ones are closed at once
    /// (the peer port has its own, fixed, limit).
    #[arg(long, env = "EVLOG_MAX_CONNECTIONS", default_value_t = NodeConfig::default().max_connections)]
    pub max_connections: usize,
    /// Most concurrent calls on one connection (HTTP/2 streams).
    #[arg(long, env = "EVLOG_MAX_CONCURRENT_STREAMS", default_value_t = NodeConfig::default().max_concurrent_streams)]
    pub max_concurrent_streams: u32,
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
    /// Compress events' data (zstd) on the leader before proposing them: off, on (every event
    /// whose data shrinks by an eighth), or auto (only events of 256 bytes of data or more).
    /// Nodes of an evlog before compression cannot read compressed entries: turn it on once
    /// every node runs this version.
    #[arg(long, env = "EVLOG_COMPRESSION", value_enum, default_value = "off")]
    pub compression: crate::config::Compression,
    /// Refuse every append (FAILED_PRECONDITION): serve a restored copy for reading only.
    #[arg(long, env = "EVLOG_READ_ONLY")]
    pub read_only: bool,
    /// Retention (boxed: clap's parsed arguments are large enough as they are).
    #[command(flatten)]
    pub retention: Box<RetentionArgs>,
}

/// The peer listener: Raft traffic between nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// Address the peer gRPC server (Raft traffic between nodes, evlog.internal.v1) listens
    /// on [default: the --listen address with its port + 2000]. Only other nodes need to
    /// reach it: firewall it apart from the client port.
    #[arg(long, env = "EVLOG_PEER_LISTEN")]
    pub peer_listen: Option<std::net::SocketAddr>,
    /// Address other nodes send Raft traffic to [default: the --peer-listen address; its host
    /// taken from --advertise when it listens on all interfaces].
    #[arg(long, env = "EVLOG_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
}

/// TLS: off unless --tls-cert is given; then the peer port requires mutual TLS, and every
/// peer flag is required.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// The client port's certificate (PEM); turns TLS on, for both gRPC ports.
    #[arg(long, env = "EVLOG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "EVLOG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA (PEM) [default: no client
    /// certificates asked]. It must also have signed the nodes' --peer-cert, which they
    /// present when they forward client requests to one another.
    #[arg(long, env = "EVLOG_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// This node's peer certificate (PEM): served on the peer port and presented on every
    /// connection it makes to other nodes.
    #[arg(long, env = "EVLOG_PEER_CERT")]
    pub peer_cert: Option<PathBuf>,
    /// The private key (PEM) of --peer-cert.
    #[arg(long, env = "EVLOG_PEER_KEY")]
    pub peer_key: Option<PathBuf>,
    /// The CA (PEM) a peer's certificate must be signed by (the peer port refuses any other),
    /// and that this node trusts when it connects to other nodes' peer and client ports.
    #[arg(long, env = "EVLOG_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate files, when TLS is on; a partial set is an error naming what is missing.
    pub fn files(&self) -> Result<Option<crate::tls::TlsFiles>, String> {
        let Some(cert) = self.tls_cert.clone() else {
            let given = [
                ("--tls-key", self.tls_key.is_some()),
                ("--client-ca", self.client_ca.is_some()),
                ("--peer-cert", self.peer_cert.is_some()),
                ("--peer-key", self.peer_key.is_some()),
                ("--peer-ca", self.peer_ca.is_some()),
            ];
            return match given.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(format!(
                    "{flag} is given without --tls-cert: TLS is on only with --tls-cert (and \
                     then needs --tls-key, --peer-cert, --peer-key and --peer-ca)"
                )),
                None => Ok(None),
            };
        };
        let required = |flag: &str, value: &Option<PathBuf>| {
            value.clone().ok_or_else(|| {
                format!(
                    "--tls-cert needs {flag} too: with TLS on, the peer port requires mutual TLS \
                     (--tls-key, --peer-cert, --peer-key and --peer-ca are all required)"
                )
            })
        };
        Ok(Some(crate::tls::TlsFiles {
            cert,
            key: required("--tls-key", &self.tls_key)?,
            client_ca: self.client_ca.clone(),
            peer_cert: required("--peer-cert", &self.peer_cert)?,
            peer_key: required("--peer-key", &self.peer_key)?,
            peer_ca: required("--peer-ca", &self.peer_ca)?,
        }))
    }
}

/// Access control: off unless --auth (the local quickstart needs no credentials).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Require credentials on the client port: a token (`authorization: Bearer evl_…`) or,
    /// with --client-ca, a client certificate a role names; every call is checked against
    /// the caller's grants. Cluster.Status, health and reflection stay open.
    #[arg(long, env = "EVLOG_AUTH")]
    pub auth: bool,
    /// A file holding a token (`evl_<16 hex>_<64 hex>`, e.g. from `evlog access
    /// new-bootstrap-token`) that this node accepts as the principal `bootstrap` with ADMIN,
    /// apart from the replicated tokens: to create the first roles and tokens. Give every
    /// node the same file; drop the flag once real tokens exist.
    #[arg(long, env = "EVLOG_BOOTSTRAP_TOKEN_FILE", requires = "auth")]
    pub bootstrap_token_file: Option<PathBuf>,
}

/// Log-wide retention: off by default (an event store keeps everything unless told
/// otherwise).
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Log-wide: remove events recorded longer ago than this (e.g. 7d, 12h, 90m, 3600s; off
    /// by default: everything is kept). Decided by the leader, applied by every replica.
    #[arg(long, env = "EVLOG_RETENTION_MAX_AGE", default_value = "off", value_parser = parse_age_secs)]
    pub retention_max_age: Limit,
    /// Log-wide: remove the oldest events past this many stored bytes (e.g. 256MiB, 10GiB;
    /// off by default). Counts the events' stored records, not the index or the Raft log.
    #[arg(long, env = "EVLOG_RETENTION_MAX_BYTES", default_value = "off", value_parser = parse_size_bytes)]
    pub retention_max_bytes: Limit,
    /// How often the leader checks the log-wide limits and the streams' max_age_s.
    #[arg(long, env = "EVLOG_RETENTION_CHECK_INTERVAL_MS", default_value_t = crate::service::retention::RetentionConfig::default().check_interval_ms)]
    pub retention_check_interval_ms: u64,
}

/// A limit that may be off (clap takes `Option` fields for optional arguments, so it is wrapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

/// A duration in seconds: digits and a unit (s, m, h, d), or `off`.
fn parse_age_secs(value: &str) -> Result<Limit, String> {
    if value == "off" {
        return Ok(Limit(None));
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("expected digits and a unit (s, m, h, d), or off; got {value:?}"))?;
    let unit_secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    match amount.checked_mul(unit_secs) {
        Some(0) => Err("a max age must be at least 1s (or off)".to_string()),
        Some(secs) => Ok(Limit(Some(secs))),
        None => Err(format!("{value:?} is too long")),
    }
}

/// A size in bytes: digits and a unit (B, KiB, MiB, GiB, TiB), or `off`.
fn parse_size_bytes(value: &str) -> Result<Limit, String> {
    if value == "off" {
        return Ok(Limit(None));
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| {
        format!("expected digits and a unit (B, KiB, MiB, GiB, TiB), or off; got {value:?}")
    })?;
    let unit_bytes: u64 = match unit {
        "B" | "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    match amount.checked_mul(unit_bytes) {
        Some(0) => Err("a max size must be at least 1B (or off)".to_string()),
        Some(bytes) => Ok(Limit(Some(bytes))),
        None => Err(format!("{value:?} is too large")),
    }
}

/// The HTTP port's offset from the gRPC port when `--http-listen` is not given.
pub const HTTP_PORT_OFFSET: u16 = 1000;

impl ServeArgs {
    fn http_listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        match self.http_listen.as_deref() {
            Some("off") => Ok(None),
            Some(address) => address
                .parse()
                .map(Some)
                .map_err(|_| format!("--http-listen: expected HOST:PORT or off, got {address:?}")),
            None => {
                let port = self.listen.port().checked_add(HTTP_PORT_OFFSET).ok_or_else(|| {
                    format!(
                        "the HTTP port defaults to the gRPC port + {HTTP_PORT_OFFSET}, past 65535 \
                         for --listen {}: give --http-listen (or --http-listen off)",
                        self.listen
                    )
                })?;
                Ok(Some(std::net::SocketAddr::new(self.listen.ip(), port)))
            }
        }
    }

    fn peer_listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        if let Some(address) = self.peer.peer_listen {
            return Ok(address);
        }
        if self.listen.port() == 0 {
            // Any free port for clients: any free port for peers too.
            return Ok(self.listen);
        }
        let port = self
            .listen
            .port()
            .checked_add(crate::config::PEER_PORT_OFFSET)
            .ok_or_else(|| {
                format!(
                    "the peer port defaults to the gRPC port + {}, past 65535 for --listen {}: \
                     give --peer-listen",
                    crate::config::PEER_PORT_OFFSET,
                    self.listen
                )
            })?;
        Ok(std::net::SocketAddr::new(self.listen.ip(), port))
    }

    pub fn config(&self) -> Result<NodeConfig, String> {
        Ok(NodeConfig {
            node_id: self.node_id,
            listen_addr: self.listen,
            advertise_addr: self
                .advertise
                .clone()
                .unwrap_or_else(|| self.listen.to_string()),
            peer_listen_addr: self.peer_listen_addr()?,
            peer_advertise_addr: self.peer.peer_advertise.clone(),
            http_listen_addr: self.http_listen_addr()?,
            data_dir: self.data_dir.clone(),
            tls: self.tls.files()?,
            auth: crate::config::AuthConfig {
                enabled: self.auth.auth,
                bootstrap_token_file: self.auth.bootstrap_token_file.clone(),
            },
            initial_members: parse_members(&self.peers)
                .map_err(|error| format!("--peers: {error}"))?,
            cluster_id: self.cluster_id.clone(),
            bootstrap: self.bootstrap,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_threshold: self.snapshot_threshold,
            log_keep_after_snapshot: self.log_keep_after_snapshot,
            request_timeout_ms: self.request_timeout_ms,
            leader_handoff_timeout_ms: self.leader_handoff_timeout_ms,
            peer_rpc_timeout_ms: self.peer_rpc_timeout_ms,
            snapshot_transfer_timeout_ms: self.snapshot_transfer_timeout_ms,
            max_snapshot_bytes: self.max_snapshot_bytes,
            max_append_bytes_in_flight: self.max_append_bytes_in_flight,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            store_cache_mib: self.store_cache_mib,
            store_quick_repair: self.store_quick_repair,
            routes: parse_routes(&self.routes).map_err(|error| format!("--routes: {error}"))?,
            read_policy: self.read_policy,
            read_only: self.read_only,
            retention: crate::service::retention::RetentionConfig {
                max_age_s: self.retention.retention_max_age.0,
                max_bytes: self.retention.retention_max_bytes.0,
                check_interval_ms: self.retention.retention_check_interval_ms,
            },
            limits: Limits {
                max_event_bytes: self.max_event_bytes,
                max_events_per_append: self.max_events_per_append,
                max_append_bytes: self.max_append_bytes,
                max_read_count: self.max_read_count,
                default_read_count: self.default_read_count,
                max_read_bytes: self.max_read_bytes,
                max_subscriptions: self.max_subscriptions,
                max_batch_bytes: self.max_batch_bytes,
                subscription_window_events: self.subscription_window_events,
                max_pending_appends: self.max_pending_appends,
                idempotency: evlog_raft_store::types::IdempotencyPolicy {
                    window_ms: self.idempotency_window_secs.saturating_mul(1000),
                    max_keys: self.idempotency_max_keys,
                },
                compression: self.compression,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let args = ["evlog", "--id", "1", "--data-dir", "d"].iter().chain(args);
        <Command as clap::Parser>::try_parse_from(args)
            .expect("valid arguments")
            .serve
    }

    #[test]
    fn the_peer_port_defaults_to_the_client_port_plus_2000() {
        let config = serve(&["--listen", "10.0.0.1:7000"])
            .config()
            .expect("a config");
        assert_eq!(config.peer_listen_addr.to_string(), "10.0.0.1:9000");
        assert_eq!(config.peer_advertise_addr, None);
        let config = serve(&["--listen", "127.0.0.1:0"])
            .config()
            .expect("a config");
        assert_eq!(config.peer_listen_addr.port(), 0, "any free port for both");
        let config = serve(&[
            "--peer-listen",
            "0.0.0.0:7100",
            "--peer-advertise",
            "h:7100",
            "--peers",
            "1=h:50051/h:7100,2=g:50051",
        ])
        .config()
        .expect("a config");
        assert_eq!(config.peer_listen_addr.to_string(), "0.0.0.0:7100");
        assert_eq!(config.peer_advertise_addr.as_deref(), Some("h:7100"));
        assert_eq!(config.initial_members[&2].peer_address, "g:52051");
        assert!(serve(&["--listen", "127.0.0.1:64000"]).config().is_err());
    }

    #[test]
    fn retention_limits_parse_with_units_or_off() {
        assert_eq!(parse_age_secs("off"), Ok(Limit(None)));
        assert_eq!(parse_age_secs("90"), Ok(Limit(Some(90))));
        assert_eq!(parse_age_secs("7d"), Ok(Limit(Some(7 * 86_400))));
        assert_eq!(parse_age_secs("12h"), Ok(Limit(Some(12 * 3_600))));
        assert!(parse_age_secs("0s").is_err());
        assert!(parse_age_secs("5w").is_err());
        assert_eq!(parse_size_bytes("8MiB"), Ok(Limit(Some(8 << 20))));
        assert_eq!(parse_size_bytes("off"), Ok(Limit(None)));
        assert_eq!(parse_size_bytes("1024"), Ok(Limit(Some(1024))));
        assert!(parse_size_bytes("8MB").is_err());
        assert!(parse_size_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn tls_is_off_by_default_and_all_or_nothing() {
        assert!(serve(&[]).config().expect("valid").tls.is_none());
        let refused = serve(&["--peer-ca", "ca.pem"])
            .config()
            .expect_err("no --tls-cert");
        assert!(
            refused.contains("--peer-ca is given without --tls-cert"),
            "{refused}"
        );
        let refused = serve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .config()
            .expect_err("no peer files");
        assert!(refused.contains("--peer-cert"), "{refused}");
        let files = serve(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--peer-cert",
            "p.pem",
            "--peer-key",
            "p.key",
            "--peer-ca",
            "ca.pem",
        ])
        .config()
        .expect("valid")
        .tls
        .expect("TLS on");
        assert_eq!(files.peer_ca, PathBuf::from("ca.pem"));
        assert!(files.client_ca.is_none());
    }
}
