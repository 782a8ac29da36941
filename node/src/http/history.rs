//! The last 15 minutes of a node, one sample a second, in memory: what the status page draws
//! without a Prometheus to ask.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use crate::metrics::Metrics;
use crate::metrics::histogram::HistogramSnapshot;
use crate::metrics::state::GroupState;
use crate::metrics::state::StateSource;
use crate::metrics::state::unix_ms;

/// Samples kept: 15 minutes at one a second.
pub const SAMPLES: usize = 900;
const EVERY: Duration = Duration::from_secs(1);
/// Consumer groups are looked at this often (their lag is counted in the store).
const GROUPS_EVERY: u32 = 5;
/// A group whose lag grew this many looks in a row is shown as falling behind.
const GROWING_LOOKS: u32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    /// Events applied per second (the whole cluster's appends, seen from any node).
    pub appends_per_second: f64,
    /// p99 of appends answered by this node in the second, if any.
    pub append_p99_ms: Option<f64>,
    /// p99 of this node's fsyncs in the second, if any.
    pub fsync_p99_ms: Option<f64>,
    pub head_position: u64,
}

#[derive(Clone, Debug, Default)]
struct GroupTrend {
    lag_events: u64,
    /// Looks in a row the lag grew.
    growing: u32,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Sample>,
    groups: BTreeMap<String, GroupTrend>,
}

/// Cheap to clone; clones share the samples.
#[derive(Clone, Debug, Default)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.iter().cloned().collect()
    }

    /// Groups whose lag grew at each of the last few looks.
    pub fn growing_groups(&self) -> Vec<String> {
        self.lock()
            .groups
            .iter()
            .filter(|(_, trend)| trend.growing >= GROWING_LOOKS)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn push(&self, sample: Sample) {
        let mut inner = self.lock();
        if inner.samples.len() == SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
    }

    fn look_at_groups(&self, groups: &[GroupState]) {
        let mut inner = self.lock();
        let mut next = BTreeMap::new();
        for group in groups {
            let before = inner.groups.remove(&group.name).unwrap_or_default();
            let growing = if group.lag_events > before.lag_events && before.lag_events > 0 {
                before.growing + 1
            } else if group.lag_events > before.lag_events {
                1
            } else {
                0
            };
            next.insert(
                group.name.clone(),
                GroupTrend {
                    lag_events: group.lag_events,
                    growing,
                },
            );
        }
        inner.groups = next;
    }

    /// Samples every second until the task is dropped.
    pub async fn sample(self, source: StateSource, metrics: Arc<Metrics>) {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(Instant, u64, HistogramSnapshot, HistogramSnapshot)> = None;
        let mut ticks = 0u32;
        loop {
            every.tick().await;
            let now = Instant::now();
            let head = source.handle().applied().head_position;
            let appends = metrics.append_duration.snapshot();
            let fsyncs = metrics.store_fsync.snapshot();
            if let Some((then, head_then, appends_then, fsyncs_then)) = &last {
                let seconds = now.duration_since(*then).as_secs_f64().max(1e-3);
                let p99_ms = |now: &HistogramSnapshot, then: &HistogramSnapshot| {
                    now.since(then).quantile(0.99).map(|p99| p99 * 1e3)
                };
                self.push(Sample {
                    at_ms: unix_ms(),
                    appends_per_second: head.saturating_sub(*head_then) as f64 / seconds,
                    append_p99_ms: p99_ms(&appends, appends_then),
                    fsync_p99_ms: p99_ms(&fsyncs, fsyncs_then),
                    head_position: head,
                });
            }
            last = Some((now, head, appends, fsyncs));
            if ticks.is_multiple_of(GROUPS_EVERY) {
                let state = source.gather().await;
                self.look_at_groups(&state.groups);
            }
            ticks = ticks.wrapping_add(1);
        }
    }
}
