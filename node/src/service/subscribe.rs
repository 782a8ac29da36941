//! Subscriptions: a cursor over the applied log. Each batch is read in its own short read
//! transaction from where the last one stopped; at the head the subscription waits for the
//! applied head to move. There is no queue of events per subscriber: a slow or paused client
//! costs a waiting task and at most one batch, HTTP/2 flow control holds the rest back, and
//! nothing is ever dropped.
//!
//! A subscription starts with a read index confirmed by the leader (so its first `caught_up`
//! covers every append acknowledged before it began), and ends with `UNAVAILABLE` when the
//! node loses touch with a leader (`raft/contact.rs`) or shuts down: the client resumes from
//! the last `next_from` on another node, exactly.

use std::sync::Arc;
use std::time::Duration;

use evlog_raft_store::EventReader;
use evlog_raft_store::PageLimit;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::reader::EventFilter;
use evlog_raft_store::reader::SubscribeStart;
use evlog_raft_store::types::AppliedState;
use evlog_raft_store::types::RecordedEvent;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Limits;
use crate::raft::RaftHandle;
use crate::raft::contact::ContactLost;
use crate::raft::contact::ContactWatch;
use crate::raft::contact::LeaderContact;
use crate::service::append;
use crate::service::error::ServiceError;

/// Events per batch when the request does not say.
pub const DEFAULT_BATCH_EVENTS: u32 = 256;
/// Most events per batch a request may ask for.
pub const MAX_BATCH_EVENTS: u32 = 4_096;
/// Most stream prefixes, and most event types, in a filter.
pub const MAX_FILTER_ENTRIES: usize = 64;
/// Longest event type in a filter, in bytes.
pub const MAX_FILTER_TYPE_BYTES: usize = 1_024;
/// A filtered subscription that skips events says where it got to at least this often.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Most events one read transaction looks at (a sparse filter may skip them all): keeps each
/// transaction short.
pub const MAX_LOOKED_AT: usize = 16_384;

/// A subscription as the client asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub target: ReadTarget,
    pub start: SubscribeStart,
    /// `all` target only.
    pub stream_prefixes: Vec<String>,
    pub event_types: Vec<String>,
    /// 0: the default.
    pub max_batch_events: u32,
    /// 0: none.
    pub at_least_position: u64,
}

/// What a subscription sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionItem {
    /// The first item: who serves, the head confirmed when the call began, where it starts.
    Subscribed {
        served_by: u64,
        head_position: u64,
        next_from: u64,
        /// The log's epoch (raised by a restore from a backup).
        epoch: u64,
    },
    Events {
        events: Vec<RecordedEvent>,
        next_from: u64,
    },
    CaughtUp {
        head_position: u64,
        next_from: u64,
    },
    Checkpoint {
        next_from: u64,
        head_position: u64,
    },
    FellBehind {
        lag_events: u64,
        head_position: u64,
        next_from: u64,
    },
}

/// The node's subscriptions: how many may run, and the leader-contact monitor they watch.
pub struct Subscriptions {
    permits: Arc<Semaphore>,
    max: usize,
    contact: LeaderContact,
    /// Where each running subscription is (for metrics); entries of ended ones are pruned.
    progress: Arc<std::sync::Mutex<Vec<std::sync::Weak<Progress>>>>,
}

/// Where one subscription is: its cursor and whether it is at the head.
#[derive(Debug, Default)]
struct Progress {
    /// The next position (an `all` subscription) or stream version it reads.
    cursor: std::sync::atomic::AtomicU64,
    all: bool,
    live: std::sync::atomic::AtomicBool,
}

/// The node's subscriptions as metrics see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionsBehind {
    /// Subscriptions not at the head (catching up, or fallen behind).
    pub behind: usize,
    /// The most events an `all` subscription has to read to reach `head` (0 if none).
    pub max_all_lag_events: u64,
}

