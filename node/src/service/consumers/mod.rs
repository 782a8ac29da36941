//! Consumer groups: the service (create, update, delete, get, list, dead letters, redrive,
//! join) and, on the leader, one dispatcher per group with members (`group.rs`).
//!
//! Every change to a group is a Raft entry decided by `evlog_raft_store::consumer::decide`;
//! this layer validates, proposes on the leader, and reads. A follower hands calls to the
//! leader (`grpc/consumers.rs`), so the service itself always runs where it can propose.

pub mod group;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

use evlog_raft_store::consumer::ConsumerCommand;
use evlog_raft_store::consumer::ConsumerFilter;
use evlog_raft_store::consumer::ConsumerRecord;
use evlog_raft_store::consumer::ConsumerResponse;
use evlog_raft_store::consumer::ConsumerSettings;
use evlog_raft_store::consumer::ConsumerStart;
use evlog_raft_store::consumer::ConsumerTarget;
use evlog_raft_store::consumer::DeadLetterRecord;
use evlog_raft_store::consumer::RedriveSelection;
use evlog_raft_store::reader::SubscribeStart;
use evlog_raft_store::reader::consumers::Lag;
use evlog_raft_store::reader::consumers::read_target;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use evlog_raft_store::types::RecordedEvent;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::raft::RaftHandle;
use crate::service::append::validate_stream_name;
use crate::service::error::ServiceError;
use crate::service::event_log::propose_error;
use crate::service::subscribe::MAX_FILTER_ENTRIES;
use crate::service::subscribe::MAX_FILTER_TYPE_BYTES;
use group::GroupHandle;
use group::GroupMessage;
pub use group::MemberInfo;
pub use group::MemberOutput;
pub use group::MemberSettlement;

/// Most dead letters or groups one page lists.
pub const MAX_PAGE: usize = 1_000;
/// What a page lists when the request does not say.
pub const DEFAULT_PAGE: usize = 100;
/// Most dead letters one redrive moves.
pub const MAX_REDRIVE: u32 = 10_000;
/// Longest settlement reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1_024;
/// Most settlements in one message.
pub const MAX_SETTLEMENTS: usize = 4_096;

/// Where a new group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateStart {
    Beginning,
    From(u64),
    Time(u64),
    Head,
}

/// A group as a client asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateConsumer {
    pub name: String,
    pub target: ConsumerTarget,
    pub filter: ConsumerFilter,
    pub start: CreateStart,
    pub settings: ConsumerSettings,
}

/// A group as `Get` shows it.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    pub record: ConsumerRecord,
    pub lag: Lag,
    pub ack_floor: u64,
    pub members: Vec<MemberInfo>,
    /// When the lag was measured (ms since the Unix epoch).
    pub now_ms: u64,
    /// The log's epoch the group's positions belong to.
    pub epoch: u64,
    /// What retention took from the group before it took the events in.
    pub skips: evlog_raft_store::types::ConsumerSkips,
}

/// A dead letter with its event.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub key: u64,
    pub record: DeadLetterRecord,
    /// `None` when retention removed the event.
    pub event: Option<RecordedEvent>,
}

/// A connected member: what it sends goes to its group's dispatcher (what it receives comes
/// on the receiver [`ConsumerService::join`] returns beside it). Dropped: it leaves.
pub struct Member {
    pub member_id: String,
    /// Bytes of deliveries and answers sent and not yet taken (the connection subtracts what
    /// it writes out).
    pub bytes: Arc<AtomicUsize>,
    queue: mpsc::Sender<GroupMessage>,
}

impl Member {
    pub async fn credit(&self, count: u32) -> Result<(), ServiceError> {
        self.send(GroupMessage::Credit {
            member_id: self.member_id.clone(),
            count,
        })
        .await
    }

    pub async fn settle(&self, settlements: Vec<MemberSettlement>) -> Result<(), ServiceError> {
        self.send(GroupMessage::Settle {
            member_id: self.member_id.clone(),
            settlements,
        })
        .await
    }

    pub async fn extend(&self, deliveries: Vec<(u64, u32)>) -> Result<(), ServiceError> {
        self.send(GroupMessage::Extend {
            member_id: self.member_id.clone(),
            deliveries,
        })
        .await
    }

