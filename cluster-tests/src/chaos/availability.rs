//! Availability, measured rather than asserted: for one run, the longest gap between
//! acknowledged appends, and how long after the fault began (and after it healed) the first
//! append sent from then on was acknowledged; over runs, their percentiles.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::injector::Injection;
use crate::history::History;

/// One run's figures; `None` when nothing was acknowledged to measure by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Availability {
    /// The longest time between two consecutive acknowledgements of the run.
    pub longest_gap: Option<Duration>,
    /// From the fault's start to the acknowledgement of the first append invoked after it.
    pub first_ack_after_fault: Option<Duration>,
    /// From the healing to the acknowledgement of the first append invoked after it.
    pub first_ack_after_heal: Option<Duration>,
}

impl Availability {
    pub fn measure(history: &History, injection: &Injection) -> Availability {
        let mut acknowledged: Vec<(Instant, Instant)> = history
            .operations()
            .iter()
            .filter_map(|operation| {
                operation
                    .acknowledged_at()
                    .map(|at| (operation.invoked, at))
            })
            .collect();
        acknowledged.sort_by_key(|(_, at)| *at);
        let longest_gap = acknowledged
            .windows(2)
            .map(|pair| pair[1].1.saturating_duration_since(pair[0].1))
            .max();
        let first_after = |instant: Instant| {
            acknowledged
                .iter()
                .filter(|(invoked, _)| *invoked >= instant)
                .map(|(_, at)| at.saturating_duration_since(instant))
                .min()
        };
        Availability {
            longest_gap,
            first_ack_after_fault: first_after(injection.fault_at),
            first_ack_after_heal: first_after(injection.healed_at),
        }
    }
}

/// Percentiles of a figure over runs, in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many runs had the figure.
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Percentiles {
    pub fn of(values: impl IntoIterator<Item = Option<Duration>>) -> Percentiles {
        let mut millis: Vec<f64> = values
            .into_iter()
            .flatten()
            .map(|value| value.as_secs_f64() * 1_000.0)
            .collect();
        millis.sort_by(f64::total_cmp);
        let rank = |quantile: f64| -> Option<f64> {
            if millis.is_empty() {
                return None;
            }
            let index = ((quantile * millis.len() as f64).ceil() as usize).clamp(1, millis.len());
            millis.get(index - 1).copied()
        };
        Percentiles {
            count: millis.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: millis.last().copied(),
        }
    }

    /// `p50 / p99`, in seconds, e.g. `1.20s / 2.31s`; `-` when there were none.
    pub fn describe(&self) -> String {
        match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => format!("{:.2}s / {:.2}s", p50 / 1_000.0, p99 / 1_000.0),
            _ => "-".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values = (1..=100).map(|ms| Some(Duration::from_millis(ms)));
        let percentiles = Percentiles::of(values.chain([None]));
        assert_eq!(percentiles.count, 100);
        assert_eq!(percentiles.p50_ms, Some(50.0));
        assert_eq!(percentiles.p99_ms, Some(99.0));
        assert_eq!(percentiles.max_ms, Some(100.0));
        assert_eq!(Percentiles::of([None]).describe(), "-");
    }
}
