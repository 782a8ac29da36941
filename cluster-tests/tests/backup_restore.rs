//! Backup and restore, end to end with real processes: `evlog backup` of a cluster under load,
//! `evlog backup verify`, `evlog restore` into a fresh three-node cluster, a damaged file and a
//! non-empty directory refused, a subscription that refuses to resume into a restored log, and
//! the read-only sandbox.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_cluster_tests::proto::{
    AppendRequest, Consistency, ReadRequest, SubscribeRequest, read_request, subscribe_request,
};
use evlog_cluster_tests::{Cluster, ClusterOptions, event, evlog_binary, timeouts, wait_for};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Concurrent appenders while the backup is taken.
const APPENDERS: usize = 128;
/// Appends each appender makes at most (the load is bounded in count and time).
const APPENDS_PER_APPENDER: usize = 400;
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// An acknowledged append: its idempotency key, stream and positions.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    stream: String,
    first_position: u64,
    last_position: u64,
}

/// Runs the `evlog` CLI to completion; returns (success, stdout, stderr).
async fn evlog(args: &[&str]) -> (bool, String, String) {
    let child = tokio::process::Command::new(evlog_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the evlog binary starts");
    let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("evlog {args:?} did not finish within {CLI_TIMEOUT:?}"))
        .expect("evlog ran");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the CLI and parses its last stdout line as JSON; panics on failure.
async fn evlog_json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = evlog(args).await;
    assert!(ok, "evlog {args:?} failed:\n{stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?} is not JSON: {error}"))
}

