//! `evlog.v1.EventLog`: Append (any node; followers forward to the leader) and Read (any
//! node, at the consistency the client asks for).

use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use evlog_proto::v1 as pb;
use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_proto::v1::event_log_server::EventLog;
use evlog_raft_store::ReadStart;
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
    /// How long an append refused for want of a settled leader is retried before it fails.
    settle_timeout: Duration,
}

impl EventLogService {
    pub fn new(
        handle: RaftHandle,
        channels: PeerChannels,
        limits: Limits,
        request_timeout: Duration,
        settle_timeout: Duration,
    ) -> Self {
        Self {
            handle,
            channels,
            limits: Arc::new(limits),
            request_timeout,
            settle_timeout,
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
            return Err(NodeError::Unavailable(
                "this node leads but cannot take writes now (it has not heard from a quorum \
                 lately, or leadership is changing); nothing was appended; retry"
                    .to_string(),
            )
            .into());
        }
        let address = address.ok_or_else(|| {
            NodeError::Unavailable(format!("leader {leader} has no known address; retry"))
        })?;
        // The request passed this node's size limit; the leader's answer is small.
        let bound = self.limits.max_append_bytes + (1 << 20);
        let mut client = EventLogClient::new(self.channels.get(&address)?)
            .max_decoding_message_size(bound)
            .max_encoding_message_size(bound);
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

impl EventLogService {
    /// The page size a request asks for (0: the default), refused above the limit.
    fn page_size(&self, requested: u32, what: &str) -> Result<usize, Status> {
        match requested as usize {
            0 => Ok(self.limits.default_read_count),
            n if n > self.limits.max_read_count => Err(NodeError::TooLarge(format!(
                "max_count {n} exceeds the limit of {} {what} per read",
                self.limits.max_read_count
            ))
            .into()),
            n => Ok(n),
        }
    }

    /// Waits until this node may serve a read at `consistency` (a `pb::Consistency` value).
    async fn reach_consistency(
        &self,
        consistency: i32,
        at_least_position: u64,
    ) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => {
                self.handle.linearize(self.request_timeout).await?;
            }
            Ok(pb::Consistency::AtLeast) => {
                let deadline = tokio::time::Instant::now() + self.request_timeout;
                self.handle.catch_up(self.request_timeout).await?;
                self.handle
                    .wait_position(at_least_position, deadline)
                    .await?;
            }
            Ok(pb::Consistency::Local) => {
                self.handle.catch_up(self.request_timeout).await?;
            }
            Err(_) => {
                return Err(NodeError::InvalidArgument(format!(
                    "unknown consistency {consistency}"
                ))
                .into());
            }
        }
        Ok(())
    }
}

/// How long an append refused for want of a settled leader waits before it is proposed again.
const NOT_LEADER_PAUSE: Duration = Duration::from_millis(20);

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
        let started = tokio::time::Instant::now();
        let deadline = started + self.request_timeout;
        let settle_by = deadline.min(started + self.settle_timeout);
        let mut first = Some(command);
        let proposed = loop {
            // A retry converts the request again (the first proposal consumed the command).
            let command = match first.take() {
                Some(command) => command,
                None => convert::append_command(request.clone(), &self.limits, now_ms())?,
            };
            let attempt = tokio::time::timeout_at(deadline, self.handle.append(command)).await;
            // Refused before it got a log id: leadership is moving, or this node leads but has
            // not heard from a quorum within the election timeout (openraft then takes no
            // writes). Unless another node leads now, wait a little for it to settle (nothing
            // was appended, so proposing again is safe); past that, the refusal stands: a
            // definite failure the client can retry, rather than a wait into an unknown outcome.
            let refused = matches!(attempt, Ok(Err(NodeError::NotLeader { .. })));
            let other_leader = self
                .handle
                .leader()
                .is_some_and(|(leader, _)| leader != self.handle.node_id());
            let pause_ends = tokio::time::Instant::now() + NOT_LEADER_PAUSE;
            if refused && !other_leader && pause_ends < settle_by {
                tokio::time::sleep_until(pause_ends).await;
                continue;
            }
            break attempt;
        };
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
        let start = match (request.from, request.from_timestamp_ms) {
            (Some(_), Some(_)) => {
                return Err(NodeError::InvalidArgument(
                    "a read starts at `from` or at `from_timestamp_ms`, not both".to_string(),
                )
                .into());
            }
            (Some(from), None) => ReadStart::From(from),
            (None, Some(time_ms)) => ReadStart::Time(time_ms),
            (None, None) => ReadStart::Edge,
        };
        let max_count = self.page_size(request.max_count, "events")?;
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
        self.reach_consistency(request.consistency, request.at_least_position)
            .await?;
        let page = self
            .handle
            .reader()
            .read(target, start, max_count, backward)
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

    async fn get_stream(
        &self,
        request: Request<pb::GetStreamRequest>,
    ) -> Result<Response<pb::GetStreamResponse>, Status> {
        let request = request.into_inner();
        convert::validate_stream_name(&request.stream)?;
        self.reach_consistency(request.consistency, request.at_least_position)
            .await?;
        let reader = self.handle.reader();
        // The head is taken before the read, so the read reflects at least it.
        let head_position = reader.applied().head_position;
        let info = reader
            .stream(request.stream.clone())
            .await
            .map_err(NodeError::from)?
            .ok_or_else(|| {
                NodeError::NotFound(format!("stream {:?} has no events", request.stream))
            })?;
        Ok(Response::new(pb::GetStreamResponse {
            stream: Some(convert::stream_summary(request.stream, info)),
            head_position,
            served_by: self.handle.node_id(),
        }))
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let request = request.into_inner();
        if request.prefix.len() > convert::MAX_STREAM_NAME_BYTES {
            return Err(NodeError::InvalidArgument(format!(
                "prefix of {} bytes is longer than a stream name may be ({} bytes)",
                request.prefix.len(),
                convert::MAX_STREAM_NAME_BYTES
            ))
            .into());
        }
        let max_count = self.page_size(request.max_count, "streams")?;
        self.reach_consistency(request.consistency, request.at_least_position)
            .await?;
        let reader = self.handle.reader();
        let head_position = reader.applied().head_position;
        let page = reader
            .list_streams(request.prefix, request.after, max_count)
            .await
            .map_err(NodeError::from)?;
        let (streams, next_after) = (page.streams, page.next_after);
        Ok(Response::new(pb::ListStreamsResponse {
            streams: streams
                .into_iter()
                .map(|(name, info)| convert::stream_summary(name, info))
                .collect(),
            next_after,
            head_position,
            served_by: self.handle.node_id(),
        }))
    }
}