    async fn send(&self, message: GroupMessage) -> Result<(), ServiceError> {
        self.queue
            .send(message)
            .await
            .map_err(|_| ServiceError::Internal("the group's dispatcher ended".to_string()))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // The dispatcher may be gone already; then nothing is left to tell.
        self.queue
            .try_send(GroupMessage::Leave {
                member_id: self.member_id.clone(),
            })
            .ok();
    }
}

pub struct ConsumerService {
    handle: RaftHandle,
    request_timeout: Duration,
    max_batch_bytes: usize,
    groups: Arc<Mutex<HashMap<String, GroupHandle>>>,
    next_member: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Checks a group's settings and fills in the defaults.
pub fn settings_with_defaults(
    mut settings: ConsumerSettings,
) -> Result<ConsumerSettings, ServiceError> {
    if settings.ack_wait_ms == 0 {
        settings.ack_wait_ms = ConsumerSettings::DEFAULT_ACK_WAIT_MS;
    }
    if settings.max_deliveries == 0 {
        settings.max_deliveries = ConsumerSettings::DEFAULT_MAX_DELIVERIES;
    }
    if settings.backoff_ms.is_empty() {
        settings.backoff_ms = ConsumerSettings::DEFAULT_BACKOFF_MS.to_vec();
    }
    if settings.max_in_flight == 0 {
        settings.max_in_flight = ConsumerSettings::DEFAULT_MAX_IN_FLIGHT;
    }
    let invalid = |message: String| Err(ServiceError::InvalidArgument(message));
    if settings.ack_wait_ms > ConsumerSettings::MAX_ACK_WAIT_MS {
        return invalid(format!(
            "ack_wait_ms {} is over the limit of {} (12 hours)",
            settings.ack_wait_ms,
            ConsumerSettings::MAX_ACK_WAIT_MS
        ));
    }
    if settings.max_deliveries > ConsumerSettings::MAX_DELIVERIES {
        return invalid(format!(
            "max_deliveries {} is over the limit of {}",
            settings.max_deliveries,
            ConsumerSettings::MAX_DELIVERIES
        ));
    }
    if settings.backoff_ms.len() > ConsumerSettings::MAX_BACKOFF_STEPS {
        return invalid(format!(
            "backoff_ms has {} steps; at most {}",
            settings.backoff_ms.len(),
            ConsumerSettings::MAX_BACKOFF_STEPS
        ));
    }
    if let Some(step) = settings
        .backoff_ms
        .iter()
        .find(|step| **step > ConsumerSettings::MAX_BACKOFF_MS)
    {
        return invalid(format!(
            "backoff step {step} ms is over the limit of {} (24 hours)",
            ConsumerSettings::MAX_BACKOFF_MS
        ));
    }
    if settings.max_in_flight > ConsumerSettings::MAX_IN_FLIGHT {
        return invalid(format!(
            "max_in_flight {} is over the limit of {}",
            settings.max_in_flight,
            ConsumerSettings::MAX_IN_FLIGHT
        ));
    }
    Ok(settings)
}

/// Checks a group name (the stream-name rules).
pub fn validate_name(name: &str) -> Result<(), ServiceError> {
    validate_stream_name(name).map_err(|error| match error {
        ServiceError::InvalidArgument(message) => {
            ServiceError::InvalidArgument(format!("consumer group name: {message}"))
        }
        other => other,
    })
}

fn validate_filter(filter: &ConsumerFilter) -> Result<(), ServiceError> {
    if filter.stream_prefixes.len() > MAX_FILTER_ENTRIES
        || filter.event_types.len() > MAX_FILTER_ENTRIES
    {
        return Err(ServiceError::InvalidArgument(format!(
            "a filter holds at most {MAX_FILTER_ENTRIES} stream prefixes and {MAX_FILTER_ENTRIES} \
             event types"
        )));
    }
    if let Some(long) = filter
        .stream_prefixes
        .iter()
        .chain(&filter.event_types)
        .find(|entry| entry.len() > MAX_FILTER_TYPE_BYTES)
    {
        return Err(ServiceError::InvalidArgument(format!(
            "filter entry of {} bytes; at most {MAX_FILTER_TYPE_BYTES}",
            long.len()
        )));
    }
    Ok(())
}

/// Checks a member's settlement reason.
pub fn validate_reason(reason: &str) -> Result<(), ServiceError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "a settlement reason is {} bytes; at most {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    Ok(())
}

