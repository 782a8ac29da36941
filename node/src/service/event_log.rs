//! The event log's service: appends (validated, then forwarded to the leader or proposed
//! here, and settled while leadership moves) and reads at the consistency asked for. Domain
//! types in and out; no gRPC.

use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use evlog_raft_store::PageLimit;
use evlog_raft_store::ReadPage;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::reader::EventFilter;
use evlog_raft_store::reader::StreamPage;
use evlog_raft_store::reader::SubscribeStart;
use evlog_raft_store::types::AppliedState;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use evlog_raft_store::types::RetentionCommand;
use evlog_raft_store::types::RetentionResponse;
use evlog_raft_store::types::StreamInfo;
use evlog_raft_store::types::StreamMeta;
use evlog_raft_store::types::StreamRetention;
use tokio::time::Instant;

use crate::config::Limits;
use crate::raft::RaftHandle;
use crate::raft::errors::LinearizeError;
use crate::raft::errors::ProposeError;
use crate::raft::receipt::Receipt;
use crate::service::append;
use crate::service::append::AppendRequest;
use crate::service::append::Appended;
use crate::service::compression::Compressor;
use crate::service::error::ServiceError;
use crate::service::forward::Forward;
use crate::service::forward::Leader;
use crate::service::subscribe;
use crate::service::subscribe::SubscribeRequest;
use crate::service::subscribe::Subscription;
use crate::service::subscribe::Subscriptions;

/// Most committed entries not yet applied before a node refuses new appends (etcd's
/// `maxGapBetweenApplyAndCommitIndex`): past it, proposals only lengthen the queue.
const MAX_APPLY_LAG: u64 = 5_000;

/// Most appends in one `AppendMany` call.
pub const MAX_APPENDS_PER_CALL: usize = 1_024;

/// How long an append refused for want of a settled leader waits before it is proposed again.
const NOT_LEADER_PAUSE: Duration = Duration::from_millis(20);

/// Which state a read may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Everything acknowledged before the read began (a read index confirmed by the leader,
    /// applied here).
    Linearizable,
    /// At least this global position applied here (read-your-writes without a round trip).
    AtLeast(u64),
    /// Whatever this node has applied (once it has caught up since it started).
    Local,
}

/// A read of events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub target: ReadTarget,
    pub start: ReadStart,
    /// Events per page; 0: the node's default.
    pub max_count: u32,
    pub backward: bool,
    pub consistency: Consistency,
    /// `all` target, forward only: only the events of streams starting with one of these
    /// (none: any stream).
    pub stream_prefixes: Vec<String>,
    /// `all` target, forward only: only events of these types (none: any type).
    pub event_types: Vec<String>,
}

/// A stream's summary, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFound {
    pub info: StreamInfo,
    /// The last position applied here when served.
    pub head_position: u64,
}

/// A page of stream summaries, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamsFound {
    pub page: StreamPage,
    /// The last position applied here when served.
    pub head_position: u64,
}

/// A change to a stream's retention, as the client asked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamChange {
    /// Sets the stream's metadata, if its metadata version is `expected_metadata_version`.
    SetMetadata {
        stream: String,
        expected_metadata_version: Option<u64>,
        retention: StreamRetention,
    },
    /// Deletes the stream's events (soft, or for good with `tombstone`).
    Delete {
        stream: String,
        expected_version: Option<u64>,
        tombstone: bool,
    },
}

impl StreamChange {
    pub fn stream(&self) -> &str {
        match self {
            StreamChange::SetMetadata { stream, .. } | StreamChange::Delete { stream, .. } => {
                stream
            }
        }
    }
}

/// What a stream change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamChanged {
    /// The stream's metadata now.
    Metadata(StreamMeta),
    /// Deleted at `version`; the `$stream-deleted` event is at `position`.
    Deleted {
        version: u64,
        position: u64,
        receipt: Receipt,
    },
}

