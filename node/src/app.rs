//! Wiring, a supervisor and graceful shutdown: open the store, start Raft, serve the client
//! services on the client listener and the peer protocol on the peer listener until
//! `shutdown` resolves, or stop at once with an error when the store or
//! the Raft core fails (a node that cannot write must not go on answering: the orchestrator
//! restarts it). Tests call [`run`] in-process with port-0 listeners.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use evlog_proto::v1::access_server::AccessServer;
use evlog_proto::v1::cluster_server::ClusterServer;
use evlog_proto::v1::consumers_server::ConsumersServer;
use evlog_proto::v1::event_log_server::EventLogServer;
use evlog_proto::v1::maintenance_server::MaintenanceServer;
use evlog_raft_store::StoreConfig;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::NodeConfig;
use crate::grpc::access::AccessGrpc;
use crate::grpc::admission::Admission;
use crate::grpc::admission::AppendBudget;
use crate::grpc::auth::AuthLayer;
use crate::grpc::cluster::ClusterGrpc;
use crate::grpc::connections;
use crate::grpc::consumers::ConsumersGrpc;
use crate::grpc::event_log::EventLogGrpc;
use crate::grpc::forward::GrpcForward;
use crate::grpc::maintenance::MaintenanceGrpc;
use crate::http::HttpState;
use crate::http::history::History;
use crate::metrics::Metrics;
use crate::metrics::grpc_layer::GrpcMetricsLayer;
use crate::metrics::state::StateSource;
use crate::raft::Raft;
use crate::raft::RaftHandle;
use crate::raft::log_purge::SnapshotHolds;
use crate::raft::proposals::AppendCalls;
use crate::raft::transport::channels::ChannelPool;
use crate::raft::transport::channels::NodeChannels;
use crate::raft::transport::client::PeerNetwork;
use crate::raft::transport::identity::PeerIdentity;
use crate::raft::transport::server::PeerService;
use crate::service::access::AccessControl;
use crate::service::access::ParsedToken;
use crate::service::access::parse_token;
use crate::service::cluster::ClusterService;
use crate::service::consumers::ConsumerService;
use crate::service::event_log::EventLogService;
use crate::service::maintenance::MaintenanceService;
use crate::service::subscribe::Subscriptions;
use crate::tls::LiveTls;

/// How long in-flight requests get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest HTTP/2 header list a call may send (metadata included).
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Most streams a client may open and reset before the server has seen them (a rapid-reset
/// flood is cut off past it).
const MAX_PENDING_RESET_STREAMS: usize = 100;
/// How long a membership change may take (adding a learner waits until it has caught up).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the target of a requested leadership transfer (`Cluster.TransferLeader`) may take
/// to lead: it campaigns at once once it has the leader's log, so this is generous.
const LEADER_TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// A gRPC server, plaintext or TLS (their connection types differ).
type ServerFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
/// The gRPC health service name of the event log (`grpc.health.v1`); "" is the whole node.
const HEALTH_SERVICE: &str = "evlog.v1.EventLog";

/// A node's two gRPC listeners: client services, and the peer protocol.
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
}

impl Listeners {
    /// Binds `config.listen_addr` and `config.peer_listen_addr`.
    pub async fn bind(config: &NodeConfig) -> anyhow::Result<Self> {
        let client = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen_addr))?;
        let peer = TcpListener::bind(config.peer_listen_addr)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot listen for peers on {} (--peer-listen): {error}",
                    config.peer_listen_addr
                )
            })?;
        Ok(Self { client, peer })
    }
}

/// This node's advertised peer address: `--peer-advertise`, or the peer listener's address
/// (its host taken from the client's advertised address when it listens on all interfaces).
/// With `--peers`, this node's entry must name the same address: a peer address the others
/// would dial in vain is refused at start.
fn peer_address(config: &NodeConfig, peer_listener: &TcpListener) -> anyhow::Result<String> {
    let address = match &config.peer_advertise_addr {
        Some(address) => address.clone(),
        None => crate::http::advertised(peer_listener.local_addr()?, &config.advertise_addr),
    };
    if let Some(own) = config.initial_members.get(&config.node_id)
        && own.peer_address != address
    {
        anyhow::bail!(
            "--peers gives node {} the peer address {}, but it serves peers at {address} \
             (--peer-listen / --peer-advertise): give --peers ID=CLIENT/PEER with its peer \
             address, or the matching --peer-listen",
            config.node_id,
            own.peer_address
        );
    }
    Ok(address)
}

