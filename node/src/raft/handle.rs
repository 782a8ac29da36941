//! The only door to openraft for the rest of the node: propose a command, confirm a read
//! index, wait for apply, report status, watch for the core stopping, change membership.
//! Every error is one of `errors.rs`'s; nothing here hands out openraft itself.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_raft_store::EventReader;
use evlog_raft_store::type_config::MemberNode;
use evlog_raft_store::type_config::NodeId;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::AppliedState;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use openraft::Instant as _;
use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::error::LinearizableReadError;
use openraft::error::RaftError;
use tokio::sync::watch;

use crate::raft::Raft;
use crate::raft::errors::LeaderHint;
use crate::raft::errors::LinearizeError;
use crate::raft::errors::MembershipError;
use crate::raft::errors::ProposeError;
use crate::raft::errors::ReadIndexError;
use crate::raft::errors::TransferError;
use crate::raft::errors::WaitError;
use crate::raft::proposals::Proposals;
use crate::raft::read_index::ReadIndexBatcher;
use crate::raft::receipt::Receipt;
use crate::raft::transport::channels::NodeChannels;
use crate::raft::transport::client::ReadIndexFailure;
use crate::raft::transport::identity::PeerIdentity;

/// How often the supervisor looks whether the Raft core has stopped.
const CORE_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// A node's role, as openraft reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// The Raft core has stopped.
    Shutdown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// This node's view of the cluster.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_address: Option<String>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub head_position: u64,
    /// The log's epoch (raised by a restore from a backup).
    pub epoch: u64,
    /// The id of the log's compression dictionary as applied here (0: none).
    pub compression_dictionary: u64,
    pub members: Vec<MemberStatus>,
    /// On the leader: how long since a quorum last acknowledged it (none before the first).
    pub since_quorum_ack: Option<Duration>,
    /// Why the Raft core stopped, once it has.
    pub stopped: Option<String>,
    /// This node has caught up with the leader since it started: it serves reads.
    pub caught_up: bool,
    /// This node votes (see [`RaftHandle::set_voting`]).
    pub voting: bool,
}

impl NodeStatus {
    /// Why this node serves no reads now; `None` when it does.
    pub fn not_serving_reason(&self) -> Option<String> {
        if let Some(stopped) = &self.stopped {
            return Some(format!("the Raft core stopped: {stopped}"));
        }
        if !self.voting {
            return Some(
                "this node started on an empty data directory and does not vote yet: it waits \
                 to be caught up by a leader (or, founding a new cluster with --bootstrap, for a \
                 peer to confirm that nothing has been committed yet)"
                    .to_string(),
            );
        }
        if !self.caught_up {
            return Some(
                "catching up with the leader since start: no read is served until a read index \
                 the leader confirmed is applied here"
                    .to_string(),
            );
        }
        None
    }
}

#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub node_id: NodeId,
    /// Its client address.
    pub address: String,
    /// Its peer address.
    pub peer_address: String,
    pub voter: bool,
    /// Known on the leader: the member's last replicated log index.
    pub matched_index: Option<u64>,
    /// Known on the leader: how long since the member last acknowledged a replication call
    /// (`None` on the leader itself, and before a first acknowledgement).
    pub last_contact: Option<Duration>,
}

/// Who leads, as one node sees it: what [`RaftHandle::watch_leadership`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
}

/// A completed leadership transfer: who leads now, in which term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderTransferred {
    pub leader_id: NodeId,
    pub term: u64,
    pub leader_address: Option<String>,
    /// The leader before the transfer (this node).
    pub previous_leader_id: NodeId,
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
    /// This node votes (and campaigns): not while a store created empty outside a founding
    /// has not caught up (see [`Self::set_voting`]).
    voting: Arc<AtomicBool>,
    /// Pooled channels to the other nodes (a transfer asks its target whether it votes).
    channels: NodeChannels,
    peer_rpc_timeout: Duration,
}