/// The appenders: each appends one event at a time to its own stream with an idempotency key,
/// retrying a failed append with the same key, until `stop` or its count.
fn start_load(
    cluster: &Cluster,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ids = cluster.node_ids();
    (0..APPENDERS)
        .map(|appender| {
            let clients: Vec<_> = ids.iter().map(|id| cluster.client(*id)).collect();
            let stop = Arc::clone(&stop);
            let acked = Arc::clone(&acked);
            tokio::spawn(async move {
                let stream = format!("load-{appender}");
                for n in 0..APPENDS_PER_APPENDER {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("{stream}-{n}");
                    for attempt in 0..20usize {
                        let mut client = clients[(appender + attempt) % clients.len()].clone();
                        let mut request = tonic::Request::new(AppendRequest {
                            stream: stream.clone(),
                            events: vec![event(key.clone(), "Loaded", format!("{{\"n\":{n}}}"))],
                            expected_version: None,
                            idempotency_key: Some(key.clone()),
                        });
                        request.set_timeout(Duration::from_secs(5));
                        if let Ok(response) = client.append(request).await {
                            let response = response.into_inner();
                            acked.lock().expect("acked").push(Acked {
                                key: key.clone(),
                                stream: stream.clone(),
                                first_position: response.first_position,
                                last_position: response.last_position,
                            });
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

/// Stops every node of `cluster`, empties their data directories and restores `file` into
/// each, as members at the cluster's own addresses; then starts them again.
async fn restore_in_place(cluster: &mut Cluster, file: &Path) -> Vec<Value> {
    let ids = cluster.node_ids();
    let peers = ids
        .iter()
        .map(|id| {
            let (client, peer) = (cluster.address(*id), cluster.peer_address(*id));
            format!("{id}={client}/{peer}")
        })
        .collect::<Vec<_>>()
        .join(",");
    for id in &ids {
        cluster.terminate(*id).await;
        cluster.wipe_data(*id);
    }
    let mut summaries = Vec::new();
    for id in &ids {
        let data_dir = cluster.data_dir(*id).display().to_string();
        summaries.push(
            evlog_json(&[
                "restore",
                &file.display().to_string(),
                "--data-dir",
                &data_dir,
                "--id",
                &id.to_string(),
                "--peers",
                &peers,
            ])
            .await,
        );
    }
    for id in &ids {
        cluster.restart(*id);
    }
    cluster.wait_for_leader(timeouts::LEADER).await;
    summaries
}

/// Appends one event per number to `stream` through `leader`, ids `<stream>-<n>`.
async fn append_numbered(
    cluster: &Cluster,
    leader: u64,
    stream: &str,
    numbers: std::ops::Range<u64>,
) {
    for n in numbers {
        cluster
            .append(
                leader,
                stream,
                vec![event(format!("{stream}-{n}"), "Placed", "{}")],
            )
            .await
            .expect("append");
    }
}

/// The backup file [`backed_up_cluster`] writes in its directory.
const BACKUP_FILE: &str = "backup.evlbak";

/// A cluster with `events` events in stream `orders`, backed up with the
/// CLI to [`BACKUP_FILE`] in the directory returned.
async fn backed_up_cluster(events: u64) -> (Cluster, tempfile::TempDir) {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_numbered(&cluster, leader, "orders", 0..events).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join(BACKUP_FILE).display().to_string();
    evlog_json(&[
        "backup",
        "--out",
        &file,
        "--endpoints",
        &cluster.endpoints(),
    ])
    .await;
    (cluster, dir)
}

fn read_all_request(from: u64) -> ReadRequest {
    ReadRequest {
        target: Some(read_request::Target::All(Default::default())),
        from: Some(from),
        max_count: 1,
        consistency: Consistency::Linearizable as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_fresh_cluster_with_every_acknowledged_append() {
    let source = Cluster::start(ClusterOptions::default()).await;
    let leader = source.wait_for_leader(timeouts::LEADER).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(&source, Arc::clone(&stop), Arc::clone(&acked));
    // Let the load run, then take the backup while it goes on.
    wait_for(timeouts::LEADER, "2,000 appends acknowledged", async || {
        let count = acked.lock().expect("acked").len();
        if count >= 2_000 {
            Ok(())
        } else {
            Err(format!("{count} so far"))
        }
    })
    .await;
    let acked_before_backup = acked.lock().expect("acked").clone();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.evlbak");
    let file_arg = file.display().to_string();
    let endpoints = source.endpoints();
    let backup = evlog_json(&["backup", "--out", &file_arg, "--endpoints", &endpoints]).await;
    stop.store(true, Ordering::Relaxed);
    for appender in load {
        appender.await.expect("an appender");
    }
    let head = backup["head_position"].as_u64().expect("head_position");
    let events = backup["events"].as_u64().expect("events");
    let highest_acked = acked_before_backup
        .iter()
        .map(|acked| acked.last_position)
        .max()
        .expect("appends before the backup");
    assert!(
        head >= highest_acked,
        "the backup's head {head} is below an append acknowledged before it began ({highest_acked})"
    );
    assert_eq!(
        events, head,
        "a backup of a log with no removal holds 1..=head"
    );
    let total = source
        .read_all(leader, Consistency::Linearizable)
        .await
        .len();
    eprintln!(
        "backup: {} appends acknowledged before it began (highest position {highest_acked}), \
         head {head} in the backup, {total} events in the source once the load stopped",
        acked_before_backup.len()
    );

    // The file checks, on its own.
    let verified = evlog_json(&["backup", "verify", &file_arg]).await;
    assert_eq!(verified["head_position"], backup["head_position"]);
    assert_eq!(verified["checksum"], backup["checksum"]);

    // A fresh cluster restored from it holds exactly 1..=head, every acknowledged append
    // before the backup at its position, in a new epoch.
    let mut target = Cluster::start(ClusterOptions::default()).await;
    let restored = restore_in_place(&mut target, &file).await;
    for summary in &restored {
        assert_eq!(summary["restored"]["epoch"], 1, "{summary}");
        assert_eq!(summary["restored"]["events"], events, "{summary}");
    }
    let target_leader = target.wait_for_leader(timeouts::LEADER).await;
    let log = target
        .read_all(target_leader, Consistency::Linearizable)
        .await;
    let positions: Vec<u64> = log.iter().map(|event| event.position).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    let by_position: BTreeMap<u64, _> = log.iter().map(|event| (event.position, event)).collect();
    for acked in &acked_before_backup {
        let event = by_position
            .get(&acked.first_position)
            .unwrap_or_else(|| panic!("{acked:?} is missing from the restored log"));
        assert_eq!(event.stream, acked.stream, "{acked:?}");
        assert_eq!(event.id, acked.key, "{acked:?}");
    }
    for id in target.node_ids() {
        let status = target.status(id).await.expect("status");
        assert_eq!(status.epoch, 1, "node {id}");
    }
    let page = target
        .read(target_leader, read_all_request(1))
        .await
        .expect("read");
    assert_eq!(page.epoch, 1);

    // Idempotency keys came along: the same append again is deduplicated, not appended.
    let again = &acked_before_backup[acked_before_backup.len() / 2];
    let n: u64 = again
        .key
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("the key ends with its number");
    let response = target
        .append_request(
            target_leader,
            AppendRequest {
                stream: again.stream.clone(),
                events: vec![event(again.key.clone(), "Loaded", format!("{{\"n\":{n}}}"))],
                expected_version: None,
                idempotency_key: Some(again.key.clone()),
            },
        )
        .await
        .expect("append again");
    assert!(response.deduplicated, "{response:?}");
    assert_eq!(response.first_position, again.first_position);
    // And the restored cluster takes new appends after the restored head.
    let fresh = target
        .append(
            target_leader,
            "after-restore",
            vec![event("x", "New", "{}")],
        )
        .await
        .expect("append after restore");
    assert_eq!(fresh.first_position, head + 1);

    // Damage is refused: one flipped byte, and both verify and restore fail, leaving nothing.
    let damaged = dir.path().join("damaged.evlbak");
    let mut bytes = std::fs::read(&file).expect("read the backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, &bytes).expect("write the damaged copy");
    let damaged_arg = damaged.display().to_string();
    let (ok, _, stderr) = evlog(&["backup", "verify", &damaged_arg]).await;
    assert!(!ok, "verify accepted a damaged file");
    assert!(stderr.contains("damaged.evlbak"), "{stderr}");
    let empty = dir.path().join("restore-damaged");
    let empty_arg = empty.display().to_string();
    let (ok, _, stderr) = evlog(&[
        "restore",
        &damaged_arg,
        "--data-dir",
        &empty_arg,
        "--id",
        "1",
        "--peers",
        "1=127.0.0.1:1",
    ])
    .await;
    assert!(!ok, "restore accepted a damaged file");
    assert!(stderr.contains("cannot restore"), "{stderr}");
    assert!(!empty.exists(), "a failed restore left {}", empty.display());

    // A directory that holds anything is refused, and left as it was.
    let used = dir.path().join("used");
    std::fs::create_dir(&used).expect("mkdir");
    std::fs::write(used.join("keep.txt"), "mine").expect("write");
    let used_arg = used.display().to_string();
    let (ok, _, stderr) = evlog(&[
        "restore",
        &file_arg,
        "--data-dir",
        &used_arg,
        "--id",
        "1",
        "--peers",
        "1=127.0.0.1:1",
    ])
    .await;
    assert!(!ok, "restore into a non-empty directory succeeded");
    assert!(stderr.contains("not empty"), "{stderr}");
    let left: Vec<PathBuf> = std::fs::read_dir(&used)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(left, vec![used.join("keep.txt")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_does_not_resume_into_a_restored_log() {
    let (mut cluster, dir) = backed_up_cluster(20).await;
    let file = dir.path().join(BACKUP_FILE);
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    // More events after the backup: the restored log lacks them, and its positions 21.. will
    // be other events than these.
    append_numbered(&cluster, leader, "orders", 20..30).await;
    let endpoints: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.address(id))
        .collect();
    let client = evlog_client::EvlogClient::new(
        &endpoints,
        evlog_client::ClientOptions {
            deadline: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .expect("client");
    let mut subscription = client.subscribe(SubscribeRequest {
        target: Some(subscribe_request::Target::All(Default::default())),
        start: Some(subscribe_request::Start::From(1)),
        ..Default::default()
    });
    let mut seen = 0;
    while seen < 30 {
        use evlog_cluster_tests::proto::subscribe_response::Item;
        match subscription.next().await {
            Some(Ok(Item::Events(batch))) => seen += batch.events.len(),
            Some(Ok(Item::Subscribed(subscribed))) => assert_eq!(subscribed.epoch, 0),
            Some(Ok(_)) => {}
            other => panic!("the subscription ended early: {other:?}"),
        }
    }
    restore_in_place(&mut cluster, &file).await;
    // The restored log (20 events) grows past where the subscription got (30): a client that
    // resumed anyway would get these as if they followed what it saw.
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    append_numbered(&cluster, leader, "other", 0..15).await;
    // The subscription loses its node, resumes on a restored one, and refuses to go on.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match subscription.next().await {
                Some(Ok(evlog_cluster_tests::proto::subscribe_response::Item::Events(batch))) => {
                    panic!("events from the restored log reached the subscriber: {batch:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(status)) => return status,
                None => panic!("the subscription ended without an error"),
            }
        }
    })
    .await
    .expect("the subscription ends once it meets the restored log");
    assert_eq!(ended.code(), tonic::Code::FailedPrecondition, "{ended:?}");
    assert!(ended.message().contains("epoch"), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_serves_a_backup_read_only() {
    let (_cluster, dir) = backed_up_cluster(10).await;
    let file_arg = dir.path().join(BACKUP_FILE).display().to_string();
    let mut sandbox = tokio::process::Command::new(evlog_binary())
        .args(["restore", &file_arg, "--sandbox"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the sandbox starts");
    let stdout = sandbox.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(CLI_TIMEOUT, lines.next_line())
        .await
        .expect("the sandbox says where it serves")
        .expect("stdout")
        .expect("a line");
    let started: Value = serde_json::from_str(&line).expect("JSON");
    let address = started["sandbox"].as_str().expect("address").to_owned();
    let data_dir = PathBuf::from(started["data_dir"].as_str().expect("data_dir"));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_lazy();
    let mut client = evlog_cluster_tests::proto::event_log_client::EventLogClient::new(channel);
    let page = wait_for(timeouts::LEADER, "the sandbox serves reads", async || {
        let mut request = tonic::Request::new(ReadRequest {
            target: Some(read_request::Target::Stream("orders".to_owned())),
            max_count: 100,
            consistency: Consistency::Linearizable as i32,
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(2));
        client
            .read(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status.to_string())
    })
    .await;
    assert_eq!(page.events.len(), 10);
    assert_eq!(page.epoch, 1);
    let refused = client
        .append(AppendRequest {
            stream: "orders".to_owned(),
            events: vec![event("late", "Placed", "{}")],
            expected_version: None,
            idempotency_key: None,
        })
        .await
        .expect_err("the sandbox takes no appends");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("read-only"), "{refused:?}");
    // Stopped, it removes its temporary directory.
    let pid = sandbox.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), sandbox.wait())
        .await
        .expect("the sandbox stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
    assert!(!data_dir.exists(), "{} is left", data_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_lagging_follower_holds_every_append_acknowledged_before_it() {
    use evlog_cluster_tests::proxy::LinkMode;
    let cluster = Cluster::start(ClusterOptions {
        proxied: true,
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    // The follower hears of each entry 400 ms late; the leader and the other follower commit
    // without it.
    cluster.network().expect("the cluster is proxied").set_link(
        leader,
        follower,
        LinkMode::Delay {
            base: Duration::from_millis(400),
            jitter: Duration::ZERO,
        },
    );
    let mut last = 0;
    for n in 0..30 {
        last = cluster
            .append(
                leader,
                "orders",
                vec![event(format!("e{n}"), "Placed", "{}")],
            )
            .await
            .expect("append")
            .last_position;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("lagging.evlbak");
    let backup = evlog_json(&[
        "backup",
        "--out",
        &file.display().to_string(),
        "--endpoints",
        &cluster.address(leader),
        "--endpoint",
        &cluster.address(follower),
    ])
    .await;
    assert_eq!(backup["served_by"], follower, "{backup}");
    let head = backup["head_position"].as_u64().expect("head");
    assert!(
        head >= last,
        "the follower's backup has head {head}, below the last acknowledged append {last}"
    );
}
