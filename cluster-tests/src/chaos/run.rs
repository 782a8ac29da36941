//! One chaos run: a fresh proxied cluster with a low snapshot threshold (snapshots and purges
//! all the time), a load, one fault injected and healed, then the proof: every node restarted
//! and caught up, the whole log read back from each, and the checker run on the history.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evlog_proto::v1::{Consistency, RecordedEvent};
use futures::FutureExt as _;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::availability::Availability;
use super::consumers::ConsumerGroup;
use super::fault::Fault;
use super::history_file;
use super::injector::{self, Injection};
use super::load::{Load, LoadKind, LoadOptions};
use super::subscribers::Subscribers;
use crate::checker::{self, CheckReport, Violation, ViolationKind};
use crate::cluster::Cluster;
use crate::cluster_options::ClusterOptions;
use crate::history::{History, ReadOutcome};
use crate::timeouts;

/// Acknowledged appends to see before the fault.
const WARM_UP_ACKS: usize = 10;
/// Acknowledged appends (invoked after the healing) that show the cluster serves again.
const RECOVERY_ACKS: usize = 3;
/// How long the cluster may take to serve again after the healing before the run reports a
/// liveness violation.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the subscribers may take to get past the final head once the cluster healed.
const SUBSCRIBERS_CATCH_UP: Duration = Duration::from_secs(60);
/// Lines of a crashed node's log quoted in the violation.
const CRASH_LOG_LINES: usize = 15;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// 0-based, in the campaign.
    pub index: usize,
    /// Seeds every choice of the run: victims, durations, link parameters, the load's streams.
    pub seed: u64,
    pub fault: Fault,
    pub load: LoadKind,
    /// How long the load runs (at least: the fault and the recovery may take longer).
    pub duration: Duration,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub spec: RunSpec,
    pub elapsed: Duration,
    /// Append attempts, and how they ended.
    pub operations: usize,
    pub acknowledged: usize,
    pub refused: usize,
    pub unknown: usize,
    pub reads: usize,
    pub reads_served: usize,
    /// Subscribers checked, the events they received, and how often they resumed elsewhere.
    pub subscribers: usize,
    pub subscription_events: usize,
    pub subscription_resumes: usize,
    /// What the checker saw (absent when the run could not get that far).
    pub check: Option<CheckReport>,
    pub violations: Vec<Violation>,
    pub availability: Availability,
    pub notes: Vec<String>,
    /// The cluster directory (data and node logs), kept when the run found a violation.
    pub cluster_dir: Option<PathBuf>,
    /// The history, written when the run found a violation.
    pub history_file: Option<PathBuf>,
}

/// Where a run writes what it keeps.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The campaign's report directory.
    pub out_dir: PathBuf,
    /// `--read-policy` of every node (`None`: the node's default).
    pub read_policy: Option<String>,
    /// Nodes use their own heartbeat and election timeouts.
    pub node_timing: bool,
}

/// Runs `spec`. A panic inside the run (the harness gave up waiting, say) becomes a
/// violation of the run, so the campaign goes on; the cluster's directory is then kept (the
/// cluster sees the panic as it is dropped) and its node logs' tails printed.
pub async fn run(spec: RunSpec, settings: Arc<RunSettings>) -> RunResult {
    let started = Instant::now();
    let outcome = AssertUnwindSafe(run_inner(spec.clone(), settings))
        .catch_unwind()
        .await;
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|text| (*text).to_owned())
                })
                .unwrap_or_else(|| "the run panicked".to_owned());
            let kind = if message.contains("exited unexpectedly") {
                ViolationKind::Crash
            } else {
                ViolationKind::RunError
            };
            RunResult {
                spec,
                elapsed: started.elapsed(),
                operations: 0,
                acknowledged: 0,
                refused: 0,
                unknown: 0,
                reads: 0,
                reads_served: 0,
                subscribers: 0,
                subscription_events: 0,
                subscription_resumes: 0,
                check: None,
                violations: vec![Violation::new(kind, message)],
                availability: Availability::default(),
                notes: vec!["the run stopped early; its cluster directory was kept".to_owned()],
                cluster_dir: None,
                history_file: None,
            }
        }
    }
}

fn cluster_options(seed: u64, settings: &RunSettings) -> ClusterOptions {
    let extra_args = match &settings.read_policy {
        Some(policy) => vec!["--read-policy".to_owned(), policy.clone()],
        None => Vec::new(),
    };
    let timing = if settings.node_timing {
        ClusterOptions {
            heartbeat_interval_ms: None,
            election_timeout_min_ms: None,
            election_timeout_max_ms: None,
            ..ClusterOptions::default()
        }
    } else {
        ClusterOptions::default()
    };
    ClusterOptions {
        extra_args,
        proxied: true,
        spare_nodes: 1,
        snapshot_threshold: Some(200),
        log_keep_after_snapshot: Some(50),
        request_timeout_ms: Some(3_000),
        network_seed: seed,
        ..timing
    }
}

