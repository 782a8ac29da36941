//! The result of a benchmark run: one JSON object (`--json`) or a table for people.
//!
//! Rates are per second of measured time: from the end of the warm-up until the last task's
//! last request finished. `ops` counts successful requests only (their latencies make the
//! percentiles); failed requests are counted apart, by status code.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::HumanBytes;
use indicatif::HumanCount;
use serde_json::Value;
use serde_json::json;

use super::args::BenchConfig;
use super::args::BenchMode;
use super::recorder::Recorder;
use super::subscribe::SubscribeSummary;

/// The quantiles reported, with their key stems.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)];

pub struct Report {
    pub config: BenchConfig,
    /// The endpoint appends went to when `--target leader` (its address).
    pub leader: Option<String>,
    /// `--via client`: appends per call the client sent (warm-up included).
    pub appends_per_call: Option<f64>,
    /// The bench process's CPU time over the measured window (`None` off Linux).
    pub client_cpu: Option<Duration>,
    /// Measured time.
    pub elapsed: Duration,
    /// Every measured request.
    pub total: Recorder,
    /// Appends alone, and reads alone (each present when the mode sends them).
    pub append: Option<Recorder>,
    pub read: Option<Recorder>,
    /// `--mode subscribe`: what the subscribers measured.
    pub subscribe: Option<SubscribeSummary>,
}

fn per_second(amount: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        amount as f64 / seconds
    } else {
        0.0
    }
}

