//! Carries out one [`Fault`] on a running cluster, under load: chooses its victims, its
//! durations and its parameters from the run's seeded generator, injects it, holds it, and
//! heals it. Returns when the fault is healed (the network passes, every node it stopped is
//! running again), with the instants the availability figures are measured from.
//!
//! Holding a fault for a chosen time is the one place the harness sleeps on purpose: the
//! duration is the fault.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::fault::Fault;
use super::load::Load;
use crate::checker::{Violation, ViolationKind};
use crate::cluster::Cluster;
use crate::network::Network;
use crate::node::FAILPOINTS;
use crate::proxy::LinkMode;
use crate::timeouts;
use crate::wait::{Probe, poll};

/// How long a node started with a failpoint may run before the failpoint fires; after that
/// it is killed instead (and the run notes that the failpoint did not fire).
const CRASH_WAIT: Duration = Duration::from_secs(20);

/// How long a stopped follower waits for the leader to purge the log it would need.
const PURGE_WAIT: Duration = Duration::from_secs(60);

/// The most flaps in one flapping fault.
const MAX_FLAPS: usize = 50;

/// What happened when, for the report and the availability figures.
#[derive(Debug, Clone)]
pub struct Injection {
    /// When the fault began.
    pub fault_at: Instant,
    /// When it was healed.
    pub healed_at: Instant,
    /// What was done, step by step, e.g. `killed node 2 (the leader)`.
    pub notes: Vec<String>,
    /// A node started with a failpoint that exited some other way than at the failpoint.
    pub violations: Vec<Violation>,
}

/// A duration in `min_ms..=max_ms`.
fn hold(rng: &mut StdRng, min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(min_ms..=max_ms))
}

/// Blackhole or drop, at random: a silent partition or a refusing one.
fn partition_mode(rng: &mut StdRng) -> LinkMode {
    if rng.random_bool(0.5) {
        LinkMode::Blackhole
    } else {
        LinkMode::Drop
    }
}

fn network(cluster: &Cluster) -> &Network {
    cluster
        .network()
        .expect("chaos runs start the cluster with proxied links")
}

/// The leader all live nodes agree on.
async fn leader(cluster: &Cluster) -> u64 {
    cluster.wait_for_leader(timeouts::LEADER).await
}

/// A live member other than `leader`, chosen at random.
fn follower(cluster: &Cluster, leader: u64, rng: &mut StdRng) -> u64 {
    let followers: Vec<u64> = cluster
        .live_node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    assert!(
        !followers.is_empty(),
        "the cluster has no live follower (leader {leader})"
    );
    followers[rng.random_range(0..followers.len())]
}

