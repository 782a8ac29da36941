//! A cluster of real `evlog serve` processes on loopback, in its own temporary directory.
//!
//! The [`Cluster`] owns its processes: dropping it SIGKILLs every one still running, so a
//! failing test leaves nothing behind. When the test panics, the directory (data directories
//! and one `node-<id>.log` per node) is kept and its path printed with the tail of every log;
//! set `EVLOG_KEEP_CLUSTER=1` to keep it after a passing test too.
//!
//! Every RPC the harness sends has a deadline, and every wait polls a condition with a
//! timeout (see [`crate::wait`]); a node that exits on its own fails the wait at once with its
//! log tail, instead of letting it run into its timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use evlog_proto::v1::cluster_client::ClusterClient;
use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_proto::v1::maintenance_client::MaintenanceClient;
use evlog_proto::v1::{
    AddLearnerRequest, AllStreams, AppendRequest, AppendResponse, ChangeMembershipRequest,
    Consistency, Direction, EventData, ReadRequest, ReadResponse, RecordedEvent, StatusRequest,
    StatusResponse, read_request,
};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::binary::evlog_binary;
use crate::cluster_options::ClusterOptions;
use crate::network::Network;
use crate::network::NodePorts;
use crate::node::{Node, NodeState};
use crate::ports::free_loopback_ports;
use crate::tls::TestTls;
use crate::wait::{Probe, WaitFailure, poll};

/// Set to keep the cluster directory after a passing test.
pub const EVLOG_KEEP_CLUSTER: &str = "EVLOG_KEEP_CLUSTER";

/// The longest a status poll may take, so one unresponsive node does not stall a wait.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Events per page when reading a whole log.
const READ_PAGE_SIZE: u32 = 1_000;

/// The most pages [`Cluster::try_read_pages`] reads: a bound far above any test's log.
const MAX_READ_PAGES: usize = 100_000;

/// How long [`Cluster::read_pages`] retries retryable errors.
const READ_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times [`Cluster::start`] starts over when a node lost its port to another process.
const START_ATTEMPTS: u32 = 3;

/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// Lines of an exited node's log quoted in the failure message (the full tail of every log
/// follows when the cluster is dropped).
const EXIT_LOG_TAIL_LINES: usize = 10;

/// The largest response the harness accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long a membership call may take: adding a learner waits until it has caught up.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether an RPC error may go away by itself (no leader yet, a node restarting, a timeout),
/// so that retrying is worthwhile. `Unknown` is included because a connection broken by a
/// killed node can surface as one.
pub fn is_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}

/// An event with the given id, type and payload (`text/plain`).
pub fn event(id: impl Into<String>, event_type: &str, data: impl Into<Vec<u8>>) -> EventData {
    EventData {
        id: id.into(),
        r#type: event_type.to_owned(),
        content_type: "text/plain".to_owned(),
        data: data.into().into(),
        metadata: Default::default(),
    }
}

/// Runs an RPC with a harness-side deadline, whatever the channel does: a paused node or a
/// half-open connection cannot hang a test.
pub(crate) async fn with_deadline<T>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "{what}: no answer within {timeout:?} (harness deadline)"
        ))),
    }
}

/// A request carrying `timeout` as its gRPC deadline, so the server gives up too.
pub(crate) fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A lazily connecting channel to `127.0.0.1:port` (over TLS with `tls`); it reconnects after
/// the node restarts.
fn channel(port: u16, options: &ClusterOptions, tls: Option<&TestTls>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))
        .expect("a loopback URI should be valid");
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client().config())
            .expect("the test CA makes a valid TLS configuration");
    }
    endpoint
        .connect_timeout(Duration::from_secs(2).min(options.rpc_timeout))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// A test cluster: `evlog serve` child processes with ids `1..=nodes`, and spare ids after
/// them for nodes that join later.
#[derive(Debug)]
pub struct Cluster {
    options: ClusterOptions,
    binary: PathBuf,
    /// Removed on drop unless the test failed, [`EVLOG_KEEP_CLUSTER`] is set, or
    /// [`Cluster::keep_directory`] was called.
    dir: Option<TempDir>,
    keep: bool,
    path: PathBuf,
    /// Every node the cluster has a port for: members, spares, and retired nodes.
    nodes: BTreeMap<u64, Node>,
    /// The nodes that are part of the cluster now (started or not): the initial ones, then
    /// joined spares, minus replaced nodes.
    members: BTreeSet<u64>,
    /// The nodes started with `--peers` (the initial members).
    initial: BTreeSet<u64>,
    channels: BTreeMap<u64, Channel>,
    /// The certificates, when the cluster runs with TLS.
    tls: Option<TestTls>,
    /// The proxies of every peer link, when the cluster is proxied.
    network: Option<Network>,
}

