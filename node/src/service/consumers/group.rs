//! One consumer group's dispatcher, on the leader: a task that owns the group's members and
//! a copy of its replicated state ([`GroupMirror`]), and moves it on in steps.
//!
//! A step is one Raft entry: the settlements that arrived since the last step (and deliveries
//! whose `ack_wait` ran out, or whose member left), then the (re)deliveries and the new events
//! it takes in from the frontier. The step is decided on the mirror first (the same pure
//! function the state machine runs), so the deliveries are planned on the state the
//! settlements leave; it is then proposed, and only once it is applied are its deliveries sent
//! and its settlements answered: a delivery's attempt is counted before the member sees it,
//! and an `OK` means the settlement is committed. Everything that arrives while a step is being
//! committed goes into the next one, so steps batch themselves under load.
//!
//! The mirror and the store run the same decision on the same state, so they agree; a step the
//! store refuses (the group changed: an update, a redrive) or answers otherwise makes the
//! dispatcher load the group again. When this node stops leading, a proposal fails and the
//! dispatcher ends, revoking its members: they join again through the new leader, which loads
//! the group and gives every delivery in flight a fresh `ack_wait`.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

use evlog_raft_store::PageLimit;
use evlog_raft_store::consumer::Advance;
use evlog_raft_store::consumer::ConsumerCommand;
use evlog_raft_store::consumer::ConsumerResponse;
use evlog_raft_store::consumer::ConsumerTarget;
use evlog_raft_store::consumer::DispatchMode;
use evlog_raft_store::consumer::GroupMirror;
use evlog_raft_store::consumer::NewPending;
use evlog_raft_store::consumer::Outcome;
use evlog_raft_store::consumer::PendingState;
use evlog_raft_store::consumer::Redelivery;
use evlog_raft_store::consumer::Settlement;
use evlog_raft_store::consumer::decide::decide;
use evlog_raft_store::reader::consumers::event_filter;
use evlog_raft_store::reader::consumers::read_target;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use evlog_raft_store::types::RecordedEvent;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::raft::RaftHandle;
use crate::service::error::ServiceError;
use crate::service::event_log::propose_error;

/// Most deliveries and settlements one step carries.
pub const MAX_STEP_ITEMS: usize = 1_024;
/// Most settlements waiting for a step.
const MAX_QUEUED_SETTLEMENTS: usize = 16_384;
/// Most credit a member may hold.
pub const MAX_MEMBER_CREDIT: u32 = 10_000;
/// Most bytes of events sent to a member and not yet taken by its connection.
pub const MAX_MEMBER_BYTES: usize = 16 << 20;
/// Most messages queued for a group's dispatcher. A settle message is at most 4,096
/// settlements with reasons of at most 1 KiB (about 4.3 MiB), so the queue holds at most about
/// 70 MiB; members' further messages wait on it.
const GROUP_QUEUE: usize = 16;
/// Most messages the dispatcher takes in while a step commits (their settlements and extended
/// deliveries count against [`MAX_QUEUED_SETTLEMENTS`] too); past either, the rest wait in the
/// queue.
const MAX_HELD_MESSAGES: usize = 1_024;
/// Most events one scan of the log looks at.
const MAX_LOOKED_AT: usize = 4_096;
/// KEYED: most events one scan reads beyond what the members have room for, to hold behind
/// their streams (so a busy stream does not stop the others' later events).
const MAX_HELD_PER_SCAN: usize = 256;
/// Failpoint (failpoints builds only): a planned step that delivers something is lost before
/// it is proposed, as when the leader dies between planning and commit. (Evaluated only for
/// steps with deliveries, so `N*off->1*return` loses the (N+1)th delivering step.)
#[cfg(feature = "failpoints")]
pub const STEP_LOST: &str = "consumers::step-lost";

/// How often an idle dispatcher checks that its node still leads.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);
/// Longest a step may take to commit; past it the dispatcher ends (its members join again).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a settlement's answer weighs against a member's byte budget.
pub const SETTLED_WEIGHT: usize = 64;

/// What a delivery weighs against a member's byte budget (the event, and its frame).
pub fn event_weight(event: &RecordedEvent) -> usize {
    event.size() + 64
}

/// Most members of one group connected to one leader.
pub const MAX_MEMBERS: usize = 1_024;

