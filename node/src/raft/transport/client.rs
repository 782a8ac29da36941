//! The sending side of the Raft network: openraft's network over the peer protocol
//! (`evlog.internal.v1.RaftPeer`, on each peer's peer address). Every message carries this
//! node's cluster id and group id; every RPC carries a deadline (openraft's TTL for the call),
//! channels are pooled per peer, snapshots stream in chunks serialized as they are sent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use evlog_proto::internal::v1::RaftMessage;
use evlog_proto::internal::v1::ReadIndexRequest;
use evlog_proto::internal::v1::SnapshotChunk;
use evlog_proto::internal::v1::raft_peer_client::RaftPeerClient;
use evlog_raft_store::SnapshotData;
use evlog_raft_store::type_config::MemberNode;
use evlog_raft_store::type_config::NodeId;
use evlog_raft_store::type_config::Snapshot;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::type_config::Vote;
use futures::Stream;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RPCTypes;
use openraft::network::RaftNetworkFactory;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::metrics::Histogram;
use crate::metrics::Metrics;
use crate::raft::log_purge::SnapshotHolds;
use crate::raft::transport::channels::ChannelPool;
use crate::raft::transport::identity::PeerIdentity;
use crate::raft::transport::wire;
use prometheus_client::metrics::counter::Counter;

/// Bytes per snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Makes a client per peer; all share the channel pool.
#[derive(Clone)]
pub struct PeerNetwork {
    node_id: NodeId,
    identity: PeerIdentity,
    /// Channels to peer addresses.
    channels: ChannelPool,
    append_deadline_floor: Duration,
    metrics: Arc<Metrics>,
    /// Snapshots being sent, which the log purge waits for (`raft::log_purge`).
    snapshot_holds: SnapshotHolds,
}

impl PeerNetwork {
    /// `append_deadline_floor` is the least time an AppendEntries (or heartbeat) call gets:
    /// openraft's own budget for one is the heartbeat interval (100 ms by default), and a
    /// leader whose round trip to its followers exceeded that (a slow link, a loaded machine,
    /// a follower catching up on a large batch) timed out every call and replicated nothing.
    pub fn new(
        node_id: NodeId,
        identity: PeerIdentity,
        channels: ChannelPool,
        append_deadline_floor: Duration,
        metrics: Arc<Metrics>,
        snapshot_holds: SnapshotHolds,
    ) -> Self {
        Self {
            node_id,
            identity,
            channels,
            append_deadline_floor,
            metrics,
            snapshot_holds,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        let address = crate::config::peer_address_of(node);
        PeerClient {
            node_id: self.node_id,
            identity: self.identity.clone(),
            target,
            channel: self.channels.get(&address).ok(),
            address,
            append_deadline_floor: self.append_deadline_floor,
            round_trip: self
                .metrics
                .peer_rtt
                .get_or_create_owned(&vec![("peer", target.to_string())]),
            snapshots_sent: self.metrics.snapshots_sent.clone(),
            snapshot_holds: self.snapshot_holds.clone(),
        }
    }
}

/// How long one replication stream takes requests; then it ends (once its answers are in)
/// and openraft opens the next. openraft adopts a new plan from its core (such as a snapshot
/// in place of entries purged meanwhile) only between streams, and a stream whose entries
/// were purged under it goes on for ever sending entry-less requests that the follower
/// answers (openraft 0.10.0-alpha.37 reads an empty range as a heartbeat and retries it every
/// 10 ms): the chaos campaign's `bridge` fault left a follower behind for good that way
/// (`cluster-tests/tests/replication_stream.rs` fails without this bound).
const MAX_STREAM_SESSION: Duration = Duration::from_secs(1);

/// Most requests of one replication stream sent and not yet answered; the stream ends there
/// (openraft's side of the follower takes 64 at a time, so this is far behind).
const MAX_IN_FLIGHT: usize = 4_096;

/// When each request of a replication stream went out and is still unanswered, oldest first
/// (answers come in order): for the round-trip histogram, and the answers' deadline.
#[derive(Default)]
struct SendTimes {
    times: std::collections::VecDeque<std::time::Instant>,
}

impl SendTimes {
    /// Records a request sent now; false when [`MAX_IN_FLIGHT`] are unanswered.
    fn push(&mut self) -> bool {
        if self.times.len() >= MAX_IN_FLIGHT {
            return false;
        }
        self.times.push_back(std::time::Instant::now());
        true
    }
}

/// The next answer of a replication stream, with when its request went out. `None`: the
/// oldest unanswered request has waited `ttl`. With nothing unanswered (an idle leader sends
/// nothing), the stream waits as long as it takes.
async fn next_answer(
    answers: &mut tonic::Streaming<RaftMessage>,
    sent: &std::sync::Mutex<SendTimes>,
    ttl: Duration,
) -> Option<Result<Option<(RaftMessage, std::time::Instant)>, tonic::Status>> {
    let oldest = || {
        sent.lock()
            .ok()
            .and_then(|sent| sent.times.front().copied())
    };
    loop {
        let wait = oldest().map_or(ttl, |sent_at| ttl.saturating_sub(sent_at.elapsed()));
        match tokio::time::timeout(wait, answers.message()).await {
            Ok(Ok(Some(message))) => {
                // An answer with no request recorded (cannot be: one answer per request) is
                // timed from now.
                let sent_at = sent
                    .lock()
                    .ok()
                    .and_then(|mut sent| sent.times.pop_front())
                    .unwrap_or_else(std::time::Instant::now);
                return Some(Ok(Some((message, sent_at))));
            }
            Ok(Ok(None)) => return Some(Ok(None)),
            Ok(Err(status)) => return Some(Err(status)),
            Err(_elapsed) => {
                if oldest().is_some_and(|sent_at| sent_at.elapsed() >= ttl) {
                    return None;
                }
            }
        }
    }
}

/// The RPCs to one peer.
pub struct PeerClient {
    node_id: NodeId,
    identity: PeerIdentity,
    target: NodeId,
    address: String,
    channel: Option<Channel>,
    append_deadline_floor: Duration,
    /// Round trips of answered replication calls to this peer.
    round_trip: Histogram,
    snapshots_sent: Counter,
    snapshot_holds: SnapshotHolds,
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, Unreachable<TypeConfig>> {
        match &self.channel {
            Some(channel) => Ok(RaftPeerClient::new(channel.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20)),
            None => Err(Unreachable::from_string(format!(
                "bad address {:?} for node {}",
                self.address, self.target
            ))),
        }
    }