impl Cluster {
    /// Starts every node and waits until all agree on a leader.
    ///
    /// # Panics
    ///
    /// When the binary is missing, a node exits, or no leader is agreed on within
    /// `options.startup_timeout`. A node that lost its port to another process between the
    /// harness choosing it and the node binding it makes the harness start over with fresh
    /// ports, up to three times.
    pub async fn start(options: ClusterOptions) -> Cluster {
        assert!(options.nodes >= 1, "a cluster needs at least one node");
        let binary = evlog_binary();
        let mut attempt = 1;
        loop {
            let mut cluster = Cluster::create(options.clone(), binary.clone()).await;
            for id in cluster.node_ids() {
                cluster.spawn(id, &[]);
            }
            match cluster.try_wait_for_leader(options.startup_timeout).await {
                Ok(leader) => {
                    eprintln!(
                        "cluster-tests: {} nodes up in {} (leader: node {leader})",
                        options.nodes,
                        cluster.path.display()
                    );
                    return cluster;
                }
                Err(failure) if attempt < START_ATTEMPTS && cluster.lost_a_port_race() => {
                    eprintln!(
                        "cluster-tests: a node of {} could not bind its port ({failure}); \
                         starting over with fresh ports",
                        cluster.path.display()
                    );
                    attempt += 1;
                }
                Err(failure) => panic!(
                    "starting a {}-node cluster in {} failed: {failure}",
                    options.nodes,
                    cluster.path.display()
                ),
            }
        }
    }

