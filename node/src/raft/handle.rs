//! The only door to openraft for the rest of the node: propose a command, confirm a read
//! index, wait for apply, report status, change membership.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_proto::v1::ReadIndexRequest;
use evlog_proto::v1::raft_peer_client::RaftPeerClient;
use evlog_raft_store::EventReader;
use evlog_raft_store::type_config::NodeId;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::AppliedState;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use openraft::Instant as _;
use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::error::ForwardToLeader;
use openraft::error::LinearizableReadError;
use openraft::error::RaftError;
use openraft::impls::BasicNode;
use tokio::sync::watch;

use crate::error::NodeError;
use crate::raft::Raft;
use crate::raft::channels::PeerChannels;
use crate::raft::proposals::Proposals;
use crate::raft::read_index::ReadIndexBatcher;

/// Where an append landed in the Raft log (the durability receipt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub term: u64,
    pub log_index: u64,
    pub leader_id: u64,
}

/// This node's view of the cluster.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub role: &'static str,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_address: Option<String>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub head_position: u64,
    pub members: Vec<MemberStatus>,
    /// On the leader: how long since a quorum last acknowledged it (none before the first).
    pub since_quorum_ack: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub address: String,
    pub voter: bool,
    /// Known on the leader: the member's last replicated log index.
    pub matched_index: Option<u64>,
}

#[derive(Clone)]
pub struct RaftHandle {
    raft: Raft,
    node_id: NodeId,
    reader: EventReader,
    applied: watch::Receiver<AppliedState>,
    /// Read indexes confirmed by this node as leader, shared by concurrent reads.
    leader_reads: ReadIndexBatcher,
    /// Read indexes asked of the leader by this node as follower, shared likewise.
    remote_reads: ReadIndexBatcher,
    /// Appends waiting together go to Raft as one batch.
    proposals: Proposals,
    /// This node has applied a read index confirmed since it started (see [`Self::catch_up`]).
    caught_up: Arc<AtomicBool>,
}