/// Runs a node until `shutdown` resolves (then `Ok`), or until its store or Raft core fails
/// (then the failure, as an error: the process should exit non-zero).
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let Listeners {
        client: listener,
        peer: peer_listener,
    } = listeners;
    let peer_address = peer_address(&config, &peer_listener)?;
    let bootstrap_token = config
        .auth
        .bootstrap_token_file
        .as_deref()
        .map(read_bootstrap_token)
        .transpose()?;
    let node_id = config.node_id;
    let metrics = Metrics::new();
    // Read before the store opens, so a missing or bad certificate fails the start at once.
    let tls = match &config.tls {
        Some(files) => {
            let (tls, expiry) = LiveTls::load(files, &metrics)?;
            tracing::info!(node_id, "TLS on: {expiry}");
            Some(tls)
        }
        None => None,
    };
    // Reloaded on SIGHUP; the handler is registered now, so a SIGHUP while the store opens
    // does not end the process.
    let tls_reload = tls
        .clone()
        .map(LiveTls::on_hangup)
        .transpose()
        .map_err(|error| anyhow::anyhow!("cannot handle SIGHUP (certificate reloads): {error}"))?
        .map(tokio::spawn);
    let raft_config = Arc::new(crate::raft::config::raft_config(&config)?);
    // Bound before the store opens, so a port in use fails the start at once.
    let http_listener = match config.http_listen_addr {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
            anyhow::anyhow!("cannot listen for HTTP on {address} (--http-listen): {error}")
        })?),
        None => None,
    };
    let http_address = match &http_listener {
        Some(listener) => crate::http::advertised(listener.local_addr()?, &config.advertise_addr),
        None => String::new(),
    };
    let store_config = StoreConfig {
        cache_bytes: config.store_cache_mib << 20,
        quick_repair: config.store_quick_repair,
        backend: store_backend(&config.data_dir)?,
        founding: config.bootstrap,
        observer: Some(metrics.store_observer()),
        ..StoreConfig::new(&config.data_dir, node_id, &config.cluster_id)
    };
    let (engine, log_store, state_machine, reader) =
        tokio::task::spawn_blocking(move || evlog_raft_store::open(&store_config)).await??;
    let peer_rpc_timeout = Duration::from_millis(config.peer_rpc_timeout_ms);
    let channels = NodeChannels::new(
        peer_rpc_timeout,
        config.routes.clone(),
        tls.as_ref().map(LiveTls::outgoing),
    );
    let identity = PeerIdentity::new(&config.cluster_id, node_id, tls.is_some(), &metrics);
    let snapshot_holds = SnapshotHolds::default();
    let network = PeerNetwork::new(
        node_id,
        identity.clone(),
        channels.peers.clone(),
        peer_rpc_timeout,
        Arc::clone(&metrics),
        snapshot_holds.clone(),
    );
    let raft = Raft::new(node_id, raft_config, network, log_store, state_machine).await?;
    let log_purge = tokio::spawn(crate::raft::log_purge::run(
        raft.clone(),
        snapshot_holds,
        config.log_keep_after_snapshot,
    ));
    let append_calls = AppendCalls::default();
    let handle = RaftHandle::new(
        raft.clone(),
        node_id,
        reader,
        engine.applied(),
        channels.clone(),
        identity.clone(),
        peer_rpc_timeout,
        config.read_policy,
        &metrics,
        append_calls.clone(),
    );
    let peer_address_check = tokio::spawn(warn_of_another_recorded_peer_address(
        handle.clone(),
        peer_address.clone(),
    ));
    if engine.needs_catch_up() {
        if engine.founding_member() {
            tracing::info!(
                node_id,
                "this node founds a new cluster (--bootstrap on an empty data directory): it \
                 votes once a peer answers and none has committed anything (a directory that \
                 lost its data looks new too)"
            );
        } else {
            tracing::warn!(
                node_id,
                "this node's data directory was {} without --bootstrap: it joins a cluster that \
                 exists (or lost its data), waits to be caught up by a leader, and does not \
                 vote until then",
                if engine.created() {
                    "empty"
                } else {
                    "created empty"
                }
            );
        }
        handle.set_voting(false);
    }
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    let max_client_message = config.limits.max_append_bytes + (1 << 20);
    let forward = Arc::new(GrpcForward::new(
        channels.clients.clone(),
        max_client_message,
    ));
    let event_log = Arc::new(EventLogService::new(
        handle.clone(),
        forward.clone(),
        config.limits.clone(),
        request_timeout,
        // Long enough for an overloaded leader to hear from a quorum again, or for a new
        // election to be decided (1 s with the default timing).
        Duration::from_millis(5 * config.election_timeout_max_ms),
        Subscriptions::new(
            &handle,
            &config.limits,
            Duration::from_millis(config.heartbeat_interval_ms),
            contact_lost_after(&config),
        ),
        config.read_only,
    ));
    let consumers = Arc::new(ConsumerService::new(
        handle.clone(),
        request_timeout,
        config.limits.max_batch_bytes,
    ));
    let maintenance = Arc::new(MaintenanceService::new(
        handle.clone(),
        Arc::clone(&event_log),
        engine.data_dir(),
        request_timeout,
    ));
    let cluster = Arc::new(ClusterService::new(
        handle.clone(),
        forward,
        MEMBERSHIP_TIMEOUT,
        LEADER_TRANSFER_TIMEOUT,
    ));

    let access = Arc::new(AccessControl::new(
        config.auth.enabled,
        bootstrap_token,
        handle.clone(),
        request_timeout,
    ));
    if config.auth.enabled {
        tracing::info!(
            bootstrap_token = config.auth.bootstrap_token_file.is_some(),
            "access control is on: every client call needs credentials"
        );
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(evlog_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // A read page holds at most max_read_bytes of event records; the wire adds a little.
    let max_response_message = config.limits.max_read_bytes + (1 << 20);
    let event_log_server = Admission::new(
        EventLogServer::new(EventLogGrpc::new(
            Arc::clone(&event_log),
            Arc::clone(&access),
        ))
        .max_decoding_message_size(max_client_message)
        .max_encoding_message_size(max_response_message),
        AppendBudget::new(
            u32::try_from(config.max_append_bytes_in_flight)
                .map_err(|_| anyhow::anyhow!("--max-append-bytes-in-flight is at most 4 GiB"))?,
            u32::try_from(max_client_message).unwrap_or(u32::MAX),
            // Reading the message, then the request timeout the service keeps itself.
            2 * request_timeout,
        ),
        append_calls,
    );
    let cluster_server = ClusterServer::new(ClusterGrpc::new(
        cluster,
        Arc::clone(&access),
        peer_address.clone(),
        http_address.clone(),
    ));
    let consumers_server = ConsumersServer::new(ConsumersGrpc::new(
        consumers,
        channels.clients.clone(),
        max_response_message,
        Arc::clone(&access),
    ))
    .max_decoding_message_size(max_client_message)
    .max_encoding_message_size(max_response_message);
    let maintenance_server =
        MaintenanceServer::new(MaintenanceGrpc::new(maintenance, Arc::clone(&access)))
            .max_encoding_message_size(max_response_message);
    let access_server = AccessServer::new(AccessGrpc::new(
        Arc::clone(&access),
        handle.clone(),
        channels.clients.clone(),
        request_timeout,
    ));
    let peer_service = PeerService::new(
        raft,
        handle.clone(),
        identity,
        engine.data_dir().join("snapshots"),
        config.max_snapshot_bytes,
        metrics.snapshots_installed.clone(),
    );

    let local_address = listener.local_addr()?;
    let peer_local_address = peer_listener.local_addr()?;
    tracing::info!(node_id, %local_address, tls = tls.is_some(), advertise = %config.advertise_addr, %peer_local_address, peer_advertise = %peer_address, data_dir = %config.data_dir.display(), "evlog node serving");

    // The store remembers it is a founding member: restarted without --bootstrap before it
    // initialized the cluster, it still does (a restart with a log does nothing).
    let founder = engine.founding_member();
    let confirmer = (founder && engine.needs_catch_up()).then(|| {
        tokio::spawn(confirm_founding(
            handle.clone(),
            engine.clone(),
            config.initial_members.clone(),
            channels.clients.clone(),
        ))
    });
    let initializer =
        (founder && config.initial_members.keys().next() == Some(&node_id)).then(|| {
            tokio::spawn(crate::raft::bootstrap::initialize_when_ready(
                handle.clone(),
                config.initial_members.clone(),
                channels.clients.clone(),
            ))
        });
    let readiness = tokio::spawn(become_ready(
        handle.clone(),
        engine.clone(),
        health.clone(),
        request_timeout,
    ));

    let retention = tokio::spawn(crate::service::retention::run(
        handle.clone(),
        config.retention,
        request_timeout,
    ));
    let leadership = tokio::spawn(crate::metrics::leader::watch(
        handle.clone(),
        Arc::clone(&metrics),
    ));
    let state_source = StateSource::new(
        handle.clone(),
        Arc::clone(&event_log),
        engine.data_dir().to_path_buf(),
    );
    let history = History::default();
    let sampler = tokio::spawn(
        history
            .clone()
            .sample(state_source.clone(), Arc::clone(&metrics)),
    );
    let http_server = http_listener.map(|listener| {
        tracing::info!(node_id, http_address = %http_address, "HTTP serving /metrics, /status, /healthz, /readyz");
        let state = Arc::new(HttpState::new(
            state_source,
            Arc::clone(&metrics),
            history,
            channels.clients.clone(),
            http_address.clone(),
        ));
        tokio::spawn(crate::http::serve(listener, state))
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_peers_tx, stop_peers_rx) = tokio::sync::watch::channel(false);
    let mut peer_server = tokio::spawn(crate::raft::transport::server::serve(
        peer_listener,
        peer_service,
        tls.as_ref().map(LiveTls::peer_port),
        Arc::clone(&metrics),
        stop_peers_rx,
    ));
    // The builder's `tcp_nodelay` applies only to sockets it binds itself; this listener's
    // accepted sockets get it here. Without it, small responses wait for Nagle's algorithm
    // (about 40 ms stalls on reads of a few events and on peer traffic).
    let incoming = connections::limited(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        connections::within_open_file_limit(config.max_connections),
        Arc::new(AtomicU64::new(0)),
    );
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
        .layer(GrpcMetricsLayer::new(Arc::clone(&metrics)))
        .layer(AuthLayer::new(access))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(event_log_server)
        .add_service(cluster_server)
        .add_service(consumers_server)
        .add_service(maintenance_server)
        .add_service(access_server);
    let stopped = async {
        stop_rx.await.ok();
    };
    let server: ServerFuture = match &tls {
        Some(tls) => Box::pin(
            router.serve_with_incoming_shutdown(tls.client_port().accept(incoming), stopped),
        ),
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, stopped)),
    };
    let mut server = tokio::spawn(server);
    let mut store_failure = engine.failure();
    let store_failed = async move {
        match store_failure.wait_for(Option::is_some).await {
            Ok(failure) => failure.as_ref().map(ToString::to_string),
            Err(_) => None,
        }
    };
    let outcome = tokio::select! {
        // In this order: a store failure stops the Raft core too, and the cause is the news.
        biased;
        reason = store_failed => {
            Err(anyhow::anyhow!(
                "node {node_id} stops: its store failed ({}); a failed write or fsync is never \
                 retried (it may have lost data the kernel had accepted); fix the disk, then \
                 restart the node: it recovers from its log and the leader",
                reason.unwrap_or_else(|| "the store closed".to_string())
            ))
        }
        reason = handle.core_stopped() => {
            Err(anyhow::anyhow!("node {node_id} stops: its Raft core stopped: {reason}"))
        }
        result = &mut server => result.map_err(anyhow::Error::from).and_then(|served| {
            served.map_err(anyhow::Error::from)
        }),
        result = &mut peer_server => result.map_err(anyhow::Error::from).and_then(|served| {
            served.map_err(|error| anyhow::anyhow!("the peer server stopped: {error}"))
        }).and_then(|()| Err(anyhow::anyhow!("the peer server stopped"))),
        () = shutdown => {
            tracing::info!(node_id, "shutting down");
            // Still serving: appends that reach this node meanwhile are handed to the new
            // leader, and the target gets the last entries from it.
            hand_off_leadership(
                &handle,
                Duration::from_millis(config.leader_handoff_timeout_ms),
            )
            .await;
            set_health(&health, ServingStatus::NotServing).await;
            // Subscriptions never end by themselves: the server would wait for them.
            event_log.close_subscriptions();
            stop_tx.send(()).ok();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; closing them");
                server.abort();
            }
            // Peers last: client requests still in flight above may need the leader.
            stop_peers_tx.send(true).ok();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut peer_server).await.is_err() {
                peer_server.abort();
            }
            Ok(())
        }
    };
    if outcome.is_err() {
        set_health(&health, ServingStatus::NotServing).await;
        server.abort();
        peer_server.abort();
    }
    readiness.abort();
    peer_address_check.abort();
    if let Some(tls_reload) = tls_reload {
        tls_reload.abort();
    }
    retention.abort();
    log_purge.abort();
    leadership.abort();
    sampler.abort();
    if let Some(http_server) = http_server {
        http_server.abort();
    }
    if let Some(initializer) = initializer {
        initializer.abort();
    }
    if let Some(confirmer) = confirmer {
        confirmer.abort();
    }
    handle.shutdown().await;
    match &outcome {
        Ok(()) => tracing::info!(node_id, "stopped"),
        Err(error) => tracing::error!(node_id, "{error}"),
    }
    outcome
}

