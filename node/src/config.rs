//! A node's configuration: one documented type with defaults and `validate()`. Durations and
//! sizes carry their unit in the name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use evlog_raft_store::type_config::MemberNode;
use evlog_raft_store::types::IdempotencyPolicy;

/// Limits on what clients may send and ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest event (data + metadata + id + type + content type), in bytes.
    pub max_event_bytes: usize,
    /// Most events in one append.
    pub max_events_per_append: usize,
    /// Largest append request (all its events), in bytes.
    pub max_append_bytes: usize,
    /// Most events one read returns.
    pub max_read_count: usize,
    /// Events a read returns when it does not say.
    pub default_read_count: usize,
    /// Most bytes of events one read page holds (stored size); a page stops early (at least
    /// one event) and says where to go on.
    pub max_read_bytes: usize,
    /// Most subscriptions a node serves at once; past it `Subscribe` is refused
    /// (`RESOURCE_EXHAUSTED`).
    pub max_subscriptions: usize,
    /// Most bytes of events in one subscription batch (stored size; at least one event),
    /// capped at `max_read_bytes` (a batch is a response message, like a read page).
    pub max_batch_bytes: usize,
    /// A live subscription more than this many events behind the head is told it fell
    /// behind (`fell_behind`), and caught up again when it is back.
    pub subscription_window_events: u64,
    /// Appends proposed on this node (the leader) and not yet answered, past which it refuses
    /// more as busy (`RESOURCE_EXHAUSTED`, `evlog-busy`: nothing done) instead of queueing them.
    pub max_pending_appends: u64,
    /// How long idempotency keys are remembered. The leader's setting travels in each append,
    /// so replicas expire keys identically even if their flags differ.
    pub idempotency: IdempotencyPolicy,
    /// Whether the leader compresses events' data before proposing them.
    pub compression: Compression,
}

/// Whether the leader compresses events' data (zstd) before it proposes them: the log, the
/// replication and the stored events then carry the compressed bytes; reads decompress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// Never (the default: a node of an evlog before compression cannot read compressed
    /// entries, so turn it on once every node runs this version).
    #[default]
    Off,
    /// Every event whose data shrinks by at least an eighth.
    On,
    /// Events of at least 256 bytes of data whose data shrinks by at least an eighth.
    Auto,
}

/// The least data `Compression::Auto` compresses: below it, the zstd frame's overhead and the
/// CPU are not worth it.
pub const AUTO_COMPRESSION_MIN_BYTES: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1 << 20,
            max_events_per_append: 1_000,
            max_append_bytes: 4 << 20,
            max_read_count: 10_000,
            default_read_count: 100,
            max_read_bytes: 4 << 20,
            max_subscriptions: 4_096,
            max_batch_bytes: 1 << 20,
            subscription_window_events: 10_000,
            max_pending_appends: 20_000,
            idempotency: IdempotencyPolicy::default(),
            compression: Compression::default(),
        }
    }
}

/// Access control (see `service::access`).
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// `--auth`: every client call needs credentials and grants.
    pub enabled: bool,
    /// `--bootstrap-token-file`: a token accepted as the principal `bootstrap`, with ADMIN.
    pub bootstrap_token_file: Option<PathBuf>,
}