impl Subscriptions {
    /// `contact_check_every` and `contact_lost_after`: see [`LeaderContact::start`].
    pub fn new(
        handle: &RaftHandle,
        limits: &Limits,
        contact_check_every: Duration,
        contact_lost_after: Duration,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_subscriptions)),
            max: limits.max_subscriptions,
            progress: Arc::default(),
            contact: LeaderContact::start(handle.clone(), contact_check_every, contact_lost_after),
        }
    }

    /// How many subscriptions this node serves now.
    pub fn active(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// How far behind the running subscriptions are, with `head` the last applied position.
    pub fn behind(&self, head: u64) -> SubscriptionsBehind {
        use std::sync::atomic::Ordering;
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        progress.retain(|entry| entry.strong_count() > 0);
        let mut behind = SubscriptionsBehind::default();
        for entry in progress.iter().filter_map(std::sync::Weak::upgrade) {
            if !entry.live.load(Ordering::Relaxed) {
                behind.behind += 1;
            }
            if entry.all {
                let lag = (head + 1).saturating_sub(entry.cursor.load(Ordering::Relaxed));
                behind.max_all_lag_events = behind.max_all_lag_events.max(lag);
            }
        }
        behind
    }

    /// Ends every subscription (the node is shutting down).
    pub fn close(&self) {
        self.permits.close();
        self.contact.close();
    }
}

/// One running subscription; [`Subscription::next`] gives its items.
pub struct Subscription {
    reader: EventReader,
    applied: watch::Receiver<AppliedState>,
    contact: ContactWatch,
    node_id: u64,
    target: ReadTarget,
    filter: Arc<EventFilter>,
    limit: PageLimit,
    window_events: u64,
    /// Where the next batch starts.
    cursor: u64,
    /// It has reached the head and not fallen behind since.
    live: bool,
    /// The cursor moved past events not delivered since the last item said where it was.
    unreported: bool,
    last_item_at: Instant,
    /// Items to send before reading on.
    pending: Vec<SubscriptionItem>,
    ended: bool,
    /// Shared with [`Subscriptions`] for metrics.
    progress: Arc<Progress>,
    _permit: OwnedSemaphorePermit,
}

/// Checks a filter's stream prefixes and event types against the limits.
pub fn validate_filter(
    stream_prefixes: &[String],
    event_types: &[String],
) -> Result<(), ServiceError> {
    for (what, entries, max_bytes) in [
        (
            "stream prefixes",
            stream_prefixes,
            append::MAX_STREAM_NAME_BYTES,
        ),
        ("event types", event_types, MAX_FILTER_TYPE_BYTES),
    ] {
        if entries.len() > MAX_FILTER_ENTRIES {
            return Err(ServiceError::TooLarge(format!(
                "the filter lists {} {what}; the limit is {MAX_FILTER_ENTRIES}",
                entries.len()
            )));
        }
        if let Some(entry) = entries.iter().find(|entry| entry.len() > max_bytes) {
            return Err(ServiceError::InvalidArgument(format!(
                "a filter's {what} are at most {max_bytes} bytes each; one is {}",
                entry.len()
            )));
        }
        if entries.iter().any(String::is_empty) {
            return Err(ServiceError::InvalidArgument(format!(
                "a filter's {what} must not be empty (leave the list empty to match any)"
            )));
        }
    }
    Ok(())
}

/// Checks a subscription request and builds its filter.
fn validate(
    request: &SubscribeRequest,
    limits: &Limits,
) -> Result<(EventFilter, PageLimit), ServiceError> {
    let filtered = !request.stream_prefixes.is_empty() || !request.event_types.is_empty();
    match &request.target {
        ReadTarget::Stream(stream) => {
            append::validate_stream_name_to_read(stream)?;
            if filtered {
                return Err(ServiceError::InvalidArgument(
                    "a filter applies to the `all` target only; a stream subscription delivers \
                     every event of its stream"
                        .to_string(),
                ));
            }
        }
        ReadTarget::All => {}
    }
    validate_filter(&request.stream_prefixes, &request.event_types)?;
    let max_count = match request.max_batch_events {
        0 => DEFAULT_BATCH_EVENTS,
        n if n > MAX_BATCH_EVENTS => {
            return Err(ServiceError::TooLarge(format!(
                "max_batch_events {n} exceeds the limit of {MAX_BATCH_EVENTS} events per batch"
            )));
        }
        n => n,
    };
    let filter = EventFilter {
        stream_prefixes: request.stream_prefixes.clone(),
        event_types: request.event_types.clone(),
        min_timestamp_ms: match request.start {
            SubscribeStart::Time(time_ms) => time_ms,
            _ => 0,
        },
    };
    let limit = PageLimit {
        max_count: max_count as usize,
        max_bytes: limits.max_batch_bytes.min(limits.max_read_bytes),
    };
    Ok((filter, limit))
}

