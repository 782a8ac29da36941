//! `evlog.internal.v1.RaftPeer`: the receiving side of the Raft network (it hands openraft's
//! messages to the core), plus read-index requests from followers serving linearizable reads.
//! Every message's header is checked first (a message of another cluster or group is refused,
//! and with TLS one from a node the sender's certificate does not name, or a Raft message
//! speaking for another node than its sender: see [`PeerIdentity`]). Received snapshots go to a file, bounded in size, before openraft
//! installs them. [`serve`] is the one place the peer server is built.

use std::path::PathBuf;
use std::pin::Pin;

use evlog_proto::internal::v1 as pb;
use evlog_proto::internal::v1::raft_peer_server::RaftPeer;
use evlog_proto::internal::v1::raft_peer_server::RaftPeerServer;
use evlog_raft_store::SnapshotData;
use evlog_raft_store::type_config::NodeId;
use evlog_raft_store::type_config::Snapshot;
use evlog_raft_store::type_config::SnapshotMeta;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::type_config::Vote;
use futures::Stream;
use futures::StreamExt;
use openraft::error::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use tokio::io::AsyncWriteExt;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::raft::Raft;
use crate::raft::RaftHandle;
use crate::raft::transport::identity::PeerIdentity;
use crate::raft::transport::wire;

/// Largest peer message (a batch of replicated entries).
const MAX_PEER_MESSAGE_BYTES: usize = 512 << 20;
/// Most connections the peer port keeps open: a peer holds one (its channel to this node), so
/// this is far above any cluster's size and only bounds a flood.
const MAX_PEER_CONNECTIONS: usize = 1_024;
/// Most concurrent calls on one peer connection (replication, votes, snapshots and
/// read-index calls of one peer share it).
const MAX_PEER_STREAMS: u32 = 1_024;
/// Largest HTTP/2 header list a peer call may send.
const MAX_PEER_HEADER_LIST_BYTES: u32 = 16 << 10;

/// Serves the peer protocol on `listener` until `shutdown` resolves: the one place the peer
/// server is built. Only `evlog.internal.v1.RaftPeer` is served: no reflection, no health, no
/// client service. With `tls` (TLS on), it is mutual: a peer that presents no certificate
/// signed by `--peer-ca` fails the handshake and never reaches the service.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: PeerService,
    tls: Option<crate::tls::ServerTls>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    // Replication streams never end by themselves: they end when shutdown begins, or the
    // server would wait for them (and this node's Raft would run on meanwhile, unreachable).
    let service = PeerService {
        stopping: Some(shutdown),
        ..service
    };
    let shutdown = service.stopped();
    let server = RaftPeerServer::new(service)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    // Accepted sockets get TCP_NODELAY here (the builder's applies only to sockets it binds):
    // small replication messages must not wait for Nagle's algorithm.
    let incoming = crate::grpc::connections::limited(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        MAX_PEER_CONNECTIONS,
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .max_concurrent_streams(MAX_PEER_STREAMS)
        .http2_max_header_list_size(MAX_PEER_HEADER_LIST_BYTES)
        .layer(crate::metrics::grpc_layer::GrpcMetricsLayer::new(metrics))
        .add_service(server);
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.accept(incoming), shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

pub struct PeerService {
    raft: Raft,
    handle: RaftHandle,
    identity: PeerIdentity,
    snapshot_dir: PathBuf,
    max_snapshot_bytes: u64,
    snapshots_installed: prometheus_client::metrics::counter::Counter,
    /// Turns true when the server shuts down (set by [`serve`]).
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl PeerService {
    pub fn new(
        raft: Raft,
        handle: RaftHandle,
        identity: PeerIdentity,
        snapshot_dir: PathBuf,
        max_snapshot_bytes: u64,
        snapshots_installed: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            raft,
            handle,
            identity,
            snapshot_dir,
            max_snapshot_bytes,
            snapshots_installed,
            stopping: None,
        }
    }
}

impl PeerService {
    /// Resolves once the server shuts down: replication streams end then, both ways (openraft
    /// reads the input until it ends, and the server waits for every stream to close).
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stopping = self.stopping.clone();
        async move {
            match stopping {
                // A dropped sender ends the wait too.
                Some(mut stopping) => drop(stopping.wait_for(|stop| *stop).await),
                None => futures::future::pending().await,
            }
        }
    }

    /// Refuses a vote request, or a leadership transfer (which makes it campaign), while this
    /// node does not vote (it started with an empty data
    /// directory and has not caught up with a leader): to the candidate it is unreachable.
    fn check_voting(&self) -> Result<(), Status> {
        if self.handle.is_voting() {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "node {} does not vote: it started with an empty data directory and has not caught \
             up with a leader yet",
            self.handle.node_id()
        )))
    }
}

impl PeerService {
    /// The sender and the payload of a request of this node's cluster and group.
    fn payload(&self, request: Request<pb::RaftMessage>) -> Result<(NodeId, bytes::Bytes), Status> {
        let certificates = request.peer_certs();
        let message = request.into_inner();
        let sender = self.identity.check_request(
            message.header.as_ref(),
            certificates.as_deref().map(Vec::as_slice),
        )?;
        Ok((sender, message.payload))
    }

    fn reply<T: serde::Serialize>(&self, result: &T) -> Result<Response<pb::RaftMessage>, Status> {
        Ok(Response::new(pb::RaftMessage {
            header: self.identity.header(),
            payload: wire::encode(result)?,
        }))
    }
}