    fn transport_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        status: tonic::Status,
    ) -> RPCError<TypeConfig, E> {
        match status.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => RPCError::Timeout(Timeout {
                action,
                id: self.node_id,
                target: self.target,
                timeout: ttl,
            }),
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::from_string(format!(
                "node {} at {}: {}",
                self.target,
                self.address,
                status.message()
            ))),
            _ => RPCError::Network(NetworkError::from_string(format!(
                "node {} at {}: {status}",
                self.target, self.address
            ))),
        }
    }

    /// A call of `action` that got no answer within `ttl`.
    fn timeout(&self, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout {
            action,
            id: self.node_id,
            target: self.target,
            timeout: ttl,
        })
    }

    /// An answer from the peer (a unary call's, or one of a replication stream's): checked to
    /// come from the peer, then decoded (a remote `RaftError` becomes an unreachable peer, see
    /// [`flatten`]).
    fn answer<Resp: DeserializeOwned>(
        &self,
        message: &RaftMessage,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.identity
            .check(message.header.as_ref())
            .map_err(|status| RPCError::Network(NetworkError::from_string(status.message())))?;
        let result: Result<Resp, RaftError<TypeConfig>> = wire::decode(&message.payload)
            .map_err(|status| RPCError::Network(NetworkError::from_string(status.message())))?;
        result.map_err(|error| flatten(RPCError::RemoteError(RemoteError::new(self.target, error))))
    }

    /// One unary call: encode, send with a deadline, decode the remote result (a remote
    /// `RaftError` becomes an unreachable peer, see [`flatten`]).
    async fn call<Req, Resp>(
        &mut self,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
        send: impl AsyncFnOnce(
            RaftPeerClient<Channel>,
            tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let ttl = match action {
            RPCTypes::AppendEntries => option.hard_ttl().max(self.append_deadline_floor),
            _ => option.hard_ttl(),
        };
        let payload = wire::encode(request)
            .map_err(|status| RPCError::Network(NetworkError::from_string(status.message())))?;
        let client = self.client().map_err(RPCError::Unreachable)?;
        let mut grpc_request = tonic::Request::new(RaftMessage {
            header: self.identity.header(),
            payload,
        });
        grpc_request.set_timeout(ttl);
        let response = tokio::time::timeout(ttl, send(client, grpc_request))
            .await
            .map_err(|_| self.timeout(action, ttl))?
            .map_err(|status| self.transport_error(action, ttl, status))?
            .into_inner();
        self.answer(&response)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// Pipelined replication over one `StreamAppend` call: openraft's requests go out as it
    /// makes them, without waiting for the previous answer, and the follower answers in order
    /// (up to 64 in flight, openraft's bound on its side). Each answer must come within the
    /// AppendEntries deadline, or the stream ends with a timeout and openraft starts a new
    /// one, so a stalled follower cannot hold replication.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let ttl = option.hard_ttl().max(self.append_deadline_floor);
            // The first request is taken before connecting: making it is where openraft waits
            // out its backoff after a failure, so an unreachable follower is not redialed in a
            // tight loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                let none: BoxStream<'s, _> = Box::pin(futures::stream::empty());
                return Ok(none);
            };
            // A stream lasts at most [`MAX_STREAM_SESSION`]: openraft takes a new plan from its
            // core only between streams (see the constant).
            let input = futures::stream::once(futures::future::ready(first))
                .chain(input)
                .take_until(tokio::time::sleep(MAX_STREAM_SESSION));
            let mut client = self.client().map_err(RPCError::Unreachable)?;
            let identity = self.identity.clone();
            let sent = Arc::new(std::sync::Mutex::new(SendTimes::default()));
            let sending = Arc::clone(&sent);
            // A request that fails to encode ends the stream (its answer would be missing).
            // So does one past [`MAX_IN_FLIGHT`] unanswered: the follower is far behind, and the
            // next stream starts from what it has.
            let outgoing = input
                .map(move |rpc| {
                    let Ok(true) = sending.lock().map(|mut sent| sent.push()) else {
                        tracing::warn!(
                            "replication stream: {MAX_IN_FLIGHT} requests unanswered, ending it"
                        );
                        return None;
                    };
                    wire::encode(&rpc)
                        .map(|payload| RaftMessage {
                            header: identity.header(),
                            payload,
                        })
                        .map_err(|status| tracing::error!("encoding append entries: {status}"))
                        .ok()
                })
                .take_while(|message| futures::future::ready(message.is_some()))
                .filter_map(futures::future::ready);
            let answers = tokio::time::timeout(ttl, client.stream_append(outgoing))
                .await
                .map_err(|_| self.timeout(RPCTypes::AppendEntries, ttl))?
                .map_err(|status| self.transport_error(RPCTypes::AppendEntries, ttl, status))?
                .into_inner();
            let this: &'s PeerClient = self;
            let stream = futures::stream::unfold(Some(answers), move |answers| {
                let sent = Arc::clone(&sent);
                async move {
                    let mut answers = answers?;
                    let item = match next_answer(&mut answers, &sent, ttl).await {
                        None => Err(this.timeout(RPCTypes::AppendEntries, ttl)),
                        Some(Err(status)) => {
                            Err(this.transport_error(RPCTypes::AppendEntries, ttl, status))
                        }
                        Some(Ok(None)) => return None,
                        Some(Ok(Some((message, sent_at)))) => {
                            this.round_trip.observe_duration(sent_at.elapsed());
                            this.answer(&message)
                        }
                    };
                    // After an error or a refused append the follower ends its side too.
                    let go_on = matches!(item, Ok(Ok(_)));
                    Some((item, go_on.then_some(answers)))
                }
            });
            let stream: BoxStream<'s, _> = Box::pin(stream);
            Ok(stream)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let started = std::time::Instant::now();
        let answer = self
            .call(
                RPCTypes::AppendEntries,
                &rpc,
                &option,
                async |mut client, request| client.append_entries(request).await,
            )
            .await;
        if answer.is_ok() {
            self.round_trip.observe_duration(started.elapsed());
        }
        answer
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::Vote,
            &rpc,
            &option,
            async |mut client, request| client.vote(request).await,
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::Vote,
            &rpc,
            &option,
            async |mut client, request| client.pre_vote(request).await,
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::TransferLeader,
            &req,
            &option,
            async |mut client, request| client.transfer_leader(request).await,
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.hard_ttl();
        // The log after the snapshot stays until the member has it (or the hold runs out).
        let _sending = self.snapshot_holds.sending(
            self.target,
            snapshot.meta.last_log_id.map_or(0, |log_id| log_id.index),
        );
        let meta = wire::encode(&(vote, snapshot.meta.clone())).map_err(|status| {
            StreamingError::Network(NetworkError::from_string(status.message()))
        })?;
        // First chunk: the meta and no data; then the snapshot's bytes, serialized as they go.
        let header = self.identity.header();
        let first_header = header.clone();
        let first = futures::stream::once(async move {
            SnapshotChunk {
                header: first_header,
                meta,
                data: Bytes::new(),
            }
        });
        let chunks = evlog_raft_store::snapshot::chunks(snapshot.snapshot, SNAPSHOT_CHUNK_BYTES);
        let rest = futures::stream::unfold(chunks, move |mut chunks| {
            let header = header.clone();
            async move {
                match chunks.recv().await? {
                    Ok(data) => Some((
                        SnapshotChunk {
                            header,
                            meta: Bytes::new(),
                            data,
                        },
                        chunks,
                    )),
                    Err(error) => {
                        // Ending the stream early makes the receiver refuse the truncated file.
                        tracing::warn!("serializing the snapshot failed: {error}");
                        None
                    }
                }
            }
        });
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let mut request = tonic::Request::new(futures::StreamExt::chain(first, rest));
        request.set_timeout(ttl);
        let target = self.target;
        let sent = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            sent = tokio::time::timeout(ttl, client.install_snapshot(request)) => sent,
        };
        let response = sent
            .map_err(|_| {
                StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.node_id,
                    target,
                    timeout: ttl,
                })
            })?
            .map_err(|status| {
                match self.transport_error::<openraft::errors::Infallible>(
                    RPCTypes::InstallSnapshot,
                    ttl,
                    status,
                ) {
                    RPCError::Timeout(timeout) => StreamingError::Timeout(timeout),
                    RPCError::Unreachable(unreachable) => StreamingError::Unreachable(unreachable),
                    RPCError::Network(network) => StreamingError::Network(network),
                    RPCError::RemoteError(remote) => {
                        StreamingError::Network(NetworkError::new(&remote))
                    }
                }
            })?
            .into_inner();
        self.identity
            .check(response.header.as_ref())
            .map_err(|status| {
                StreamingError::Network(NetworkError::from_string(status.message()))
            })?;
        let result: Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>> =
            wire::decode(&response.payload).map_err(|status| {
                StreamingError::Network(NetworkError::from_string(status.message()))
            })?;
        let response = result.map_err(|error| {
            StreamingError::Network(NetworkError::new(&RemoteError::<TypeConfig, _>::new(
                target, error,
            )))
        })?;
        self.snapshots_sent.inc();
        tracing::info!(target_node = target, "sent a snapshot");
        Ok(response)
    }
}

