//! Expiry by age and size, decided by the leader and proposed as Raft entries. Every replica
//! removes exactly what an entry says when it applies, so expiry never depends on a replica's
//! clock or its disk: the leader compares its clock with the events' recorded (leader-assigned)
//! timestamps, or counts the stored bytes of the retained events, and proposes "expire stream
//! S before version V" or "expire the log before position P". A new leader picks up where the
//! old one stopped; a proposal that fails is made again at the next check.
//!
//! Once per `check_interval_ms`, on the leader only:
//! - streams whose metadata sets `max_age_s` (at most [`STREAMS_PER_CHECK`] per check, going
//!   on where the last check stopped);
//! - the log-wide `--retention-max-age`: everything recorded before `now - max_age`;
//! - the log-wide `--retention-max-bytes`, a budget for the database file: the oldest events
//!   past 2/5 of it in stored event records ([`EVENT_SHARE_OF_MAX_BYTES`]), counted
//!   incrementally ([`ByteLedger`], at most [`SIZES_PER_CHECK`] events read per check) at a
//!   granularity of 1/64 of that.

use std::collections::VecDeque;
use std::time::Duration;
use std::time::SystemTime;

use evlog_raft_store::ReadTarget;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::RetentionCommand;

use crate::raft::RaftHandle;
use crate::service::error::ServiceError;
use crate::service::event_log::propose_error;

/// Most streams with a `max_age_s` one check looks at.
pub const STREAMS_PER_CHECK: usize = 256;
/// Most events whose sizes one check reads for the byte limit.
pub const SIZES_PER_CHECK: usize = 65_536;
/// The share of `--retention-max-bytes` the retained events' records may take: the rest of the
/// file is the stream index, the Raft log, B-tree pages part full, and free pages (redb grows a
/// file below 4 GiB by doubling it, so a file whose contents pass a size takes twice it).
/// Measured: 8 MiB of 1 KiB events took 10.7 MiB of pages with their index; with half of an
/// 8 MiB budget the leader's file still passed 1.5x it in 2 of 7 loaded test runs (it also
/// holds read transactions while it sends snapshots to lagging followers), so 2/5.
pub const EVENT_SHARE_OF_MAX_BYTES: (u64, u64) = (2, 5);
/// The byte ledger keeps a mark every 1/this of the limit (its granularity).
const MARKS_PER_LIMIT: u64 = 64;

/// The log-wide limits and how often the leader checks them (`evlog serve` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `--retention-max-age`: events recorded longer ago are removed (`None`: kept).
    pub max_age_s: Option<u64>,
    /// `--retention-max-bytes`: a budget for the database file; the oldest events past half of
    /// it (in stored event records) are removed.
    pub max_bytes: Option<u64>,
    /// `--retention-check-interval-ms`: how often the leader looks.
    pub check_interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age_s: None,
            max_bytes: None,
            check_interval_ms: 5_000,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the leader's checks until the task is aborted.