/// Checks a stream change: the stream name, and limits that keep something.
pub fn validate_stream_change(change: &StreamChange) -> Result<(), ServiceError> {
    append::validate_stream_name(change.stream())?;
    if let StreamChange::SetMetadata { retention, .. } = change {
        for (name, value) in [
            ("max_age_s", retention.max_age_s),
            ("max_count", retention.max_count),
            ("truncate_before", retention.truncate_before),
        ] {
            if value == Some(0) {
                return Err(ServiceError::InvalidArgument(format!(
                    "{name} must be at least 1 (leave it absent for no limit)"
                )));
            }
        }
    }
    Ok(())
}

/// The event log as the service layer offers it.
pub struct EventLogService {
    handle: RaftHandle,
    forward: Arc<dyn Forward>,
    limits: Arc<Limits>,
    request_timeout: Duration,
    /// How long an append refused for want of a settled leader is retried before it fails.
    settle_timeout: Duration,
    subscriptions: Subscriptions,
    /// Refuse every append (a sandbox restored from a backup, `--read-only`).
    read_only: bool,
    compressor: Arc<Compressor>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl EventLogService {
    pub fn new(
        handle: RaftHandle,
        forward: Arc<dyn Forward>,
        limits: Limits,
        request_timeout: Duration,
        settle_timeout: Duration,
        subscriptions: Subscriptions,
        read_only: bool,
    ) -> Self {
        Self {
            handle,
            forward,
            compressor: Arc::new(Compressor::new(limits.compression)),
            limits: Arc::new(limits),
            request_timeout,
            settle_timeout,
            subscriptions,
            read_only,
        }
    }

    /// Refuses a write on a read-only node.
    fn writable(&self) -> Result<(), ServiceError> {
        if self.read_only {
            return Err(ServiceError::FailedPrecondition(format!(
                "node {} is read-only (--read-only, or a sandbox restored from a backup): it \
                 takes no appends",
                self.handle.node_id()
            )));
        }
        Ok(())
    }

    pub fn node_id(&self) -> u64 {
        self.handle.node_id()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Appends, on any node: a follower that knows the leader hands the request on (unless it
    /// was handed on to this node already: `forwarded`), the leader proposes it.
    ///
    /// A proposal refused before it got a log id (leadership is moving, or this node leads
    /// but has not heard from a quorum within its lease) is proposed again every 20 ms while
    /// no other node leads, for at most the settle timeout (and half the request timeout):
    /// nothing was appended, so that is safe, and a definite refusal the client can retry
    /// beats a wait into an unknown outcome.
    pub async fn append(
        &self,
        request: AppendRequest,
        forwarded: bool,
    ) -> Result<Appended, ServiceError> {
        self.writable()?;
        append::validate(&request, &self.limits)?;
        let started = Instant::now();
        let deadline = started + self.request_timeout;
        if !forwarded && self.other_leader().is_some() {
            return self.forward_append(request, deadline).await;
        }
        // Settling ends well before the deadline: the last proposal must have time to be
        // refused (a proposal still pending at the deadline has an unknown outcome).
        let settle_by = started + self.settle_timeout.min(self.request_timeout / 2);
        let pending = self.handle.pending_appends();
        if pending >= self.limits.max_pending_appends {
            return Err(ServiceError::Busy(format!(
                "this node has {pending} appends proposed and not yet answered (at most {} \
                 before it takes more)",
                self.limits.max_pending_appends
            )));
        }
        let lag = self.handle.apply_lag();
        if lag > MAX_APPLY_LAG {
            return Err(ServiceError::Busy(format!(
                "this node's state machine trails its log by {lag} entries (at most \
                 {MAX_APPLY_LAG} before it takes more)"
            )));
        }
        loop {
            let dictionary = self.handle.applied().dictionary;
            let command = append::command(&request, &self.limits, now_ms(), |data| {
                self.compressor.encode(data, dictionary)
            });
            self.compressor.train_when_ready(&self.handle);
            let attempt = tokio::time::timeout_at(deadline, self.handle.propose_append(command));
            let refusal = match attempt.await {
                Err(_) => {
                    return Err(ServiceError::Timeout(format!(
                        "append did not commit within {} ms; its outcome is unknown (retry \
                         with the same idempotency key)",
                        self.request_timeout.as_millis()
                    )));
                }
                Ok(Ok((response, receipt))) => return answer(response, receipt, request),
                Ok(Err(ProposeError::NotLeader(hint))) => hint,
                Ok(Err(error)) => return Err(propose_error(error)),
            };
            let other_leader = self.other_leader().is_some();
            let pause_ends = Instant::now() + NOT_LEADER_PAUSE;
            if !other_leader && pause_ends < settle_by {
                tokio::time::sleep_until(pause_ends).await;
                continue;
            }
            if forwarded {
                return Err(ServiceError::NotLeader(refusal));
            }
            return self.forward_append(request, deadline).await;
        }
    }

    /// Independent appends in one call, each with its own result, in order. A follower that
    /// knows the leader hands the whole call on (the leader checks each append); otherwise
    /// each goes as [`Self::append`] does, all at once, so they share proposal batches.
    pub async fn append_many(
        &self,
        requests: Vec<AppendRequest>,
        forwarded: bool,
    ) -> Result<Vec<Result<Appended, ServiceError>>, ServiceError> {
        self.writable()?;
        if requests.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "an AppendMany needs at least one append".to_string(),
            ));
        }
        if requests.len() > MAX_APPENDS_PER_CALL {
            return Err(ServiceError::TooLarge(format!(
                "{} appends in one AppendMany; the limit is {MAX_APPENDS_PER_CALL}",
                requests.len()
            )));
        }
        if !forwarded && self.other_leader().is_some() {
            let deadline = Instant::now() + self.request_timeout;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let leader = self.leader_to_forward_to(remaining).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            return self.forward.append_many(leader, requests, remaining).await;
        }
        Ok(futures::future::join_all(
            requests
                .into_iter()
                .map(|request| self.append(request, forwarded)),
        )
        .await)
    }

