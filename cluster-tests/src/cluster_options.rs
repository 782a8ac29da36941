//! How a test cluster is started: node count, Raft timing, snapshot policy, and the harness's
//! own deadlines.

use std::time::Duration;

/// Options for [`crate::Cluster::start`]. `None` leaves a node setting at the binary's default.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many voters the cluster starts with; node ids are `1..=nodes`.
    pub nodes: u64,
    /// `--heartbeat-interval-ms`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `--election-timeout-min-ms`.
    pub election_timeout_min_ms: Option<u64>,
    /// `--election-timeout-max-ms`.
    pub election_timeout_max_ms: Option<u64>,
    /// `--snapshot-threshold`: log entries between snapshots.
    pub snapshot_threshold: Option<u64>,
    /// `--log-keep-after-snapshot`: log entries kept behind a snapshot before purging.
    pub log_keep_after_snapshot: Option<u64>,
    /// `--request-timeout-ms`: how long a node lets a request wait for a leader or a commit.
    pub request_timeout_ms: Option<u64>,
    /// Route every peer link through a fault-injecting proxy (see [`crate::Network`]), so the
    /// test can partition, slow down or cut links. Clients still reach the nodes directly.
    pub proxied: bool,
    /// Ports (and, when proxied, links) reserved for this many more nodes, with ids after the
    /// initial ones, for a node that joins later (see [`crate::Cluster::replace_node`]).
    pub spare_nodes: u64,
    /// Seeds the proxies' jitter and loss.
    pub network_seed: u64,
    /// TLS on every node: certificates made by `evlog dev-certs` in the cluster's directory
    /// (`certs/`, see [`crate::TestTls`]); the harness's clients trust its CA.
    pub tls: bool,
    /// With `tls`: nodes require client certificates signed by the cluster's CA
    /// (`--client-ca`).
    pub client_ca: bool,
    /// More arguments appended to every `evlog serve` command line.
    pub extra_args: Vec<String>,
    /// How long the whole cluster may take to start and agree on a leader.
    pub startup_timeout: Duration,
    /// The deadline of every RPC the harness sends (status polls use the shorter of this and
    /// 5 s, so a poll never stalls a wait).
    pub rpc_timeout: Duration,
    /// How long a node may take to exit after SIGTERM (or after SIGKILL) before the harness
    /// gives up on it.
    pub shutdown_timeout: Duration,
}

impl Default for ClusterOptions {
    /// Three nodes, with Raft timing relaxed for debug builds on a loaded two-core machine:
    /// a heartbeat every 100 ms and elections after 1-2 s of silence, so a slow scheduler does
    /// not cause spurious elections while a killed leader is still replaced within seconds.
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            heartbeat_interval_ms: Some(100),
            election_timeout_min_ms: Some(1_000),
            election_timeout_max_ms: Some(2_000),
            snapshot_threshold: None,
            log_keep_after_snapshot: None,
            request_timeout_ms: None,
            proxied: false,
            spare_nodes: 0,
            network_seed: 0,
            tls: false,
            client_ca: false,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ClusterOptions {
    /// The `evlog serve` flags these options set, in addition to the per-node ones.
    pub(crate) fn serve_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let flags = [
            ("--heartbeat-interval-ms", self.heartbeat_interval_ms),
            ("--election-timeout-min-ms", self.election_timeout_min_ms),
            ("--election-timeout-max-ms", self.election_timeout_max_ms),
            ("--snapshot-threshold", self.snapshot_threshold),
            ("--log-keep-after-snapshot", self.log_keep_after_snapshot),
            ("--request-timeout-ms", self.request_timeout_ms),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.push(flag.to_owned());
                args.push(value.to_string());
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}