/// Receives a snapshot's chunks into a file, at most `max_bytes`; returns the vote and the
/// meta.
async fn receive_snapshot(
    request: Request<Streaming<pb::SnapshotChunk>>,
    identity: &PeerIdentity,
    path: &std::path::Path,
    max_bytes: u64,
) -> Result<(Vote, SnapshotMeta), Status> {
    let certificates = request.peer_certs();
    let certificates = certificates.as_deref().map(Vec::as_slice);
    let mut chunks = request.into_inner();
    let first = chunks
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
    let sender = identity.check_request(first.header.as_ref(), certificates)?;
    let (vote, meta): (Vote, SnapshotMeta) = wire::decode(&first.meta)?;
    identity.check_speaker(sender, vote.leader_id().node_id)?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|error| Status::internal(format!("creating {}: {error}", path.display())))?;
    let write_error =
        |error: std::io::Error| Status::internal(format!("writing {}: {error}", path.display()));
    let mut received = first.data.len() as u64;
    file.write_all(&first.data).await.map_err(write_error)?;
    while let Some(chunk) = chunks.message().await? {
        identity.check_speaker(
            sender,
            identity.check_request(chunk.header.as_ref(), certificates)?,
        )?;
        received += chunk.data.len() as u64;
        if received > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "the snapshot exceeds {max_bytes} bytes (--max-snapshot-bytes); refused"
            )));
        }
        file.write_all(&chunk.data).await.map_err(write_error)?;
    }
    file.sync_all().await.map_err(write_error)?;
    Ok((vote, meta))
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::RaftMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let (sender, payload) = self.payload(request)?;
        let rpc: AppendEntriesRequest<TypeConfig> = wire::decode(&payload)?;
        self.identity
            .check_speaker(sender, rpc.vote.leader_id().node_id)?;
        self.reply(&self.raft.append_entries(rpc).await)
    }

    type StreamAppendStream = MessageStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // Requests that fail to decode, come from another cluster or group, or (TLS on) from
        // a node the sender's certificate does not name, end the input; the leader then
        // restarts replication.
        let identity = self.identity.clone();
        let certificates = request.peer_certs();
        let input = futures::stream::unfold(
            (request.into_inner(), identity.clone(), certificates),
            |(mut messages, identity, certificates)| async move {
                let message = messages.message().await.ok()??;
                let sender = identity
                    .check_request(
                        message.header.as_ref(),
                        certificates.as_deref().map(Vec::as_slice),
                    )
                    .ok()?;
                let rpc =
                    wire::decode::<AppendEntriesRequest<TypeConfig>>(&message.payload).ok()?;
                identity
                    .check_speaker(sender, rpc.vote.leader_id().node_id)
                    .ok()?;
                Some((rpc, (messages, identity, certificates)))
            },
        )
        .take_until(self.stopped());
        let output = self
            .raft
            .stream_append(input)
            .map(move |result| {
                let result = result.map_err(RaftError::<TypeConfig>::Fatal);
                Ok(pb::RaftMessage {
                    header: identity.header(),
                    payload: wire::encode(&result)?,
                })
            })
            .take_until(self.stopped());
        Ok(Response::new(Box::pin(output)))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let (sender, payload) = self.payload(request)?;
        self.check_voting()?;
        let rpc: VoteRequest<TypeConfig> = wire::decode(&payload)?;
        self.identity
            .check_speaker(sender, rpc.vote.leader_id().node_id)?;
        self.reply(&self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let (sender, payload) = self.payload(request)?;
        self.check_voting()?;
        let rpc: VoteRequest<TypeConfig> = wire::decode(&payload)?;
        self.identity
            .check_speaker(sender, rpc.vote.leader_id().node_id)?;
        self.reply(&self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let path = evlog_raft_store::snapshot::incoming_path(&self.snapshot_dir);
        let received =
            receive_snapshot(request, &self.identity, &path, self.max_snapshot_bytes).await;
        let (vote, meta) = match received {
            Ok(received) => received,
            Err(status) => {
                tokio::fs::remove_file(&path).await.ok();
                return Err(status);
            }
        };
        tracing::info!("received snapshot {meta} from {vote}");
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData::File(path.clone()),
        };
        let result = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(RaftError::<TypeConfig>::Fatal);
        // The store removes the file it installed; one openraft did not hand to it stays here.
        tokio::fs::remove_file(&path).await.ok();
        if matches!(result, Ok(ref response) if response.vote == vote) {
            self.snapshots_installed.inc();
        }
        self.reply(&result)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let (sender, payload) = self.payload(request)?;
        // A transfer makes this node campaign, which a node that does not vote must not.
        self.check_voting()?;
        let rpc: TransferLeaderRequest<TypeConfig> = wire::decode(&payload)?;
        self.identity
            .check_speaker(sender, rpc.from_leader().leader_id().node_id)?;
        let result = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(RaftError::<TypeConfig>::Fatal);
        self.reply(&result)
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let certificates = request.peer_certs();
        self.identity.check_request(
            request.get_ref().header.as_ref(),
            certificates.as_deref().map(Vec::as_slice),
        )?;
        let read_index = self
            .handle
            .leader_read_index()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(pb::ReadIndexResponse {
            header: self.identity.header(),
            read_index,
            leader_id: self.handle.node_id(),
        }))
    }
}