/// Everything `evlog serve` needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (≥ 1), stable across restarts.
    pub node_id: u64,
    /// Where the client gRPC server (client services only) listens.
    pub listen_addr: SocketAddr,
    /// The address clients (and other nodes forwarding client requests) reach this node at.
    pub advertise_addr: String,
    /// Where the peer gRPC server (the Raft peer protocol, `evlog.internal.v1`) listens.
    pub peer_listen_addr: SocketAddr,
    /// The address other nodes send Raft traffic to; `None`: the peer listener's address
    /// (its host taken from `advertise_addr` when it listens on all interfaces).
    pub peer_advertise_addr: Option<String>,
    /// Where the HTTP server (`/metrics`, `/status`, `/healthz`, `/readyz`) listens; `None`:
    /// no HTTP server.
    pub http_listen_addr: Option<SocketAddr>,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// TLS on both gRPC ports (mutual on the peer port); `None`: plaintext.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Access control (`--auth`); off by default.
    pub auth: AuthConfig,
    /// The initial members (node id -> advertised client and peer addresses), this node
    /// included. The node with the lowest id initializes the cluster once every member answers
    /// and none has a log.
    pub initial_members: BTreeMap<u64, MemberNode>,
    /// The cluster's name; a data directory of another cluster is refused.
    pub cluster_id: String,
    /// This node founds a new cluster with `initial_members` if its data directory is empty:
    /// it may vote at once, and the lowest-id member initializes the cluster once every member
    /// answers and none has a log. Without it, a node with an empty data directory joins a
    /// cluster that exists (or lost its data): it waits to be caught up by a leader and votes
    /// only then. Ignored when the data directory holds a store.
    pub bootstrap: bool,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_threshold: u64,
    /// Log entries kept after a snapshot (so slightly lagging followers need no snapshot).
    pub log_keep_after_snapshot: u64,
    /// Deadline of one peer RPC (append entries, vote).
    pub peer_rpc_timeout_ms: u64,
    /// Memory the store may use to cache database pages, in MiB.
    pub store_cache_mib: usize,
    /// Save the store's allocator state with every commit (fast reopening after a crash).
    pub store_quick_repair: bool,
    /// Deadline of a snapshot transfer.
    pub snapshot_transfer_timeout_ms: u64,
    /// Largest snapshot accepted from a leader, in bytes.
    pub max_snapshot_bytes: u64,
    /// Most bytes of appends a node holds in flight (received, not yet answered); past it an
    /// append is refused at once, `RESOURCE_EXHAUSTED`, before its message is read.
    pub max_append_bytes_in_flight: usize,
    /// Most connections the gRPC port keeps open; past it new ones are closed at once.
    pub max_connections: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection.
    pub max_concurrent_streams: u32,
    /// How long a client request may wait for a leader, a commit or a read index, when the
    /// client sets no shorter deadline.
    pub request_timeout_ms: u64,
    /// On SIGTERM, a leader hands leadership to its most caught-up voter and waits this long
    /// for it to take over before it stops (as etcd does), so a planned stop costs no election
    /// timeout; 0 stops at once (the others then elect a leader after an election timeout).
    pub leader_handoff_timeout_ms: u64,
    pub limits: Limits,
    /// Peers to dial at another address than the one they advertise (advertised -> dialed):
    /// through a proxy or a NAT. The chaos tests put a fault-injecting proxy on every link
    /// this way.
    pub routes: BTreeMap<String, String>,
    /// How the leader confirms it is still the leader for a linearizable read.
    pub read_policy: ReadPolicy,
    /// Refuse every append (`FAILED_PRECONDITION`): a node serving a restored backup to read
    /// from (`evlog restore --sandbox`). Consumer groups still work (their state is the
    /// node's own).
    pub read_only: bool,
    /// Log-wide retention (off by default: an event store keeps everything unless told
    /// otherwise) and how often the leader checks it and the streams' `max_age_s`.
    pub retention: crate::service::retention::RetentionConfig,
}

/// How the leader confirms its leadership for a linearizable read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadPolicy {
    /// A quorum round that starts after the read (shared by concurrent reads). Always safe.
    #[default]
    ReadIndex,
    /// Skip the round while a quorum acknowledged the leader within its lease (the election
    /// timeout max), falling back to a round otherwise. Safe only while clocks advance at about
    /// the same rate on every node and no leader pauses longer than its lease: a paused
    /// leader whose clock did not see the pause can serve a stale read.
    Lease,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            advertise_addr: "127.0.0.1:50051".to_string(),
            peer_listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051 + PEER_PORT_OFFSET)),
            peer_advertise_addr: None,
            http_listen_addr: None,
            data_dir: PathBuf::from("evlog-data"),
            initial_members: BTreeMap::new(),
            cluster_id: "evlog".to_string(),
            bootstrap: false,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 110,
            election_timeout_max_ms: 200,
            snapshot_threshold: 100_000,
            log_keep_after_snapshot: 10_000,
            peer_rpc_timeout_ms: 2_000,
            store_cache_mib: evlog_raft_store::engine::DEFAULT_CACHE_BYTES >> 20,
            store_quick_repair: false,
            snapshot_transfer_timeout_ms: 300_000,
            max_snapshot_bytes: 256 << 30,
            max_append_bytes_in_flight: 32 << 20,
            max_connections: 4096,
            max_concurrent_streams: 256,
            request_timeout_ms: 10_000,
            leader_handoff_timeout_ms: 2_000,
            limits: Limits::default(),
            routes: BTreeMap::new(),
            tls: None,
            auth: AuthConfig::default(),
            read_policy: ReadPolicy::default(),
            read_only: false,
            retention: Default::default(),
        }
    }
}

