//! What one benchmark task measured for one kind of request: a latency histogram of the
//! successful requests (in microseconds), their event and byte counts, and the failed requests
//! by gRPC status code. Each task owns its recorders; they are merged at the end, so the hot
//! path shares nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Significant decimal digits the histogram keeps (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// The canonical name of a gRPC status code, as the gRPC specification spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Measurements of one kind of request.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Latency of each successful request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Successful requests.
    pub ops: u64,
    /// Events appended or read by the successful requests.
    pub events: u64,
    /// Event data bytes appended or read by the successful requests.
    pub bytes: u64,
    /// Failed requests by status code name.
    pub errors: BTreeMap<&'static str, u64>,
    /// The first message seen for each failing code, to say what went wrong.
    pub error_samples: BTreeMap<&'static str, String>,
}

impl Recorder {
    /// A recorder whose histogram holds latencies up to `highest` (longer ones are recorded
    /// as `highest`).
    pub fn new(highest: Duration) -> Result<Self, String> {
        let highest_us = u64::try_from(highest.as_micros())
            .unwrap_or(u64::MAX)
            .max(2);
        let latency_us = Histogram::new_with_bounds(1, highest_us, SIGNIFICANT_DIGITS)
            .map_err(|error| format!("cannot make a latency histogram: {error}"))?;
        Ok(Self {
            latency_us,
            ops: 0,
            events: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        })
    }

    pub fn record_success(&mut self, latency: Duration, events: u64, bytes: u64) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros);
        self.ops += 1;
        self.events += events;
        self.bytes += bytes;
    }

    pub fn record_error(&mut self, status: &tonic::Status) {
        let name = code_name(status.code());
        *self.errors.entry(name).or_default() += 1;
        self.error_samples
            .entry(name)
            .or_insert_with(|| status.message().to_string());
    }

    /// Failed requests, all codes together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another recorder's measurements to this one.
    pub fn merge(&mut self, other: &Recorder) -> Result<(), String> {
        self.latency_us
            .add(&other.latency_us)
            .map_err(|error| format!("cannot merge latency histograms: {error:?}"))?;
        self.ops += other.ops;
        self.events += other.events;
        self.bytes += other.bytes;
        for (name, count) in &other.errors {
            *self.errors.entry(name).or_default() += count;
        }
        for (name, message) in &other.error_samples {
            self.error_samples
                .entry(name)
                .or_insert_with(|| message.clone());
        }
        Ok(())
    }

    /// Latency at `quantile` (0.0 to 1.0) in microseconds; 0 when nothing succeeded.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }

    /// The slowest successful request, in microseconds; 0 when nothing succeeded.
    pub fn max_us(&self) -> u64 {
        self.latency_us.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_latencies() {
        let mut first = Recorder::new(Duration::from_secs(10)).expect("valid bounds");
        let mut second = Recorder::new(Duration::from_secs(10)).expect("valid bounds");
        for micros in 1..=1_000 {
            first.record_success(Duration::from_micros(micros), 2, 200);
        }
        second.record_success(Duration::from_secs(60), 1, 100);
        second.record_error(&tonic::Status::unavailable("no leader"));
        second.record_error(&tonic::Status::unavailable("still no leader"));
        first.merge(&second).expect("same bounds merge");

        assert_eq!(
            (first.ops, first.events, first.bytes),
            (1_001, 2_001, 200_100)
        );
        assert_eq!(first.errors.get("UNAVAILABLE"), Some(&2));
        assert_eq!(first.error_count(), 2);
        assert_eq!(
            first.error_samples.get("UNAVAILABLE").map(String::as_str),
            Some("no leader")
        );
        let p50 = first.quantile_us(0.5);
        let p99 = first.quantile_us(0.99);
        assert!((495..=505).contains(&p50), "p50 {p50}");
        assert!(p50 <= p99 && p99 <= first.max_us());
        // Past the histogram's top: recorded as the top (10 s), within its resolution.
        assert!(first.max_us() >= 9_990_000 && first.max_us() <= 10_010_000);
    }

    #[test]
    fn an_empty_recorder_reports_zeros() {
        let empty = Recorder::new(Duration::from_secs(1)).expect("valid bounds");
        assert_eq!(
            (empty.quantile_us(0.99), empty.max_us(), empty.ops),
            (0, 0, 0)
        );
    }

    #[test]
    fn code_names_are_the_canonical_ones() {
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }
}