async fn run_inner(spec: RunSpec, settings: Arc<RunSettings>) -> RunResult {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut cluster = Cluster::start(cluster_options(rng.random(), &settings)).await;
    let defaults = LoadOptions::default();
    let load_options = LoadOptions {
        max_duration: spec.duration + LIVENESS_TIMEOUT + Duration::from_secs(120),
        // A KEYED group works one event per stream at a time: many streams.
        streams: if spec.load == LoadKind::Consumer {
            64
        } else {
            defaults.streams
        },
        ..defaults
    };
    let load_started = Instant::now();
    let load = Load::start(&cluster, spec.load, load_options, rng.random());
    let subscribers = Subscribers::start(&cluster, spec.load, rng.random());
    let group_seed: u64 = rng.random();
    let group = if spec.load == LoadKind::Consumer {
        match ConsumerGroup::start(&cluster, group_seed).await {
            Ok(group) => Some(group),
            Err(error) => {
                violations.push(Violation::new(ViolationKind::Liveness, error));
                None
            }
        }
    } else {
        None
    };
    if !load
        .wait_for_acknowledged(load_started, WARM_UP_ACKS, timeouts::ACKS)
        .await
    {
        violations.push(Violation::new(
            ViolationKind::Liveness,
            format!(
                "fewer than {WARM_UP_ACKS} appends acknowledged within {:?} of the start",
                timeouts::ACKS
            ),
        ));
    }

    let injection = injector::inject(&mut cluster, &load, spec.fault, rng.random()).await;
    notes.extend(injection.notes.iter().cloned());
    violations.extend(injection.violations.iter().cloned());
    if !load
        .wait_for_acknowledged(injection.healed_at, RECOVERY_ACKS, LIVENESS_TIMEOUT)
        .await
    {
        violations.push(Violation::new(
            ViolationKind::Liveness,
            format!(
                "fewer than {RECOVERY_ACKS} appends sent after the healing were acknowledged \
                 within {LIVENESS_TIMEOUT:?}"
            ),
        ));
    }
    // The rest of the run's time under load, healed.
    tokio::time::sleep_until((load_started + spec.duration).into()).await;
    let history = load.stop().await;
    let load_stopped = Instant::now();

    let (logs, more) = settle(&mut cluster).await;
    violations.extend(more);
    let checked = checker::check(&history, &logs);
    violations.extend(checked.violations);
    let final_log = logs.first().map_or(&[][..], |(_, log)| log.as_slice());
    let subscriptions = subscribers.finish(final_log, SUBSCRIBERS_CATCH_UP).await;
    let (subscribers_checked, subscription_violations) =
        checker::check_subscriptions(&history, final_log, &subscriptions);
    violations.extend(subscription_violations);
    if let Some(group) = group {
        let (summary, group_violations) = group.finish(&cluster, final_log, load_stopped).await;
        notes.push(format!(
            "consumer group: {} deliveries, {} acked OK, {} dead letters, {} redelivered, {} joins, idle {} after the load stopped",
            summary.deliveries,
            summary.acked,
            summary.dead_letters,
            summary.redelivered,
            summary.joins,
            summary
                .idle_after_ms
                .map_or("never".to_string(), |ms| format!("{:.1} s", ms / 1e3))
        ));
        violations.extend(group_violations);
    }
    let availability = Availability::measure(&history, &injection);

    let mut result = RunResult {
        elapsed: started.elapsed(),
        operations: history.len(),
        acknowledged: history.acknowledged_count(),
        refused: history.failed_count(),
        unknown: history.len() - history.acknowledged_count() - history.failed_count(),
        reads: history.reads().len(),
        reads_served: history
            .reads()
            .iter()
            .filter(|read| matches!(read.outcome, ReadOutcome::Served { .. }))
            .count(),
        subscribers: subscribers_checked,
        subscription_events: subscriptions.iter().map(|record| record.events.len()).sum(),
        subscription_resumes: subscriptions.iter().map(|record| record.resumes).sum(),
        check: Some(checked.report),
        violations,
        availability,
        notes,
        cluster_dir: None,
        history_file: None,
        spec,
    };
    if !result.violations.is_empty() {
        cluster.keep_directory();
        result.cluster_dir = Some(cluster.path().to_path_buf());
        result.history_file = keep_history(
            &settings,
            &result,
            &history,
            &logs,
            &injection,
            load_started,
        );
    }
    result
}

