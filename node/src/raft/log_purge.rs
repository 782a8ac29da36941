//! When the log is purged: the entries a snapshot covers, but the last
//! `--log-keep-after-snapshot` of them, and on a leader never the entries a member needs after
//! a snapshot it is being sent.
//!
//! openraft's own policy purged on that count alone, and a member catching up through a
//! snapshot never caught up when its install took longer than the leader took to write the
//! kept entries: by the time it had installed snapshot `S`, the leader had purged past `S`
//! and sent the next snapshot, stale in its turn (the chaos campaign's `wipe-rejoin` fault
//! under the `coalesced` load, AddLearner timing out after 120 s). So openraft's policy is off
//! (its keep count set to the largest there is) and this task purges instead: every
//! [`CHECK_INTERVAL`], up to what the count allows, but on a leader not past a snapshot it is
//! sending a member, nor past that member's matching entry for [`HOLD_AFTER_SEND`] after the
//! snapshot arrived, while the member catches up on the entries since. Both are bounded: a
//! send by the snapshot transfer timeout, the hold by its time, so a member that dies
//! mid-catch-up holds the log back for at most that long.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use evlog_raft_store::type_config::NodeId;
use openraft::async_runtime::watch::WatchReceiver;

use crate::raft::Raft;

/// How often the task looks whether the log may be purged further: soon after each snapshot,
/// as openraft's own purge did (at 250 ms the log grew enough meanwhile to double a database
/// file that `--retention-max-bytes` keeps small, `retention.rs`'s load test).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// How long after a snapshot arrived its member may keep the log from being purged past its
/// matching entry.
pub const HOLD_AFTER_SEND: Duration = Duration::from_secs(60);

/// The snapshots this node is sending, or sent lately, per member.
#[derive(Clone, Default)]
pub struct SnapshotHolds {
    holds: Arc<Mutex<HashMap<NodeId, Hold>>>,
}

#[derive(Clone, Copy, Debug)]
struct Hold {
    /// The last log index the snapshot covers: the member needs the entries after it.
    index: u64,
    /// Until when the hold counts; `None` while the snapshot is being sent.
    until: Option<Instant>,
}

impl SnapshotHolds {
    /// Records that a snapshot covering up to `index` is being sent to `target`; the returned
    /// guard, dropped when the send ends (however it ends), starts [`HOLD_AFTER_SEND`].
    pub fn sending(&self, target: NodeId, index: u64) -> SendingSnapshot {
        self.lock().insert(target, Hold { index, until: None });
        SendingSnapshot {
            holds: self.clone(),
            target,
            index,
        }
    }

    /// The highest log index that may be purged for the members' sake (`None`: any), given
    /// each member's matching index (`matching`), dropping holds that have run out.
    fn floor(&self, now: Instant, matching: impl Fn(NodeId) -> Option<u64>) -> Option<u64> {
        let mut holds = self.lock();
        holds.retain(|_, hold| hold.until.is_none_or(|until| now < until));
        holds
            .iter()
            .map(|(&member, hold)| match hold.until {
                None => hold.index,
                Some(_) => matching(member).unwrap_or(0).max(hold.index),
            })
            .min()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Hold>> {
        self.holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A snapshot on its way to a member (see [`SnapshotHolds::sending`]).
pub struct SendingSnapshot {
    holds: SnapshotHolds,
    target: NodeId,
    index: u64,
}

impl Drop for SendingSnapshot {
    fn drop(&mut self) {
        let mut holds = self.holds.lock();
        // A later send to the same member replaced this one's hold: leave that be.
        if let Some(hold) = holds.get_mut(&self.target)
            && hold.index == self.index
            && hold.until.is_none()
        {
            hold.until = Some(Instant::now() + HOLD_AFTER_SEND);
        }
    }
}

/// The highest log index the snapshot policy lets go: all but the last `keep` entries the
/// newest snapshot (ending at `snapshot`) covers (openraft's `max_in_snapshot_log_to_keep`).
fn policy_upto(snapshot: u64, keep: u64) -> Option<u64> {
    (snapshot + 1).checked_sub(keep)?.checked_sub(1)
}

/// Purges the log as the module says, until the Raft core stops.
pub async fn run(raft: Raft, holds: SnapshotHolds, keep: u64) {
    let metrics = raft.metrics();
    let mut every = tokio::time::interval(CHECK_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether a snapshot held the purge back at the last look (said in the log when it changes).
    let mut was_held = false;
    // The furthest purge asked of openraft: asked once, not at every look while openraft waits
    // for a replication still reading those entries.
    let mut asked: Option<u64> = None;
    loop {
        every.tick().await;
        let (upto, purged, held) = {
            let now = metrics.borrow_watched();
            if now.running_state.is_err() {
                return;
            }
            let Some(upto) = now
                .snapshot
                .as_ref()
                .and_then(|snapshot| policy_upto(snapshot.index, keep))
            else {
                continue;
            };
            let replication = now.replication.as_ref();
            let matching = |member: NodeId| {
                replication
                    .and_then(|members| members.get(&member))
                    .and_then(|log_id| log_id.as_ref().map(|log_id| log_id.index))
            };
            let floor = holds.floor(Instant::now(), matching);
            (
                floor.map_or(upto, |floor| floor.min(upto)),
                now.purged.as_ref().map(|log_id| log_id.index),
                floor.is_some_and(|floor| floor < upto),
            )
        };
        if held != was_held {
            if held {
                tracing::info!(
                    upto,
                    "log purge held back for a member caught up by snapshot"
                );
            } else {
                tracing::info!("log purge no longer held back for a snapshot");
            }
            was_held = held;
        }
        if purged.is_some_and(|purged| purged >= upto) || asked.is_some_and(|asked| asked >= upto) {
            continue;
        }
        if raft.trigger().purge_log(upto).await.is_err() {
            return;
        }
        asked = Some(upto);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_keeps_the_last_entries_a_snapshot_covers() {
        assert_eq!(policy_upto(100, 10), Some(90));
        assert_eq!(policy_upto(100, 0), Some(100));
        assert_eq!(policy_upto(9, 10), None);
        assert_eq!(policy_upto(10, 10), Some(0));
    }

    #[test]
    fn a_snapshot_holds_the_log_while_sent_then_for_a_while_after() {
        let holds = SnapshotHolds::default();
        let now = Instant::now();
        assert_eq!(holds.floor(now, |_| None), None);
        let sending = holds.sending(4, 500);
        // While sent, the member's matching entry does not count: it has not installed it.
        assert_eq!(holds.floor(now, |_| Some(10)), Some(500));
        drop(sending);
        // After: the snapshot or the member's matching entry, whichever is further.
        assert_eq!(holds.floor(Instant::now(), |_| Some(10)), Some(500));
        assert_eq!(holds.floor(Instant::now(), |_| Some(700)), Some(700));
        // Then it runs out.
        assert_eq!(
            holds.floor(Instant::now() + HOLD_AFTER_SEND, |_| Some(700)),
            None
        );
        assert_eq!(holds.floor(Instant::now(), |_| Some(700)), None);
    }

    #[test]
    fn a_newer_send_to_the_member_replaces_the_older() {
        let holds = SnapshotHolds::default();
        let first = holds.sending(4, 500);
        let second = holds.sending(4, 800);
        drop(first);
        // The older send ending does not start the newer one's hold.
        assert_eq!(
            holds.floor(Instant::now() + HOLD_AFTER_SEND * 2, |_| None),
            Some(800)
        );
        drop(second);
        let other = holds.sending(5, 300);
        assert_eq!(holds.floor(Instant::now(), |_| Some(900)), Some(300));
        drop(other);
    }
}