/// Starts a subscription: checks the request, takes one of the node's subscription slots,
/// confirms a read index with the leader (and waits for `at_least_position`), and resolves
/// where it starts. Everything that can refuse it happens here, before the first item.
pub async fn subscribe(
    handle: &RaftHandle,
    subscriptions: &Subscriptions,
    limits: &Limits,
    request_timeout: Duration,
    request: SubscribeRequest,
) -> Result<Subscription, ServiceError> {
    let (filter, limit) = validate(&request, limits)?;
    let permit = Arc::clone(&subscriptions.permits)
        .try_acquire_owned()
        .map_err(|error| match error {
            tokio::sync::TryAcquireError::Closed => ServiceError::ShuttingDown,
            tokio::sync::TryAcquireError::NoPermits => ServiceError::Busy(format!(
                "this node serves {} subscriptions, its limit (--max-subscriptions); subscribe \
                 on another node or later",
                limits.max_subscriptions
            )),
        })?;
    // Watching from before the read index: a loss of contact after it ends the subscription.
    let contact = subscriptions.contact.watch();
    let deadline = Instant::now() + request_timeout;
    handle
        .linearize(request_timeout)
        .await
        .map_err(ServiceError::ReadIndex)?;
    if request.at_least_position > 0 {
        handle
            .wait_position(request.at_least_position, deadline)
            .await
            .map_err(|error| ServiceError::ReadIndex(error.into()))?;
    }
    let reader = handle.reader().clone();
    let start = reader
        .subscription_start(request.target.clone(), request.start)
        .await?;
    if let Some(first) = start.out_of_range {
        return Err(crate::service::event_log::out_of_range(
            &request.target,
            start.next_from,
            first,
        ));
    }
    let progress = Arc::new(Progress {
        cursor: std::sync::atomic::AtomicU64::new(start.next_from),
        all: matches!(request.target, ReadTarget::All),
        live: std::sync::atomic::AtomicBool::new(false),
    });
    {
        let mut registered = subscriptions
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Pruned here too, so the list stays within the subscriptions running.
        registered.retain(|entry| entry.strong_count() > 0);
        registered.push(Arc::downgrade(&progress));
    }
    let subscribed = SubscriptionItem::Subscribed {
        served_by: handle.node_id(),
        head_position: start.head_position,
        next_from: start.next_from,
        epoch: handle.applied().epoch,
    };
    Ok(Subscription {
        reader,
        applied: handle.applied_watch(),
        contact,
        node_id: handle.node_id(),
        target: request.target,
        filter: Arc::new(filter),
        limit,
        window_events: limits.subscription_window_events,
        cursor: start.next_from,
        live: false,
        unreported: false,
        last_item_at: Instant::now(),
        pending: vec![subscribed],
        ended: false,
        progress,
        _permit: permit,
    })
}

impl Subscription {
    /// The next item; `None` after an error ended the subscription. It never ends otherwise.
    pub async fn next(&mut self) -> Option<Result<SubscriptionItem, ServiceError>> {
        if self.ended {
            return None;
        }
        let item = match self.pending.pop() {
            Some(item) => Ok(item),
            None => self.read_on().await,
        };
        match &item {
            Ok(_) => self.last_item_at = Instant::now(),
            Err(_) => self.ended = true,
        }
        self.progress
            .cursor
            .store(self.cursor, std::sync::atomic::Ordering::Relaxed);
        self.progress
            .live
            .store(self.live, std::sync::atomic::Ordering::Relaxed);
        Some(item)
    }

