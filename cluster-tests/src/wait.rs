//! The one polling loop of the harness.
//!
//! Tests wait on conditions, never on fixed sleeps: a condition is probed every
//! [`POLL_INTERVAL`] until it holds or its deadline passes. Every wait carries a description,
//! and a timeout reports the last reason the condition did not hold, so a failing test says
//! what it was waiting for and what it saw instead.

use std::time::{Duration, Instant};

/// How long to pause between two probes of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The result of probing a condition once.
#[derive(Debug)]
pub enum Probe<T> {
    /// The condition holds; stop polling and return this value.
    Ready(T),
    /// The condition does not hold yet; the reason is reported if the deadline passes.
    NotYet(String),
    /// The condition can no longer hold (for example a process exited); stop polling.
    Failed(String),
}

/// Why [`poll`] gave up.
#[derive(Debug, Clone)]
pub struct WaitFailure {
    /// True when the deadline passed; false when the condition reported [`Probe::Failed`].
    pub timed_out: bool,
    /// The last reason the condition gave.
    pub reason: String,
    /// How long the wait lasted.
    pub elapsed: Duration,
}

impl std::fmt::Display for WaitFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.timed_out {
            write!(
                formatter,
                "timed out after {:.1?}; last observed: {}",
                self.elapsed, self.reason
            )
        } else {
            write!(
                formatter,
                "failed after {:.1?}: {}",
                self.elapsed, self.reason
            )
        }
    }
}

/// Probes `condition` every [`POLL_INTERVAL`] until it is ready or fails, or `timeout` passes.
///
/// The condition is always probed at least once, and once more after the deadline is reached
/// if the previous probe started before it. The condition's own I/O must be bounded (every
/// harness RPC carries a timeout), so the whole wait is bounded.
pub async fn poll<T>(
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> Probe<T>,
) -> Result<T, WaitFailure> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let probe_started = Instant::now();
        match condition().await {
            Probe::Ready(value) => return Ok(value),
            Probe::Failed(reason) => {
                return Err(WaitFailure {
                    timed_out: false,
                    reason,
                    elapsed: started.elapsed(),
                });
            }
            Probe::NotYet(reason) => {
                if probe_started >= deadline {
                    return Err(WaitFailure {
                        timed_out: true,
                        reason,
                        elapsed: started.elapsed(),
                    });
                }
            }
        }
        let now = Instant::now();
        tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(now))).await;
    }
}

/// Waits until `condition` returns `Ok`, and returns its value. `Err(reason)` means "not yet".
///
/// # Panics
///
/// When `timeout` passes first, with `description` and the last reason.
pub async fn wait_for<T>(
    timeout: Duration,
    description: &str,
    mut condition: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let result = poll(timeout, async || match condition().await {
        Ok(value) => Probe::Ready(value),
        Err(reason) => Probe::NotYet(reason),
    })
    .await;
    match result {
        Ok(value) => value,
        Err(failure) => panic!("waiting for {description}: {failure}"),
    }
}

/// Waits until `condition` returns true.
///
/// # Panics
///
/// When `timeout` passes first, with `description`.
pub async fn wait_until(
    timeout: Duration,
    description: &str,
    mut condition: impl AsyncFnMut() -> bool,
) {
    wait_for(timeout, description, async || {
        if condition().await {
            Ok(())
        } else {
            Err("the condition was still false".to_owned())
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_returns_the_value_once_ready() {
        let mut probes = 0;
        let value = poll(Duration::from_secs(10), async || {
            probes += 1;
            if probes < 3 {
                Probe::NotYet(format!("probe {probes}"))
            } else {
                Probe::Ready(probes)
            }
        })
        .await
        .expect("the condition becomes ready on the third probe");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn poll_times_out_with_the_last_reason() {
        let failure = poll(Duration::from_millis(120), async || {
            Probe::<()>::NotYet("still waiting".to_owned())
        })
        .await
        .expect_err("the condition never holds");
        assert!(failure.timed_out);
        assert_eq!(failure.reason, "still waiting");
    }

    #[tokio::test]
    async fn poll_stops_at_a_failure() {
        let failure = poll(Duration::from_secs(10), async || {
            Probe::<()>::Failed("process exited".to_owned())
        })
        .await
        .expect_err("the condition failed");
        assert!(!failure.timed_out);
        assert!(failure.elapsed < Duration::from_secs(10));
    }
}