impl RaftHandle {
    #[expect(
        clippy::too_many_arguments,
        reason = "the handle's parts, each used once here; a struct of them would only move the list"
    )]
    pub fn new(
        raft: Raft,
        node_id: NodeId,
        reader: EventReader,
        applied: watch::Receiver<AppliedState>,
        channels: NodeChannels,
        identity: PeerIdentity,
        peer_rpc_timeout: Duration,
        read_policy: crate::config::ReadPolicy,
        metrics: &crate::metrics::Metrics,
        append_calls: crate::raft::proposals::AppendCalls,
    ) -> Self {
        let leader_raft = raft.clone();
        let leader_reads = ReadIndexBatcher::start(move || {
            let raft = leader_raft.clone();
            async move {
                tokio::time::timeout(peer_rpc_timeout, confirm_leadership(&raft, read_policy))
                    .await
                    .map_err(|_| ReadIndexError::Timeout {
                        after: peer_rpc_timeout,
                    })?
            }
        });
        let remote_raft = raft.clone();
        let remote_channels = channels.peers.clone();
        let remote_reads = ReadIndexBatcher::start(move || {
            let raft = remote_raft.clone();
            let channels = remote_channels.clone();
            let identity = identity.clone();
            async move { ask_leader_for_read_index(&raft, &channels, &identity, peer_rpc_timeout).await }
        });
        let proposals = Proposals::start(
            raft.clone(),
            metrics.proposal_batch_events.clone(),
            append_calls,
        );
        Self {
            raft,
            node_id,
            reader,
            applied,
            leader_reads,
            remote_reads,
            proposals,
            caught_up: Arc::new(AtomicBool::new(false)),
            voting: Arc::new(AtomicBool::new(true)),
            channels,
            peer_rpc_timeout,
        }
    }

    /// Whether this node votes and campaigns. A node whose store was created empty outside a
    /// founding (it joins, or lost its data) must not until it has caught up with a leader:
    /// it may lack entries a quorum acknowledged, and a vote it gave before is gone, so its
    /// vote could elect a leader without them. It still takes entries and acknowledges them.
    pub fn set_voting(&self, voting: bool) {
        self.voting.store(voting, Ordering::Release);
        self.raft.runtime_config().elect(voting);
    }

    /// Whether this node votes now (the peer service refuses vote requests otherwise).
    pub fn is_voting(&self) -> bool {
        self.voting.load(Ordering::Acquire)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn reader(&self) -> &EventReader {
        &self.reader
    }

    /// The leader as this node knows it, as a hint for a refusal.
    pub fn leader_hint(&self) -> LeaderHint {
        self.leader()
            .map(|(id, address)| LeaderHint {
                leader_id: Some(id),
                leader_address: address,
            })
            .unwrap_or_default()
    }

    /// The leader as this node knows it, with its client address.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        known_leader(&self.raft).map(|(id, node)| (id, node.map(|node| node.client_address)))
    }

    /// Whether this node knows itself to be the leader.
    pub fn is_leader(&self) -> bool {
        self.leader()
            .is_some_and(|(leader, _)| leader == self.node_id)
    }

    /// Waits (bounded) until some leader is known, and returns it; `None` when none was known
    /// in time, or the node is shutting down.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, Option<String>)> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = self.leader() {
                    return Some(leader);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Proposes an append (batched with the appends waiting beside it); returns what applying
    /// it decided, and where it landed.
    pub async fn propose_append(
        &self,
        command: AppendCommand,
    ) -> Result<(CommandResponse, Receipt), ProposeError> {
        self.proposals.propose(command).await
    }

    /// Proposes `command` as an entry of its own; returns what applying it decided.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<(CommandResponse, Receipt), ProposeError> {
        match self.raft.client_write(command).await {
            Ok(written) => Ok((
                written.data,
                Receipt {
                    term: written.log_id.leader_id.term,
                    log_index: written.log_id.index,
                    leader_id: written.log_id.leader_id.node_id,
                },
            )),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader(LeaderHint::from_forward(forward)))
            }
            Err(RaftError::APIError(error)) => Err(ProposeError::Discarded(error.to_string())),
            Err(RaftError::Fatal(fatal)) => Err(ProposeError::Stopped(fatal.to_string())),
        }
    }

    /// On the leader: a read index confirmed with a quorum after this call began (shared with
    /// the concurrent reads). Followers ask this of the leader.
    pub async fn leader_read_index(&self) -> Result<u64, ReadIndexError> {
        match self.leader() {
            Some((leader, _)) if leader == self.node_id => self.leader_reads.read_index().await,
            Some((leader, address)) => Err(ReadIndexError::NotLeader(LeaderHint {
                leader_id: Some(leader),
                leader_address: address,
            })),
            None => Err(ReadIndexError::NotLeader(LeaderHint::default())),
        }
    }

    /// A read index confirmed after this call began: by this node as leader, by the leader
    /// otherwise (shared with the concurrent reads). Not yet applied here, maybe.
    pub async fn confirm_read_index(&self) -> Result<u64, ReadIndexError> {
        if self.is_leader() {
            self.leader_reads.read_index().await
        } else {
            self.remote_reads.read_index().await
        }
    }

    /// Makes this node ready for a linearizable read: gets a read index confirmed after this
    /// call began (by itself as leader, from the leader otherwise; either way shared with the
    /// concurrent reads) and waits until this node has applied it.
    pub async fn linearize(&self, timeout: Duration) -> Result<(), LinearizeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let read_index = tokio::time::timeout_at(deadline, self.confirm_read_index())
            .await
            .map_err(|_| ReadIndexError::Timeout { after: timeout })??;
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
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), LinearizeError> {
        if self.is_caught_up() {
            return Ok(());
        }
        self.linearize(timeout).await
    }

    /// Whether this node has applied a read index confirmed since it started: it may serve
    /// reads.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Waits until this node has applied log index `index`.
    pub async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), WaitError> {
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
    ) -> Result<(), WaitError> {
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
    ) -> Result<(), WaitError> {
        let mut applied = self.applied.clone();
        let wait = applied.wait_for(|state| ready(state));
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WaitError::ShuttingDown),
            Err(_) => Err(WaitError::Timeout {
                node_id: self.node_id,
                what: what(),
            }),
        }
    }

    pub fn applied(&self) -> AppliedState {
        *self.applied.borrow()
    }

    /// Watches what this node has applied (updated after each apply commit).
    pub fn applied_watch(&self) -> watch::Receiver<AppliedState> {
        self.applied.clone()
    }

    /// How many committed entries this node has not applied yet.
    /// Appends proposed on this node and not yet answered.
    pub fn pending_appends(&self) -> u64 {
        self.proposals.pending()
    }

    pub fn apply_lag(&self) -> u64 {
        let committed = self
            .raft
            .metrics()
            .borrow_watched()
            .local_committed
            .map_or(0, |log_id| log_id.index);
        committed.saturating_sub(self.applied().log_index)
    }

    /// Resolves when the Raft core has stopped (a storage error, or a bug), with the reason,
    /// within [`CORE_CHECK_INTERVAL`]. A node whose core stopped can serve nothing: it must
    /// exit. (It looks every so often rather than waking on every metrics change: openraft
    /// publishes several per append, and each wake of an idle runtime costs a thread switch.)
    pub async fn core_stopped(&self) -> String {
        let metrics = self.raft.metrics();
        let mut every = tokio::time::interval(CORE_CHECK_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Some(reason) = core_stop_reason(&metrics.borrow_watched()) {
                return reason;
            }
        }
    }

    /// Tells `observe` who leads now, then after every change of role, term or leader, until
    /// the Raft core stops. (openraft's server metrics change only then, not per append.)
    pub async fn watch_leadership(&self, mut observe: impl FnMut(Leadership)) {
        let mut server = self.raft.server_metrics();
        let mut last = None;
        loop {
            let now = {
                let metrics = server.borrow_watched();
                Leadership {
                    role: role_of(metrics.state),
                    term: metrics.vote.leader_id().term,
                    leader_id: metrics.current_leader,
                }
            };
            if last != Some(now) {
                observe(now);
                last = Some(now);
            }
            if server.changed().await.is_err() {
                return;
            }
        }
    }

    /// The ids of the members (voters and learners) in this node's latest membership.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let role = role_of(metrics.state);
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
        let mut contact = last_ack_ages(&metrics);
        contact.remove(&self.node_id);
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                node_id: *id,
                address: node.client_address.clone(),
                peer_address: crate::config::peer_address_of(node),
                voter: voters.contains(id),
                matched_index: matched.get(id).copied().flatten(),
                last_contact: contact.get(id).copied(),
            })
            .collect();
        let leader_address = metrics.current_leader.and_then(|leader| {
            membership
                .get_node(&leader)
                .map(|node| node.client_address.clone())
        });
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
            epoch: applied.epoch,
            compression_dictionary: applied.dictionary,
            members,
            since_quorum_ack: metrics
                .last_quorum_acked
                .map(|acked| acked.into_inner().elapsed()),
            stopped: core_stop_reason(&metrics),
            caught_up: self.is_caught_up(),
            voting: self.is_voting(),
        }
    }

    /// The peer address the membership records for this node, once it has a membership
    /// naming this node (waiting at most `timeout`: the core loads it as it starts).
    pub async fn recorded_peer_address(&self, timeout: Duration) -> Option<String> {
        let mut metrics = self.raft.metrics();
        let recorded = async {
            loop {
                {
                    let now = metrics.borrow_watched();
                    if let Some(node) = now.membership_config.membership().get_node(&self.node_id) {
                        return Some(crate::config::peer_address_of(node));
                    }
                }
                metrics.changed().await.ok()?;
            }
        };
        tokio::time::timeout(timeout, recorded).await.ok().flatten()
    }

    /// Initializes a fresh cluster with these voters.
    pub async fn initialize(
        &self,
        members: &BTreeMap<NodeId, MemberNode>,
    ) -> Result<(), MembershipError> {
        self.raft
            .initialize(members.clone())
            .await
            .map_err(|error| match error {
                RaftError::Fatal(fatal) => MembershipError::Stopped(fatal.to_string()),
                RaftError::APIError(error) => MembershipError::Refused(error.to_string()),
            })
    }

    pub async fn is_initialized(&self) -> Result<bool, MembershipError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|fatal| MembershipError::Stopped(fatal.to_string()))
    }

    /// Adds a learner and waits (at most `timeout`) until it has caught up.
    pub async fn add_learner(
        &self,
        node_id: NodeId,
        node: MemberNode,
        timeout: Duration,
    ) -> Result<u64, MembershipError> {
        let added = self.raft.add_learner(node_id, node, true);
        match tokio::time::timeout(timeout, added).await {
            Ok(result) => {
                let log_index = result?.log_id.index;
                tracing::info!(node_id, log_index, "membership: added a learner");
                Ok(log_index)
            }
            Err(_) => Err(MembershipError::Timeout(format!(
                "node {node_id} was added as a learner but had not caught up within {} ms; \
                 it goes on catching up",
                timeout.as_millis()
            ))),
        }
    }

    /// Sets the voters.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        timeout: Duration,
    ) -> Result<u64, MembershipError> {
        let changed = self.raft.change_membership(voters.clone(), false);
        match tokio::time::timeout(timeout, changed).await {
            Ok(result) => {
                let log_index = result?.log_id.index;
                tracing::info!(?voters, log_index, "membership: the voters changed");
                Ok(log_index)
            }
            Err(_) => Err(MembershipError::Timeout(format!(
                "the membership change did not commit within {} ms; its outcome is unknown",
                timeout.as_millis()
            ))),
        }
    }

    /// As leader: hands leadership to voter `to` (absent: the voter whose replicated log is
    /// longest, the most caught-up) with openraft's leader transfer, which makes the target
    /// campaign at once instead of after an election timeout, and waits (at most `timeout`)
    /// until it leads. The leader takes no new writes meanwhile (they are refused as
    /// not-leader, naming the target, and retried there).
    pub async fn transfer_leader(
        &self,
        to: Option<NodeId>,
        timeout: Duration,
    ) -> Result<LeaderTransferred, TransferError> {
        let (to, start_term, to_address) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            if metrics.current_leader != Some(self.node_id) || metrics.state != ServerState::Leader
            {
                return Err(TransferError::NotLeader(self.leader_hint()));
            }
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let to = match to {
                Some(to) if membership.get_node(&to).is_none() => {
                    return Err(TransferError::UnknownMember { node_id: to });
                }
                Some(to) if !voters.contains(&to) => {
                    return Err(TransferError::NotAVoter { node_id: to });
                }
                Some(to) => to,
                None => most_caught_up_voter(
                    &voters,
                    self.node_id,
                    metrics.replication.as_ref(),
                    &last_ack_ages(&metrics),
                )
                .ok_or(TransferError::NoOtherVoter)?,
            };
            let address = membership
                .get_node(&to)
                .map(|node| node.client_address.clone());
            (to, metrics.current_term, address)
        };
        let previous_leader_id = self.node_id;
        if to == self.node_id {
            let (leader_address, term) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow_watched();
                (
                    metrics
                        .membership_config
                        .membership()
                        .get_node(&to)
                        .map(|node| node.client_address.clone()),
                    metrics.current_term,
                )
            };
            return Ok(LeaderTransferred {
                leader_id: to,
                term,
                leader_address,
                previous_leader_id,
            });
        }
        // A leader that offers its leadership takes no writes and sends no heartbeats until the
        // target leads, and openraft cannot take the offer back: a target that would refuse it
        // (it does not vote yet) or cannot get it (it does not answer) would cost an election
        // timeout. Ask it first.
        if let Some(address) = to_address {
            self.check_transfer_target(to, &address).await?;
        }
        let mut metrics = self.raft.metrics();
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|fatal| TransferError::Stopped(fatal.to_string()))?;
        let taken_over = async {
            loop {
                {
                    let now = metrics.borrow_watched();
                    if now.current_leader == Some(to) && now.current_term > start_term {
                        return Some(LeaderTransferred {
                            leader_id: to,
                            term: now.current_term,
                            leader_address: now
                                .membership_config
                                .membership()
                                .get_node(&to)
                                .map(|node| node.client_address.clone()),
                            previous_leader_id,
                        });
                    }
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        };
        match tokio::time::timeout(timeout, taken_over).await {
            Ok(Some(transferred)) => Ok(transferred),
            Ok(None) => Err(TransferError::Stopped(
                "the Raft core stopped during the transfer".to_string(),
            )),
            Err(_) => Err(TransferError::Timeout { to, after: timeout }),
        }
    }

    /// Whether voter `to` at `address` can take the leadership now: it answers its status and
    /// votes (a node that started on an empty data directory does not until it caught up).
    async fn check_transfer_target(&self, to: NodeId, address: &str) -> Result<(), TransferError> {
        let unreachable = |detail: String| TransferError::TargetUnavailable {
            node_id: to,
            detail,
        };
        let channel = self
            .channels
            .clients
            .get(address)
            .map_err(|error| unreachable(error.to_string()))?;
        let mut client = evlog_proto::v1::cluster_client::ClusterClient::new(channel);
        let mut request = tonic::Request::new(evlog_proto::v1::StatusRequest {});
        request.set_timeout(self.peer_rpc_timeout);
        let status = tokio::time::timeout(self.peer_rpc_timeout, client.status(request))
            .await
            .map_err(|_| unreachable("no answer to its status".to_string()))?
            .map_err(|status| unreachable(status.message().to_string()))?
            .into_inner();
        if !status.voting {
            return Err(TransferError::TargetNotVoting { node_id: to });
        }
        Ok(())
    }

    /// Stops the Raft core (graceful shutdown).
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {error}");
        }
    }
}

