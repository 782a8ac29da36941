//! Wiring and graceful shutdown: open the store, start Raft, serve gRPC on the given
//! listener until `shutdown` resolves. Tests call [`run`] in-process with a port-0 listener.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use evlog_proto::v1::StatusRequest;
use evlog_proto::v1::cluster_client::ClusterClient;
use evlog_proto::v1::cluster_server::ClusterServer;
use evlog_proto::v1::event_log_server::EventLogServer;
use evlog_proto::v1::raft_peer_server::RaftPeerServer;
use evlog_raft_store::StoreConfig;
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::config::NodeConfig;
use crate::grpc::cluster::ClusterService;
use crate::grpc::event_log::EventLogService;
use crate::grpc::peer::PeerService;
use crate::raft::Raft;
use crate::raft::RaftHandle;
use crate::raft::channels::PeerChannels;
use crate::raft::network::PeerNetwork;

/// How long in-flight requests get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the initializing node checks whether every initial member is up.
const INIT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The initializing node gives up after this long (an operator can restart it).
const INIT_GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// Largest peer message (a batch of replicated entries).
const MAX_PEER_MESSAGE_BYTES: usize = 512 << 20;

/// Runs a node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let raft_config = Arc::new(config.raft_config()?);
    let node_id = config.node_id;
    let store_config = StoreConfig {
        cache_bytes: config.store_cache_mib << 20,
        quick_repair: config.store_quick_repair,
        backend: store_backend(&config.data_dir)?,
        ..StoreConfig::new(&config.data_dir, node_id, &config.cluster_id)
    };
    let (engine, log_store, state_machine, reader) =
        tokio::task::spawn_blocking(move || evlog_raft_store::open(&store_config)).await??;
    let peer_rpc_timeout = Duration::from_millis(config.peer_rpc_timeout_ms);
    let channels = PeerChannels::new(peer_rpc_timeout, config.routes.clone());
    let network = PeerNetwork::new(node_id, channels.clone(), peer_rpc_timeout);
    let raft = Raft::new(node_id, raft_config, network, log_store, state_machine).await?;
    let handle = RaftHandle::new(
        raft.clone(),
        node_id,
        reader,
        engine.applied(),
        channels.clone(),
        peer_rpc_timeout,
        config.read_policy,
    );
    let request_timeout = Duration::from_millis(config.request_timeout_ms);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EventLogServer<EventLogService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(evlog_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max_client_message = config.limits.max_append_bytes + (1 << 20);
    let event_log = EventLogServer::new(EventLogService::new(
        handle.clone(),
        channels.clone(),
        config.limits.clone(),
        request_timeout,
        // Long enough for an overloaded leader to hear from a quorum again, or for a new
        // election to be decided (1 s with the default timing).
        Duration::from_millis(5 * config.election_timeout_max_ms),
    ))
    .max_decoding_message_size(max_client_message)
    .max_encoding_message_size(usize::MAX);
    let cluster = ClusterServer::new(ClusterService::new(handle.clone(), channels.clone()));
    let peer = RaftPeerServer::new(PeerService::new(
        handle.clone(),
        engine.data_dir().join("snapshots"),
    ))
    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);

    let local_address = listener.local_addr()?;
    tracing::info!(node_id, %local_address, advertise = %config.advertise_addr, data_dir = %config.data_dir.display(), "evlog node serving");

    let initializer = (config.initial_members.keys().next() == Some(&node_id)).then(|| {
        tokio::spawn(initialize_when_ready(
            handle.clone(),
            config.initial_members.clone(),
            channels.clone(),
        ))
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The builder's `tcp_nodelay` applies only to sockets it binds itself; this listener's
    // accepted sockets get it here. Without it, small responses wait for Nagle's algorithm
    // (about 40 ms stalls on reads of a few events and on peer traffic).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(event_log)
        .add_service(cluster)
        .add_service(peer)
        .serve_with_incoming_shutdown(incoming, async {
            stop_rx.await.ok();
        });
    let mut server = tokio::spawn(server);
    tokio::select! {
        result = &mut server => {
            result??;
        }
        () = shutdown => {
            tracing::info!(node_id, "shutting down");
            stop_tx.send(()).ok();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; closing them");
                server.abort();
            }
        }
    }
    if let Some(initializer) = initializer {
        initializer.abort();
    }
    if let Err(error) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {error}");
    }
    tracing::info!(node_id, "stopped");
    Ok(())
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
        let path = data_dir.join(evlog_raft_store::schema::DATABASE_FILE);
        let (backend, switch) = testing::CrashBackend::open(&path)
            .map_err(|error| anyhow::anyhow!("cannot open {}: {error}", path.display()))?;
        testing::install_process_switch(switch);
        tracing::warn!(
            "failpoints build: the store runs on the testing crash backend (it can lose power)"
        );
        Ok(evlog_raft_store::StoreBackend::custom(backend))
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = data_dir;
        Ok(evlog_raft_store::StoreBackend::File)
    }
}

/// On the lowest-id initial member: once every initial member answers and none has a log,
/// initializes the cluster, exactly once. A restarted or already-joined node finds a log
/// (its own or a peer's) and does nothing.
async fn initialize_when_ready(
    handle: RaftHandle,
    members: BTreeMap<u64, String>,
    channels: PeerChannels,
) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < INIT_GIVE_UP_AFTER {
        match handle.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!("cannot initialize: {error}");
                return;
            }
        }
        match peers_ready(&handle, &members, &channels).await {
            PeersReady::AllFresh => {
                match handle.initialize(&members).await {
                    Ok(()) => tracing::info!(
                        "initialized the cluster with members {:?}",
                        members.keys().collect::<Vec<_>>()
                    ),
                    Err(error) => tracing::warn!("initialize: {error}"),
                }
                return;
            }
            PeersReady::SomeInitialized(peer) => {
                tracing::info!(
                    "node {peer} already has a log; not initializing (this node will be caught up)"
                );
                return;
            }
            PeersReady::Waiting(peer) => {
                tracing::debug!("waiting for node {peer} before initializing")
            }
        }
        tokio::time::sleep(INIT_POLL_INTERVAL).await;
    }
    tracing::warn!("gave up waiting for every initial member after {INIT_GIVE_UP_AFTER:?}");
}

enum PeersReady {
    AllFresh,
    SomeInitialized(u64),
    Waiting(u64),
}

async fn peers_ready(
    handle: &RaftHandle,
    members: &BTreeMap<u64, String>,
    channels: &PeerChannels,
) -> PeersReady {
    for (id, address) in members {
        if *id == handle.node_id() {
            continue;
        }
        let Ok(channel) = channels.get(address) else {
            return PeersReady::Waiting(*id);
        };
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(Duration::from_secs(1));
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            ClusterClient::new(channel).status(request),
        )
        .await;
        match answer {
            Ok(Ok(status)) => {
                let status = status.into_inner();
                if status.last_log_index > 0 || !status.members.is_empty() || status.term > 0 {
                    return PeersReady::SomeInitialized(*id);
                }
            }
            _ => return PeersReady::Waiting(*id),
        }
    }
    PeersReady::AllFresh
}
