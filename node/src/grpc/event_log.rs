//! `evlog.v1.EventLog`: Append (any node; followers forward to the leader) and Read (any
//! node, at the consistency the client asks for).

use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use evlog_proto::v1 as pb;
use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_proto::v1::event_log_server::EventLog;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::types::CommandResponse;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::config::Limits;
use crate::error::NodeError;
use crate::grpc::FORWARDED_KEY;
use crate::grpc::convert;
use crate::raft::RaftHandle;
use crate::raft::channels::PeerChannels;

pub struct EventLogService {
    handle: RaftHandle,
    channels: PeerChannels,
    limits: Arc<Limits>,
    request_timeout: Duration,
}

impl EventLogService {
    pub fn new(
        handle: RaftHandle,
        channels: PeerChannels,
        limits: Limits,
        request_timeout: Duration,
    ) -> Self {
        Self {
            handle,
            channels,
            limits: Arc::new(limits),
            request_timeout,
        }
    }

    /// Hands an append to the leader over the pooled channel, marked so it is not forwarded
    /// again. The leader's answer (or error) is returned as it is.
    async fn forward(
        &self,
        request: pb::AppendRequest,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let (leader, address) = self.handle.wait_for_leader(self.request_timeout).await?;
        if leader == self.handle.node_id() {
            return Err(NodeError::Unavailable("leadership is changing; retry".to_string()).into());
        }
        let address = address.ok_or_else(|| {
            NodeError::Unavailable(format!("leader {leader} has no known address; retry"))
        })?;
        let mut client = EventLogClient::new(self.channels.get(&address)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut forwarded = Request::new(request);
        forwarded.set_timeout(self.request_timeout);
        forwarded.metadata_mut().insert(
            FORWARDED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        match tokio::time::timeout(self.request_timeout, client.append(forwarded)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable && status.metadata().get(FORWARDED_KEY).is_none() => {
                // The leader could not be reached (or stepped down): the client may retry.
                Err(NodeError::Unavailable(format!("forwarding to leader {leader} at {address} failed: {}", status.message())).into())
            }
            Ok(Err(status)) => Err(status),
            Err(_) => Err(NodeError::Timeout(format!(
                "forwarded append to leader {leader} did not finish within {} ms; its outcome is unknown",
                self.request_timeout.as_millis()
            ))
            .into()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl EventLog for EventLogService {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        let request = request.into_inner();
        // A follower that knows the leader hands the request on; the leader validates it.
        if !forwarded
            && let Some((leader, _)) = self.handle.leader()
            && leader != self.handle.node_id()
        {
            return self.forward(request).await;
        }
        let command = convert::append_command(request.clone(), &self.limits, now_ms())?;
        let stream = command.stream.clone();
        let key = command.idempotency_key.clone();
        let proposed =
            tokio::time::timeout(self.request_timeout, self.handle.append(command)).await;
        match proposed {
            Ok(Ok((CommandResponse::Appended(outcome), receipt))) => Ok(Response::new(pb::AppendResponse {
                first_position: outcome.first_position,
                last_position: outcome.last_position,
                stream_version: outcome.stream_version,
                deduplicated: outcome.deduplicated,
                receipt: Some(pb::DurabilityReceipt { term: receipt.term, log_index: receipt.log_index, leader_id: receipt.leader_id }),
            })),
            Ok(Ok((CommandResponse::WrongExpectedVersion { expected, actual }, _))) => {
                Err(NodeError::WrongExpectedVersion { stream, expected, actual }.into())
            }
            Ok(Ok((CommandResponse::IdempotencyKeyReused, _))) => {
                Err(NodeError::IdempotencyKeyReused { key: key.unwrap_or_default() }.into())
            }
            Ok(Ok((CommandResponse::Empty, _))) => Err(NodeError::Internal("an append applied as an empty entry".to_string()).into()),
            Ok(Err(NodeError::NotLeader { .. })) if !forwarded => self.forward(request).await,
            Ok(Err(error)) => {
                let mut status = Status::from(error);
                if forwarded {
                    // Tell the forwarding follower this came from the leader's side.
                    status.metadata_mut().insert(FORWARDED_KEY, tonic::metadata::MetadataValue::from_static("1"));
                }
                Err(status)
            }
            Err(_) => Err(NodeError::Timeout(format!(
                "append did not commit within {} ms; its outcome is unknown (retry with the same idempotency key)",
                self.request_timeout.as_millis()
            ))
            .into()),
        }
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let request = request.into_inner();
        let target = match request.target {
            Some(pb::read_request::Target::Stream(stream)) => {
                convert::validate_stream_name(&stream)?;
                ReadTarget::Stream(stream)
            }
            Some(pb::read_request::Target::All(_)) => ReadTarget::All,
            None => {
                return Err(NodeError::InvalidArgument(
                    "a read needs a target: a stream or all".to_string(),
                )
                .into());
            }
        };
        let max_count = match request.max_count as usize {
            0 => self.limits.default_read_count,
            n if n > self.limits.max_read_count => {
                return Err(NodeError::TooLarge(format!(
                    "max_count {n} exceeds the limit of {} events per read",
                    self.limits.max_read_count
                ))
                .into());
            }
            n => n,
        };
        let backward = match pb::Direction::try_from(request.direction) {
            Ok(pb::Direction::Forward) => false,
            Ok(pb::Direction::Backward) => true,
            Err(_) => {
                return Err(NodeError::InvalidArgument(format!(
                    "unknown direction {}",
                    request.direction
                ))
                .into());
            }
        };
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        match pb::Consistency::try_from(request.consistency) {
            Ok(pb::Consistency::Linearizable) => {
                self.handle.linearize(self.request_timeout).await?
            }
            Ok(pb::Consistency::AtLeast) => {
                self.handle
                    .wait_position(request.at_least_position, deadline)
                    .await?
            }
            Ok(pb::Consistency::Local) => {}
            Err(_) => {
                return Err(NodeError::InvalidArgument(format!(
                    "unknown consistency {}",
                    request.consistency
                ))
                .into());
            }
        }
        let page = self
            .handle
            .reader()
            .read(target, request.from, max_count, backward)
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(pb::ReadResponse {
            events: page
                .events
                .into_iter()
                .map(convert::recorded_event)
                .collect(),
            head_position: page.applied.head_position,
            served_by: self.handle.node_id(),
            next_from: page.next_from,
        }))
    }
}
