//! Initializing a new cluster, once: the lowest-id initial member waits until every initial
//! member answers and none has a log or a term, then calls `initialize`. A restart finds a log
//! (its own or a peer's) and does nothing; a wiped node that rejoins is caught up by the
//! leader rather than starting a second cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use evlog_proto::v1::StatusRequest;
use evlog_proto::v1::cluster_client::ClusterClient;

use crate::raft::RaftHandle;
use crate::raft::transport::channels::PeerChannels;

/// How often the initializing node checks whether every initial member is up.
const INIT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The initializing node gives up after this long (an operator can restart it).
const INIT_GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

/// On the lowest-id initial member: once every initial member answers and none has a log,
/// initializes the cluster, exactly once. A restarted or already-joined node finds a log
/// (its own or a peer's) and does nothing.
pub async fn initialize_when_ready(
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