/// Injects `fault` and heals it. `failpoints` says whether the binary has them (the campaign
/// does not schedule failpoint faults otherwise).
pub async fn inject(cluster: &mut Cluster, load: &Load, fault: Fault, seed: u64) -> Injection {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut notes = Vec::new();
    let mut violations = Vec::new();
    let mut note = |text: String| {
        eprintln!("chaos: {text}");
        notes.push(text);
    };
    let fault_at;
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let leader = leader(cluster).await;
            let (victim, role) = if fault == Fault::KillLeader {
                (leader, "the leader")
            } else {
                (follower(cluster, leader, &mut rng), "a follower")
            };
            let down = hold(&mut rng, 500, 3_000);
            fault_at = Instant::now();
            cluster.kill(victim).await;
            note(format!(
                "SIGKILLed node {victim} ({role}); restarting it after {down:?}"
            ));
            tokio::time::sleep(down).await;
            cluster.restart(victim);
        }
        Fault::PauseLeader => {
            let leader = leader(cluster).await;
            let paused = hold(&mut rng, 500, 5_000);
            fault_at = Instant::now();
            cluster.pause(leader);
            note(format!(
                "SIGSTOPped node {leader} (the leader) for {paused:?}"
            ));
            tokio::time::sleep(paused).await;
            cluster.resume(leader);
        }
        Fault::IsolateLeader | Fault::IsolateFollower => {
            let leader = leader(cluster).await;
            let (victim, role) = if fault == Fault::IsolateLeader {
                (leader, "the leader")
            } else {
                (follower(cluster, leader, &mut rng), "a follower")
            };
            let mode = partition_mode(&mut rng);
            let isolated = hold(&mut rng, 1_000, 4_000);
            fault_at = Instant::now();
            network(cluster).set_node(victim, mode);
            note(format!(
                "isolated node {victim} ({role}): every link {} for {isolated:?}",
                mode.describe()
            ));
            tokio::time::sleep(isolated).await;
            network(cluster).heal();
        }
        Fault::OneWay => {
            let leader = leader(cluster).await;
            let other = follower(cluster, leader, &mut rng);
            let (from, to) = if rng.random_bool(0.5) {
                (leader, other)
            } else {
                (other, leader)
            };
            let cut = hold(&mut rng, 1_000, 4_000);
            fault_at = Instant::now();
            network(cluster).set_link(from, to, LinkMode::Blackhole);
            note(format!(
                "blackholed only {from}->{to} (leader {leader}) for {cut:?}"
            ));
            tokio::time::sleep(cut).await;
            network(cluster).heal();
        }
        Fault::Bridge => {
            let leader = leader(cluster).await;
            let mut nodes = cluster.live_node_ids();
            // Shuffle (Fisher-Yates) so that the leader may be an end or the bridge.
            for index in (1..nodes.len()).rev() {
                let other = rng.random_range(0..=index);
                nodes.swap(index, other);
            }
            assert!(nodes.len() >= 3, "a bridge needs three live nodes");
            let (a, bridge, c) = (nodes[0], nodes[1], nodes[2]);
            let mode = partition_mode(&mut rng);
            let cut = hold(&mut rng, 1_000, 4_000);
            fault_at = Instant::now();
            network(cluster).set_between(a, c, mode);
            note(format!(
                "cut {a}<->{c} ({}), {a}-{bridge}-{c} up: node {bridge} bridges (leader \
                 {leader}), for {cut:?}",
                mode.describe()
            ));
            tokio::time::sleep(cut).await;
            network(cluster).heal();
        }
        Fault::Flapping => {
            let total = hold(&mut rng, 2_000, 5_000);
            fault_at = Instant::now();
            let nodes = cluster.live_node_ids();
            let mut flaps = Vec::new();
            for _ in 0..MAX_FLAPS {
                if fault_at.elapsed() >= total {
                    break;
                }
                let victim = nodes[rng.random_range(0..nodes.len())];
                let down = hold(&mut rng, 200, 800);
                let up = hold(&mut rng, 100, 400);
                network(cluster).set_node(victim, LinkMode::Blackhole);
                tokio::time::sleep(down).await;
                network(cluster).heal();
                tokio::time::sleep(up).await;
                flaps.push(format!("{victim}:{}ms", down.as_millis()));
            }
            note(format!(
                "flapped for {:?}: isolated node:for {}",
                fault_at.elapsed(),
                flaps.join(" ")
            ));
        }
        Fault::SlowLinks => {
            let mode = LinkMode::Delay {
                base: hold(&mut rng, 50, 150),
                jitter: hold(&mut rng, 0, 50),
            };
            let slow = hold(&mut rng, 2_000, 4_000);
            let one_node = rng.random_bool(0.5).then(|| {
                let nodes = cluster.live_node_ids();
                nodes[rng.random_range(0..nodes.len())]
            });
            fault_at = Instant::now();
            match one_node {
                Some(node) => {
                    network(cluster).set_node(node, mode);
                    note(format!(
                        "slowed node {node}'s links: {} for {slow:?}",
                        mode.describe()
                    ));
                }
                None => {
                    network(cluster).set_all(mode);
                    note(format!(
                        "slowed every link: {} for {slow:?}",
                        mode.describe()
                    ));
                }
            }
            tokio::time::sleep(slow).await;
            network(cluster).heal();
        }
        Fault::LossyLinks => {
            let probability = f64::from(rng.random_range(1_u32..=5)) / 100.0;
            let lossy = hold(&mut rng, 2_000, 4_000);
            fault_at = Instant::now();
            network(cluster).set_all(LinkMode::Lossy { probability });
            note(format!(
                "made every link lossy ({probability} per chunk) for {lossy:?}"
            ));
            tokio::time::sleep(lossy).await;
            let stats = network(cluster).stats();
            let cut: u64 = stats.values().map(|stats| stats.cut + stats.refused).sum();
            network(cluster).heal();
            note(format!("the links reset {cut} connections"));
        }
        Fault::CrashUnsynced
        | Fault::CrashAfterCommit
        | Fault::CrashApply
        | Fault::CrashSnapshotBuild => {
            let failpoint = fault
                .failpoint()
                .expect("a crash fault names its failpoint");
            let action = match fault {
                Fault::CrashSnapshotBuild => "return".to_owned(),
                // A power cut, not a process crash: the writes since the last sync are gone.
                Fault::CrashUnsynced => {
                    format!("{}%return(power-loss)", rng.random_range(1_u32..=5))
                }
                _ => format!("{}%return", rng.random_range(1_u32..=5)),
            };
            let leader = leader(cluster).await;
            let victim = if rng.random_bool(0.5) {
                leader
            } else {
                follower(cluster, leader, &mut rng)
            };
            fault_at = Instant::now();
            cluster.kill(victim).await;
            let spec = format!("{failpoint}={action}");
            note(format!(
                "SIGKILLed node {victim} (leader {leader}); restarted it with {FAILPOINTS}={spec}"
            ));
            cluster.restart_with_env(victim, &[(FAILPOINTS.to_owned(), spec)]);
            await_crash(cluster, victim, &mut note, &mut violations).await;
            cluster.restart(victim);
        }
        Fault::CrashVote => {
            let leader = leader(cluster).await;
            let victim = follower(cluster, leader, &mut rng);
            let spec = "store::vote=return".to_owned();
            fault_at = Instant::now();
            cluster.kill(victim).await;
            cluster.restart_with_env(victim, &[(FAILPOINTS.to_owned(), spec.clone())]);
            // Back in the cluster (it answers, and knows the leader) before the election.
            let _ = poll(timeouts::LEADER, async || {
                match cluster.status(victim).await {
                    Ok(status) if status.leader_id == leader => Probe::Ready(()),
                    Ok(status) => Probe::NotYet(format!("leader {}", status.leader_id)),
                    Err(error) => Probe::NotYet(error.to_string()),
                }
            })
            .await;
            let isolated = hold(&mut rng, 2_000, 4_000);
            network(cluster).set_node(leader, LinkMode::Blackhole);
            note(format!(
                "restarted node {victim} with {FAILPOINTS}={spec}, then isolated the leader \
                 {leader} for {isolated:?} to force an election"
            ));
            let crashed_at = Instant::now();
            await_crash(cluster, victim, &mut note, &mut violations).await;
            tokio::time::sleep(isolated.saturating_sub(crashed_at.elapsed())).await;
            network(cluster).heal();
            cluster.restart(victim);
        }
        Fault::CrashSnapshotInstall | Fault::SnapshotCatchUp => {
            let leader = leader(cluster).await;
            let victim = follower(cluster, leader, &mut rng);
            let last_log_index = cluster
                .status(victim)
                .await
                .map(|status| status.last_log_index)
                .unwrap_or(0);
            fault_at = Instant::now();
            cluster.kill(victim).await;
            note(format!(
                "SIGKILLed node {victim} (a follower, last log index {last_log_index}); waiting \
                 for the leader to purge past it"
            ));
            let purged = poll(PURGE_WAIT, async || {
                let leader = cluster.wait_for_leader(timeouts::LEADER).await;
                match cluster.status(leader).await {
                    Ok(status) if status.purged_index > last_log_index => {
                        Probe::Ready((leader, status.snapshot_index, status.purged_index))
                    }
                    Ok(status) => Probe::NotYet(format!("purged {}", status.purged_index)),
                    Err(error) => Probe::NotYet(error.to_string()),
                }
            })
            .await;
            match purged {
                Ok((leader, snapshot, purged)) => note(format!(
                    "leader {leader} has a snapshot at {snapshot} and purged up to {purged}"
                )),
                Err(failure) => note(format!(
                    "the leader did not purge past {last_log_index} in time ({failure}); the \
                     follower may catch up from the log"
                )),
            }
            if fault == Fault::CrashSnapshotInstall {
                let spec = "store::snapshot-install=return".to_owned();
                note(format!("restarting node {victim} with {FAILPOINTS}={spec}"));
                cluster.restart_with_env(victim, &[(FAILPOINTS.to_owned(), spec)]);
                await_crash(cluster, victim, &mut note, &mut violations).await;
            }
            cluster.restart(victim);
        }
        Fault::PowerLossAll => {
            let leader = leader(cluster).await;
            let down = hold(&mut rng, 200, 2_000);
            fault_at = Instant::now();
            let nodes = cluster.live_node_ids();
            cluster.signal_all(&nodes, "USR1");
            note(format!(
                "cut the power of nodes {nodes:?} at once (SIGUSR1; leader {leader}); \
                 restarting them after {down:?}"
            ));
            for victim in &nodes {
                await_crash(cluster, *victim, &mut note, &mut violations).await;
            }
            tokio::time::sleep(down).await;
            for victim in nodes {
                cluster.restart(victim);
            }
        }
        Fault::WipeRejoin => {
            let leader = leader(cluster).await;
            let nodes = cluster.live_node_ids();
            let victim = nodes[rng.random_range(0..nodes.len())];
            fault_at = Instant::now();
            cluster.kill(victim).await;
            let new = cluster.replace_node(victim).await;
            load.set_targets(cluster);
            note(format!(
                "wiped node {victim} (leader {leader}); node {new} joined in its place"
            ));
        }
    }
    let healed_at = Instant::now();
    note(format!(
        "healed {:?} after the fault began",
        healed_at.saturating_duration_since(fault_at)
    ));
    Injection {
        fault_at,
        healed_at,
        notes,
        violations,
    }
}