/// Rounds to two decimals, so the JSON stays readable.
fn rounded(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

impl Report {
    /// Throughput, latency and errors of `recorder`, under keys starting with `prefix`.
    fn measurements(
        &self,
        recorder: &Recorder,
        prefix: &str,
        into: &mut serde_json::Map<String, Value>,
    ) {
        let mut put = |key: &str, value: Value| {
            into.insert(format!("{prefix}{key}"), value);
        };
        put("ops", json!(recorder.ops));
        put("events", json!(recorder.events));
        put("bytes", json!(recorder.bytes));
        put(
            "ops_per_sec",
            json!(rounded(per_second(recorder.ops, self.elapsed))),
        );
        put(
            "events_per_sec",
            json!(rounded(per_second(recorder.events, self.elapsed))),
        );
        put(
            "bytes_per_sec",
            json!(rounded(per_second(recorder.bytes, self.elapsed))),
        );
        for (stem, quantile) in QUANTILES {
            put(&format!("{stem}_us"), json!(recorder.quantile_us(quantile)));
        }
        put("max_us", json!(recorder.max_us()));
        put("mean_us", json!(rounded(recorder.latency_us.mean())));
        put("errors_total", json!(recorder.error_count()));
        put("errors", json!(recorder.errors));
    }

    /// One JSON object: the parameters, then the measurements of every request; in mixed mode
    /// also those of appends and of reads alone, under `append_` and `read_` prefixes.
    pub fn to_json(&self) -> Value {
        let config = &self.config;
        let mut object = serde_json::Map::new();
        let parameters = json!({
            "mode": config.mode.name(),
            "concurrency": config.concurrency,
            "size": config.size,
            "batch": config.batch,
            "streams": config.streams,
            "target": config.target.name(),
            "via": config.via.name(),
            "client_calls_in_flight": config.client_calls_in_flight,
            "appends_per_call": self.appends_per_call.map(rounded),
            "leader": self.leader,
            "page_size": config.page_size,
            "consistency": config.consistency.name(),
            "preload": config.preload,
            "warmup_s": config.warmup.as_secs_f64(),
            "duration_limit_s": config.duration.as_secs_f64(),
            "count_limit": config.count,
            "request_timeout_ms": u64::try_from(config.request_timeout.as_millis()).unwrap_or(u64::MAX),
            "endpoints": config.endpoints,
        });
        if let Value::Object(parameters) = parameters {
            object.extend(parameters);
        }
        object.insert(
            "duration_s".to_string(),
            json!((self.elapsed.as_secs_f64() * 1_000.0).round() / 1_000.0),
        );
        self.measurements(&self.total, "", &mut object);
        if let Some(cpu) = self.client_cpu {
            let ops = (self.total.ops + self.total.error_count()).max(1);
            object.insert(
                "client_cpu_us_per_op".to_string(),
                json!(rounded(cpu.as_secs_f64() * 1e6 / ops as f64)),
            );
        }
        object.insert(
            "error_messages".to_string(),
            json!(self.total.error_samples),
        );
        if config.mode == BenchMode::Mixed {
            for (prefix, recorder) in [("append_", &self.append), ("read_", &self.read)] {
                if let Some(recorder) = recorder {
                    self.measurements(recorder, prefix, &mut object);
                }
            }
        }
        if let Some(subscribe) = &self.subscribe {
            let mut put = |key: &str, value: Value| {
                object.insert(key.to_string(), value);
            };
            put("subscribers", json!(subscribe.subscribers));
            put("subscribe_from", json!(config.subscribe_from.name()));
            put("subscribed_events", json!(subscribe.events));
            put("missing_deliveries", json!(subscribe.missing));
            put("subscriber_errors", json!(subscribe.errors));
            put(
                "catch_up_events_per_sec",
                json!(subscribe.median_catch_up_rate().map(rounded)),
            );
            let deliveries = &subscribe.deliveries;
            put("deliveries", json!(deliveries.ops));
            put(
                "deliveries_per_sec",
                json!(rounded(per_second(deliveries.ops, self.elapsed))),
            );
            for (stem, quantile) in QUANTILES {
                put(
                    &format!("delivery_{stem}_us"),
                    json!(deliveries.quantile_us(quantile)),
                );
            }
            put("delivery_max_us", json!(deliveries.max_us()));
        }
        Value::Object(object)
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let config = &self.config;
        let mut out = String::new();
        let mut header = format!(
            "evlog bench: {} mode, {} in flight, {} streams",
            config.mode.name(),
            config.concurrency,
            config.streams
        );
        if config.mode.appends() {
            let _ = write!(
                header,
                "\n  appends:  {} event(s) of {} B each, to {}",
                config.batch,
                config.size,
                match &self.leader {
                    Some(leader) => format!("the leader {leader}"),
                    None => format!("{} endpoints in turn", config.endpoints.len()),
                }
            );
        }
        let _ = writeln!(out, "{header}");
        if config.mode.reads() {
            let _ = writeln!(
                out,
                "  reads:    {}, {} events per page, {} endpoints in turn \
                 (after preloading {} events per stream)",
                config.consistency.name(),
                config.page_size,
                config.endpoints.len(),
                config.preload
            );
        }
        let _ = writeln!(
            out,
            "  measured: {:.2} s (after a {:.1} s warm-up)",
            self.elapsed.as_secs_f64(),
            config.warmup.as_secs_f64()
        );
        let mut rows = vec![("all", &self.total)];
        if config.mode == BenchMode::Mixed {
            rows.extend(self.append.iter().map(|recorder| ("appends", recorder)));
            rows.extend(self.read.iter().map(|recorder| ("reads", recorder)));
        }
        let _ = writeln!(
            out,
            "\n  {:<8} {:>10} {:>11} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "",
            "ops",
            "ops/s",
            "events/s",
            "data/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p999 µs",
            "max µs",
            "errors"
        );
        for (name, recorder) in rows {
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>11.1} {:>12.1} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
                name,
                HumanCount(recorder.ops).to_string(),
                per_second(recorder.ops, self.elapsed),
                per_second(recorder.events, self.elapsed),
                format!(
                    "{}",
                    HumanBytes(per_second(recorder.bytes, self.elapsed).round() as u64)
                ),
                recorder.quantile_us(0.50),
                recorder.quantile_us(0.90),
                recorder.quantile_us(0.99),
                recorder.quantile_us(0.999),
                recorder.max_us(),
                recorder.error_count(),
            );
        }
        if let Some(subscribe) = &self.subscribe {
            let deliveries = &subscribe.deliveries;
            let _ = writeln!(
                out,
                "\n  subscribers: {} from the {}; {} events delivered, {} missing",
                subscribe.subscribers,
                config.subscribe_from.name(),
                HumanCount(subscribe.events),
                subscribe.missing
            );
            let _ = writeln!(
                out,
                "  delivery (append sent -> delivered): {:.1}/s, p50 {} µs, p90 {} µs, p99 {} \
                 µs, p999 {} µs, max {} µs",
                per_second(deliveries.ops, self.elapsed),
                deliveries.quantile_us(0.50),
                deliveries.quantile_us(0.90),
                deliveries.quantile_us(0.99),
                deliveries.quantile_us(0.999),
                deliveries.max_us()
            );
            if let Some(rate) = subscribe.median_catch_up_rate() {
                let _ = writeln!(out, "  catch-up: {rate:.0} events/s (median subscriber)");
            }
            for error in &subscribe.errors {
                let _ = writeln!(out, "  {error}");
            }
        }
        if self.total.errors.is_empty() {
            let _ = writeln!(out, "\n  errors: none");
        } else {
            let _ = writeln!(out, "\n  errors:");
            for (name, count) in &self.total.errors {
                let sample = self
                    .total
                    .error_samples
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or_default();
                let _ = writeln!(out, "    {name:<20} {count:>8}  e.g. {sample}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::bench::args::BenchArgs;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn report(mode: &str) -> Report {
        let config = Command::try_parse_from(["bench", "--mode", mode])
            .expect("valid flags")
            .bench
            .config()
            .expect("valid config");
        let mut append = Recorder::new(Duration::from_secs(10)).expect("valid bounds");
        let mut read = Recorder::new(Duration::from_secs(10)).expect("valid bounds");
        for micros in [100, 200, 300, 4_000] {
            append.record_success(Duration::from_micros(micros), 1, 100);
            read.record_success(Duration::from_micros(micros * 2), 10, 1_000);
        }
        append.record_error(&tonic::Status::deadline_exceeded("slow"));
        let mut total = append.clone();
        total.merge(&read).expect("same bounds");
        Report {
            config,
            leader: Some("127.0.0.1:50051".to_string()),
            appends_per_call: None,
            client_cpu: Some(Duration::from_millis(3)),
            elapsed: Duration::from_secs(2),
            total,
            append: Some(append),
            read: Some(read),
            subscribe: None,
        }
    }

    #[test]
    fn the_json_has_the_promised_keys() {
        let json = report("append").to_json();
        for key in [
            "ops_per_sec",
            "events_per_sec",
            "bytes_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "ops",
            "mode",
            "concurrency",
            "size",
            "batch",
            "streams",
            "via",
            "client_cpu_us_per_op",
            "duration_s",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["ops"], 8);
        assert_eq!(json["ops_per_sec"], 4.0);
        assert_eq!(json["events_per_sec"], 22.0);
        assert_eq!(json["errors"]["DEADLINE_EXCEEDED"], 1);
        assert_eq!(json["duration_s"], 2.0);
        assert!(json.get("append_ops").is_none());
        // One line.
        assert!(!json.to_string().contains('\n'));
    }

    #[test]
    fn mixed_mode_reports_each_kind_too() {
        let json = report("mixed").to_json();
        assert_eq!(json["append_ops"], 4);
        assert_eq!(json["read_ops"], 4);
        assert_eq!(json["read_bytes_per_sec"], 2_000.0);
        let table = report("mixed").to_table();
        assert!(
            table.contains("appends") && table.contains("reads"),
            "{table}"
        );
        assert!(table.contains("DEADLINE_EXCEEDED"), "{table}");
    }
}