/// A configuration that cannot work, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError(message));
        if self.node_id == 0 {
            return fail("node id must be 1 or more".to_string());
        }
        if !self.initial_members.is_empty() && !self.initial_members.contains_key(&self.node_id) {
            return fail(format!(
                "--peers must include this node ({}); it lists {:?}",
                self.node_id,
                self.initial_members.keys().collect::<Vec<_>>()
            ));
        }
        if self.bootstrap && self.initial_members.is_empty() {
            return fail(
                "--bootstrap founds a cluster with --peers: list the founding members, this \
                 node included"
                    .to_string(),
            );
        }
        if self.initial_members.contains_key(&0) {
            return fail("node ids in --peers must be 1 or more".to_string());
        }
        if self.peer_listen_addr == self.listen_addr && self.listen_addr.port() != 0 {
            return fail(format!(
                "the peer port must be apart from the client port: --listen and --peer-listen \
                 are both {}",
                self.listen_addr
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return fail("heartbeat interval must be positive".to_string());
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms * 2 {
            return fail(format!(
                "election timeout min ({} ms) must exceed twice the heartbeat interval ({} ms)",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return fail(format!(
                "election timeout max ({} ms) must exceed min ({} ms)",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            ));
        }
        if self.store_cache_mib == 0 || self.store_cache_mib > 1 << 20 {
            return fail(format!(
                "store cache must be between 1 MiB and 1 TiB, got {} MiB",
                self.store_cache_mib
            ));
        }
        if self.snapshot_threshold == 0 {
            return fail("snapshot threshold must be positive".to_string());
        }
        if self.cluster_id.is_empty() {
            return fail("cluster id must not be empty".to_string());
        }
        let limits = &self.limits;
        if limits.idempotency.window_ms == 0 || limits.idempotency.max_keys == 0 {
            return fail("the idempotency window and key count must be positive".to_string());
        }
        if limits.max_event_bytes == 0
            || limits.max_events_per_append == 0
            || limits.max_append_bytes == 0
        {
            return fail("limits must be positive".to_string());
        }
        if limits.max_append_bytes > 64 << 20 {
            return fail("max append bytes is at most 64 MiB".to_string());
        }
        if limits.max_read_bytes < limits.max_event_bytes {
            return fail(format!(
                "max read bytes ({}) must hold the largest event ({} bytes)",
                limits.max_read_bytes, limits.max_event_bytes
            ));
        }
        if self.max_append_bytes_in_flight < limits.max_append_bytes + (1 << 20)
            || self.max_append_bytes_in_flight > u32::MAX as usize
        {
            return fail(format!(
                "max append bytes in flight ({}) must hold the largest append ({} bytes) with \
                 1 MiB to spare, and be under 4 GiB",
                self.max_append_bytes_in_flight, limits.max_append_bytes
            ));
        }
        if self.max_connections == 0 || self.max_concurrent_streams == 0 {
            return fail("max connections and max concurrent streams must be positive".to_string());
        }
        if limits.max_batch_bytes == 0 {
            return fail("max batch bytes must be positive".to_string());
        }
        if limits.max_pending_appends == 0 {
            return fail("max pending appends must be positive".to_string());
        }
        if limits.max_subscriptions == 0 || limits.subscription_window_events == 0 {
            return fail(
                "max subscriptions and the subscription window must be positive".to_string(),
            );
        }
        if limits.default_read_count == 0 || limits.default_read_count > limits.max_read_count {
            return fail("default read count must be between 1 and the max read count".to_string());
        }
        if self.retention.check_interval_ms == 0 {
            return fail("the retention check interval must be positive".to_string());
        }
        Ok(())
    }
}

/// A node's default peer port is its client port plus this (`--peer-listen`); its HTTP port
/// is its client port plus 1000.
pub const PEER_PORT_OFFSET: u16 = 2000;

/// The default peer address of a node advertised at `client_address` (`HOST:PORT`): the same
/// host, the port + [`PEER_PORT_OFFSET`]. Used for a member of `--peers` given without its
/// peer address, and for a member of a membership recorded before evlog had a peer port.
pub fn derived_peer_address(client_address: &str) -> Result<String, String> {
    let (host, port) = client_address
        .rsplit_once(':')
        .ok_or_else(|| format!("{client_address:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{client_address:?} is not HOST:PORT"))?;
    let peer_port = port.checked_add(PEER_PORT_OFFSET).ok_or_else(|| {
        format!(
            "the peer port of {client_address} defaults to its port + {PEER_PORT_OFFSET}, past \
             65535: give the peer address"
        )
    })?;
    Ok(format!("{host}:{peer_port}"))
}

/// The peer address to dial for `node`: its recorded one, or (a membership recorded before
/// evlog had a peer port) the one derived from its client address. An address that cannot
/// be derived is returned as it is, and fails when dialed.
pub fn peer_address_of(node: &MemberNode) -> String {
    if node.peer_address.is_empty() {
        derived_peer_address(&node.client_address).unwrap_or_else(|_| node.client_address.clone())
    } else {
        node.peer_address.clone()
    }
}

/// Parses `1=127.0.0.1:50051,2=127.0.0.1:50052` (client addresses; each peer address is
/// derived, see [`derived_peer_address`]) or `1=127.0.0.1:50051/127.0.0.1:52051,...` (client
/// address, then peer address).
pub fn parse_members(text: &str) -> Result<BTreeMap<u64, MemberNode>, String> {
    let mut members = BTreeMap::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id"))?;
        let (client, peer) = match addr.split_once('/') {
            Some((client, peer)) => (client.trim(), Some(peer.trim())),
            None => (addr.trim(), None),
        };
        if client.is_empty() || peer.is_some_and(str::is_empty) {
            return Err(format!(
                "node {id} has no address: give ID=CLIENT_HOST:PORT or \
                 ID=CLIENT_HOST:PORT/PEER_HOST:PORT"
            ));
        }
        let peer = match peer {
            Some(peer) => peer.to_string(),
            None => derived_peer_address(client).map_err(|error| format!("node {id}: {error}"))?,
        };
        if members.insert(id, MemberNode::new(client, peer)).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(members)
}

/// Parses `ADVERTISED=DIALED,...` (both `HOST:PORT`).
pub fn parse_routes(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut routes = BTreeMap::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (advertised, dialed) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not ADVERTISED=DIALED"))?;
        let (advertised, dialed) = (advertised.trim(), dialed.trim());
        if advertised.is_empty() || dialed.is_empty() {
            return Err(format!("{part:?} is not ADVERTISED=DIALED"));
        }
        if routes
            .insert(advertised.to_string(), dialed.to_string())
            .is_some()
        {
            return Err(format!("{advertised} is routed twice"));
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_refuse_nonsense() {
        let routes = parse_routes("127.0.0.1:1=127.0.0.1:9, h:2 = p:3").expect("valid routes");
        assert_eq!(
            routes.get("127.0.0.1:1").map(String::as_str),
            Some("127.0.0.1:9")
        );
        assert_eq!(routes.get("h:2").map(String::as_str), Some("p:3"));
        assert!(parse_routes("").expect("no routes").is_empty());
        assert!(parse_routes("a:1").is_err());
        assert!(parse_routes("a:1=").is_err());
        assert!(parse_routes("a:1=b:2,a:1=c:3").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().expect("defaults validate");
    }

    #[test]
    fn members_parse_and_bad_ones_are_refused() {
        let members = parse_members("1=127.0.0.1:1, 2=127.0.0.1:2/10.0.0.2:7").expect("parses");
        assert_eq!(
            members.get(&1),
            Some(&MemberNode::new("127.0.0.1:1", "127.0.0.1:2001"))
        );
        assert_eq!(
            members.get(&2),
            Some(&MemberNode::new("127.0.0.1:2", "10.0.0.2:7"))
        );
        assert!(parse_members("1=a:1/").is_err());
        assert!(parse_members("1=a:65000").is_err());
        assert!(parse_members("1=a:1,1=b:1").is_err());
        assert!(parse_members("x=a").is_err());
        assert!(parse_members("1").is_err());
    }

    #[test]
    fn a_node_missing_from_its_peers_is_refused() {
        let config = NodeConfig {
            node_id: 4,
            initial_members: parse_members("1=a:1,2=b:2").expect("parses"),
            ..NodeConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