impl RaftHandle {
    pub fn new(
        raft: Raft,
        node_id: NodeId,
        reader: EventReader,
        applied: watch::Receiver<AppliedState>,
        channels: PeerChannels,
        peer_rpc_timeout: Duration,
        read_policy: crate::config::ReadPolicy,
    ) -> Self {
        let leader_raft = raft.clone();
        let leader_reads = ReadIndexBatcher::start(move || {
            let raft = leader_raft.clone();
            async move {
                tokio::time::timeout(peer_rpc_timeout, confirm_leadership(&raft, read_policy))
                    .await
                    .map_err(|_| {
                        NodeError::Unavailable(format!(
                            "no quorum confirmed leadership within {} ms",
                            peer_rpc_timeout.as_millis()
                        ))
                    })?
            }
        });
        let remote_raft = raft.clone();
        let remote_reads = ReadIndexBatcher::start(move || {
            let raft = remote_raft.clone();
            let channels = channels.clone();
            async move { ask_leader_for_read_index(&raft, &channels, peer_rpc_timeout).await }
        });
        let proposals = Proposals::start(raft.clone());
        Self {
            raft,
            node_id,
            reader,
            applied,
            leader_reads,
            remote_reads,
            proposals,
            caught_up: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn reader(&self) -> &EventReader {
        &self.reader
    }

    /// The leader as this node knows it, with its address.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        known_leader(&self.raft)
    }

    /// Waits (bounded) until some leader is known, and returns it.
    pub async fn wait_for_leader(
        &self,
        timeout: Duration,
    ) -> Result<(NodeId, Option<String>), NodeError> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = self.leader() {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(NodeError::Unavailable(
                        "this node is shutting down".to_string(),
                    ));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            NodeError::Unavailable(format!(
                "no leader elected within {} ms; retry",
                timeout.as_millis()
            ))
        })?
    }

    /// Proposes an append (batched with the appends waiting beside it); returns what applying
    /// it decided, and where it landed.
    pub async fn append(
        &self,
        command: AppendCommand,
    ) -> Result<(CommandResponse, Receipt), NodeError> {
        self.proposals.propose(Command::Append(command)).await
    }

    /// On the leader: a read index confirmed with a quorum after this call began (shared with
    /// the concurrent reads).
    pub async fn leader_read_index(&self) -> Result<u64, NodeError> {
        match self.leader() {
            Some((leader, _)) if leader == self.node_id => self.leader_reads.read_index().await,
            Some((leader, address)) => Err(NodeError::NotLeader {
                leader_id: Some(leader),
                leader_address: address,
            }),
            None => Err(NodeError::NotLeader {
                leader_id: None,
                leader_address: None,
            }),
        }
    }

    /// Makes this node ready for a linearizable read: gets a read index confirmed after this
    /// call began (by itself as leader, from the leader otherwise; either way shared with the
    /// concurrent reads) and waits until this node has applied it.
    pub async fn linearize(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let read_index = async {
            if self
                .leader()
                .is_some_and(|(leader, _)| leader == self.node_id)
            {
                self.leader_reads.read_index().await
            } else {
                self.remote_reads.read_index().await
            }
        };
        let read_index = tokio::time::timeout_at(deadline, read_index)
            .await
            .map_err(|_| {
                NodeError::Unavailable(format!(
                    "no read index confirmed within {} ms; retry",
                    timeout.as_millis()
                ))
            })??;
        self.wait_applied(read_index, deadline).await?;
        self.caught_up.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Makes this node ready for a read that need not be linearizable (`LOCAL`, `AT_LEAST`):
    /// once since it started, it must have applied a read index confirmed by the leader.
    ///
    /// The store shows applied state before its fsync (the log it comes from is durable on a
    /// quorum), so a crash can take some of it back until the node applies it again. A node
    /// that served reads from its state at once after a restart could then serve a read older
    /// than one it served before the crash; after one confirmed read index it has everything
    /// it ever showed.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), NodeError> {
        if self.caught_up.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.linearize(timeout).await.map_err(|error| match error {
            NodeError::Unavailable(why) | NodeError::Timeout(why) => {
                NodeError::Unavailable(format!(
                    "node {} has not caught up with the leader since it started, and serves no \
                     read until it has: {why}",
                    self.node_id
                ))
            }
            other => other,
        })
    }

    /// Waits until this node has applied log index `index`.
    pub async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), NodeError> {
        self.wait_state(
            deadline,
            |state| state.log_index >= index,
            || format!("log index {index}"),
        )
        .await
    }

    /// Waits until this node has applied global position `position`.
    pub async fn wait_position(
        &self,
        position: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), NodeError> {
        self.wait_state(
            deadline,
            |state| state.head_position >= position,
            || format!("position {position}"),
        )
        .await
    }

    async fn wait_state(
        &self,
        deadline: tokio::time::Instant,
        ready: impl Fn(&AppliedState) -> bool,
        what: impl Fn() -> String,
    ) -> Result<(), NodeError> {
        let mut applied = self.applied.clone();
        let wait = applied.wait_for(|state| ready(state));
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Unavailable(
                "this node is shutting down".to_string(),
            )),
            Err(_) => Err(NodeError::Timeout(format!(
                "node {} had not applied {} before the deadline",
                self.node_id,
                what()
            ))),
        }
    }

    pub fn applied(&self) -> AppliedState {
        *self.applied.borrow()
    }

    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched: BTreeMap<NodeId, Option<u64>> = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(id, log_id)| (*id, log_id.as_ref().map(|id| id.index)))
                    .collect()
            })
            .unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                node_id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: matched.get(id).copied().flatten(),
            })
            .collect();
        let leader_address = metrics
            .current_leader
            .and_then(|leader| membership.get_node(&leader).map(|node| node.addr.clone()));
        let applied = self.applied();
        NodeStatus {
            node_id: self.node_id,
            role,
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_address,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: metrics.local_committed.map(|id| id.index).unwrap_or(0),
            applied_index: applied.log_index,
            snapshot_index: metrics.snapshot.map(|id| id.index).unwrap_or(0),
            purged_index: metrics.purged.map(|id| id.index).unwrap_or(0),
            head_position: applied.head_position,
            members,
            since_quorum_ack: metrics
                .last_quorum_acked
                .map(|acked| acked.into_inner().elapsed()),
        }
    }

    /// Initializes a fresh cluster with these voters.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        self.raft
            .initialize(nodes)
            .await
            .map_err(|error| NodeError::Unavailable(format!("initializing the cluster: {error}")))
    }

    pub async fn is_initialized(&self) -> Result<bool, NodeError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|fatal| NodeError::Unavailable(format!("raft stopped: {fatal}")))
    }

    /// Adds a learner and waits until it has caught up.
    pub async fn add_learner(&self, node_id: NodeId, address: String) -> Result<u64, NodeError> {
        self.raft
            .add_learner(node_id, BasicNode { addr: address }, true)
            .await
            .map(|response| response.log_id.index)
            .map_err(membership_error)
    }

    /// Sets the voters.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<u64, NodeError> {
        self.raft
            .change_membership(voters, false)
            .await
            .map(|response| response.log_id.index)
            .map_err(membership_error)
    }
}