/// Why openraft's core stopped, if it has.
fn core_stop_reason(
    metrics: &openraft::RaftMetrics<evlog_raft_store::type_config::TypeConfig>,
) -> Option<String> {
    match (&metrics.running_state, metrics.state) {
        (Err(fatal), _) => Some(fatal.to_string()),
        (Ok(()), ServerState::Shutdown) => Some("the Raft core shut down".to_string()),
        _ => None,
    }
}

/// A follower that acknowledged the leader within this long answers: it is preferred as the
/// target of a leadership transfer over one that has gone quiet (stopped, or cut off), however
/// long its log was when last heard of.
const RESPONSIVE_WITHIN: Duration = Duration::from_secs(1);

/// The voter other than `leader` that answers (acknowledged the leader within
/// [`RESPONSIVE_WITHIN`], per `last_ack_age`) and has the longest replicated log; among equals
/// the lowest id. A quiet voter is chosen only when none answers. `None` when the leader is the
/// only voter.
fn most_caught_up_voter(
    voters: &BTreeSet<NodeId>,
    leader: NodeId,
    replication: Option<&BTreeMap<NodeId, Option<evlog_raft_store::type_config::LogId>>>,
    last_ack_age: &BTreeMap<NodeId, Duration>,
) -> Option<NodeId> {
    let rank = |id: &NodeId| {
        let responsive = last_ack_age
            .get(id)
            .is_some_and(|age| *age < RESPONSIVE_WITHIN);
        let matched = replication
            .and_then(|replication| replication.get(id))
            .and_then(|log_id| log_id.as_ref().map(|log_id| log_id.index));
        (responsive, matched)
    };
    let mut best: Option<(NodeId, (bool, Option<u64>))> = None;
    for voter in voters.iter().filter(|id| **id != leader) {
        let voter_rank = rank(voter);
        if best.is_none_or(|(_, best_rank)| voter_rank > best_rank) {
            best = Some((*voter, voter_rank));
        }
    }
    best.map(|(id, _)| id)
}