    /// Reads on from the cursor until there is something to send.
    async fn read_on(&mut self) -> Result<SubscriptionItem, ServiceError> {
        loop {
            if let Some(lost) = self.contact.is_lost() {
                return Err(self.contact_error(lost));
            }
            let scan = self
                .reader
                .scan(
                    self.target.clone(),
                    self.cursor,
                    self.limit,
                    Arc::clone(&self.filter),
                    MAX_LOOKED_AT,
                )
                .await?;
            if let Some(first) = scan.out_of_range {
                // Retention removed what comes next: the client decides (never a silent jump).
                return Err(crate::service::event_log::out_of_range(
                    &self.target,
                    self.cursor,
                    first,
                ));
            }
            let moved = scan.next_from > self.cursor;
            self.cursor = scan.next_from;
            if !scan.events.is_empty() {
                self.unreported = false;
                let lag_events = scan.lag();
                if self.live && lag_events > self.window_events {
                    self.live = false;
                    self.pending.push(SubscriptionItem::FellBehind {
                        lag_events,
                        head_position: scan.head_position,
                        next_from: self.cursor,
                    });
                }
                return Ok(SubscriptionItem::Events {
                    events: scan.events,
                    next_from: self.cursor,
                });
            }
            self.unreported |= moved;
            if scan.reached_head() && !self.live {
                self.live = true;
                self.unreported = false;
                return Ok(SubscriptionItem::CaughtUp {
                    head_position: scan.head_position,
                    next_from: self.cursor,
                });
            }
            let checkpoint_due = self.last_item_at + CHECKPOINT_INTERVAL;
            if self.unreported && Instant::now() >= checkpoint_due {
                self.unreported = false;
                return Ok(SubscriptionItem::Checkpoint {
                    next_from: self.cursor,
                    head_position: scan.head_position,
                });
            }
            if !scan.reached_head() {
                continue;
            }
            // At the head: wait for it to move, for a checkpoint to fall due, or for the
            // leader to be lost.
            let seen = scan.head_position;
            let unreported = self.unreported;
            let lost = tokio::select! {
                moved = self.applied.wait_for(|applied| applied.head_position > seen) => {
                    if moved.is_err() {
                        return Err(ServiceError::ShuttingDown);
                    }
                    None
                }
                lost = self.contact.lost() => Some(lost),
                () = tokio::time::sleep_until(checkpoint_due), if unreported => None,
            };
            if let Some(lost) = lost {
                return Err(self.contact_error(lost));
            }
        }
    }

    fn contact_error(&self, lost: ContactLost) -> ServiceError {
        match lost {
            ContactLost::NoLeader { after } => ServiceError::LeaderLost {
                node_id: self.node_id,
                after_ms: after.as_millis() as u64,
                next_from: self.cursor,
            },
            ContactLost::Closed => ServiceError::ShuttingDown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: ReadTarget) -> SubscribeRequest {
        SubscribeRequest {
            target,
            start: SubscribeStart::Beginning,
            stream_prefixes: vec![],
            event_types: vec![],
            max_batch_events: 0,
            at_least_position: 0,
        }
    }

    #[test]
    fn requests_are_checked_and_their_filter_built() {
        let limits = Limits::default();
        let (filter, limit) = validate(&request(ReadTarget::All), &limits).expect("valid");
        assert!(filter.matches_everything());
        assert_eq!(limit.max_count, DEFAULT_BATCH_EVENTS as usize);
        assert_eq!(limit.max_bytes, limits.max_batch_bytes);

        let mut timed = request(ReadTarget::Stream("orders".into()));
        timed.start = SubscribeStart::Time(42);
        timed.max_batch_events = MAX_BATCH_EVENTS;
        let (filter, limit) = validate(&timed, &limits).expect("valid");
        assert_eq!(filter.min_timestamp_ms, 42);
        assert_eq!(limit.max_count, MAX_BATCH_EVENTS as usize);
        let small_reads = Limits {
            max_read_bytes: 5_000,
            ..Limits::default()
        };
        let (_, limit) = validate(&timed, &small_reads).expect("valid");
        assert_eq!(limit.max_bytes, 5_000, "a batch is capped like a read page");

        let refused = |request: SubscribeRequest| validate(&request, &limits).expect_err("refused");
        let mut filtered_stream = request(ReadTarget::Stream("orders".into()));
        filtered_stream.event_types = vec!["Placed".into()];
        assert!(matches!(
            refused(filtered_stream),
            ServiceError::InvalidArgument(_)
        ));
        assert!(matches!(
            refused(request(ReadTarget::Stream("bad name!".into()))),
            ServiceError::InvalidArgument(_)
        ));
        let mut big_batch = request(ReadTarget::All);
        big_batch.max_batch_events = MAX_BATCH_EVENTS + 1;
        assert!(matches!(refused(big_batch), ServiceError::TooLarge(_)));
        let mut many = request(ReadTarget::All);
        many.stream_prefixes = vec!["p".into(); MAX_FILTER_ENTRIES + 1];
        assert!(matches!(refused(many), ServiceError::TooLarge(_)));
        let mut empty = request(ReadTarget::All);
        empty.event_types = vec![String::new()];
        assert!(matches!(refused(empty), ServiceError::InvalidArgument(_)));
        let mut long = request(ReadTarget::All);
        long.stream_prefixes = vec!["p".repeat(append::MAX_STREAM_NAME_BYTES + 1)];
        assert!(matches!(refused(long), ServiceError::InvalidArgument(_)));
    }
}