/// Warns when the membership this node loaded records another peer address for it than the
/// one it serves (a restore given other addresses, a node moved to another port): the others
/// dial the recorded one, in vain, until a membership change records the new one.
async fn warn_of_another_recorded_peer_address(handle: RaftHandle, peer_address: String) {
    // A node that is no member yet (it waits to be added) has nothing recorded.
    if let Some(recorded) = handle.recorded_peer_address(Duration::from_secs(10)).await
        && recorded != peer_address
    {
        tracing::warn!(
            %recorded,
            serving = %peer_address,
            "the membership records another peer address for this node than the one it serves: \
             the other nodes cannot reach it (serve on the recorded address, route it with \
             --routes on the others, or remove and add this node again)"
        );
    }
}

/// A leader that stops hands leadership to its most caught-up voter first, as etcd does, so a
/// planned stop costs no election timeout: bounded by `timeout` (0: not at all); the node
/// stops whatever happens. A follower has nothing to hand over.
async fn hand_off_leadership(handle: &RaftHandle, timeout: Duration) {
    if timeout.is_zero() || !handle.is_leader() {
        return;
    }
    let started = std::time::Instant::now();
    match handle.transfer_leader(None, timeout).await {
        Ok(transferred) => tracing::info!(
            to = transferred.leader_id,
            term = transferred.term,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stopping leader: handed leadership to the most caught-up voter"
        ),
        Err(error) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stopping leader: leadership not handed over ({error}); stopping anyway, the others \
             elect a leader after an election timeout"
        ),
    }
}