    /// The leader, when it is another node.
    fn other_leader(&self) -> Option<(u64, Option<String>)> {
        self.handle
            .leader()
            .filter(|(leader, _)| *leader != self.handle.node_id())
    }

    /// Hands an append to the leader (waiting, until `deadline`, for one to be known).
    async fn forward_append(
        &self,
        request: AppendRequest,
        deadline: Instant,
    ) -> Result<Appended, ServiceError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let leader = self.leader_to_forward_to(remaining).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.forward.append(leader, request, remaining).await
    }

    /// The leader to hand a request to, waiting up to `wait` for one to be known.
    pub(crate) async fn leader_to_forward_to(
        &self,
        wait: Duration,
    ) -> Result<Leader, ServiceError> {
        leader_to_forward_to(&self.handle, wait).await
    }

    /// Changes a stream's metadata, or deletes it: a follower that knows the leader hands
    /// the change on (unless it was handed on already: `forwarded`), the leader proposes it.
    /// Proposed once: a refusal for want of a leader is the client's to retry.
    pub async fn change_stream(
        &self,
        change: StreamChange,
        forwarded: bool,
    ) -> Result<StreamChanged, ServiceError> {
        self.writable()?;
        validate_stream_change(&change)?;
        let deadline = Instant::now() + self.request_timeout;
        if !forwarded && self.other_leader().is_some() {
            return self.forward_change(change, deadline).await;
        }
        let command = match &change {
            StreamChange::SetMetadata {
                stream,
                expected_metadata_version,
                retention,
            } => RetentionCommand::SetMetadata {
                stream: stream.clone(),
                expected_metadata_version: *expected_metadata_version,
                retention: *retention,
            },
            StreamChange::Delete {
                stream,
                expected_version,
                tombstone,
            } => RetentionCommand::Delete {
                stream: stream.clone(),
                expected_version: *expected_version,
                tombstone: *tombstone,
                timestamp_ms: now_ms(),
            },
        };
        let attempt =
            tokio::time::timeout_at(deadline, self.handle.propose(Command::Retention(command)));
        let (response, receipt) = match attempt.await {
            Err(_) => {
                return Err(ServiceError::Timeout(format!(
                    "the change to stream {:?} did not commit within {} ms; its outcome is \
                     unknown",
                    change.stream(),
                    self.request_timeout.as_millis()
                )));
            }
            Ok(Ok(answer)) => answer,
            Ok(Err(ProposeError::NotLeader(hint))) if forwarded => {
                return Err(ServiceError::NotLeader(hint));
            }
            Ok(Err(ProposeError::NotLeader(_))) => {
                return self.forward_change(change, deadline).await;
            }
            Ok(Err(error)) => return Err(propose_error(error)),
        };
        let stream = change.stream().to_string();
        match response {
            CommandResponse::Retention(RetentionResponse::Metadata(meta)) => {
                Ok(StreamChanged::Metadata(meta))
            }
            CommandResponse::Retention(RetentionResponse::Deleted { version, position }) => {
                Ok(StreamChanged::Deleted {
                    version,
                    position,
                    receipt,
                })
            }
            CommandResponse::Retention(RetentionResponse::WrongMetadataVersion {
                expected,
                actual,
            }) => Err(ServiceError::WrongMetadataVersion {
                stream,
                expected,
                actual,
            }),
            CommandResponse::Retention(RetentionResponse::WrongExpectedVersion {
                expected,
                actual,
            }) => Err(ServiceError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            }),
            CommandResponse::Retention(RetentionResponse::Tombstoned) => {
                Err(ServiceError::StreamTombstoned { stream })
            }
            other => Err(ServiceError::Internal(format!(
                "a change to stream {stream:?} was answered {other:?}"
            ))),
        }
    }

    /// Hands a stream change to the leader (waiting, until `deadline`, for one to be known).
    async fn forward_change(
        &self,
        change: StreamChange,
        deadline: Instant,
    ) -> Result<StreamChanged, ServiceError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let leader = self.leader_to_forward_to(remaining).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.forward.change_stream(leader, change, remaining).await
    }

    /// A stream's metadata (metadata version 0 when none was set), its first version the first
    /// retained.
    pub async fn get_stream_metadata(
        &self,
        stream: String,
        consistency: Consistency,
    ) -> Result<StreamMeta, ServiceError> {
        append::validate_stream_name_to_read(&stream)?;
        self.reach_consistency(consistency).await?;
        Ok(self.handle.reader().stream_metadata(stream).await?)
    }

    /// Reads a page of events at the consistency asked for. A read that starts below the
    /// first retained event of its target is refused (`OutOfRange`, naming it): never a
    /// silent jump.
    pub async fn read(&self, request: ReadRequest) -> Result<ReadPage, ServiceError> {
        if let ReadTarget::Stream(stream) = &request.target {
            append::validate_stream_name_to_read(stream)?;
        }
        let limit = PageLimit {
            max_count: self.page_size(request.max_count, "events")?,
            max_bytes: self.limits.max_read_bytes,
        };
        let filtered = !request.stream_prefixes.is_empty() || !request.event_types.is_empty();
        if filtered {
            return self.read_filtered(request, limit).await;
        }
        self.reach_consistency(request.consistency).await?;
        let page = self
            .handle
            .reader()
            .read(
                request.target.clone(),
                request.start,
                limit,
                request.backward,
            )
            .await?;
        if let Some(first) = page.out_of_range {
            let requested = match request.start {
                ReadStart::From(from) => from,
                _ => 0,
            };
            return Err(out_of_range(&request.target, requested, first));
        }
        Ok(page)
    }

    /// A forward read of `all` with a filter: the subscription's scan, one page of it, which
    /// looks at no more than [`subscribe::MAX_LOOKED_AT`] events.
    async fn read_filtered(
        &self,
        request: ReadRequest,
        limit: PageLimit,
    ) -> Result<ReadPage, ServiceError> {
        if request.target != ReadTarget::All || request.backward {
            return Err(ServiceError::InvalidArgument(
                "a read's filter applies to a forward read of `all` only".to_string(),
            ));
        }
        crate::service::subscribe::validate_filter(&request.stream_prefixes, &request.event_types)?;
        self.reach_consistency(request.consistency).await?;
        let reader = self.handle.reader();
        let applied = reader.applied();
        // A position is where the scan starts (it says itself when that lies below what is
        // retained); the first event or a time is resolved in a read transaction of its own.
        let (resolve, min_timestamp_ms, requested) = match request.start {
            ReadStart::From(from) => (None, 0, from),
            ReadStart::Edge => (Some(SubscribeStart::Beginning), 0, 0),
            ReadStart::Time(time_ms) => (Some(SubscribeStart::Time(time_ms)), time_ms, 0),
        };
        let from = match resolve {
            Some(start) => {
                reader
                    .subscription_start(ReadTarget::All, start)
                    .await?
                    .next_from
            }
            None => requested,
        };
        let filter = Arc::new(EventFilter {
            stream_prefixes: request.stream_prefixes,
            event_types: request.event_types,
            min_timestamp_ms,
        });
        let scan = reader
            .scan(
                ReadTarget::All,
                from,
                limit,
                filter,
                crate::service::subscribe::MAX_LOOKED_AT,
            )
            .await?;
        if let Some(first) = scan.out_of_range {
            return Err(out_of_range(&ReadTarget::All, requested, first));
        }
        Ok(ReadPage {
            events: scan.events,
            next_from: (scan.next_from <= scan.target_head).then_some(scan.next_from),
            applied: AppliedState {
                head_position: scan.head_position.max(applied.head_position),
                ..applied
            },
            out_of_range: None,
        })
    }

    /// One stream's summary.
    pub async fn get_stream(
        &self,
        stream: String,
        consistency: Consistency,
    ) -> Result<StreamFound, ServiceError> {
        append::validate_stream_name_to_read(&stream)?;
        self.reach_consistency(consistency).await?;
        let reader = self.handle.reader();
        // The head is taken before the read, so the read reflects at least it.
        let head_position = reader.applied().head_position;
        match reader.stream(stream.clone()).await? {
            Some(info) => Ok(StreamFound {
                info,
                head_position,
            }),
            None => Err(ServiceError::StreamNotFound { stream }),
        }
    }

    /// Stream summaries by name prefix, a page at a time.
    pub async fn list_streams(
        &self,
        prefix: String,
        after: Option<String>,
        max_count: u32,
        consistency: Consistency,
    ) -> Result<StreamsFound, ServiceError> {
        if prefix.len() > append::MAX_STREAM_NAME_BYTES {
            return Err(ServiceError::InvalidArgument(format!(
                "prefix of {} bytes is longer than a stream name may be ({} bytes)",
                prefix.len(),
                append::MAX_STREAM_NAME_BYTES
            )));
        }
        let max_count = self.page_size(max_count, "streams")?;
        self.reach_consistency(consistency).await?;
        let reader = self.handle.reader();
        let head_position = reader.applied().head_position;
        let page = reader.list_streams(prefix, after, max_count).await?;
        Ok(StreamsFound {
            page,
            head_position,
        })
    }

    /// Starts a subscription (see `subscribe.rs`): refused here, or running.
    pub async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscription, ServiceError> {
        subscribe::subscribe(
            &self.handle,
            &self.subscriptions,
            &self.limits,
            self.request_timeout,
            request,
        )
        .await
    }

    /// How many subscriptions this node serves now.
    pub fn active_subscriptions(&self) -> usize {
        self.subscriptions.active()
    }

    /// How far behind this node's subscriptions are, `head` being the last applied position.
    pub fn subscriptions_behind(
        &self,
        head: u64,
    ) -> crate::service::subscribe::SubscriptionsBehind {
        self.subscriptions.behind(head)
    }

    /// Ends every subscription with `UNAVAILABLE` and takes no more (the node is shutting
    /// down: a subscription never ends by itself).
    pub fn close_subscriptions(&self) {
        self.subscriptions.close();
    }

    /// The page size a request asks for (0: the default), refused above the limit.
    fn page_size(&self, requested: u32, what: &str) -> Result<usize, ServiceError> {
        match requested as usize {
            0 => Ok(self.limits.default_read_count),
            n if n > self.limits.max_read_count => Err(ServiceError::TooLarge(format!(
                "max_count {n} exceeds the limit of {} {what} per read",
                self.limits.max_read_count
            ))),
            n => Ok(n),
        }
    }

    /// Waits until this node may serve a read at `consistency` (for other services' reads).
    pub async fn wait_for(&self, consistency: Consistency) -> Result<(), ServiceError> {
        self.reach_consistency(consistency).await
    }

    /// Waits until this node may serve a read at `consistency`.
    async fn reach_consistency(&self, consistency: Consistency) -> Result<(), ServiceError> {
        let deadline = Instant::now() + self.request_timeout;
        match consistency {
            Consistency::Linearizable => self
                .handle
                .linearize(self.request_timeout)
                .await
                .map_err(ServiceError::ReadIndex),
            Consistency::AtLeast(position) => {
                self.caught_up().await?;
                self.handle
                    .wait_position(position, deadline)
                    .await
                    .map_err(|error| ServiceError::ReadIndex(error.into()))
            }
            Consistency::Local => self.caught_up().await,
        }
    }

    async fn caught_up(&self) -> Result<(), ServiceError> {
        self.handle
            .catch_up(self.request_timeout)
            .await
            .map_err(|cause: LinearizeError| ServiceError::NotCaughtUp {
                node_id: self.handle.node_id(),
                cause,
            })
    }
}

