//! What the writer thread did lately: batches, ops per batch, how busy it was. Logged at
//! debug level every few seconds, for finding where the write path spends its time.

use super::WriteOp;

/// What kinds of op a batch holds (for the writer's statistics).
pub(super) struct BatchKinds {
    ops: usize,
    append: bool,
    apply: bool,
    only_commit_index: bool,
}

impl BatchKinds {
    pub(super) fn of(batch: &[WriteOp]) -> Self {
        Self {
            ops: batch.len(),
            append: batch.iter().any(|op| matches!(op, WriteOp::Append { .. })),
            apply: batch.iter().any(|op| matches!(op, WriteOp::Apply { .. })),
            only_commit_index: batch
                .iter()
                .all(|op| matches!(op, WriteOp::SaveCommitted { .. })),
        }
    }
}

/// What the writer thread did lately, logged at debug level every few seconds (for finding
/// where the write path spends its time).
pub(super) struct WriterStats {
    since: std::time::Instant,
    batches: u64,
    ops: u64,
    /// Batches holding log appends, applies; batches that ran no transaction.
    with_append: u64,
    with_apply: u64,
    without_transaction: u64,
    busy: std::time::Duration,
    longest: std::time::Duration,
}

impl WriterStats {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    pub(super) fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            batches: 0,
            ops: 0,
            with_append: 0,
            with_apply: 0,
            without_transaction: 0,
            busy: std::time::Duration::ZERO,
            longest: std::time::Duration::ZERO,
        }
    }

    pub(super) fn record(&mut self, kinds: BatchKinds, took: std::time::Duration) {
        self.batches += 1;
        self.ops += kinds.ops as u64;
        self.with_append += u64::from(kinds.append);
        self.with_apply += u64::from(kinds.apply);
        self.without_transaction += u64::from(kinds.only_commit_index);
        self.busy += took;
        self.longest = self.longest.max(took);
        let elapsed = self.since.elapsed();
        if elapsed >= Self::EVERY {
            tracing::debug!(
                batches = self.batches,
                ops_per_batch = self.ops as f64 / self.batches as f64,
                with_append = self.with_append,
                with_apply = self.with_apply,
                without_transaction = self.without_transaction,
                busy_percent = 100.0 * self.busy.as_secs_f64() / elapsed.as_secs_f64(),
                mean_batch_us = self.busy.as_micros() as u64 / self.batches,
                longest_batch_us = self.longest.as_micros() as u64,
                "store writer"
            );
            *self = Self::new();
        }
    }
}
