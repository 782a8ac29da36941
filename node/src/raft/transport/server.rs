//! `evlog.v1.RaftPeer`: the receiving side of the Raft network (it hands openraft's messages
//! to the core), plus read-index requests from followers serving linearizable reads. Received
//! snapshots go to a file, bounded in size, before openraft installs them.

use std::path::PathBuf;
use std::pin::Pin;

use evlog_proto::v1 as pb;
use evlog_proto::v1::raft_peer_server::RaftPeer;
use evlog_raft_store::SnapshotData;
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
use crate::raft::transport::wire;

pub struct PeerService {
    raft: Raft,
    handle: RaftHandle,
    snapshot_dir: PathBuf,
    max_snapshot_bytes: u64,
    snapshots_installed: prometheus_client::metrics::counter::Counter,
}

impl PeerService {
    pub fn new(
        raft: Raft,
        handle: RaftHandle,
        snapshot_dir: PathBuf,
        max_snapshot_bytes: u64,
        snapshots_installed: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            raft,
            handle,
            snapshot_dir,
            max_snapshot_bytes,
            snapshots_installed,
        }
    }
}

impl PeerService {
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

fn reply<T: serde::Serialize>(result: &T) -> Result<Response<pb::RaftMessage>, Status> {
    Ok(Response::new(pb::RaftMessage {
        payload: wire::encode(result)?,
    }))
}

/// Receives a snapshot's chunks into a file, at most `max_bytes`; returns the vote and the
/// meta.
async fn receive_snapshot(
    mut chunks: Streaming<pb::SnapshotChunk>,
    path: &std::path::Path,
    max_bytes: u64,
) -> Result<(Vote, SnapshotMeta), Status> {
    let first = chunks
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
    let (vote, meta): (Vote, SnapshotMeta) = wire::decode(&first.meta)?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|error| Status::internal(format!("creating {}: {error}", path.display())))?;
    let write_error =
        |error: std::io::Error| Status::internal(format!("writing {}: {error}", path.display()));
    let mut received = first.data.len() as u64;
    file.write_all(&first.data).await.map_err(write_error)?;
    while let Some(chunk) = chunks.message().await? {
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
        let rpc: AppendEntriesRequest<TypeConfig> = wire::decode(&request.into_inner().payload)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    type StreamAppendStream = MessageStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // Requests that fail to decode end the input; the leader then restarts replication.
        let input = futures::stream::unfold(request.into_inner(), |mut messages| async move {
            let message = messages.message().await.ok()??;
            let rpc = wire::decode::<AppendEntriesRequest<TypeConfig>>(&message.payload).ok()?;
            Some((rpc, messages))
        });
        let output = self.raft.stream_append(input).map(|result| {
            let result = result.map_err(RaftError::<TypeConfig>::Fatal);
            Ok(pb::RaftMessage {
                payload: wire::encode(&result)?,
            })
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_voting()?;
        let rpc: VoteRequest<TypeConfig> = wire::decode(&request.into_inner().payload)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_voting()?;
        let rpc: VoteRequest<TypeConfig> = wire::decode(&request.into_inner().payload)?;
        reply(&self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let path = evlog_raft_store::snapshot::incoming_path(&self.snapshot_dir);
        let received = receive_snapshot(request.into_inner(), &path, self.max_snapshot_bytes).await;
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
        reply(&result)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        // A transfer makes this node campaign, which a node that does not vote must not.
        self.check_voting()?;
        let rpc: TransferLeaderRequest<TypeConfig> = wire::decode(&request.into_inner().payload)?;
        let result = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(RaftError::<TypeConfig>::Fatal);
        reply(&result)
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let read_index = self
            .handle
            .leader_read_index()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(pb::ReadIndexResponse {
            read_index,
            leader_id: self.handle.node_id(),
        }))
    }
}