/// What a member receives.
#[derive(Debug)]
pub enum MemberOutput {
    Delivery {
        key: u64,
        attempt: u32,
        event: RecordedEvent,
    },
    /// Per settlement: its delivery id and whether it took effect (`false`: stale).
    Settled(Vec<(String, bool)>),
    /// The member is out (the group was deleted, this node stopped leading, ...).
    Revoked(ServiceError),
}

/// A member's settlement of a delivery, as it sent it.
#[derive(Clone, Debug)]
pub struct MemberSettlement {
    pub delivery_id: String,
    pub key: u64,
    pub attempt: u32,
    pub outcome: Outcome,
    pub reason: String,
}

pub(super) enum GroupMessage {
    Join {
        member_id: String,
        name: String,
        credit: u32,
        out: mpsc::UnboundedSender<MemberOutput>,
        bytes: Arc<AtomicUsize>,
        joined: oneshot::Sender<Result<(), ServiceError>>,
    },
    Credit {
        member_id: String,
        count: u32,
    },
    Settle {
        member_id: String,
        settlements: Vec<MemberSettlement>,
    },
    Extend {
        member_id: String,
        deliveries: Vec<(u64, u32)>,
    },
    Leave {
        member_id: String,
    },
    /// The group changed outside the dispatcher (updated, deleted, redriven): load it again.
    Changed,
    /// Who is connected, for `Get`.
    Members(oneshot::Sender<Vec<MemberInfo>>),
}

/// A member as `Get` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub name: String,
    pub credit: u32,
    pub in_flight: u32,
    pub active: bool,
}

struct Member {
    id: String,
    name: String,
    credit: u32,
    out: mpsc::UnboundedSender<MemberOutput>,
    /// Bytes of events sent and not yet taken by the connection.
    bytes: Arc<AtomicUsize>,
    in_flight: u32,
}

impl Member {
    /// What this member may be given in one step: its credit, and what is left of its byte
    /// budget.
    fn room(&self) -> Room {
        Room {
            count: self.credit,
            bytes: MAX_MEMBER_BYTES.saturating_sub(self.bytes.load(Ordering::Relaxed)),
        }
    }
}

/// What a member (or a step) can still take: deliveries, and bytes of events. One delivery
/// fits while any bytes are left, so an event larger than a budget still goes, alone.
#[derive(Clone, Copy, Debug)]
struct Room {
    count: u32,
    bytes: usize,
}

impl Room {
    fn fits(&self) -> bool {
        self.count > 0 && self.bytes > 0
    }