/// Asks the leader, over `channel` (to its peer address), for a read index: what a follower
/// must have applied before it serves a linearizable read.
pub async fn read_index(
    channel: Channel,
    identity: &PeerIdentity,
    timeout: Duration,
) -> Result<u64, ReadIndexFailure> {
    let mut client = RaftPeerClient::new(channel);
    let mut request = tonic::Request::new(ReadIndexRequest {
        header: identity.header(),
    });
    request.set_timeout(timeout);
    let response = tokio::time::timeout(timeout, client.read_index(request))
        .await
        .map_err(|_| ReadIndexFailure::Timeout)?
        .map_err(|status| ReadIndexFailure::Refused(status.message().to_string()))?
        .into_inner();
    identity
        .check(response.header.as_ref())
        .map_err(|status| ReadIndexFailure::Refused(status.message().to_string()))?;
    Ok(response.read_index)
}

/// Why a leader gave no read index.
#[derive(Debug)]
pub enum ReadIndexFailure {
    /// No answer within the deadline.
    Timeout,
    /// The call failed or was refused (the text says why).
    Refused(String),
}

/// openraft's V2 network returns `RPCError<C>` (no remote error type): a remote `RaftError`
/// (only `Fatal` is possible for these calls) becomes an unreachable peer, which openraft
/// retries with backoff.
fn flatten(error: RPCError<TypeConfig, RaftError<TypeConfig>>) -> RPCError<TypeConfig> {
    match error {
        RPCError::Timeout(timeout) => RPCError::Timeout(timeout),
        RPCError::Unreachable(unreachable) => RPCError::Unreachable(unreachable),
        RPCError::Network(network) => RPCError::Network(network),
        RPCError::RemoteError(remote) => RPCError::Unreachable(Unreachable::new(&remote)),
    }
}