/// The leader to hand a request to, waiting up to `wait` for one to be known: never this node
/// (a leader that refused the request itself cannot take it now).
pub(crate) async fn leader_to_forward_to(
    handle: &RaftHandle,
    wait: Duration,
) -> Result<Leader, ServiceError> {
    let Some((leader, address)) = handle.wait_for_leader(wait).await else {
        return Err(ServiceError::NoLeader {
            waited_ms: wait.as_millis() as u64,
        });
    };
    if leader == handle.node_id() {
        return Err(ServiceError::LeaseLost);
    }
    let address = address.ok_or_else(|| ServiceError::LeaderUnreachable {
        leader_id: leader,
        detail: "its address is not known".to_string(),
    })?;
    Ok(Leader {
        id: leader,
        address,
    })
}

/// What applying an append decided, as the service's answer.
fn answer(
    response: CommandResponse,
    receipt: Receipt,
    request: AppendRequest,
) -> Result<Appended, ServiceError> {
    match response {
        CommandResponse::Appended(outcome) => Ok(Appended { outcome, receipt }),
        CommandResponse::WrongExpectedVersion { expected, actual } => {
            Err(ServiceError::WrongExpectedVersion {
                stream: request.stream,
                expected,
                actual,
            })
        }
        CommandResponse::IdempotencyKeyReused => Err(ServiceError::IdempotencyKeyReused {
            key: request.idempotency_key.unwrap_or_default(),
        }),
        CommandResponse::StreamTombstoned => Err(ServiceError::StreamTombstoned {
            stream: request.stream,
        }),
        CommandResponse::Empty
        | CommandResponse::Many(_)
        | CommandResponse::Consumer(_)
        | CommandResponse::Access(_)
        | CommandResponse::Retention(_) => Err(ServiceError::Internal(format!(
            "an append was answered {response:?}"
        ))),
    }
}

/// A read or subscription of `target` from `requested`, below its first retained event
/// `first`.
pub(crate) fn out_of_range(target: &ReadTarget, requested: u64, first: u64) -> ServiceError {
    let (target, unit) = match target {
        ReadTarget::Stream(stream) => (format!("stream {stream:?}"), "version"),
        ReadTarget::All => ("the log".to_string(), "position"),
    };
    ServiceError::OutOfRange {
        target,
        unit,
        requested,
        first,
    }
}

/// A proposal's failure as the service's error (not-leader refusals are handled apart).
pub(crate) fn propose_error(error: ProposeError) -> ServiceError {
    match error {
        ProposeError::NotLeader(hint) => ServiceError::NotLeader(hint),
        ProposeError::Discarded(detail) => ServiceError::Discarded(detail),
        ProposeError::Halted(detail) => ServiceError::RaftStopped(detail),
        ProposeError::Stopped(detail) => ServiceError::OutcomeUnknown(detail),
        ProposeError::ShuttingDown => ServiceError::ShuttingDown,
    }
}