pub async fn run(handle: RaftHandle, config: RetentionConfig, request_timeout: Duration) {
    let mut task = RetentionTask {
        handle,
        config,
        request_timeout,
        next_stream: None,
        ledger: ByteLedger::default(),
    };
    let mut ticks = tokio::time::interval(Duration::from_millis(config.check_interval_ms.max(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !task.handle.is_leader() {
            // A later term starts over: the log may have moved on meanwhile.
            task.ledger = ByteLedger::default();
            continue;
        }
        if let Err(error) = task.check().await {
            tracing::warn!("retention check failed (tried again at the next): {error}");
        }
    }
}

struct RetentionTask {
    handle: RaftHandle,
    config: RetentionConfig,
    request_timeout: Duration,
    /// Where the next check goes on among the streams with a `max_age_s`.
    next_stream: Option<String>,
    ledger: ByteLedger,
}

impl RetentionTask {
    async fn check(&mut self) -> Result<(), ServiceError> {
        let now = now_ms();
        let reader = self.handle.reader().clone();
        let streams = reader
            .streams_with_max_age(self.next_stream.take(), STREAMS_PER_CHECK)
            .await?;
        if streams.len() == STREAMS_PER_CHECK {
            self.next_stream = streams.last().map(|(name, _)| name.clone());
        }
        for (stream, meta) in streams {
            let Some(max_age_s) = meta.retention.max_age_s else {
                continue;
            };
            let cutoff = now.saturating_sub(max_age_s.saturating_mul(1000));
            let before_version = reader
                .seek_time(ReadTarget::Stream(stream.clone()), cutoff)
                .await?;
            if before_version > meta.first_version {
                self.propose(RetentionCommand::ExpireStream {
                    stream,
                    before_version,
                })
                .await?;
            }
        }
        let first_position = reader.first_position().await?;
        let mut before_position = first_position;
        if let Some(max_age_s) = self.config.max_age_s {
            let cutoff = now.saturating_sub(max_age_s.saturating_mul(1000));
            before_position = before_position.max(reader.seek_time(ReadTarget::All, cutoff).await?);
        }
        if let Some(max_bytes) = self.config.max_bytes {
            let (share, of) = EVENT_SHARE_OF_MAX_BYTES;
            let max_bytes = (max_bytes / of * share).max(1);
            let sizes = reader
                .event_sizes(self.ledger.next.max(first_position), SIZES_PER_CHECK)
                .await?;
            self.ledger.count(first_position, sizes, max_bytes);
            if let Some(cut) = self.ledger.cut(max_bytes) {
                before_position = before_position.max(cut);
            }
        }
        if before_position > first_position {
            self.propose(RetentionCommand::ExpireLog { before_position })
                .await?;
        }
        Ok(())
    }

    async fn propose(&self, command: RetentionCommand) -> Result<(), ServiceError> {
        tracing::debug!("retention: proposing {command:?}");
        match tokio::time::timeout(
            self.request_timeout,
            self.handle.propose(Command::Retention(command)),
        )
        .await
        {
            Err(_) => Err(ServiceError::Timeout(
                "a retention entry did not commit in time".to_string(),
            )),
            Ok(Err(error)) => Err(propose_error(error)),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// The stored bytes of the retained events, counted as they are appended: a mark every
/// `limit / 64` bytes holds (position, bytes counted before it), so the first position past
/// which at most the limit remains is found without reading the log again.
#[derive(Debug, Default)]
struct ByteLedger {
    /// The next position to count.
    next: u64,
    /// Bytes counted from the ledger's first mark on.
    total: u64,
    marks: VecDeque<(u64, u64)>,
}

impl ByteLedger {
    /// Counts `sizes` (position, stored bytes, in order from `self.next`); the log's first
    /// retained position is `first_position` (marks below it are dropped).
    fn count(&mut self, first_position: u64, sizes: Vec<(u64, usize)>, max_bytes: u64) {
        if self.next < first_position {
            // Started, or fell, behind the log's start: count from there.
            self.marks
                .retain(|(position, _)| *position >= first_position);
            if self.marks.is_empty() {
                self.total = 0;
            }
            self.next = first_position;
        }
        let every = (max_bytes / MARKS_PER_LIMIT).max(1);
        for (position, size) in sizes {
            let since_mark = self
                .marks
                .back()
                .map_or(u64::MAX, |(_, before)| self.total - before);
            if since_mark >= every {
                self.marks.push_back((position, self.total));
            }
            self.total += size as u64;
            self.next = position + 1;
        }
    }

    /// The first mark past which at most `max_bytes` are counted, when that cuts anything.
    fn cut(&mut self, max_bytes: u64) -> Option<u64> {
        let mut cut = None;
        // The last mark stays: fewer than a mark's worth of bytes follow it.
        while self.marks.len() > 1 {
            let (_, before) = self.marks[0];
            if self.total - before <= max_bytes {
                break;
            }
            self.marks.pop_front();
            cut = Some(self.marks[0].0);
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_cuts_the_oldest_marks_past_the_limit() {
        let mut ledger = ByteLedger::default();
        // 1,000 events of 100 bytes from position 1; limit 6,400: a mark every 100 bytes.
        let sizes = (1..=1000).map(|position| (position, 100)).collect();
        ledger.count(1, sizes, 6_400);
        let cut = ledger.cut(6_400).expect("past the limit");
        // 64 events of 100 bytes remain from the cut on.
        assert_eq!(cut, 937);
        assert_eq!(ledger.cut(6_400), None, "nothing more to cut");
        // The log moved on (the cut applied): counting goes on from the first position.
        ledger.count(cut, vec![(1001, 100)], 6_400);
        assert_eq!(ledger.cut(6_400), Some(938));
    }

    #[test]
    fn a_ledger_behind_the_log_starts_over() {
        let mut ledger = ByteLedger::default();
        ledger.count(500, vec![(500, 10), (501, 10)], 1_000);
        assert_eq!(ledger.next, 502);
        ledger.count(900, vec![(900, 10)], 1_000);
        assert_eq!((ledger.next, ledger.total), (901, 10));
        assert_eq!(ledger.cut(1_000), None);
    }
}
