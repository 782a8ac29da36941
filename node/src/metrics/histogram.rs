//! A latency (or size) histogram with fixed buckets, lock-free to record, readable bucket by
//! bucket: `/metrics` encodes it, and the status page takes each second's p99 from the
//! difference of two snapshots (as Prometheus' `histogram_quantile` does over a `rate`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::encoding::MetricEncoder;
use prometheus_client::encoding::NoLabelSet;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::TypedMetric;

/// Bucket bounds for durations in seconds: 50 µs doubling up to about 13 s (19 buckets, then
/// +Inf), fine enough for an fsync and wide enough for a stalled request.
pub fn duration_buckets() -> Vec<f64> {
    (0..19)
        .map(|step| 50e-6 * f64::from(1u32 << step))
        .collect()
}

/// Bucket bounds for counts (batch sizes): 1, 2, 4, … 4,096.
pub fn count_buckets() -> Vec<f64> {
    (0..13).map(|step| f64::from(1u32 << step)).collect()
}

#[derive(Debug)]
struct Inner {
    bounds: Vec<f64>,
    /// One per bound, then +Inf; not cumulative.
    counts: Vec<AtomicU64>,
    /// The sum of observations, in millionths of their unit (µs for seconds).
    sum_micros: AtomicU64,
}

/// Cheap to clone: clones share their counts.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

/// The counts of a histogram at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    /// Not cumulative; one more than `bounds` (the +Inf bucket).
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: Vec<f64>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds,
                counts,
                sum_micros: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .inner
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.inner.bounds.len());
        self.inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = (value.max(0.0) * 1e6).round() as u64;
        self.inner.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, took: Duration) {
        self.observe(took.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.inner.bounds.clone(),
            counts: self
                .inner
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            sum: self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.clone(),
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The `q` quantile, interpolated linearly within its bucket (an observation above the
    /// last bound counts as the last bound); `None` when nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            let upto = below + count;
            if *count > 0 && upto as f64 >= rank {
                let Some(upper) = self.bounds.get(index) else {
                    return self.bounds.last().copied();
                };
                let lower = if index == 0 {
                    0.0
                } else {
                    self.bounds[index - 1]
                };
                let within = (rank - below as f64) / *count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below = upto;
        }
        self.bounds.last().copied()
    }

    /// `(upper bound, count)` per bucket, not cumulative (the encoder sums them), the +Inf
    /// bucket last as `f64::MAX` (what the encoder writes as `+Inf`).
    fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(
            snapshot.sum,
            snapshot.count(),
            &snapshot.buckets(),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(vec![1.0, 2.0, 4.0]);
        for value in [0.5, 1.0, 1.5, 3.0, 100.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts, vec![2, 1, 1, 1]);
        assert_eq!(snapshot.count(), 5);
        assert!((snapshot.sum - 106.0).abs() < 1e-6);
        assert_eq!(
            snapshot.buckets(),
            vec![(1.0, 2), (2.0, 1), (4.0, 1), (f64::MAX, 1)]
        );
    }

    #[test]
    fn the_quantile_of_an_interval_comes_from_the_difference() {
        let histogram = Histogram::new(vec![1.0, 2.0, 4.0, 8.0]);
        for _ in 0..100 {
            histogram.observe(0.5);
        }
        let before = histogram.snapshot();
        for _ in 0..99 {
            histogram.observe(1.5);
        }
        histogram.observe(7.0);
        let interval = histogram.snapshot().since(&before);
        assert_eq!(interval.count(), 100);
        let p50 = interval.quantile(0.5).expect("observed");
        assert!((1.0..=2.0).contains(&p50), "p50 {p50}");
        let p99 = interval.quantile(0.99).expect("observed");
        assert!((1.0..=2.0).contains(&p99), "p99 {p99}");
        let max = interval.quantile(1.0).expect("observed");
        assert!((4.0..=8.0).contains(&max), "max {max}");
        assert_eq!(Histogram::new(vec![1.0]).snapshot().quantile(0.99), None);
    }
}