/// How long a node may go without a read index confirmed by a leader before its
/// subscriptions end: with a check every heartbeat, the loss is noticed within two upper
/// election timeouts of the last confirmation.
fn contact_lost_after(config: &NodeConfig) -> Duration {
    Duration::from_millis(2 * config.election_timeout_max_ms - 2 * config.heartbeat_interval_ms)
}

/// A founding member's new store: votes once a peer answers and none has committed anything
/// (the cluster is new; it cannot lack an acknowledged entry). If one has, the cluster exists
/// (this directory lost its data, or the node joined late): it waits to be caught up by the
/// leader ([`become_ready`]) like any node that lost its data. Asks every 200 ms until it
/// knows, or the node stops.
async fn confirm_founding(
    handle: RaftHandle,
    engine: evlog_raft_store::Engine,
    members: std::collections::BTreeMap<u64, evlog_raft_store::type_config::MemberNode>,
    channels: ChannelPool,
) {
    loop {
        match crate::raft::bootstrap::cluster_is_new(&handle, &members, &channels).await {
            Some(true) => {
                if let Err(error) = engine.mark_caught_up().await {
                    tracing::error!("recording that the cluster is new failed: {error}");
                    return;
                }
                handle.set_voting(true);
                tracing::info!("no peer has committed anything: this founding member votes");
                return;
            }
            Some(false) => {
                tracing::warn!(
                    "a peer has committed entries: the cluster exists, so this node (a founding \
                     member on an empty data directory: it joined late, or lost its data) waits \
                     to be caught up by the leader before it votes"
                );
                return;
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(HEALTH_SERVICE, status).await;
}

/// Health follows readiness: `NOT_SERVING` until the node has caught up with the leader since
/// it started (it serves no read before), then `SERVING`. A node that must catch up before it
/// votes records, durably, that it has, and votes from then on. Tries with a growing pause,
/// until it succeeds or the node stops.
async fn become_ready(
    handle: RaftHandle,
    engine: evlog_raft_store::Engine,
    health: HealthReporter,
    attempt_timeout: Duration,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        match handle.catch_up(attempt_timeout).await {
            Ok(()) => {
                if engine.needs_catch_up() {
                    // Every entry this node holds is on its disk once this returns (the mark
                    // is written after them, and a durable commit covers every commit before).
                    if let Err(error) = engine.mark_caught_up().await {
                        tracing::error!("recording that this node caught up failed: {error}");
                        return;
                    }
                    handle.set_voting(true);
                    tracing::info!("caught up with the leader after an empty start: voting");
                }
                tracing::info!("caught up with the leader: serving");
                set_health(&health, ServingStatus::Serving).await;
                return;
            }
            Err(error) => tracing::debug!("not ready yet: {error}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The store's backend: the file. A failpoints build (the chaos and cluster tests) runs on the
/// testing crash backend instead, whose power switch this process installs, so a crash point
/// armed with `return(power-loss)` or a SIGUSR1 (see `main.rs`) loses every write the store
/// has not synced, as a power cut does.
fn store_backend(data_dir: &std::path::Path) -> anyhow::Result<evlog_raft_store::StoreBackend> {
    #[cfg(feature = "failpoints")]
    {
        use evlog_raft_store::testing;
        std::fs::create_dir_all(data_dir).map_err(|error| {
            anyhow::anyhow!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            )
        })?;
        let (backend, switch) = testing::CrashBackend::for_data_dir(data_dir).map_err(|error| {
            anyhow::anyhow!("cannot open the store in {}: {error}", data_dir.display())
        })?;
        // A disk that fills up, for tests where a real small filesystem cannot be mounted.
        if let Ok(free) = std::env::var(testing::DISK_FREE_BYTES_ENV) {
            let free: u64 = free.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a byte count: {free:?}",
                    testing::DISK_FREE_BYTES_ENV
                )
            })?;
            switch.set_free_space(Some(free))?;
            tracing::warn!("the testing crash backend's disk is full after {free} more bytes");
        }
        testing::install_process_switch(switch);
        tracing::warn!(
            "failpoints build: the store runs on the testing crash backend (it can lose power)"
        );
        Ok(backend)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = data_dir;
        Ok(evlog_raft_store::StoreBackend::File)
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are registered before this returns, so a
/// signal that arrives while the node is still opening its store is not lost (the default
/// action would end the process at once).
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::SignalKind;
    use tokio::signal::unix::signal;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// The token in `--bootstrap-token-file` (surrounding whitespace ignored); the error names the
/// file but never repeats its content.
fn read_bootstrap_token(path: &std::path::Path) -> anyhow::Result<ParsedToken> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("--bootstrap-token-file {}: {error}", path.display()))?;
    parse_token(text.trim())
        .map_err(|error| anyhow::anyhow!("--bootstrap-token-file {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_whose_peers_entry_names_another_peer_address_refuses_to_start() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("port 0");
        let serving = listener.local_addr().expect("an address").to_string();
        let mut config = NodeConfig {
            initial_members: crate::config::parse_members(&format!("1=127.0.0.1:50051/{serving}"))
                .expect("members"),
            ..NodeConfig::default()
        };
        assert_eq!(peer_address(&config, &listener).expect("matches"), serving);
        config.initial_members =
            crate::config::parse_members("1=127.0.0.1:50051").expect("members");
        let refused = peer_address(&config, &listener).expect_err("another peer address");
        assert!(refused.to_string().contains("127.0.0.1:52051"), "{refused}");
        // --peer-advertise is what the others dial, whatever the listener is bound to.
        config.peer_advertise_addr = Some("127.0.0.1:52051".to_string());
        assert_eq!(
            peer_address(&config, &listener).expect("matches"),
            "127.0.0.1:52051"
        );
    }
}