/// Lines of a node's log searched for the failpoint's own last words.
const FAILPOINT_LOG_LINES: usize = 40;

/// Waits for node `victim`, started with a failpoint, to crash; kills it if it does not. A
/// crash that is not the failpoint's abort (its log does not say so) is a violation: the node
/// died of something else while it was being tested.
async fn await_crash(
    cluster: &mut Cluster,
    victim: u64,
    note: &mut impl FnMut(String),
    violations: &mut Vec<Violation>,
) {
    match cluster.wait_for_crash(victim, CRASH_WAIT).await {
        Some(status) => {
            let tail = cluster.log_tail(victim, FAILPOINT_LOG_LINES);
            if tail.contains("failpoint store::") || tail.contains("SIGUSR1: power loss") {
                note(format!(
                    "node {victim} crashed at its failpoint or power cut ({status})"
                ));
            } else {
                violations.push(Violation::new(
                    ViolationKind::Crash,
                    format!(
                        "node {victim}, started with a failpoint, exited ({status}) without \
                         reaching it; the end of its log {}:\n{tail}",
                        cluster.log_path(victim).display()
                    ),
                ));
            }
        }
        None => {
            note(format!(
                "the failpoint of node {victim} did not fire within {CRASH_WAIT:?}; SIGKILLed it"
            ));
            if cluster.is_live(victim) || cluster.is_paused(victim) {
                cluster.kill(victim).await;
            }
        }
    }
}
