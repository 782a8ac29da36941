//! A campaign: runs of faults × workloads, each on a fresh cluster, one after the other, with a
//! progress line per run and a report at the end.
//!
//! Run `i` of a campaign with seed `s` has seed `s + i`: replaying one run is running a
//! campaign of that one fault and workload with the run's seed (the report prints the
//! command). The processes' timing is not reproducible, so a replay repeats the schedule (the
//! victims, durations and parameters), not the exact interleaving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fault::Fault;
use super::load::LoadKind;
use super::report::Report;
use super::run::{self, RunResult, RunSettings, RunSpec};

/// What to run.
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    pub faults: Vec<Fault>,
    pub loads: Vec<LoadKind>,
    /// Runs of each fault × workload pair (the quick campaign: of each fault).
    pub runs: usize,
    /// How long each run's load lasts.
    pub duration: Duration,
    pub seed: u64,
    /// The quick campaign: each fault `runs` times, its runs taking the workloads in turn,
    /// instead of every fault × workload pair.
    pub quick: bool,
    /// Where the report (and kept histories) go.
    pub out_dir: PathBuf,
    /// `--read-policy` of every node (`None`: the node's default).
    pub read_policy: Option<String>,
    /// Nodes use their own heartbeat and election timeouts (`--node-timing`).
    pub node_timing: bool,
    /// Faults not run, with the reason (a failpoint missing from the binary).
    pub skipped: Vec<(Fault, String)>,
    /// The `evlog` binary the runs start.
    pub binary: PathBuf,
}

impl CampaignOptions {
    /// The runs, in order, with their seeds.
    pub fn plan(&self) -> Vec<RunSpec> {
        let mut pairs = Vec::new();
        if self.quick {
            // Fault i's first run takes workload i (so one run of each fault covers them all),
            // its later runs the next ones in turn.
            for (index, fault) in self.faults.iter().enumerate() {
                for run in 0..self.runs {
                    pairs.push((*fault, self.loads[(index + run) % self.loads.len().max(1)]));
                }
            }
        } else {
            for fault in &self.faults {
                for load in &self.loads {
                    for _ in 0..self.runs {
                        pairs.push((*fault, *load));
                    }
                }
            }
        }
        pairs
            .into_iter()
            .enumerate()
            .map(|(index, (fault, load))| RunSpec {
                index,
                seed: self.seed.wrapping_add(index as u64),
                fault,
                load,
                duration: self.duration,
            })
            .collect()
    }

    /// The command that replays run `spec` alone.
    pub fn replay_command(&self, spec: &RunSpec) -> String {
        let read_policy = self
            .read_policy
            .as_ref()
            .map(|policy| format!(" --read-policy {policy}"))
            .unwrap_or_default()
            + if self.node_timing {
                " --node-timing"
            } else {
                ""
            };
        format!(
            "scripts/chaos.sh --seed {} --faults {} --workloads {} --runs 1 --duration {}{read_policy}",
            spec.seed,
            spec.fault.name(),
            spec.load.name(),
            spec.duration.as_secs()
        )
    }
}

/// Resolves at the first SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Runs the campaign, printing a line per run, and returns its report. SIGINT or SIGTERM
/// stops it between two instants of a run: the run in progress is dropped (its cluster's
/// processes are killed with it) and the report covers the runs that finished.
pub async fn run_campaign(options: CampaignOptions) -> Report {
    let started = Instant::now();
    let plan = options.plan();
    let settings = Arc::new(RunSettings {
        out_dir: options.out_dir.clone(),
        read_policy: options.read_policy.clone(),
        node_timing: options.node_timing,
    });
    eprintln!(
        "chaos: campaign seed {}: {} runs of {:?} each, report in {}",
        options.seed,
        plan.len(),
        options.duration,
        options.out_dir.display()
    );
    let mut results: Vec<RunResult> = Vec::new();
    let mut interrupt = std::pin::pin!(interrupted());
    let mut stopped = false;
    for spec in plan.iter().cloned() {
        eprintln!(
            "chaos: [{}/{}] {} × {} (seed {}) ...",
            spec.index + 1,
            plan.len(),
            spec.fault.name(),
            spec.load.name(),
            spec.seed
        );
        let result = tokio::select! {
            result = run::run(spec, Arc::clone(&settings)) => result,
            () = &mut interrupt => {
                eprintln!("chaos: interrupted; the run in progress was stopped and its cluster killed");
                stopped = true;
                break;
            }
        };
        println!("{}", progress_line(&result, plan.len()));
        if !result.violations.is_empty() {
            for violation in result.violations.iter().take(10) {
                println!("    {violation}");
            }
            if result.violations.len() > 10 {
                println!("    … and {} more", result.violations.len() - 10);
            }
            println!("    replay: {}", options.replay_command(&result.spec));
            if let Some(dir) = &result.cluster_dir {
                println!("    cluster directory kept: {}", dir.display());
            }
            if let Some(file) = &result.history_file {
                println!("    history: {}", file.display());
            }
        }
        results.push(result);
    }
    let mut report = Report::new(&options, results, started.elapsed());
    report.interrupted = stopped;
    report
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |duration| format!("{:.2}s", duration.as_secs_f64()),
    )
}

fn progress_line(result: &RunResult, total: usize) -> String {
    let spec = &result.spec;
    format!(
        "[{}/{total}] {:<22} {:<10} seed {:<20} {:>6} appends ({} acked, {} refused, {} \
         unknown), {} reads, {} subscribers ({} events, {} resumes); gap {}, first ack after \
         fault {}, after heal {}; {} violations ({:.1}s)",
        spec.index + 1,
        spec.fault.name(),
        spec.load.name(),
        spec.seed,
        result.operations,
        result.acknowledged,
        result.refused,
        result.unknown,
        result.reads_served,
        result.subscribers,
        result.subscription_events,
        result.subscription_resumes,
        seconds(result.availability.longest_gap),
        seconds(result.availability.first_ack_after_fault),
        seconds(result.availability.first_ack_after_heal),
        result.violations.len(),
        result.elapsed.as_secs_f64()
    )
}
