//! `evlog bench --json` against a real cluster prints one JSON line whose numbers make sense,
//! in append mode and in (linearizable, spread over every node) read mode. No timing is
//! asserted: performance is measured by the bench, never by a test.

use std::process::Stdio;
use std::time::Duration;

use evlog_cluster_tests::{Cluster, ClusterOptions, evlog_binary, timeouts};

/// How long one bench run may take: one measured second plus setup, on a slow debug build.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `evlog bench` with `args` against `cluster` and returns its one line of JSON.
async fn bench(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let endpoints = cluster.endpoints();
    let mut command = tokio::process::Command::new(evlog_binary());
    command
        .args(["bench", "--endpoints", &endpoints, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BENCH_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("evlog bench {args:?} did not finish within {BENCH_TIMEOUT:?}"))
        .expect("evlog bench should start");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "evlog bench {args:?} failed ({}): {stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "evlog bench --json should print exactly one line, printed: {stdout}; stderr: {stderr}"
    );
    serde_json::from_str(lines[0])
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", lines[0]))
}

fn number(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} should be a whole number in {report}"))
}

/// The checks every run must pass, whatever the mode.
fn assert_sane(report: &serde_json::Value, mode: &str) {
    assert_eq!(report["mode"], mode, "{report}");
    assert_eq!(report["concurrency"], 4, "{report}");
    assert!(number(report, "ops") > 0, "no request succeeded: {report}");
    assert!(number(report, "events") > 0, "no event moved: {report}");
    assert!(
        report["errors"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty),
        "errors should be an empty object: {report}"
    );
    let (p50, p90, p99, p999, max) = (
        number(report, "p50_us"),
        number(report, "p90_us"),
        number(report, "p99_us"),
        number(report, "p999_us"),
        number(report, "max_us"),
    );
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {report}"
    );
    for key in [
        "ops_per_sec",
        "events_per_sec",
        "bytes_per_sec",
        "duration_s",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|value| value > 0.0),
            "{key} should be a positive number: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_one_sane_json_line_for_appends_and_reads() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.wait_for_leader(timeouts::LEADER).await;
    let common = ["--duration", "1", "--warmup", "0", "--concurrency", "4"];

    let append = bench(&cluster, &[&common[..], &["--mode", "append"]].concat()).await;
    assert_sane(&append, "append");
    // Appends carry the event size asked for.
    assert_eq!(
        number(&append, "bytes"),
        number(&append, "events") * 100,
        "{append}"
    );

    // Through the client library: the appends of the 4 tasks go in shared calls.
    let client = bench(
        &cluster,
        &[&common[..], &["--mode", "append", "--via", "client"]].concat(),
    )
    .await;
    assert_sane(&client, "append");
    assert_eq!(client["via"], "client", "{client}");
    let per_call = client["appends_per_call"].as_f64().unwrap_or(0.0);
    assert!((1.0..=4.0).contains(&per_call), "{client}");

    let read = bench(
        &cluster,
        &[&common[..], &["--mode", "read", "--page-size", "5"]].concat(),
    )
    .await;
    assert_sane(&read, "read");
    // The streams were preloaded with a page of events each, so every read returns a page.
    assert_eq!(number(&read, "events"), number(&read, "ops") * 5, "{read}");

    // Subscribers from the beginning: they catch up over the log, then every append of the
    // run reaches each of them, none missing.
    let subscribe = bench(
        &cluster,
        &[
            &common[..],
            &[
                "--mode",
                "subscribe",
                "--subscribers",
                "3",
                "--subscribe-from",
                "beginning",
            ],
        ]
        .concat(),
    )
    .await;
    assert_sane(&subscribe, "subscribe");
    assert_eq!(number(&subscribe, "subscribers"), 3, "{subscribe}");
    assert_eq!(number(&subscribe, "missing_deliveries"), 0, "{subscribe}");
    assert_eq!(
        number(&subscribe, "deliveries"),
        number(&subscribe, "events") * 3,
        "every measured append delivered to every subscriber: {subscribe}"
    );
    assert!(
        subscribe["catch_up_events_per_sec"]
            .as_f64()
            .is_some_and(|rate| rate > 0.0),
        "{subscribe}"
    );
}