    /// Chooses ports and directories, and starts the proxies of a proxied cluster; starts no
    /// node.
    async fn create(options: ClusterOptions, binary: PathBuf) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("evlog-cluster-")
            .tempdir()
            .expect("creating a temporary directory for the cluster should succeed");
        let path = dir.path().to_path_buf();
        eprintln!(
            "cluster-tests: cluster directory {} (node-<id>/ data, node-<id>.log logs)",
            path.display()
        );
        let total = options.nodes + options.spare_nodes;
        let count = usize::try_from(total).expect("the node count should fit a usize");
        let tls = options
            .tls
            .then(|| TestTls::generate(&path.join("certs"), total));
        // A client port and a peer port per node.
        let ports = free_loopback_ports(2 * count);
        let mut nodes = BTreeMap::new();
        let mut channels = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for (id, ports) in (1..=total).zip(ports.chunks_exact(2)) {
            let (port, peer_port) = (ports[0], ports[1]);
            nodes.insert(id, Node::new(id, port, peer_port, &path));
            channels.insert(id, channel(port, &options, tls.as_ref()));
            let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
            addresses.insert(
                id,
                NodePorts {
                    client: loopback(port),
                    peer: loopback(peer_port),
                },
            );
        }
        let network = if options.proxied {
            Some(Network::start(&addresses, options.network_seed).await)
        } else {
            None
        };
        let initial: BTreeSet<u64> = (1..=options.nodes).collect();
        Cluster {
            options,
            binary,
            dir: Some(dir),
            keep: false,
            path,
            nodes,
            members: initial.clone(),
            initial,
            channels,
            tls,
            network,
        }
    }

    /// The `evlog serve` arguments of node `id`.
    ///
    /// The initial members get `--peers` (all initial members), and `--bootstrap` at their
    /// first start only (they found the cluster; a restart, or a start after the data was
    /// wiped, does not); a node that joins later gets neither, and waits to be added. A
    /// proxied node gets `--routes` through its links.
    fn serve_args(&self, id: u64) -> Vec<String> {
        let node = self.node(id);
        let mut args = vec![
            "serve".to_owned(),
            "--id".to_owned(),
            id.to_string(),
            "--listen".to_owned(),
            node.address(),
            "--peer-listen".to_owned(),
            node.peer_address(),
            "--data-dir".to_owned(),
            node.data_dir().display().to_string(),
            // Any free port: `Cluster::http_address` asks the node which it got.
            "--http-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        if self.initial.contains(&id) {
            let peers = self
                .initial
                .iter()
                .map(|peer_id| {
                    let peer = self.node(*peer_id);
                    format!("{peer_id}={}/{}", peer.address(), peer.peer_address())
                })
                .collect::<Vec<_>>()
                .join(",");
            args.push("--peers".to_owned());
            args.push(peers);
            if node.starts() == 0 {
                args.push("--bootstrap".to_owned());
            }
        }
        if let Some(tls) = &self.tls {
            args.extend(tls.serve_args(id));
            if self.options.client_ca {
                args.push("--client-ca".to_owned());
                args.push(tls.ca().display().to_string());
            }
        }
        if let Some(network) = &self.network {
            args.push("--routes".to_owned());
            args.push(network.routes_of(id));
        }
        args.extend(self.options.serve_args());
        args
    }

    fn spawn(&mut self, id: u64, env: &[(String, String)]) {
        let args = self.serve_args(id);
        let binary = self.binary.clone();
        self.node_mut(id).spawn(&binary, &args, env);
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("the cluster has no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("the cluster has no node {id}"))
    }

    fn lost_a_port_race(&self) -> bool {
        self.member_nodes().any(|(_, node)| {
            matches!(node.state(), NodeState::Exited(_)) && {
                let log = node.log_tail(200).to_lowercase();
                log.contains("address already in use") || log.contains("addrinuse")
            }
        })
    }

    // ------------------------------------------------------------------ layout

    /// The cluster's directory: `node-<id>/` data directories and `node-<id>.log` logs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The certificates of a TLS cluster ([`ClusterOptions::tls`]).
    pub fn tls(&self) -> Option<&TestTls> {
        self.tls.as_ref()
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The members (initial nodes, and nodes that joined), not the spares or replaced nodes.
    fn member_nodes(&self) -> impl Iterator<Item = (u64, &Node)> {
        self.members.iter().map(|id| (*id, self.node(*id)))
    }

    /// Every member's id, running or not (spares that have not joined and replaced nodes are
    /// not members).
    pub fn node_ids(&self) -> Vec<u64> {
        self.members.iter().copied().collect()
    }

    /// A member other than `leader` (the lowest id).
    pub fn follower_of(&self, leader: u64) -> u64 {
        self.members
            .iter()
            .copied()
            .find(|id| *id != leader)
            .expect("the cluster has a member besides the leader")
    }

    /// The ids of the members that are running and not paused.
    pub fn live_node_ids(&self) -> Vec<u64> {
        self.member_nodes()
            .filter(|(_, node)| node.state() == NodeState::Running)
            .map(|(id, _)| id)
            .collect()
    }

    /// The ids of the members that are not running: never started, killed, or exited.
    pub fn stopped_node_ids(&self) -> Vec<u64> {
        self.member_nodes()
            .filter(|(_, node)| matches!(node.state(), NodeState::Stopped | NodeState::Exited(_)))
            .map(|(id, _)| id)
            .collect()
    }

    /// The members that exited on their own (a crash), with how.
    pub fn exited_nodes(&self) -> Vec<(u64, ExitStatus)> {
        self.member_nodes()
            .filter_map(|(id, node)| match node.state() {
                NodeState::Exited(status) => Some((id, status)),
                _ => None,
            })
            .collect()
    }

    /// Whether node `id` is paused (SIGSTOP).
    pub fn is_paused(&self, id: u64) -> bool {
        self.node(id).state() == NodeState::Paused
    }

    /// The proxies of the peer links, when the cluster was started with `proxied`.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// Keeps the cluster directory (data and logs) when the cluster is dropped, e.g. because
    /// a check failed without a panic.
    pub fn keep_directory(&mut self) {
        self.keep = true;
    }

    /// Whether node `id` is running and not paused.
    pub fn is_live(&self, id: u64) -> bool {
        self.node(id).state() == NodeState::Running
    }

    /// Node `id`'s gRPC address, `127.0.0.1:<port>`; it stays the same across restarts.
    pub fn address(&self, id: u64) -> String {
        self.node(id).address()
    }

    /// Node `id`'s peer address (`--peer-listen`), `127.0.0.1:<peer port>`; it stays the same
    /// across restarts.
    pub fn peer_address(&self, id: u64) -> String {
        self.node(id).peer_address()
    }

    /// Node `id`'s port.
    pub fn port(&self, id: u64) -> u16 {
        self.node(id).port()
    }

    /// Every member's address, comma-separated, as the CLI's `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.member_nodes()
            .map(|(_, node)| node.address())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s resident memory (VmRSS), in bytes, while it runs.
    pub fn rss_bytes(&self, id: u64) -> Option<u64> {
        let node = self.node(id);
        if !matches!(node.state(), NodeState::Running | NodeState::Paused) {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node(id).data_dir().to_path_buf()
    }

    /// Node `id`'s log file (stdout and stderr of every run, each run headed by a line).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.node(id).log_path().to_path_buf()
    }

    /// The last `lines` lines of node `id`'s log file.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.node(id).log_tail(lines)
    }

    // ------------------------------------------------------------------ faults

    /// SIGKILLs node `id` and waits until it is gone.
    ///
    /// # Panics
    ///
    /// When the node is not running or paused.
    pub async fn kill(&mut self, id: u64) {
        let timeout = self.options.shutdown_timeout;
        let _status = self.node_mut(id).kill(timeout).await;
        eprintln!("cluster-tests: SIGKILLed node {id}");
    }

    /// SIGTERMs node `id` (a graceful shutdown) and waits until it exits; returns its status.
    ///
    /// # Panics
    ///
    /// When the node is not running or paused, or does not exit within
    /// `options.shutdown_timeout`.
    pub async fn terminate(&mut self, id: u64) -> ExitStatus {
        let timeout = self.options.shutdown_timeout;
        let status = self.node_mut(id).terminate(timeout).await;
        eprintln!("cluster-tests: node {id} shut down on SIGTERM: {status}");
        status
    }

    /// Starts node `id` again with the same port, data directory and arguments. It does not
    /// wait for the node: wait on the condition the test needs.
    ///
    /// # Panics
    ///
    /// When the node is running or paused.
    pub fn restart(&mut self, id: u64) {
        self.restart_with_env(id, &[]);
    }

    /// Restarts node `id` with extra environment variables for this start only, e.g.
    /// `FAILPOINTS` (see [`crate::FAILPOINTS`]).
    ///
    /// # Panics
    ///
    /// When the node is running or paused.
    pub fn restart_with_env(&mut self, id: u64, env: &[(String, String)]) {
        self.spawn(id, env);
        // A fresh channel, so that clients taken from now on do not inherit a connection
        // state from the previous process.
        let channel = channel(self.node(id).port(), &self.options, self.tls.as_ref());
        self.channels.insert(id, channel);
        if env.is_empty() {
            eprintln!("cluster-tests: restarted node {id}");
        } else {
            eprintln!("cluster-tests: restarted node {id} with {env:?}");
        }
    }

    /// Waits until node `id` exits on its own (a crash the test provoked, e.g. with a
    /// failpoint) and marks it stopped, so that waits no longer count it as an unexpected
    /// exit. Returns how it exited, or `None` when it is still running after `timeout`.
    pub async fn wait_for_crash(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let status = self.node_mut(id).wait_for_own_exit(timeout).await;
        if let Some(status) = status {
            eprintln!("cluster-tests: node {id} exited ({status})");
        }
        status
    }

    /// Empties the stopped node `id`'s data directory (the directory stays, as after a lost
    /// volume mounted again): it starts again with no data, under the same id.
    ///
    /// # Panics
    ///
    /// When the node is running or paused, or the directory cannot be emptied.
    pub fn wipe_data(&mut self, id: u64) {
        self.assert_stopped(id, "its data is wiped");
        let data_dir = self.data_dir(id);
        let entries = std::fs::read_dir(&data_dir)
            .unwrap_or_else(|error| panic!("reading {} failed: {error}", data_dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|error| panic!("reading {} failed: {error}", data_dir.display()))
                .path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|error| panic!("removing {} failed: {error}", path.display()));
        }
        eprintln!(
            "cluster-tests: wiped node {id}'s data ({} is empty)",
            data_dir.display()
        );
    }

    /// Replaces the stopped member `old` with a fresh node under a new id: wipes `old`'s data
    /// directory, starts the next spare node with an empty one, adds it as a learner (which
    /// waits until it has caught up), then makes it a voter in `old`'s place. Returns the new
    /// node's id. The old node's log file stays.
    ///
    /// # Panics
    ///
    /// When `old` is running, no spare is left, or a membership call fails for good.
    pub async fn replace_node(&mut self, old: u64) -> u64 {
        let state = self.node(old).state();
        assert!(
            matches!(state, NodeState::Stopped | NodeState::Exited(_)),
            "node {old} must be stopped before it is replaced; it is {state:?}"
        );
        let new = self
            .nodes
            .keys()
            .copied()
            .find(|id| {
                !self.members.contains(id)
                    && !self.initial.contains(id)
                    && self.node(*id).state() == NodeState::Stopped
                    && !self.node(*id).data_dir().exists()
            })
            .unwrap_or_else(|| panic!("no spare node left to replace node {old}"));
        let data_dir = self.data_dir(old);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .unwrap_or_else(|error| panic!("wiping {} failed: {error}", data_dir.display()));
        }
        self.members.remove(&old);
        eprintln!("cluster-tests: wiped node {old}; node {new} joins in its place");
        self.spawn(new, &[]);
        self.members.insert(new);

        let address = self.address(new);
        let peer_address = self.peer_address(new);
        let added = self
            .membership_call(&format!("AddLearner {new}"), async |cluster, via| {
                let mut client = cluster.cluster_client(via);
                let call = AddLearnerRequest {
                    node_id: new,
                    address: address.clone(),
                    peer_address: peer_address.clone(),
                };
                with_deadline(
                    MEMBERSHIP_TIMEOUT,
                    &format!("AddLearner {new} via node {via}"),
                    client.add_learner(request(call, MEMBERSHIP_TIMEOUT)),
                )
                .await
            })
            .await;
        let mut voters: BTreeSet<u64> = added
            .members
            .iter()
            .filter(|member| member.role == "voter")
            .map(|member| member.node_id)
            .collect();
        voters.remove(&old);
        voters.insert(new);
        let voters: Vec<u64> = voters.into_iter().collect();
        self.membership_call(
            &format!("ChangeMembership {voters:?}"),
            async |cluster, via| {
                let mut client = cluster.cluster_client(via);
                let call = ChangeMembershipRequest {
                    voters: voters.clone(),
                };
                with_deadline(
                    MEMBERSHIP_TIMEOUT,
                    &format!("ChangeMembership via node {via}"),
                    client.change_membership(request(call, MEMBERSHIP_TIMEOUT)),
                )
                .await
            },
        )
        .await;
        eprintln!("cluster-tests: node {new} replaced node {old}; voters {voters:?}");
        new
    }

    /// Starts the next spare node (never started, empty data directory) and counts it as a
    /// member. It joins nobody by itself: the test adds it (`AddLearner`, or `evlog cluster
    /// add-learner`) with [`Cluster::address`]. Returns its id. Until it is added it knows no
    /// leader, so a wait on the whole cluster waits for that.
    ///
    /// # Panics
    ///
    /// When no spare is left.
    pub fn start_spare(&mut self) -> u64 {
        let new = self
            .nodes
            .keys()
            .copied()
            .find(|id| {
                !self.members.contains(id)
                    && !self.initial.contains(id)
                    && self.node(*id).state() == NodeState::Stopped
                    && !self.node(*id).data_dir().exists()
            })
            .unwrap_or_else(|| panic!("no spare node left to start"));
        self.spawn(new, &[]);
        self.members.insert(new);
        eprintln!("cluster-tests: started spare node {new} (it waits to be added)");
        new
    }

    /// Stops counting the stopped node `id` as a member: the test removed it from the cluster
    /// (waits and reads no longer expect it). Its directory and log stay.
    ///
    /// # Panics
    ///
    /// When `id` is running or paused.
    pub fn retire(&mut self, id: u64) {
        self.assert_stopped(id, "it is retired");
        self.members.remove(&id);
        eprintln!("cluster-tests: node {id} is no longer a member");
    }

    /// Panics unless node `id` is stopped (or exited), naming what needed it stopped.
    fn assert_stopped(&self, id: u64, before: &str) {
        let state = self.node(id).state();
        assert!(
            matches!(state, NodeState::Stopped | NodeState::Exited(_)),
            "node {id} must be stopped before {before}; it is {state:?}"
        );
    }

    /// Sends a membership call through the live members in turn until one succeeds, retrying
    /// errors that may go away.
    async fn membership_call<T>(
        &self,
        what: &str,
        mut call: impl AsyncFnMut(&Cluster, u64) -> Result<T, tonic::Status>,
    ) -> T {
        let mut attempt: usize = 0;
        let result = poll(MEMBERSHIP_TIMEOUT, async || {
            let live = self.live_node_ids();
            let Some(via) = live.get(attempt % live.len().max(1)).copied() else {
                return Probe::NotYet("no live node".to_owned());
            };
            attempt += 1;
            match call(self, via).await {
                Ok(value) => Probe::Ready(value),
                Err(status) if is_retryable(&status) => {
                    Probe::NotYet(format!("via node {via}: {status}"))
                }
                Err(status) => Probe::Failed(format!("via node {via}: {status}")),
            }
        })
        .await;
        result.unwrap_or_else(|failure| {
            panic!("{what}: {failure} (cluster in {})", self.path.display())
        })
    }

    /// Sends `signal` (a name such as `USR1`) to every node of `ids` with one `kill` command,
    /// so they get it at the same instant. It does not wait for anything: a node the signal
    /// ends is then waited for with [`Cluster::wait_for_crash`].
    ///
    /// # Panics
    ///
    /// When a node is not running, or `kill` fails.
    pub fn signal_all(&mut self, ids: &[u64], signal: &str) {
        let pids: Vec<String> = ids
            .iter()
            .map(|id| self.node(*id).pid().to_string())
            .collect();
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|error| panic!("running `kill -{signal}` failed: {error}"));
        assert!(
            status.success(),
            "`kill -{signal} {}` (nodes {ids:?}) failed: {status}",
            pids.join(" ")
        );
        eprintln!("cluster-tests: sent SIG{signal} to nodes {ids:?} at once");
    }

    /// Stops node `id` with SIGSTOP: it holds its sockets open but answers nothing.
    pub fn pause(&mut self, id: u64) {
        self.node_mut(id).pause();
        eprintln!("cluster-tests: paused node {id} (SIGSTOP)");
    }

    /// Continues a paused node with SIGCONT.
    pub fn resume(&mut self, id: u64) {
        self.node_mut(id).resume();
        eprintln!("cluster-tests: resumed node {id} (SIGCONT)");
    }

    // ------------------------------------------------------------------ clients

    /// A client of node `id`'s event log service. Clones share one connection per node.
    pub fn client(&self, id: u64) -> EventLogClient<Channel> {
        EventLogClient::new(self.channel(id))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A client of node `id`'s cluster service.
    pub fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A client of node `id`'s maintenance service.
    pub fn maintenance_client(&self, id: u64) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(id))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The harness's connection to node `id`'s client port (for clients of any service).
    pub fn channel(&self, id: u64) -> Channel {
        self.channels
            .get(&id)
            .unwrap_or_else(|| panic!("the cluster has no node {id}"))
            .clone()
    }

    /// The deadline of the harness's RPCs.
    pub fn rpc_timeout(&self) -> Duration {
        self.options.rpc_timeout
    }

    /// Node `id`'s `Cluster.Status`.
    pub async fn status(&self, id: u64) -> Result<StatusResponse, tonic::Status> {
        let timeout = STATUS_TIMEOUT.min(self.options.rpc_timeout);
        let mut client = self.cluster_client(id);
        with_deadline(
            timeout,
            &format!("Status of node {id}"),
            client.status(request(StatusRequest {}, timeout)),
        )
        .await
    }

    /// Node `id`'s HTTP address (`/metrics`, `/status`), as its `Cluster.Status` reports it.
    pub async fn http_address(&self, id: u64) -> String {
        let status = self
            .status(id)
            .await
            .unwrap_or_else(|error| panic!("Status of node {id} failed: {error}"));
        assert!(
            !status.http_address.is_empty(),
            "node {id} reports no HTTP address"
        );
        status.http_address
    }

    /// The value of the metric sample `sample` (name and labels, as exposed) on node `id`'s
    /// `/metrics`; 0 when the node has not exposed it yet.
    pub async fn metric(&self, id: u64, sample: &str) -> f64 {
        let address = self.http_address(id).await;
        let metrics = crate::http::get(&address, "/metrics", Duration::from_secs(5))
            .await
            .unwrap_or_else(|error| panic!("scraping node {id}: {error}"));
        crate::http::sample_value(&metrics.body, sample).unwrap_or(0.0)
    }

    /// Appends `events` to `stream` through node `id` (any version, no idempotency key).
    pub async fn append(
        &self,
        id: u64,
        stream: &str,
        events: Vec<EventData>,
    ) -> Result<AppendResponse, tonic::Status> {
        self.append_request(
            id,
            AppendRequest {
                stream: stream.to_owned(),
                events,
                expected_version: None,
                idempotency_key: None,
            },
        )
        .await
    }

    /// Sends an `Append` request to node `id`.
    pub async fn append_request(
        &self,
        id: u64,
        append: AppendRequest,
    ) -> Result<AppendResponse, tonic::Status> {
        let timeout = self.options.rpc_timeout;
        let mut client = self.client(id);
        with_deadline(
            timeout,
            &format!("Append to node {id}"),
            client.append(request(append, timeout)),
        )
        .await
    }

    /// Opens a subscription on node `id` (the call's start has the harness deadline; the
    /// stream it returns has none).
    pub async fn subscribe(
        &self,
        id: u64,
        subscribe: crate::proto::SubscribeRequest,
    ) -> Result<tonic::Streaming<crate::proto::SubscribeResponse>, tonic::Status> {
        let mut client = self.client(id);
        with_deadline(
            self.options.rpc_timeout,
            &format!("Subscribe on node {id}"),
            client.subscribe(subscribe),
        )
        .await
    }

    /// Sends a `Read` request to node `id`.
    pub async fn read(&self, id: u64, read: ReadRequest) -> Result<ReadResponse, tonic::Status> {
        let timeout = self.options.rpc_timeout;
        let mut client = self.client(id);
        with_deadline(
            timeout,
            &format!("Read from node {id}"),
            client.read(request(read, timeout)),
        )
        .await
    }

    /// Reads every event of `target` from node `id`, forward, page by page (following
    /// `next_from`), each page with `consistency`. Fails at the first error.
    pub async fn try_read_pages(
        &self,
        id: u64,
        target: read_request::Target,
        consistency: Consistency,
    ) -> Result<Vec<RecordedEvent>, tonic::Status> {
        let mut events: Vec<RecordedEvent> = Vec::new();
        let mut from = None;
        for _page in 0..MAX_READ_PAGES {
            let page = self
                .read(
                    id,
                    ReadRequest {
                        filter: None,
                        target: Some(target.clone()),
                        from,
                        max_count: READ_PAGE_SIZE,
                        direction: Direction::Forward as i32,
                        consistency: consistency as i32,
                        at_least_position: 0,
                        from_timestamp_ms: None,
                    },
                )
                .await?;
            events.extend(page.events);
            match page.next_from {
                None => return Ok(events),
                Some(next) => {
                    assert!(
                        from.is_none_or(|from| next > from),
                        "node {id} answered a read of {target:?} from {from:?} with next_from \
                         {next}: paging would not progress"
                    );
                    from = Some(next);
                }
            }
        }
        panic!("reading {target:?} from node {id} took more than {MAX_READ_PAGES} pages");
    }

    /// Reads every event of `target` from node `id` with `consistency`, retrying (from the
    /// start) errors that may go away, for up to a minute.
    ///
    /// # Panics
    ///
    /// On a non-retryable error, or when retries do not succeed in time.
    pub async fn read_pages(
        &self,
        id: u64,
        target: read_request::Target,
        consistency: Consistency,
    ) -> Vec<RecordedEvent> {
        let result = poll(READ_RETRY_TIMEOUT, async || {
            match self.try_read_pages(id, target.clone(), consistency).await {
                Ok(events) => Probe::Ready(events),
                Err(status) if is_retryable(&status) => Probe::NotYet(status.to_string()),
                Err(status) => Probe::Failed(status.to_string()),
            }
        })
        .await;
        result.unwrap_or_else(|failure| {
            panic!(
                "reading {target:?} from node {id} with {consistency:?}: {failure} \
                 (cluster in {})",
                self.path.display()
            )
        })
    }

    /// Reads the whole log (every stream, in position order) from node `id`; see
    /// [`Cluster::read_pages`].
    pub async fn read_all(&self, id: u64, consistency: Consistency) -> Vec<RecordedEvent> {
        self.read_pages(id, read_request::Target::All(AllStreams {}), consistency)
            .await
    }

    /// Reads every event of `stream` from node `id`; see [`Cluster::read_pages`].
    pub async fn read_stream(
        &self,
        id: u64,
        stream: &str,
        consistency: Consistency,
    ) -> Vec<RecordedEvent> {
        self.read_pages(
            id,
            read_request::Target::Stream(stream.to_owned()),
            consistency,
        )
        .await
    }

    /// Reads the whole log from every live node, with `consistency`.
    pub async fn read_all_from_live_nodes(
        &self,
        consistency: Consistency,
    ) -> Vec<(u64, Vec<RecordedEvent>)> {
        let mut logs = Vec::new();
        for id in self.live_node_ids() {
            logs.push((id, self.read_all(id, consistency).await));
        }
        logs
    }

    // ------------------------------------------------------------------ waits

    /// A failure reason naming every node that exited without the harness stopping it.
    fn unexpected_exits(&self) -> Option<String> {
        let exits: Vec<String> = self
            .member_nodes()
            .filter_map(|(id, node)| match node.state() {
                NodeState::Exited(status) => Some(format!(
                    "node {id} exited unexpectedly ({status}); log {}:\n{}",
                    node.log_path().display(),
                    node.log_tail(EXIT_LOG_TAIL_LINES)
                )),
                _ => None,
            })
            .collect();
        (!exits.is_empty()).then(|| exits.join("\n"))
    }

    /// Every live node's status, or the reason it could not be had.
    async fn live_statuses(&self) -> Probe<BTreeMap<u64, StatusResponse>> {
        if let Some(reason) = self.unexpected_exits() {
            return Probe::Failed(reason);
        }
        let live = self.live_node_ids();
        if live.is_empty() {
            return Probe::Failed("no node is running".to_owned());
        }
        let mut statuses = BTreeMap::new();
        for id in live {
            match self.status(id).await {
                Ok(status) => {
                    statuses.insert(id, status);
                }
                Err(error) => {
                    return Probe::NotYet(format!(
                        "node {id} did not answer Status: {}: {}",
                        error.code(),
                        error.message()
                    ));
                }
            }
        }
        Probe::Ready(statuses)
    }

    /// The leader every live node agrees on (same leader, same term, and the leader says it
    /// leads), or why there is none.
    async fn probe_agreed_leader(&self) -> Probe<(u64, BTreeMap<u64, StatusResponse>)> {
        let statuses = match self.live_statuses().await {
            Probe::Ready(statuses) => statuses,
            Probe::NotYet(reason) => return Probe::NotYet(reason),
            Probe::Failed(reason) => return Probe::Failed(reason),
        };
        let views: BTreeSet<(u64, u64)> = statuses
            .values()
            .map(|status| (status.leader_id, status.term))
            .collect();
        let agreed = match views.iter().next() {
            Some(&(leader, _)) if views.len() == 1 && leader != 0 => leader,
            _ => return Probe::NotYet(describe_statuses(&statuses)),
        };
        match statuses.get(&agreed) {
            Some(status) if status.role == "leader" => Probe::Ready((agreed, statuses)),
            _ => Probe::NotYet(format!(
                "node {agreed} is named leader but is not a live leader; {}",
                describe_statuses(&statuses)
            )),
        }
    }

    async fn try_wait_for_leader(&self, timeout: Duration) -> Result<u64, WaitFailure> {
        poll(timeout, async || match self.probe_agreed_leader().await {
            Probe::Ready((leader, _)) => Probe::Ready(leader),
            Probe::NotYet(reason) => Probe::NotYet(reason),
            Probe::Failed(reason) => Probe::Failed(reason),
        })
        .await
    }

    /// Waits until every live node (running, not paused) names the same leader in the same
    /// term, and that leader is live and says it leads. Returns the leader's id.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first, or a node exits on its own.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        self.try_wait_for_leader(timeout)
            .await
            .unwrap_or_else(|failure| {
                panic!(
                    "waiting for a leader all live nodes agree on: {failure} (cluster in {})",
                    self.path.display()
                )
            })
    }

    /// Waits until the live nodes agree on a leader, the leader has committed its whole log,
    /// and every live node has applied it. Returns the applied index they share.
    ///
    /// Meant for a quiet cluster (no writes in flight): under load the condition may never
    /// hold.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first, or a node exits on its own.
    pub async fn wait_for_convergence(&self, timeout: Duration) -> u64 {
        self.try_wait_for_convergence(timeout)
            .await
            .unwrap_or_else(|failure| {
                panic!(
                    "waiting for every live node to apply the whole log: {failure} (cluster in {})",
                    self.path.display()
                )
            })
    }

    /// Like [`Cluster::wait_for_convergence`], but returns the failure instead of panicking.
    pub async fn try_wait_for_convergence(&self, timeout: Duration) -> Result<u64, WaitFailure> {
        poll(timeout, async || {
            let (leader, statuses) = match self.probe_agreed_leader().await {
                Probe::Ready(found) => found,
                Probe::NotYet(reason) => return Probe::NotYet(reason),
                Probe::Failed(reason) => return Probe::Failed(reason),
            };
            let Some(leader_status) = statuses.get(&leader) else {
                return Probe::NotYet(format!("the leader {leader} has no status"));
            };
            let target = leader_status.last_log_index;
            let converged = leader_status.committed_index == target
                && statuses
                    .values()
                    .all(|status| status.applied_index == target);
            if converged {
                Probe::Ready(target)
            } else {
                Probe::NotYet(format!(
                    "not every node applied the leader's last log index {target}; {}",
                    describe_statuses(&statuses)
                ))
            }
        })
        .await
    }

    /// Waits until node `id` reports an applied index of at least `index`.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first, or a node exits on its own.
    pub async fn wait_for_applied(&self, id: u64, index: u64, timeout: Duration) -> StatusResponse {
        let result = poll(timeout, async || {
            if let Some(reason) = self.unexpected_exits() {
                return Probe::Failed(reason);
            }
            match self.status(id).await {
                Ok(status) if status.applied_index >= index => Probe::Ready(status),
                Ok(status) => Probe::NotYet(format!(
                    "node {id} applied {} of {index}",
                    status.applied_index
                )),
                Err(error) => Probe::NotYet(format!("node {id}: {error}")),
            }
        })
        .await;
        result.unwrap_or_else(|failure| {
            panic!(
                "waiting for node {id} to apply log index {index}: {failure} (cluster in {})",
                self.path.display()
            )
        })
    }
}

/// One line per node: role, term, leader, indexes.
fn describe_statuses(statuses: &BTreeMap<u64, StatusResponse>) -> String {
    statuses
        .iter()
        .map(|(id, status)| {
            format!(
                "node {id}: {} term {} leader {} last_log {} committed {} applied {} \
                 snapshot {} purged {}",
                status.role,
                status.term,
                status.leader_id,
                status.last_log_index,
                status.committed_index,
                status.applied_index,
                status.snapshot_index,
                status.purged_index
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill_now();
        }
        let failed = std::thread::panicking();
        let keep = failed
            || self.keep
            || std::env::var_os(EVLOG_KEEP_CLUSTER).is_some_and(|value| value != "0");
        if !keep {
            return;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            eprintln!(
                "cluster-tests: kept the cluster directory {} (node-<id>/ data, node-<id>.log)",
                path.display()
            );
        }
        if failed {
            for (id, node) in self
                .nodes
                .iter()
                .filter(|(_, node)| node.log_path().exists())
            {
                eprintln!(
                    "---- node {id}: last {LOG_TAIL_LINES} lines of {} ----\n{}",
                    node.log_path().display(),
                    node.log_tail(LOG_TAIL_LINES)
                );
            }
        }
    }
}