/// The leader `raft` knows of, with its address (no copy of the whole metrics).
fn known_leader(raft: &Raft) -> Option<(NodeId, Option<MemberNode>)> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let leader = metrics.current_leader?;
    let node = metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .cloned();
    Some((leader, node))
}

/// As leader: confirms leadership (a quorum round that starts now, or with `Lease`, a quorum
/// acknowledgement within the leader lease); returns the read index.
async fn confirm_leadership(
    raft: &Raft,
    policy: crate::config::ReadPolicy,
) -> Result<u64, ReadIndexError> {
    if policy == crate::config::ReadPolicy::Lease
        && let Ok(linearizer) = raft.get_read_linearizer(ReadPolicy::LeaseRead).await
    {
        return Ok(linearizer.read_log_id().index());
    }
    // ReadIndex, or a lease that has run out (or any lease error: the round decides).
    match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(linearizer) => Ok(linearizer.read_log_id().index()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
            Err(ReadIndexError::NotLeader(LeaderHint::from_forward(forward)))
        }
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(error))) => {
            Err(ReadIndexError::NoQuorum(error.to_string()))
        }
        Err(RaftError::Fatal(fatal)) => Err(ReadIndexError::Stopped(fatal.to_string())),
    }
}

/// As follower: one `ReadIndex` call to the leader.
async fn ask_leader_for_read_index(
    raft: &Raft,
    channels: &crate::raft::transport::channels::ChannelPool,
    identity: &PeerIdentity,
    timeout: Duration,
) -> Result<u64, ReadIndexError> {
    let Some((leader, node)) = known_leader(raft) else {
        return Err(ReadIndexError::NoLeader);
    };
    let unreachable = |detail: String| ReadIndexError::LeaderUnreachable {
        leader_id: leader,
        detail,
    };
    let node = node.ok_or_else(|| unreachable("its address is not known".to_string()))?;
    let channel = channels
        .get(&crate::config::peer_address_of(&node))
        .map_err(|error| unreachable(error.to_string()))?;
    crate::raft::transport::client::read_index(channel, identity, timeout)
        .await
        .map_err(|failure| match failure {
            ReadIndexFailure::Timeout => ReadIndexError::Timeout { after: timeout },
            ReadIndexFailure::Refused(detail) => unreachable(detail),
        })
}

