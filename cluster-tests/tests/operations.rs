//! Operating a cluster: every node's HTTP port. `/metrics` parses with the Prometheus
//! project's own OpenMetrics parser and passes a lint (types, base units in names, `_total`
//! only on counters); counters never decrease; the fsync histogram counts the appends' fsyncs;
//! a killed leader shows in the survivors' metrics; and the status page, in a real headless
//! Chromium, shows the leader, follows a failover, and draws its charts.

#[path = "support/browser.rs"]
mod browser;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use evlog_cluster_tests::http;
use evlog_cluster_tests::proto::{CreateConsumerRequest, create_consumer_request};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, timeouts, wait_for, wait_until};
use serde_json::Value;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The Debian Python, where `apt-get install python3-prometheus-client` puts the parser.
const PYTHON: &str = "/usr/bin/python3";

/// Every family a node must export (the README lists them).
const REQUIRED: [&str; 29] = [
    "evlog_grpc_requests",
    "evlog_grpc_request_duration_seconds",
    "evlog_append_duration_seconds",
    "evlog_raft_proposal_batch_events",
    "evlog_raft_leader_changes",
    "evlog_raft_elections_started",
    "evlog_raft_snapshots_sent",
    "evlog_raft_snapshots_installed",
    "evlog_raft_term",
    "evlog_raft_is_leader",
    "evlog_raft_has_leader",
    "evlog_raft_last_log_index",
    "evlog_raft_committed_index",
    "evlog_raft_applied_index",
    "evlog_raft_apply_lag_entries",
    "evlog_node_serving",
    "evlog_store_fsync_duration_seconds",
    "evlog_store_db_sync_duration_seconds",
    "evlog_store_commit_duration_seconds",
    "evlog_store_writer_batch_ops",
    "evlog_store_writer_queue_depth",
    "evlog_store_file_size_bytes",
    "evlog_log_head_position",
    "evlog_log_events",
    "evlog_subscriptions_active",
    "evlog_consumer_groups",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// One scrape, linted: family name -> (type, samples as (name + labels) -> value).
struct Scrape {
    families: BTreeMap<String, (String, BTreeMap<String, f64>)>,
}

impl Scrape {
    fn value(&self, family: &str, sample: &str) -> Option<f64> {
        self.families.get(family)?.1.get(sample).copied()
    }

    fn count(&self, histogram: &str) -> f64 {
        self.value(histogram, &format!("{histogram}_count"))
            .unwrap_or_else(|| panic!("{histogram} has no _count"))
    }
}

fn sample_key(name: &str, labels: &serde_json::Map<String, Value>) -> String {
    let mut labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    labels.sort();
    if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

/// Runs the OpenMetrics parser and the lint over `text`; panics with the problems found.
fn lint(text: &str) -> Scrape {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lint_metrics.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("running {PYTHON} failed ({error}): apt-get install python3 python3-prometheus-client (scripts/test.sh does)")
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("writing the scrape to the linter");
    }
    let output = child.wait_with_output().expect("the linter ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "the OpenMetrics parser is missing: apt-get install python3-prometheus-client (scripts/test.sh does)"
    );
    assert!(
        output.status.success(),
        "/metrics fails the OpenMetrics parser or the lint:\n{stderr}\n--- the scrape ---\n{text}"
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("the linter prints JSON");
    let mut families = BTreeMap::new();
    for (name, family) in parsed["families"].as_object().expect("families") {
        let mut samples = BTreeMap::new();
        for sample in family["samples"].as_array().expect("samples") {
            let key = sample_key(
                sample[0].as_str().expect("sample name"),
                sample[1].as_object().expect("labels"),
            );
            samples.insert(key, sample[2].as_f64().expect("a numeric value"));
        }
        families.insert(
            name.clone(),
            (
                family["type"].as_str().unwrap_or_default().to_string(),
                samples,
            ),
        );
    }
    Scrape { families }
}

async fn scrape(cluster: &Cluster, id: u64) -> Scrape {
    let address = cluster.http_address(id).await;
    let answer = http::get(&address, "/metrics", HTTP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("scraping node {id}: {error}"));
    assert_eq!(answer.status, 200, "GET /metrics on node {id}: {answer:?}");
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text"),
        "content type {}",
        answer.content_type
    );
    lint(&answer.body)
}

async fn append_events(cluster: &Cluster, leader: u64, stream: &str, count: usize) {
    for index in 0..count {
        cluster
            .append(
                leader,
                stream,
                vec![event(format!("{stream}-{index}"), "Tick", b"{}".to_vec())],
            )
            .await
            .unwrap_or_else(|error| panic!("append {index} to {stream}: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_the_openmetrics_lint_and_counters_only_grow() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_events(&cluster, leader, "metrics-a", 20).await;
    // A group no member ever joined: its lag is what an alert needs, and must not read 0.
    let endpoints: Vec<String> = cluster
        .node_ids()
        .iter()
        .map(|id| cluster.address(*id))
        .collect();
    let client = evlog_client::EvlogClient::new(&endpoints, evlog_client::ClientOptions::default())
        .expect("a client");
    client
        .consumers_call(
            CreateConsumerRequest {
                name: "idle-group".to_string(),
                target: Some(create_consumer_request::Target::Stream(
                    "metrics-a".to_string(),
                )),
                filter: None,
                start: Some(create_consumer_request::Start::From(1)),
                settings: None,
            },
            |mut grpc, request| async move { grpc.create(request).await },
        )
        .await
        .expect("creating a consumer group");

    // A subscription to `all` from the first event, read to the head: counted, and not behind.
    let mut subscription = cluster
        .subscribe(
            leader,
            evlog_cluster_tests::subscriber::subscribe_all(Some(
                evlog_cluster_tests::proto::subscribe_request::Start::From(1),
            )),
        )
        .await
        .expect("a subscription");
    let mut read = 0;
    while read < 20 {
        let item = tokio::time::timeout(HTTP_TIMEOUT, futures::StreamExt::next(&mut subscription))
            .await
            .expect("a subscription item in time")
            .expect("the subscription is open")
            .expect("an item");
        if let Some(evlog_cluster_tests::proto::subscribe_response::Item::Events(batch)) = item.item
        {
            read += batch.events.len();
        }
    }
    let leader_http = cluster.http_address(leader).await;
    wait_until(
        timeouts::CATCH_UP,
        "the subscription at the head in the metrics",
        async || {
            let Ok(answer) = http::get(&leader_http, "/metrics", HTTP_TIMEOUT).await else {
                return false;
            };
            [
                ("evlog_subscriptions_active", 1.0),
                ("evlog_subscriptions_behind", 0.0),
                ("evlog_subscriptions_max_lag_events", 0.0),
            ]
            .iter()
            .all(|(sample, value)| http::sample_value(&answer.body, sample) == Some(*value))
        },
    )
    .await;

    let mut before = BTreeMap::new();
    for id in cluster.node_ids() {
        // Groups are read at most every 2 s, and a follower applies the creation after the
        // leader: wait until this node's metrics have the group.
        let scrape = wait_for(timeouts::CATCH_UP, "the group in the metrics", async || {
            let scrape = scrape(&cluster, id).await;
            if scrape.families.contains_key("evlog_consumer_lag_events") {
                Ok(scrape)
            } else {
                Err(format!("node {id} has no evlog_consumer_lag_events yet"))
            }
        })
        .await;
        for family in REQUIRED {
            assert!(
                scrape.families.contains_key(family),
                "node {id} exports no {family}"
            );
        }
        for (name, (kind, _)) in &scrape.families {
            assert!(
                name.starts_with("evlog_") || name.starts_with("process_"),
                "{name}: every family is evlog_ or process_, was {kind}"
            );
        }
        before.insert(id, scrape);
    }
    let leader_scrape = &before[&leader];
    assert_eq!(
        leader_scrape.value("evlog_raft_is_leader", "evlog_raft_is_leader"),
        Some(1.0)
    );
    let appends_ok = leader_scrape
        .value(
            "evlog_grpc_requests",
            "evlog_grpc_requests_total{code=OK,method=/evlog.v1.EventLog/Append}",
        )
        .unwrap_or(0.0);
    assert!(
        appends_ok >= 20.0,
        "the leader counted {appends_ok} appends, not 20"
    );
    assert!(leader_scrape.count("evlog_append_duration_seconds") >= 20.0);
    // One append at a time: each one a proposal batch of its own, each replicated to both peers.
    assert!(leader_scrape.count("evlog_raft_proposal_batch_events") >= 20.0);
    for peer in cluster.node_ids().into_iter().filter(|id| *id != leader) {
        let round_trips = leader_scrape
            .value(
                "evlog_raft_peer_round_trip_seconds",
                &format!("evlog_raft_peer_round_trip_seconds_count{{peer={peer}}}"),
            )
            .unwrap_or(0.0);
        assert!(
            round_trips >= 1.0,
            "the leader timed no round trip to node {peer}"
        );
    }
    for (id, scrape) in &before {
        assert_eq!(
            scrape.value(
                "evlog_consumer_lag_events",
                "evlog_consumer_lag_events{group=idle-group}"
            ),
            Some(20.0),
            "node {id}: the idle group's lag"
        );
        assert_eq!(
            scrape.value("evlog_consumer_groups", "evlog_consumer_groups"),
            Some(1.0),
            "node {id}: the group count"
        );
    }

    append_events(&cluster, leader, "metrics-b", 30).await;
    for id in cluster.node_ids() {
        // Followers apply what the leader committed, then fsync it, and every node's database
        // commits durably once its writer has gone idle: wait until they have.
        let after = wait_for(timeouts::CATCH_UP, "the sync counts to grow", async || {
            let after = scrape(&cluster, id).await;
            for histogram in [
                "evlog_store_fsync_duration_seconds",
                "evlog_store_db_sync_duration_seconds",
            ] {
                let (was, now) = (before[&id].count(histogram), after.count(histogram));
                if now <= was {
                    return Err(format!(
                        "node {id}: {histogram} counted {was} before 30 appends, {now} after"
                    ));
                }
            }
            Ok(after)
        })
        .await;
        // Counters, and histograms' buckets, counts and sums, never go down.
        for (name, (kind, samples)) in &before[&id].families {
            if kind != "counter" && kind != "histogram" {
                continue;
            }
            for (sample, value) in samples {
                let now = after
                    .value(name, sample)
                    .unwrap_or_else(|| panic!("node {id}: {sample} was exported, then was not"));
                assert!(
                    now >= *value,
                    "node {id}: {sample} went down from {value} to {now}"
                );
            }
        }
        for (path, code) in [("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)] {
            let address = cluster.http_address(id).await;
            let answer = http::get(&address, path, HTTP_TIMEOUT)
                .await
                .unwrap_or_else(|error| panic!("GET {path} on node {id}: {error}"));
            assert_eq!(answer.status, code, "GET {path} on node {id}: {answer:?}");
        }
    }
}

/// The product's election timing (the harness default is slower, for loaded debug builds):
/// the failover tests measure what a user gets.
fn product_timing() -> ClusterOptions {
    ClusterOptions {
        heartbeat_interval_ms: None,
        election_timeout_min_ms: None,
        election_timeout_max_ms: None,
        ..ClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_shows_in_the_survivors_metrics() {
    let mut cluster = Cluster::start(product_timing()).await;
    let old_leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_events(&cluster, old_leader, "failover", 5).await;
    let survivors: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != old_leader)
        .collect();
    let mut addresses = BTreeMap::new();
    let mut changes_before = BTreeMap::new();
    for id in &survivors {
        let address = cluster.http_address(*id).await;
        let text = http::get(&address, "/metrics", HTTP_TIMEOUT)
            .await
            .expect("a scrape")
            .body;
        assert_eq!(
            http::sample_value(&text, "evlog_raft_has_leader"),
            Some(1.0)
        );
        changes_before.insert(
            *id,
            http::sample_value(&text, "evlog_raft_leader_changes_total").expect("leader changes"),
        );
        addresses.insert(*id, address);
    }

    let killed_at = Instant::now();
    cluster.kill(old_leader).await;
    let mut seen = BTreeMap::new();
    wait_until(
        timeouts::LEADER,
        "every survivor's metrics to show a new leader",
        async || {
            for id in &survivors {
                if seen.contains_key(id) {
                    continue;
                }
                let Ok(answer) = http::get(&addresses[id], "/metrics", HTTP_TIMEOUT).await else {
                    return false;
                };
                let has_leader = http::sample_value(&answer.body, "evlog_raft_has_leader");
                let changes = http::sample_value(&answer.body, "evlog_raft_leader_changes_total");
                if has_leader == Some(1.0) && changes > Some(changes_before[id]) {
                    seen.insert(*id, killed_at.elapsed());
                }
            }
            seen.len() == survivors.len()
        },
    )
    .await;
    eprintln!("after the kill, the survivors' metrics showed a new leader after {seen:?}");
    for (id, after) in &seen {
        assert!(
            *after <= Duration::from_secs(1),
            "node {id}'s metrics showed a new leader {after:?} after the kill (at most 1 s)"
        );
    }
    let mut leaders = 0;
    for id in &survivors {
        let text = http::get(&addresses[id], "/metrics", HTTP_TIMEOUT)
            .await
            .expect("a scrape")
            .body;
        leaders += usize::from(http::sample_value(&text, "evlog_raft_is_leader") == Some(1.0));
        assert!(http::sample_value(&text, "evlog_raft_elections_started_total").is_some());
    }
    assert_eq!(leaders, 1, "exactly one survivor says it leads");
}

/// Evaluates `expression` in the page until it returns `true`.
async fn wait_for_page(
    browser: &mut browser::Browser,
    timeout: Duration,
    description: &str,
    expression: &str,
) {
    wait_until(timeout, description, async || {
        tokio::task::block_in_place(|| browser.eval(expression)) == Value::Bool(true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_leader_and_follows_a_failover() {
    let mut cluster = Cluster::start(product_timing()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let url = format!("http://{}/status", cluster.http_address(follower).await);
    let mut browser = tokio::task::block_in_place(|| browser::Browser::open(&url));

    wait_for_page(
        &mut browser,
        timeouts::LEADER,
        "the page to show the leader",
        &format!(
            "document.getElementById('leader').dataset.leaderId === '{leader}' && \
             document.querySelectorAll('#members tr').length === 3"
        ),
    )
    .await;
    // The charts take a sample a second; appends give the first one something to show.
    append_events(&cluster, leader, "page", 30).await;
    wait_for_page(
        &mut browser,
        timeouts::ACKS,
        "the appends chart to have data",
        "Number(document.getElementById('chart-appends').dataset.points) >= 2 && \
         document.querySelector('#chart-appends polyline').getAttribute('points').length > 0 && \
         Number(document.getElementById('head').textContent) >= 30",
    )
    .await;
    let screenshot = cluster.path().join("status-page.png");
    let bytes = tokio::task::block_in_place(|| browser.screenshot(&screenshot));
    assert!(
        bytes > 10_000,
        "a screenshot of {bytes} bytes shows nothing"
    );
    eprintln!("status page screenshot: {}", screenshot.display());

    let killed_at = Instant::now();
    cluster.kill(leader).await;
    wait_for_page(
        &mut browser,
        timeouts::LEADER,
        "the page to show a new leader",
        &format!(
            "(() => {{ const id = document.getElementById('leader').dataset.leaderId; \
             return id !== '' && id !== '{leader}'; }})()"
        ),
    )
    .await;
    let shown_after = killed_at.elapsed();
    eprintln!("the page showed the new leader {shown_after:?} after the kill");
    assert!(
        shown_after <= Duration::from_secs(2),
        "the page took {shown_after:?} to show the new leader (at most 2 s)"
    );
    wait_for_page(
        &mut browser,
        timeouts::LEADER,
        "a red badge for the dead node",
        &format!(
            "Array.from(document.querySelectorAll('#badges .badge.red')).some(b => \
             b.textContent === 'node {leader} unreachable')"
        ),
    )
    .await;
}