impl ConsumerService {
    pub fn new(handle: RaftHandle, request_timeout: Duration, max_batch_bytes: usize) -> Self {
        Self {
            handle,
            request_timeout,
            max_batch_bytes,
            groups: Default::default(),
            next_member: AtomicU64::new(1),
        }
    }

    pub fn handle(&self) -> &RaftHandle {
        &self.handle
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    async fn propose(&self, command: ConsumerCommand) -> Result<ConsumerResponse, ServiceError> {
        let answer = tokio::time::timeout(
            self.request_timeout,
            self.handle.propose(Command::Consumer(command)),
        )
        .await
        .map_err(|_| {
            ServiceError::Timeout(format!(
                "the change was not applied within {} ms; its outcome is unknown",
                self.request_timeout.as_millis()
            ))
        })?;
        match answer.map_err(propose_error)? {
            (CommandResponse::Consumer(response), _) => Ok(response),
            (other, _) => Err(ServiceError::Internal(format!(
                "a consumer command was answered {other:?}"
            ))),
        }
    }

    /// Tells a running dispatcher that its group changed.
    fn changed(&self, name: &str) {
        let handle = self.lock_groups().get(name).cloned();
        if let Some(handle) = handle {
            handle.queue.try_send(GroupMessage::Changed).ok();
        }
    }

    fn lock_groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, GroupHandle>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn create(&self, request: CreateConsumer) -> Result<ConsumerInfo, ServiceError> {
        validate_name(&request.name)?;
        if let ConsumerTarget::Stream(stream) = &request.target {
            validate_stream_name(stream)?;
        }
        validate_filter(&request.filter)?;
        let settings = settings_with_defaults(request.settings)?;
        let start = match request.start {
            CreateStart::Beginning => ConsumerStart::At(1),
            CreateStart::From(key) => ConsumerStart::At(key),
            CreateStart::Head => ConsumerStart::Head,
            CreateStart::Time(time_ms) => {
                let scan = self
                    .handle
                    .reader()
                    .subscription_start(read_target(&request.target), SubscribeStart::Time(time_ms))
                    .await?;
                ConsumerStart::At(scan.next_from)
            }
        };
        let response = self
            .propose(ConsumerCommand::Create {
                name: request.name.clone(),
                target: request.target,
                filter: request.filter,
                start,
                settings,
                timestamp_ms: now_ms(),
            })
            .await?;
        match response {
            ConsumerResponse::Group(record) => self.info(*record).await,
            ConsumerResponse::AlreadyExists(_) => {
                Err(ServiceError::ConsumerExists { name: request.name })
            }
            other => Err(ServiceError::Internal(format!(
                "a create was answered {other:?}"
            ))),
        }
    }

    pub async fn update(
        &self,
        name: String,
        settings: ConsumerSettings,
    ) -> Result<ConsumerInfo, ServiceError> {
        validate_name(&name)?;
        let settings = settings_with_defaults(settings)?;
        let response = self
            .propose(ConsumerCommand::Update {
                name: name.clone(),
                settings,
            })
            .await?;
        self.changed(&name);
        match response {
            ConsumerResponse::Group(record) => self.info(*record).await,
            ConsumerResponse::NotFound => Err(ServiceError::ConsumerNotFound { name }),
            other => Err(ServiceError::Internal(format!(
                "an update was answered {other:?}"
            ))),
        }
    }

    pub async fn delete(&self, name: String) -> Result<(), ServiceError> {
        validate_name(&name)?;
        let response = self
            .propose(ConsumerCommand::Delete { name: name.clone() })
            .await?;
        self.changed(&name);
        match response {
            ConsumerResponse::Deleted => Ok(()),
            ConsumerResponse::NotFound => Err(ServiceError::ConsumerNotFound { name }),
            other => Err(ServiceError::Internal(format!(
                "a delete was answered {other:?}"
            ))),
        }
    }

    async fn linearize(&self) -> Result<(), ServiceError> {
        self.handle
            .linearize(self.request_timeout)
            .await
            .map_err(ServiceError::ReadIndex)
    }

    pub async fn get(&self, name: String) -> Result<ConsumerInfo, ServiceError> {
        validate_name(&name)?;
        self.linearize().await?;
        let Some(record) = self.handle.reader().consumer_record(name.clone()).await? else {
            return Err(ServiceError::ConsumerNotFound { name });
        };
        self.info(record).await
    }

    async fn info(&self, record: ConsumerRecord) -> Result<ConsumerInfo, ServiceError> {
        let lag = self
            .handle
            .reader()
            .consumer_lag(
                record.clone(),
                evlog_raft_store::reader::consumers::MAX_LAG_SCAN,
            )
            .await?;
        let ack_floor = lag
            .first_tracked
            .map_or(record.frontier, |first| first.min(record.frontier));
        let members = self.members(&record.name).await;
        let skips = self
            .handle
            .reader()
            .consumer_skips(record.name.clone())
            .await?;
        Ok(ConsumerInfo {
            record,
            lag,
            ack_floor,
            members,
            now_ms: now_ms(),
            epoch: self.handle.applied().epoch,
            skips,
        })
    }

    async fn members(&self, name: &str) -> Vec<MemberInfo> {
        let handle = self.lock_groups().get(name).cloned();
        let Some(handle) = handle else {
            return Vec::new();
        };
        let (reply, members) = oneshot::channel();
        if handle
            .queue
            .send(GroupMessage::Members(reply))
            .await
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::timeout(self.request_timeout, members)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    pub async fn list(
        &self,
        after: Option<String>,
        max_count: usize,
    ) -> Result<Vec<ConsumerInfo>, ServiceError> {
        let max_count = page(max_count)?;
        self.linearize().await?;
        let records = self
            .handle
            .reader()
            .list_consumers(after, max_count)
            .await?;
        let mut infos = Vec::with_capacity(records.len());
        for record in records {
            infos.push(self.info(record).await?);
        }
        Ok(infos)
    }

    /// A page of dead letters from key `from`, and where the next page starts (0: none).
    pub async fn dead_letters(
        &self,
        name: String,
        from: u64,
        max_count: usize,
    ) -> Result<(Vec<DeadLetter>, u64), ServiceError> {
        validate_name(&name)?;
        let max_count = page(max_count)?;
        self.linearize().await?;
        if self
            .handle
            .reader()
            .consumer_record(name.clone())
            .await?
            .is_none()
        {
            return Err(ServiceError::ConsumerNotFound { name });
        }
        let mut rows = self
            .handle
            .reader()
            .dead_letters(name, from, max_count + 1)
            .await?;
        let next_from = if rows.len() > max_count {
            rows.pop().map_or(0, |(key, _)| key)
        } else {
            0
        };
        let events = self
            .handle
            .reader()
            .events_at(rows.iter().map(|(_, record)| record.position).collect())
            .await?;
        Ok((
            rows.into_iter()
                .zip(events)
                .map(|((key, record), event)| DeadLetter { key, record, event })
                .collect(),
            next_from,
        ))
    }

    pub async fn redrive(
        &self,
        name: String,
        redrive_id: String,
        selection: RedriveSelection,
    ) -> Result<(u64, bool), ServiceError> {
        validate_name(&name)?;
        if redrive_id.is_empty() || redrive_id.len() > 128 {
            return Err(ServiceError::InvalidArgument(
                "redrive_id must be 1 to 128 bytes (it makes the redrive idempotent)".to_string(),
            ));
        }
        match &selection {
            RedriveSelection::All { limit } | RedriveSelection::Reason { limit, .. }
                if *limit == 0 || *limit > MAX_REDRIVE =>
            {
                return Err(ServiceError::InvalidArgument(format!(
                    "a redrive moves 1 to {MAX_REDRIVE} dead letters"
                )));
            }
            RedriveSelection::Keys(keys)
                if keys.is_empty() || keys.len() > MAX_REDRIVE as usize =>
            {
                return Err(ServiceError::InvalidArgument(format!(
                    "a redrive names 1 to {MAX_REDRIVE} keys"
                )));
            }
            RedriveSelection::Reason { text, .. } if text.len() > MAX_REASON_BYTES => {
                return Err(ServiceError::InvalidArgument(format!(
                    "the reason text is over {MAX_REASON_BYTES} bytes"
                )));
            }
            _ => {}
        }
        // Room for tracked events, as this leader sees the group now (a redrive racing a step
        // may overshoot by what that step takes in: the bound is soft by that much).
        let Some(record) = self.handle.reader().consumer_record(name.clone()).await? else {
            return Err(ServiceError::ConsumerNotFound { name });
        };
        let max = (record.settings.max_tracked() as u64).saturating_sub(record.stats.tracked);
        let response = self
            .propose(ConsumerCommand::Redrive {
                name: name.clone(),
                redrive_id,
                selection,
                max,
                timestamp_ms: now_ms(),
            })
            .await?;
        self.changed(&name);
        match response {
            ConsumerResponse::Redriven { count, repeated } => Ok((count, repeated)),
            ConsumerResponse::NotFound => Err(ServiceError::ConsumerNotFound { name }),
            other => Err(ServiceError::Internal(format!(
                "a redrive was answered {other:?}"
            ))),
        }
    }

    /// Joins group `name` as a new member with `credit` deliveries of room.
    pub async fn join(
        &self,
        name: String,
        credit: u32,
        member_name: String,
    ) -> Result<(Member, mpsc::UnboundedReceiver<MemberOutput>), ServiceError> {
        validate_name(&name)?;
        if member_name.len() > 200 {
            return Err(ServiceError::InvalidArgument(
                "member_name is at most 200 bytes".to_string(),
            ));
        }
        if !self.handle.is_leader() {
            return Err(ServiceError::NotLeader(self.handle.leader_hint()));
        }
        let member_id = format!(
            "{}-{}",
            self.handle.node_id(),
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let (out, output) = mpsc::unbounded_channel();
        let bytes = Arc::new(AtomicUsize::new(0));
        // A dispatcher that just ended may still be in the map for a moment: try twice.
        for _ in 0..2 {
            let handle = self.dispatcher(&name);
            let (joined, answer) = oneshot::channel();
            let sent = handle
                .queue
                .send(GroupMessage::Join {
                    member_id: member_id.clone(),
                    name: member_name.clone(),
                    credit,
                    out: out.clone(),
                    bytes: Arc::clone(&bytes),
                    joined,
                })
                .await;
            if sent.is_err() {
                self.forget(&name, &handle);
                continue;
            }
            match answer.await {
                Ok(Ok(())) => {
                    return Ok((
                        Member {
                            member_id,
                            bytes,
                            queue: handle.queue,
                        },
                        output,
                    ));
                }
                // It ended as this member came (its last member had left): start another.
                Ok(Err(ServiceError::Discarded(_))) => {
                    self.forget(&name, &handle);
                    continue;
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    self.forget(&name, &handle);
                    continue;
                }
            }
        }
        // The dispatcher ended at once: it says why on the output.
        let mut output = output;
        match output.try_recv() {
            Ok(MemberOutput::Revoked(error)) => Err(error),
            _ => Err(ServiceError::Internal(format!(
                "the dispatcher of consumer group {name:?} did not start"
            ))),
        }
    }

    fn dispatcher(&self, name: &str) -> GroupHandle {
        let mut groups = self.lock_groups();
        if let Some(handle) = groups.get(name)
            && !handle.queue.is_closed()
        {
            return handle.clone();
        }
        let registry = Arc::clone(&self.groups);
        let key = name.to_string();
        let handle_slot: Arc<Mutex<Option<mpsc::Sender<GroupMessage>>>> = Default::default();
        let slot = Arc::clone(&handle_slot);
        let handle = group::start(
            name.to_string(),
            self.handle.clone(),
            self.max_batch_bytes,
            move || {
                let mut groups = registry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mine = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let (Some(current), Some(mine)) = (groups.get(&key), mine)
                    && current.queue.same_channel(&mine)
                {
                    groups.remove(&key);
                }
            },
        );
        *handle_slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle.queue.clone());
        groups.insert(name.to_string(), handle.clone());
        handle
    }

    fn forget(&self, name: &str, handle: &GroupHandle) {
        let mut groups = self.lock_groups();
        if groups
            .get(name)
            .is_some_and(|current| current.queue.same_channel(&handle.queue))
        {
            groups.remove(name);
        }
    }
}

fn page(max_count: usize) -> Result<usize, ServiceError> {
    match max_count {
        0 => Ok(DEFAULT_PAGE),
        n if n > MAX_PAGE => Err(ServiceError::TooLarge(format!(
            "max_count {n} is over the limit of {MAX_PAGE}"
        ))),
        n => Ok(n),
    }
}