/// After the load: notes every node that crashed on its own, heals, restarts every stopped
/// member, waits until all have applied the whole log, and reads it back from each.
async fn settle(cluster: &mut Cluster) -> (Vec<(u64, Vec<RecordedEvent>)>, Vec<Violation>) {
    let mut violations = Vec::new();
    for (id, status) in cluster.exited_nodes() {
        violations.push(Violation::new(
            ViolationKind::Crash,
            format!(
                "node {id} exited on its own ({status}); the end of its log {}:\n{}",
                cluster.log_path(id).display(),
                cluster.log_tail(id, CRASH_LOG_LINES)
            ),
        ));
    }
    if let Some(network) = cluster.network() {
        network.heal();
    }
    for id in cluster.node_ids() {
        if cluster.is_paused(id) {
            cluster.resume(id);
        }
    }
    for id in cluster.stopped_node_ids() {
        cluster.restart(id);
    }
    if let Err(failure) = cluster.try_wait_for_convergence(timeouts::CATCH_UP).await {
        violations.push(Violation::new(
            ViolationKind::Liveness,
            format!("the healed cluster did not converge: {failure}"),
        ));
    } else if let Err(detail) = replica_check(cluster).await {
        violations.push(Violation::new(ViolationKind::Divergence, detail));
    }
    let logs = cluster.read_all_from_live_nodes(Consistency::Local).await;
    (logs, violations)
}

/// How long the members may take to hash the whole log for the replica check.
const REPLICA_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// `evlog verify`'s check on the settled cluster: the leader proposes a check entry and every
/// member hashes its stored events as they stand at that entry; they must all agree. It sees
/// what reads do not: the bytes each member stored.
async fn replica_check(cluster: &Cluster) -> Result<(), String> {
    use evlog_proto::v1::{ChecksumRequest, GetChecksumRequest};
    let deadline = tokio::time::Instant::now() + REPLICA_CHECK_TIMEOUT;
    // Leadership may still move after the heal: the check starts on whoever leads then.
    let (members, check_index) = loop {
        let leader = cluster.wait_for_leader(timeouts::LEADER).await;
        let started = async {
            let members: Vec<u64> = cluster
                .status(leader)
                .await?
                .members
                .iter()
                .map(|member| member.node_id)
                .filter(|id| cluster.is_live(*id))
                .collect();
            let started = cluster
                .maintenance_client(leader)
                .start_checksum(ChecksumRequest {
                    from_position: 1,
                    to_position: 0,
                    step: 0,
                })
                .await?;
            Ok::<_, tonic::Status>((members, started.into_inner().check_index))
        };
        match started.await {
            Ok(started) => break started,
            Err(status) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("the replica check did not start: {status}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut hashes = Vec::new();
    for id in members {
        loop {
            let asked = cluster
                .maintenance_client(id)
                .checksum(GetChecksumRequest {
                    check_index,
                    wait_ms: 5_000,
                })
                .await;
            let result = match asked {
                Ok(result) => result.into_inner(),
                Err(status) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("node {id} gave no replica check result: {status}"));
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if result.done && result.error.is_empty() {
                hashes.push((id, result.to_position, result.events, result.hash));
                break;
            }
            if result.done || tokio::time::Instant::now() >= deadline {
                let why = if result.done {
                    result.error
                } else {
                    "not in time".to_string()
                };
                return Err(format!(
                    "node {id} did not hash the replica check at log index {check_index}: {why}"
                ));
            }
        }
    }
    if hashes.iter().any(|(_, _, _, hash)| *hash != hashes[0].3) {
        return Err(format!(
            "the members' stored logs differ at the replica check (node, up to position, \
             events, hash): {hashes:x?}"
        ));
    }
    eprintln!(
        "chaos: replica check at log index {check_index}: {} members agree on positions 1..={}",
        hashes.len(),
        hashes.first().map_or(0, |(_, to, _, _)| *to)
    );
    Ok(())
}

fn keep_history(
    settings: &RunSettings,
    result: &RunResult,
    history: &History,
    logs: &[(u64, Vec<RecordedEvent>)],
    injection: &Injection,
    epoch: Instant,
) -> Option<PathBuf> {
    let path = settings.out_dir.join(format!(
        "run-{:03}-{}-{}-history.json",
        result.spec.index,
        result.spec.fault.name(),
        result.spec.load.name()
    ));
    match history_file::write(&path, result, history, logs, injection, epoch) {
        Ok(()) => Some(path),
        Err(error) => {
            eprintln!("chaos: writing {} failed: {error}", path.display());
            None
        }
    }
}