/// On the leader: how long since each member last acknowledged it (empty elsewhere).
fn last_ack_ages(
    metrics: &openraft::RaftMetrics<evlog_raft_store::type_config::TypeConfig>,
) -> BTreeMap<NodeId, Duration> {
    metrics
        .heartbeat
        .iter()
        .flatten()
        .filter_map(|(id, acked)| Some((*id, acked.as_ref()?.into_inner().elapsed())))
        .collect()
}

fn role_of(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

#[cfg(test)]
mod tests {
    use evlog_raft_store::type_config::LeaderId;
    use evlog_raft_store::type_config::LogId;

    use super::*;

    fn log_id(index: u64) -> Option<LogId> {
        Some(LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        ))
    }

    #[test]
    fn the_transfer_target_is_the_answering_voter_with_the_longest_log() {
        let voters = BTreeSet::from([1, 2, 3, 4]);
        let replication = BTreeMap::from([(2, log_id(7)), (3, log_id(9)), (4, log_id(9))]);
        let fresh = Duration::from_millis(10);
        let all_answer = BTreeMap::from([(2, fresh), (3, fresh), (4, fresh)]);
        // The longest log; the lowest id among equals; never the leader itself.
        assert_eq!(
            most_caught_up_voter(&voters, 1, Some(&replication), &all_answer),
            Some(3)
        );
        // A voter gone quiet is passed over, however long its log was.
        let three_quiet = BTreeMap::from([(2, fresh), (3, Duration::from_secs(5)), (4, fresh)]);
        assert_eq!(
            most_caught_up_voter(&voters, 1, Some(&replication), &three_quiet),
            Some(4)
        );
        // A learner is no candidate; a lone voter has nobody to hand over to.
        assert_eq!(
            most_caught_up_voter(&BTreeSet::from([1]), 1, Some(&replication), &all_answer),
            None
        );
        // None answers: still the longest log.
        assert_eq!(
            most_caught_up_voter(&voters, 1, Some(&replication), &BTreeMap::new()),
            Some(3)
        );
    }
}