/// The leader `raft` knows of, with its address (no copy of the whole metrics).
fn known_leader(raft: &Raft) -> Option<(NodeId, Option<String>)> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let leader = metrics.current_leader?;
    let address = metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|node| node.addr.clone());
    Some((leader, address))
}

/// As leader: confirms leadership (a quorum round that starts now, or with `Lease`, a quorum
/// acknowledgement within the leader lease); returns the read index.
async fn confirm_leadership(
    raft: &Raft,
    policy: crate::config::ReadPolicy,
) -> Result<u64, NodeError> {
    if policy == crate::config::ReadPolicy::Lease
        && let Ok(linearizer) = raft.get_read_linearizer(ReadPolicy::LeaseRead).await
    {
        return Ok(linearizer.read_log_id().index());
    }
    // ReadIndex, or a lease that has run out (or any lease error: the round decides).
    match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(linearizer) => Ok(linearizer.read_log_id().index()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
            Err(not_leader(forward))
        }
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(error))) => Err(
            NodeError::Unavailable(format!("no quorum to confirm leadership: {error}")),
        ),
        Err(RaftError::Fatal(fatal)) => {
            Err(NodeError::Unavailable(format!("raft stopped: {fatal}")))
        }
    }
}

/// As follower: one `ReadIndex` call to the leader.
async fn ask_leader_for_read_index(
    raft: &Raft,
    channels: &PeerChannels,
    timeout: Duration,
) -> Result<u64, NodeError> {
    let Some((leader, address)) = known_leader(raft) else {
        return Err(NodeError::Unavailable(
            "no leader is known yet; retry".to_string(),
        ));
    };
    let address = address
        .ok_or_else(|| NodeError::Unavailable(format!("leader {leader} has no known address")))?;
    let mut client = RaftPeerClient::new(channels.get(&address)?);
    let mut request = tonic::Request::new(ReadIndexRequest {});
    request.set_timeout(timeout);
    let response = tokio::time::timeout(timeout, client.read_index(request))
        .await
        .map_err(|_| {
            NodeError::Unavailable(format!(
                "leader {leader} did not confirm a read index in time; retry"
            ))
        })?
        .map_err(|status| {
            NodeError::Unavailable(format!(
                "asking leader {leader} for a read index: {}",
                status.message()
            ))
        })?;
    Ok(response.into_inner().read_index)
}

pub(crate) fn not_leader(forward: ForwardToLeader<TypeConfig>) -> NodeError {
    NodeError::NotLeader {
        leader_id: forward.leader_id,
        leader_address: forward.leader_node.map(|node| node.addr),
    }
}

fn membership_error(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => not_leader(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            NodeError::InvalidArgument(error.to_string())
        }
        RaftError::APIError(error) => NodeError::Unavailable(error.to_string()),
        RaftError::Fatal(fatal) => NodeError::Unavailable(format!("raft stopped: {fatal}")),
    }
}
