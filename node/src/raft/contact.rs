//! Whether this node is in touch with a leader that holds a quorum. A subscription waiting at
//! the head on a partitioned node would otherwise wait in silence for events that never come
//! (etcd's watch without `WithRequireLeader`, nats.go#2063): it ends instead, and the client
//! resumes on a node that is in touch.
//!
//! While anything watches, one task per node confirms a read index every `check_every` (with
//! the leader: a quorum round on the leader, a `ReadIndex` call on a follower, shared with the
//! linearizable reads waiting then). When none has been confirmed for `lost_after`, it
//! publishes that contact is lost, and again after every failed check while it stays lost,
//! so a watch that began during the loss sees it too. Nothing is probed while nobody
//! watches.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::raft::RaftHandle;

/// What the monitor knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contact {
    /// A read index was confirmed within `lost_after` (or nobody has watched since).
    InTouch,
    /// None was confirmed for `lost_after`, as of `at`.
    Lost { at: Instant },
    /// The node is shutting down: every watch ends.
    Closed,
}

/// The node's leader-contact monitor. Dropping it stops the task.
pub struct LeaderContact {
    state: watch::Sender<Contact>,
    watchers: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    lost_after: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderContact {
    /// Starts the monitor: a check every `check_every`, each bounded by `lost_after`;
    /// contact is lost when none succeeded for `lost_after`.
    pub fn start(handle: RaftHandle, check_every: Duration, lost_after: Duration) -> Self {
        let (state, _) = watch::channel(Contact::InTouch);
        let watchers = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(monitor(
            handle,
            state.clone(),
            Arc::clone(&watchers),
            Arc::clone(&wake),
            check_every,
            lost_after,
        ));
        Self {
            state,
            watchers,
            wake,
            lost_after,
            task,
        }
    }

    /// A watch that reports a loss of contact from now on (see [`ContactWatch::lost`]).
    pub fn watch(&self) -> ContactWatch {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
        ContactWatch {
            state: self.state.subscribe(),
            since: Instant::now(),
            lost_after: self.lost_after,
            _registration: Registration {
                watchers: Arc::clone(&self.watchers),
            },
        }
    }

    /// Ends every watch (the node is shutting down).
    pub fn close(&self) {
        self.state.send_replace(Contact::Closed);
        self.task.abort();
    }
}

impl Drop for LeaderContact {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactLost {
    /// No read index confirmed for this long.
    NoLeader { after: Duration },
    /// The node is shutting down.
    Closed,
}

/// One watcher's view of the monitor; the monitor probes while any exists.
pub struct ContactWatch {
    state: watch::Receiver<Contact>,
    since: Instant,
    lost_after: Duration,
    _registration: Registration,
}

impl ContactWatch {
    /// Resolves when contact is lost after this watch began, or the node shuts down.
    pub async fn lost(&mut self) -> ContactLost {
        let since = self.since;
        let lost = self.state.wait_for(|contact| match contact {
            Contact::InTouch => false,
            Contact::Lost { at } => *at > since,
            Contact::Closed => true,
        });
        match lost.await.map(|contact| *contact) {
            Ok(Contact::Lost { .. }) => ContactLost::NoLeader {
                after: self.lost_after,
            },
            Ok(_) | Err(_) => ContactLost::Closed,
        }
    }

    /// Whether [`Self::lost`] would resolve at once.
    pub fn is_lost(&self) -> Option<ContactLost> {
        match *self.state.borrow() {
            Contact::InTouch => None,
            Contact::Lost { at } if at <= self.since => None,
            Contact::Lost { .. } => Some(ContactLost::NoLeader {
                after: self.lost_after,
            }),
            Contact::Closed => Some(ContactLost::Closed),
        }
    }
}

struct Registration {
    watchers: Arc<AtomicUsize>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn monitor(
    handle: RaftHandle,
    state: watch::Sender<Contact>,
    watchers: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    check_every: Duration,
    lost_after: Duration,
) {
    let mut last_confirmed = Instant::now();
    loop {
        if watchers.load(Ordering::Acquire) == 0 {
            // Idle: nothing to tell anyone. The first watcher confirmed a read index when it
            // began (a subscription starts with one), so the clock starts again then.
            wake.notified().await;
            last_confirmed = Instant::now();
            state.send_if_modified(|contact| {
                let was_lost = matches!(contact, Contact::Lost { .. });
                if was_lost {
                    *contact = Contact::InTouch;
                }
                was_lost
            });
            continue;
        }
        let lost = matches!(*state.borrow(), Contact::Lost { .. });
        let confirmed = tokio::select! {
            result = tokio::time::timeout(lost_after, handle.confirm_read_index()) => {
                matches!(result, Ok(Ok(_)))
            }
            // A check that hangs must not delay the news past `lost_after`.
            () = tokio::time::sleep_until(last_confirmed + lost_after), if !lost => false,
        };
        let now = Instant::now();
        if confirmed {
            last_confirmed = now;
            state.send_if_modified(|contact| {
                let was_lost = matches!(contact, Contact::Lost { .. });
                if was_lost {
                    tracing::info!("in touch with a leader again");
                    *contact = Contact::InTouch;
                }
                was_lost
            });
        } else if now.duration_since(last_confirmed) >= lost_after {
            if !matches!(*state.borrow(), Contact::Lost { .. }) {
                tracing::warn!(
                    "no read index confirmed by a leader for {} ms: ending subscriptions",
                    lost_after.as_millis()
                );
            }
            state.send_replace(Contact::Lost { at: now });
        }
        tokio::time::sleep(check_every).await;
    }
}
