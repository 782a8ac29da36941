//! Founding a new cluster. A founding member's new store starts without a vote, like any new
//! store (a wiped directory looks new, and its flags may still say `--bootstrap`): it votes
//! once a peer answers and none has committed anything ([`cluster_is_new`]); if one has, the
//! cluster exists and the node waits to be caught up by its leader. The lowest-id founding
//! member initializes the cluster, once: it waits until every initial member answers and none
//! has a log or a term, then calls `initialize`. A restart finds a log (its own or a peer's)
//! and does nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use evlog_proto::v1::StatusRequest;
use evlog_proto::v1::cluster_client::ClusterClient;

use evlog_raft_store::type_config::MemberNode;

use crate::raft::RaftHandle;
use crate::raft::transport::channels::ChannelPool;

/// How often the initializing node checks whether every initial member is up.
const INIT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The initializing node gives up after this long (an operator can restart it).
const INIT_GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

/// On the lowest-id initial member: once every initial member answers and none has a log,
/// initializes the cluster, exactly once. A restarted or already-joined node finds a log
/// (its own or a peer's) and does nothing.
pub async fn initialize_when_ready(
    handle: RaftHandle,
    members: BTreeMap<u64, MemberNode>,
    channels: ChannelPool,
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

/// Whether the cluster `members` found is new, as this node's peers say: `Some(false)` when
/// one has committed entries (the cluster exists), `Some(true)` when at least one answered
/// and none has (or this node has no peer), `None` while none answers.
pub async fn cluster_is_new(
    handle: &RaftHandle,
    members: &BTreeMap<u64, MemberNode>,
    channels: &ChannelPool,
) -> Option<bool> {
    let mut answered = members.keys().all(|id| *id == handle.node_id());
    for (id, node) in members {
        if *id == handle.node_id() {
            continue;
        }
        if let Some(status) = peer_status(&node.client_address, channels).await {
            if status.committed_index > 0 {
                return Some(false);
            }
            answered = true;
        }
    }
    answered.then_some(true)
}

/// A peer's `Cluster.Status` (over `channels`, to client addresses), `None` when it does not
/// answer within a second.
async fn peer_status(
    address: &str,
    channels: &ChannelPool,
) -> Option<evlog_proto::v1::StatusResponse> {
    let channel = channels.get(address).ok()?;
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(Duration::from_secs(1));
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        ClusterClient::new(channel).status(request),
    )
    .await;
    match answer {
        Ok(Ok(status)) => Some(status.into_inner()),
        _ => None,
    }
}

enum PeersReady {
    AllFresh,
    SomeInitialized(u64),
    Waiting(u64),
}

async fn peers_ready(
    handle: &RaftHandle,
    members: &BTreeMap<u64, MemberNode>,
    channels: &ChannelPool,
) -> PeersReady {
    for (id, node) in members {
        if *id == handle.node_id() {
            continue;
        }
        match peer_status(&node.client_address, channels).await {
            Some(status) => {
                if status.last_log_index > 0 || !status.members.is_empty() || status.term > 0 {
                    return PeersReady::SomeInitialized(*id);
                }
            }
            None => return PeersReady::Waiting(*id),
        }
    }
    PeersReady::AllFresh
}