    fn take(&mut self, bytes: usize) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// A handle to a running dispatcher.
#[derive(Clone)]
pub(super) struct GroupHandle {
    pub(super) queue: mpsc::Sender<GroupMessage>,
}

pub(super) fn start(
    name: String,
    handle: RaftHandle,
    max_batch_bytes: usize,
    on_exit: impl FnOnce() + Send + 'static,
) -> GroupHandle {
    let (queue, mut messages) = mpsc::channel(GROUP_QUEUE);
    tokio::spawn(async move {
        let mut dispatcher = Dispatcher {
            name,
            handle,
            max_batch_bytes,
            mirror: None,
            members: Vec::new(),
            next_member: 0,
            queued: Vec::new(),
            deadlines: HashMap::new(),
            head_seen: None,
            held: Vec::new(),
        };
        let end = dispatcher.run(&mut messages).await;
        tracing::info!(group = %dispatcher.name, reason = %end, "a consumer group's dispatcher ended");
        on_exit();
        // Whoever was about to join (held during a step, or still queued) hears why it cannot.
        messages.close();
        let held = std::mem::take(&mut dispatcher.held);
        for message in held
            .into_iter()
            .chain(std::iter::from_fn(|| messages.try_recv().ok()))
        {
            if let GroupMessage::Join { joined, .. } = message {
                joined.send(Err(copy_error(&end))).ok();
            }
        }
        dispatcher.revoke_all(end);
    });
    GroupHandle { queue }
}

struct Dispatcher {
    name: String,
    handle: RaftHandle,
    max_batch_bytes: usize,
    mirror: Option<GroupMirror>,
    members: Vec<Member>,
    /// Round-robin cursor over the members.
    next_member: usize,
    /// Settlements for the next step, with who sent them (empty member: the dispatcher's own).
    queued: Vec<(String, MemberSettlement)>,
    /// When each delivery out (key, attempt) expires.
    deadlines: HashMap<u64, (u32, Instant)>,
    /// The applied head at which a scan last reached the target's head (no scan until it moves).
    head_seen: Option<u64>,
    /// Messages that came while a step committed, received after it.
    held: Vec<GroupMessage>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Dispatcher {
    /// Runs until the group is gone, this node stops leading, or no member is left; returns
    /// why, for the members still connected.
    async fn run(&mut self, messages: &mut mpsc::Receiver<GroupMessage>) -> ServiceError {
        if let Err(error) = self.load().await {
            return error;
        }
        let mut applied = self.handle.applied_watch();
        loop {
            // Take every message that came during the last step and every one waiting: they
            // all go into the next step.
            for message in std::mem::take(&mut self.held) {
                if let Err(error) = self.receive(message) {
                    return error;
                }
            }
            while self.queued.len() < MAX_QUEUED_SETTLEMENTS
                && let Ok(message) = messages.try_recv()
            {
                if let Err(error) = self.receive(message) {
                    return error;
                }
            }
            if self.members.is_empty() && self.queued.is_empty() {
                return ServiceError::Internal("no member left".to_string());
            }
            match self.step(messages).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => return error,
            }
            // A node that stopped leading lets its members go (they join the new leader), even
            // when the group has nothing to do.
            if !self.handle.is_leader() {
                return ServiceError::NotLeader(self.handle.leader_hint());
            }
            let wake = self
                .next_wake()
                .map_or(Instant::now() + LEADERSHIP_CHECK, |wake| {
                    wake.min(Instant::now() + LEADERSHIP_CHECK)
                });
            tokio::select! {
                message = messages.recv(), if self.queued.len() < MAX_QUEUED_SETTLEMENTS => match message {
                    Some(message) => {
                        if let Err(error) = self.receive(message) {
                            return error;
                        }
                    }
                    None => return ServiceError::ShuttingDown,
                },
                changed = applied.changed() => {
                    if changed.is_err() {
                        return ServiceError::ShuttingDown;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn mirror(&self) -> Result<&GroupMirror, ServiceError> {
        self.mirror
            .as_ref()
            .ok_or_else(|| ServiceError::Internal("the group is not loaded".to_string()))
    }

    /// Loads the group as the store has it (after a read index, so every step committed
    /// before is in), and gives every delivery in flight a fresh `ack_wait`.
    async fn load(&mut self) -> Result<(), ServiceError> {
        self.handle
            .linearize(Duration::from_secs(10))
            .await
            .map_err(ServiceError::ReadIndex)?;
        let Some((record, pending)) = self.handle.reader().consumer(self.name.clone()).await?
        else {
            return Err(ServiceError::ConsumerNotFound {
                name: self.name.clone(),
            });
        };
        let mirror = GroupMirror::new(record, pending);
        let ack_wait = Duration::from_millis(u64::from(mirror.record.settings.ack_wait_ms));
        let now = Instant::now();
        self.deadlines = mirror
            .in_flight()
            .map(|(key, attempt, _)| {
                let deadline = self
                    .deadlines
                    .get(&key)
                    .filter(|(seen, _)| *seen == attempt)
                    .map_or(now + ack_wait, |(_, deadline)| *deadline);
                (key, (attempt, deadline))
            })
            .collect();
        self.mirror = Some(mirror);
        self.head_seen = None;
        Ok(())
    }

    fn receive(&mut self, message: GroupMessage) -> Result<(), ServiceError> {
        match message {
            GroupMessage::Join {
                member_id,
                name,
                credit,
                out,
                bytes,
                joined,
            } => {
                if self.members.len() >= MAX_MEMBERS {
                    joined
                        .send(Err(ServiceError::Busy(format!(
                            "consumer group {:?} has {MAX_MEMBERS} members on this leader",
                            self.name
                        ))))
                        .ok();
                } else {
                    self.members.push(Member {
                        id: member_id,
                        name,
                        credit: credit.min(MAX_MEMBER_CREDIT),
                        out,
                        bytes,
                        in_flight: 0,
                    });
                    joined.send(Ok(())).ok();
                }
            }
            GroupMessage::Credit { member_id, count } => {
                if let Some(member) = self.members.iter_mut().find(|m| m.id == member_id) {
                    member.credit = member.credit.saturating_add(count).min(MAX_MEMBER_CREDIT);
                }
            }
            GroupMessage::Settle {
                member_id,
                settlements,
            } => {
                // Past MAX_QUEUED_SETTLEMENTS the dispatcher reads no more messages until a
                // step takes some: the members' connections wait (backpressure). A member
                // that settles without reading its answers is dropped.
                if let Some(member) = self.members.iter().find(|m| m.id == member_id)
                    && member.bytes.load(Ordering::Relaxed) > 2 * MAX_MEMBER_BYTES
                {
                    member
                        .out
                        .send(MemberOutput::Revoked(ServiceError::Busy(format!(
                            "this member has more than {} MiB of deliveries and answers it has not read; it is dropped",
                            (2 * MAX_MEMBER_BYTES) >> 20
                        ))))
                        .ok();
                    self.leave(&member_id);
                    return Ok(());
                }
                for settlement in settlements {
                    self.queued.push((member_id.clone(), settlement));
                }
            }
            GroupMessage::Extend {
                member_id,
                deliveries,
            } => {
                // Not loaded (it is about to be): the deliveries keep their deadlines.
                let Some(mirror) = self.mirror.as_ref() else {
                    return Ok(());
                };
                let ack_wait = Duration::from_millis(u64::from(mirror.record.settings.ack_wait_ms));
                for (key, attempt) in deliveries {
                    let mine = mirror.pending().get(&key).is_some_and(|record| {
                        record.state == PendingState::Delivered
                            && record.attempts == attempt
                            && record
                                .history
                                .last()
                                .is_some_and(|last| last.member == member_id)
                    });
                    if mine {
                        self.deadlines
                            .insert(key, (attempt, Instant::now() + ack_wait));
                    }
                }
            }
            GroupMessage::Leave { member_id } => self.leave(&member_id),
            GroupMessage::Changed => {
                // Loaded again before the next step.
                self.mirror = None;
            }
            GroupMessage::Members(reply) => {
                let active = self.active_member();
                reply
                    .send(
                        self.members
                            .iter()
                            .enumerate()
                            .map(|(index, member)| MemberInfo {
                                member_id: member.id.clone(),
                                name: member.name.clone(),
                                credit: member.credit,
                                in_flight: member.in_flight,
                                active: active.is_none_or(|active| active == index),
                            })
                            .collect(),
                    )
                    .ok();
            }
        }
        Ok(())
    }

    /// EXCLUSIVE: the one member that receives (the earliest connected).
    fn active_member(&self) -> Option<usize> {
        let exclusive = self
            .mirror
            .as_ref()
            .is_some_and(|mirror| mirror.record.settings.mode == DispatchMode::Exclusive);
        (exclusive && !self.members.is_empty()).then_some(0)
    }

    /// A member left: its deliveries in flight expire now (each counts as an attempt).
    fn leave(&mut self, member_id: &str) {
        self.members.retain(|member| member.id != member_id);
        let Some(mirror) = &self.mirror else { return };
        let left: Vec<(u64, u32)> = mirror
            .in_flight()
            .filter(|(_, _, member)| *member == member_id)
            .map(|(key, attempt, _)| (key, attempt))
            .collect();
        for (key, attempt) in left {
            self.expire(key, attempt, "its member left");
        }
    }

    /// Queues the dispatcher's own settlement of a delivery that ended unsettled (it counts as
    /// an attempt and is retried after the backoff, or dead-lettered at `max_deliveries`).
    fn expire(&mut self, key: u64, attempt: u32, reason: &str) {
        self.queued.push((
            String::new(),
            MemberSettlement {
                delivery_id: String::new(),
                key,
                attempt,
                outcome: Outcome::Expired,
                reason: reason.to_string(),
            },
        ));
    }

    /// When to look again without a message: the first delivery deadline or retry due.
    fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.values().map(|(_, deadline)| *deadline).min();
        let due = self
            .mirror
            .as_ref()
            .and_then(GroupMirror::next_due_ms)
            .map(|due| Instant::now() + Duration::from_millis(due.saturating_sub(now_ms()).max(1)));
        match (deadline, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Picks the member for the next delivery (round robin over those with room).
    fn pick_member(&mut self, room: &[Room]) -> Option<usize> {
        if let Some(active) = self.active_member() {
            return room[active].fits().then_some(active);
        }
        let count = self.members.len();
        for offset in 0..count {
            let index = (self.next_member + offset) % count;
            if room[index].fits() {
                self.next_member = index + 1;
                return Some(index);
            }
        }
        None
    }

    /// Plans, proposes and completes one step if there is anything to do; `Ok(true)` when it
    /// did something (look again at once).
    ///
    /// While the step commits, the messages that come are held (bounded by
    /// [`MAX_HELD_MESSAGES`] and [`MAX_QUEUED_SETTLEMENTS`]), for the caller to receive after
    /// it: the queue is not left full for the step's whole round, which would hold the
    /// members' streams back and make every step carry only what fits in the queue.
    async fn step(
        &mut self,
        messages: &mut mpsc::Receiver<GroupMessage>,
    ) -> Result<bool, ServiceError> {
        if self.mirror.is_none() {
            self.load().await?;
        }
        // A member whose connection is gone leaves, even if its leave message was lost (its
        // handle drops it with `try_send`, which a full queue refuses).
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|member| member.out.is_closed())
            .map(|member| member.id.clone())
            .collect();
        for member in gone {
            self.leave(&member);
        }
        self.expire_deliveries();
        let take = self.queued.len().min(MAX_STEP_ITEMS);
        let settling: Vec<(String, MemberSettlement)> = self.queued.drain(..take).collect();
        let now = now_ms();
        let (revision, created_index, settings) = {
            let record = &self.mirror()?.record;
            (
                record.revision,
                record.created_index,
                record.settings.clone(),
            )
        };
        let settlements: Vec<Settlement> = settling
            .iter()
            .map(|(member, settlement)| Settlement {
                key: settlement.key,
                attempt: settlement.attempt,
                outcome: settlement.outcome,
                reason: settlement.reason.clone(),
                member: member.clone(),
            })
            .collect();
        // The settlements first, on the mirror, so the deliveries are planned on what they
        // leave (an ack frees its stream for the next event at once).
        let mut settled = Vec::new();
        if !settlements.is_empty() {
            let response = self.decide_on_mirror(ConsumerCommand::Step {
                name: self.name.clone(),
                created_index,
                revision,
                settlements: settlements.clone(),
                redeliveries: Vec::new(),
                advance: None,
                timestamp_ms: now,
            })?;
            if let ConsumerResponse::Stepped { settled: flags, .. } = response {
                settled = flags;
            }
        }
        let (redeliveries, advance, delivered_to, mut new_events) =
            self.plan(now, &settings).await?;
        let mut redelivered = Vec::new();
        let mut advanced = false;
        if !redeliveries.is_empty() || advance.is_some() {
            let response = self.decide_on_mirror(ConsumerCommand::Step {
                name: self.name.clone(),
                created_index,
                revision: self.mirror()?.record.revision,
                settlements: Vec::new(),
                redeliveries: redeliveries.clone(),
                advance: advance.clone(),
                timestamp_ms: now,
            })?;
            if let ConsumerResponse::Stepped {
                redelivered: flags,
                advanced: took,
                ..
            } = response
            {
                redelivered = flags;
                advanced = took;
            }
        } else if settlements.is_empty() {
            return Ok(false);
        }
        // The store decides the whole step at once: one revision.
        if let Some(mirror) = self.mirror.as_mut() {
            mirror.record.revision = revision + 1;
        }
        let expected = ConsumerResponse::Stepped {
            settled,
            redelivered,
            advanced,
        };
        let step = ConsumerCommand::Step {
            name: self.name.clone(),
            created_index,
            revision,
            settlements,
            redeliveries,
            advance,
            timestamp_ms: now,
        };
        // Plays a leader that dies between planning a step and its commit: nothing of the step
        // may have reached a member.
        #[cfg(feature = "failpoints")]
        if !delivered_to.is_empty() && fail::eval(STEP_LOST, |_| ()).is_some() {
            return Err(ServiceError::Discarded(
                "a consumer step was lost before it committed (failpoint)".to_string(),
            ));
        }
        let handle = self.handle.clone();
        let proposal = tokio::time::timeout(STEP_TIMEOUT, handle.propose(Command::Consumer(step)));
        tokio::pin!(proposal);
        let mut held_items = 0;
        let mut open = true;
        let proposed = loop {
            tokio::select! {
                proposed = &mut proposal => break proposed,
                message = messages.recv(),
                    if open
                        && self.held.len() < MAX_HELD_MESSAGES
                        && self.queued.len() + held_items < MAX_QUEUED_SETTLEMENTS =>
                {
                    match message {
                        Some(message) => {
                            held_items += match &message {
                                GroupMessage::Settle { settlements, .. } => settlements.len(),
                                GroupMessage::Extend { deliveries, .. } => deliveries.len(),
                                _ => 0,
                            };
                            self.held.push(message);
                        }
                        // The service is gone; the run loop sees it after the step.
                        None => open = false,
                    }
                }
            }
        };
        let Ok(answer) = proposed else {
            // Its outcome is unknown: the next dispatcher loads the group as committed.
            return Err(ServiceError::Timeout(format!(
                "a step of consumer group {:?} did not commit within {} s",
                self.name,
                STEP_TIMEOUT.as_secs()
            )));
        };
        let response = match answer {
            Ok((CommandResponse::Consumer(response), _)) => response,
            Ok((other, _)) => {
                return Err(ServiceError::Internal(format!(
                    "a consumer step was answered {other:?}"
                )));
            }
            Err(error) => return Err(propose_error(error)),
        };
        if response != expected {
            tracing::info!(group = %self.name, ?response, "the group changed under its dispatcher; loading it again");
            self.mirror = None;
            match response {
                // Nothing was done: the settlements go again.
                ConsumerResponse::StepRefused { .. } => {
                    self.queued.splice(0..0, settling);
                    return Ok(true);
                }
                ConsumerResponse::NotFound => {
                    return Err(ServiceError::ConsumerNotFound {
                        name: self.name.clone(),
                    });
                }
                ConsumerResponse::Stepped { .. } => {}
                other => {
                    return Err(ServiceError::Internal(format!(
                        "a consumer step was answered {other:?}"
                    )));
                }
            }
        }
        let ConsumerResponse::Stepped {
            settled,
            redelivered,
            advanced,
        } = response
        else {
            return Ok(true);
        };
        self.answer_settlements(settling, &settled);
        // Send the deliveries the store made: the redeliveries in order, then the new events.
        let ack_wait = Duration::from_millis(u64::from(settings.ack_wait_ms));
        let mut made = redelivered.into_iter().chain(std::iter::repeat(advanced));
        let mut to_read = Vec::new();
        let mut sends = Vec::new();
        for (index, key, attempt) in delivered_to {
            if !made.next().unwrap_or(false) {
                continue;
            }
            self.deadlines
                .insert(key, (attempt, Instant::now() + ack_wait));
            if let Some(member) = self.members.get_mut(index) {
                member.credit = member.credit.saturating_sub(1);
                member.in_flight += 1;
            }
            match new_events.remove(&key) {
                Some(event) => sends.push((index, key, attempt, event)),
                None => to_read.push((index, key, attempt)),
            }
        }
        if !to_read.is_empty() {
            let positions = {
                let mirror = self.mirror()?;
                to_read
                    .iter()
                    .map(|(_, key, _)| {
                        mirror
                            .pending()
                            .get(key)
                            .map_or(0, |record| record.position)
                    })
                    .collect()
            };
            let events = self.handle.reader().events_at(positions).await?;
            for ((index, key, attempt), event) in to_read.into_iter().zip(events) {
                match event {
                    Some(event) => sends.push((index, key, attempt, event)),
                    // Retention removed it since the group took it in: nothing to send; the
                    // delivery runs out its ack_wait like a lost one, and after its
                    // max_deliveries becomes a dead letter without an event.
                    None => tracing::warn!(
                        group = %self.name,
                        key,
                        "a tracked event was removed by retention; it cannot be delivered"
                    ),
                }
            }
        }
        for (index, key, attempt, event) in sends {
            if let Some(member) = self.members.get(index) {
                member
                    .bytes
                    .fetch_add(event_weight(&event), Ordering::Relaxed);
                member
                    .out
                    .send(MemberOutput::Delivery {
                        key,
                        attempt,
                        event,
                    })
                    .ok();
            }
        }
        Ok(true)
    }

    /// Decides `command` over the mirror and makes its changes there.
    fn decide_on_mirror(
        &mut self,
        command: ConsumerCommand,
    ) -> Result<ConsumerResponse, ServiceError> {
        let mirror = self
            .mirror
            .as_mut()
            .ok_or_else(|| ServiceError::Internal("the group is not loaded".to_string()))?;
        let (changes, response) = decide(&*mirror, &command, 0, |_| Ok(0))?;
        mirror.apply(changes);
        Ok(response)
    }

    /// Queues an expiry for each delivery whose `ack_wait` ran out.
    fn expire_deliveries(&mut self) {
        let now = Instant::now();
        let expired: Vec<(u64, u32)> = self
            .deadlines
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(key, (attempt, _))| (*key, *attempt))
            .collect();
        for (key, attempt) in expired {
            self.deadlines.remove(&key);
            self.expire(key, attempt, "not settled within ack_wait");
        }
    }

    /// Which tracked events to deliver now, and which new events to take in from the
    /// frontier (delivered at once, or held behind their stream), within the group's
    /// in-flight limit and the members' credit: the redeliveries, the advance, who gets what
    /// (member index, key, attempt; redeliveries first, in order), and the new events read.
    #[allow(clippy::type_complexity)]
    async fn plan(
        &mut self,
        now: u64,
        settings: &evlog_raft_store::consumer::ConsumerSettings,
    ) -> Result<
        (
            Vec<Redelivery>,
            Option<Advance>,
            Vec<(usize, u64, u32)>,
            HashMap<u64, RecordedEvent>,
        ),
        ServiceError,
    > {
        let mut redeliveries = Vec::new();
        let mut delivered_to = Vec::new();
        let mut new_events = HashMap::new();
        let mut room: Vec<Room> = self.members.iter().map(Member::room).collect();
        let (mut capacity, ready) = {
            let mirror = self.mirror()?;
            let capacity = (settings.max_in_flight as usize)
                .saturating_sub(mirror.in_flight_count())
                .min(MAX_STEP_ITEMS);
            (capacity, mirror.ready(now, capacity))
        };
        if capacity == 0 || !room.iter().any(Room::fits) {
            return Ok((redeliveries, None, delivered_to, new_events));
        }
        // Redelivered events are read from the log after the step commits: at most a batch's
        // bytes of them per step (the new events' scan has its own).
        let mut step_room = Room {
            count: u32::MAX,
            bytes: self.max_batch_bytes,
        };
        for (key, attempts) in ready {
            let bytes = self
                .mirror()?
                .pending()
                .get(&key)
                .map_or(0, |record| record.event_bytes as usize);
            if !step_room.fits() {
                break;
            }
            let Some(index) = self.pick_member(&room) else {
                break;
            };
            room[index].take(bytes);
            step_room.take(bytes);
            capacity -= 1;
            redeliveries.push(Redelivery {
                key,
                attempts,
                member: self.members[index].id.clone(),
            });
            delivered_to.push((index, key, attempts + 1));
        }
        let head = self.handle.applied().head_position;
        let (target, filter, from, room_to_track) = {
            let mirror = self.mirror()?;
            (
                mirror.record.target.clone(),
                event_filter(&mirror.record),
                mirror.record.frontier,
                settings
                    .max_tracked()
                    .saturating_sub(mirror.tracked_count()),
            )
        };
        if capacity == 0 || room_to_track == 0 || self.head_seen == Some(head) {
            return Ok((redeliveries, None, delivered_to, new_events));
        }
        // Every event the scan reads past the first one no member has room for is read and
        // decoded for nothing: read what the members can take now and, in KEYED mode, a
        // bounded number more to hold behind their streams.
        let keyed = settings.mode == DispatchMode::Keyed;
        let deliverable = match self.active_member() {
            Some(active) => room[active].fits().then_some(room[active].count as usize),
            None => Some(
                room.iter()
                    .filter(|room| room.fits())
                    .map(|room| room.count as usize)
                    .sum(),
            ),
        }
        .unwrap_or(0)
        .min(capacity);
        let to_read = room_to_track
            .min(MAX_STEP_ITEMS)
            .min(deliverable + if keyed { MAX_HELD_PER_SCAN } else { 0 });
        if to_read == 0 {
            return Ok((redeliveries, None, delivered_to, new_events));
        }
        let scan = self
            .handle
            .reader()
            .scan(
                read_target(&target),
                from,
                PageLimit {
                    max_count: to_read,
                    max_bytes: self.max_batch_bytes,
                },
                Arc::new(filter),
                MAX_LOOKED_AT,
            )
            .await?;
        if let Some(first) = scan.out_of_range {
            // Retention removed events the group had not taken in: its frontier moves past
            // them (the log has nothing else to give), and the gap is reported.
            tracing::warn!(
                group = %self.name,
                from,
                to = first,
                "retention removed events below the group's frontier before it took them in; \
                 the frontier moves past them"
            );
            let advance = Advance {
                from,
                to: first,
                taken: Vec::new(),
            };
            return Ok((redeliveries, Some(advance), delivered_to, new_events));
        }
        let by_version = matches!(target, ConsumerTarget::Stream(_));
        let mut to = scan.next_from;
        let mut taken = Vec::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut stopped = false;
        let reached_head = scan.reached_head();
        let scanned_head = scan.head_position;
        for event in scan.events {
            let key = if by_version {
                event.stream_version
            } else {
                event.position
            };
            let hold =
                keyed && (busy.contains(&event.stream) || self.mirror()?.must_hold(&event.stream));
            let deliver_to = if hold {
                None
            } else {
                match (capacity > 0).then(|| self.pick_member(&room)).flatten() {
                    Some(index) => {
                        room[index].take(event.size());
                        capacity -= 1;
                        Some(index)
                    }
                    None => {
                        // No room: the frontier stops before this event.
                        to = key;
                        stopped = true;
                        break;
                    }
                }
            };
            if keyed {
                busy.insert(event.stream.clone());
            }
            if let Some(index) = deliver_to {
                delivered_to.push((index, key, 1));
            }
            taken.push(NewPending {
                key,
                position: event.position,
                stream: event.stream.clone(),
                event_timestamp_ms: event.timestamp_ms,
                event_bytes: u32::try_from(event.size()).unwrap_or(u32::MAX),
                deliver_to: deliver_to.map(|index| self.members[index].id.clone()),
            });
            new_events.insert(key, event);
        }
        if !stopped && reached_head {
            self.head_seen = Some(scanned_head);
        }
        let advance = (to != from).then_some(Advance { from, to, taken });
        Ok((redeliveries, advance, delivered_to, new_events))
    }

    /// Tells each member how its settlements ended (after the step committed).
    fn answer_settlements(&mut self, settling: Vec<(String, MemberSettlement)>, settled: &[bool]) {
        let mut answers: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for ((member, settlement), ok) in settling.into_iter().zip(settled) {
            if *ok {
                self.deadlines.remove(&settlement.key);
                if let Some(m) = self.members.iter_mut().find(|m| m.id == member) {
                    m.in_flight = m.in_flight.saturating_sub(1);
                }
            }
            if !member.is_empty() {
                answers
                    .entry(member)
                    .or_default()
                    .push((settlement.delivery_id, *ok));
            }
        }
        for (member, results) in answers {
            if let Some(m) = self.members.iter().find(|m| m.id == member) {
                m.bytes
                    .fetch_add(results.len() * SETTLED_WEIGHT, Ordering::Relaxed);
                m.out.send(MemberOutput::Settled(results)).ok();
            }
        }
    }

    fn revoke_all(&mut self, why: ServiceError) {
        for member in self.members.drain(..) {
            member
                .out
                .send(MemberOutput::Revoked(copy_error(&why)))
                .ok();
        }
    }
}

/// Why a dispatcher ended, for each member: a refusal a client acts on (find the leader, the
/// group is gone, retry) keeps its kind.
fn copy_error(error: &ServiceError) -> ServiceError {
    match error {
        ServiceError::NotLeader(hint) => ServiceError::NotLeader(hint.clone()),
        ServiceError::ConsumerNotFound { name } => {
            ServiceError::ConsumerNotFound { name: name.clone() }
        }
        ServiceError::ShuttingDown => ServiceError::ShuttingDown,
        ServiceError::Busy(message) => ServiceError::Busy(message.clone()),
        other => ServiceError::Discarded(format!(
            "the consumer group's dispatcher on this node ended ({other}); join again"
        )),
    }
}
