//! Replica checks proposed through the log ([`Command::Check`](crate::types::Command::Check)).
//! As a member applies a check entry it opens a read transaction: the state exactly as the log
//! stands at that entry (applies are sequential, and the entries after it are not handed to
//! the writer until the transaction is open, see `state_machine::store`). It hashes the range
//! in that transaction on a blocking thread. So every member hashes the same state, however
//! far ahead or behind the others it applies, and whatever retention removes after the entry.
//! The latest results stay in memory for `Maintenance.Checksum` to hand out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::watch;

use super::checksum::Checksum;
use super::checksum::MAX_CHECKPOINTS;
use super::checksum::checksum;
use crate::types::CheckRange;

/// Most checks one node hashes at once; a check applied while as many run fails on this node
/// (each reads its whole range and holds a read transaction meanwhile).
pub const MAX_RUNNING_CHECKS: usize = 2;

/// Results kept per node (the latest checks applied).
pub const KEPT_CHECKS: usize = 8;

/// A check's result on this node: the hash, or why there is none.
pub type CheckOutcome = Result<Checksum, String>;

/// Filled in once the hash is done.
pub type PendingCheck = watch::Receiver<Option<CheckOutcome>>;

#[derive(Default)]
pub(crate) struct Checks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: usize,
    /// By the check entry's log index, oldest first.
    kept: VecDeque<(u64, PendingCheck)>,
}

impl Checks {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers the check at log index `index` before its entry is applied, so that a caller
    /// who sees it applied finds it (pending until [`Checks::start`]).
    pub fn expect(&self, index: u64) -> Expected {
        let (done, pending) = watch::channel(None);
        let mut inner = self.inner();
        if inner.kept.len() == KEPT_CHECKS {
            inner.kept.pop_front();
        }
        inner.kept.push_back((index, pending));
        Expected { index, done }
    }

    /// Hashes `range` as `txn` sees it (the state at the check entry, whose log head was
    /// `head`), in the background.
    pub fn start(
        self: &Arc<Self>,
        expected: Expected,
        range: CheckRange,
        head: u64,
        txn: Result<redb::ReadTransaction, String>,
    ) {
        let Expected { index, done } = expected;
        let started = {
            let mut inner = self.inner();
            let start = inner.running < MAX_RUNNING_CHECKS;
            inner.running += usize::from(start);
            start
        };
        if !started {
            done.send_replace(Some(Err(format!(
                "this node hashed {MAX_RUNNING_CHECKS} checks already when check {index} applied"
            ))));
            return;
        }
        let running = Running(Arc::clone(self));
        tokio::task::spawn_blocking(move || {
            let outcome = txn.and_then(|txn| hash(&txn, range, head));
            drop(running);
            done.send_replace(Some(outcome));
        });
    }

    /// The check at log index `index`, if this node applied it since it started and still
    /// keeps it.
    pub fn get(&self, index: u64) -> Option<PendingCheck> {
        self.inner()
            .kept
            .iter()
            .find(|(kept, _)| *kept == index)
            .map(|(_, pending)| pending.clone())
    }
}

/// A check registered before its entry applies; dropped without [`Checks::start`] (the apply
/// failed), its callers learn that it stopped.
pub(crate) struct Expected {
    index: u64,
    done: watch::Sender<Option<CheckOutcome>>,
}

/// Counts a running hash until it ends, however it ends.
struct Running(Arc<Checks>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.inner().running -= 1;
    }
}

/// Checks a range against the log's head at the entry: `from` ≥ 1, `to` (0: the head) at most
/// the head, `step` ≥ 1, at most [`MAX_CHECKPOINTS`].
pub fn validate(range: CheckRange, head: u64) -> Result<(u64, u64, u64), String> {
    let to = if range.to == 0 { head } else { range.to };
    if range.from == 0 {
        return Err("positions start at 1: give from_position >= 1".to_string());
    }
    if to > head {
        return Err(format!("position {to} is past the log's head {head}"));
    }
    if to < range.from {
        return Ok((range.from, to, 1));
    }
    let span = to - range.from + 1;
    let step = if range.step == 0 { span } else { range.step };
    if span / step > MAX_CHECKPOINTS {
        return Err(format!(
            "{} checkpoints asked for; at most {MAX_CHECKPOINTS} (use a step of at least {})",
            span / step,
            span.div_ceil(MAX_CHECKPOINTS)
        ));
    }
    Ok((range.from, to, step))
}

fn hash(txn: &redb::ReadTransaction, range: CheckRange, head: u64) -> CheckOutcome {
    let (from, to, step) = validate(range, head)?;
    if to < from {
        // Nothing to hash: the log held no event in the range.
        return Ok(Checksum::empty(from, to));
    }
    let mut sum = checksum(txn, from, to, step).map_err(|error| error.to_string())?;
    if step == to - from + 1 {
        sum.checkpoints.clear();
    }
    Ok(sum)
}
