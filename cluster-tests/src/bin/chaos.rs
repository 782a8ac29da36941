//! `chaos`: runs a chaos campaign against clusters of the `evlog` binary it starts, and writes
//! a report. `scripts/chaos.sh` builds the binaries and calls it. Exits non-zero on any
//! violation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use evlog_cluster_tests::chaos::{CampaignOptions, Fault, LoadKind, run_campaign};
use evlog_cluster_tests::{evlog_binary, failpoints_compiled_in};

/// The load time per run.
const DEFAULT_DURATION_SECS: u64 = 10;
/// The quick campaign's load time per run: every fault once, a few minutes in all.
const QUICK_DURATION_SECS: u64 = 6;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Chaos campaign: faults on a seeded schedule against a real evlog cluster under \
             recorded load, each run checked (linearizability of appends and reads, no loss, \
             no duplicate, expected versions, idempotency) and its availability measured",
    after_help = "Faults:\n  all, or a comma-separated list of: kill-leader, kill-follower, \
                  pause-leader, isolate-leader, isolate-follower, one-way, bridge, flapping, \
                  slow-links, lossy-links, crash-unsynced, crash-after-commit, crash-vote, \
                  crash-apply, crash-snapshot-install, crash-snapshot-build, wipe-rejoin, \
                  snapshot-catch-up, power-loss-all (crash-* and power-loss-all need an evlog \
                  binary built with the failpoints feature; they are skipped otherwise)\nWorkloads:\n  all, or a \
                  comma-separated list of: appends, mixed, contention, idempotent, subscribe, coalesced\n\nThe \
                  report (report.json, summary.txt, and the history of any run with a \
                  violation) goes to --out. `--list` describes every fault and workload."
)]
struct Args {
    /// The faults to inject: `all` or a comma-separated list.
    #[arg(long, default_value = "all")]
    faults: String,
    /// The workloads: `all` or a comma-separated list.
    #[arg(long, default_value = "all")]
    workloads: String,
    /// Runs of each fault × workload pair (with --quick: of each fault).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seconds of load per run (the fault and the recovery may stretch a run)
    /// [default: 10; with --quick, 6].
    #[arg(long)]
    duration: Option<u64>,
    /// The campaign's seed; run i uses seed + i. Default: from the clock (printed).
    #[arg(long)]
    seed: Option<u64>,
    /// The short campaign CI runs: every fault once, the workloads in turn, short runs.
    #[arg(long)]
    quick: bool,
    /// Where to write the report [default: target/chaos/seed-<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The nodes' `--read-policy` (`read-index` or `lease`) [default: the node's default].
    #[arg(long)]
    read_policy: Option<String>,
    /// Run the nodes with their own heartbeat and election timeouts instead of the relaxed
    /// ones the harness gives debug builds (1-2 s elections): for measuring failover with a
    /// release binary (`EVLOG_BIN=target/release/evlog`).
    #[arg(long)]
    node_timing: bool,
    /// Describe the faults and workloads, and exit.
    #[arg(long)]
    list: bool,
}

fn parse_list<T: Copy>(
    text: &str,
    all: &[T],
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> anyhow::Result<Vec<T>> {
    if text.trim() == "all" {
        return Ok(all.to_vec());
    }
    let mut chosen = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        match parse(name) {
            Some(item) => chosen.push(item),
            None => bail!("unknown {what} {name:?}; see --help"),
        }
    }
    if chosen.is_empty() {
        bail!("no {what} chosen");
    }
    Ok(chosen)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.list {
        println!("faults:");
        for fault in Fault::ALL {
            println!("  {:<23} {}", fault.name(), fault.description());
        }
        println!("workloads:");
        for load in LoadKind::ALL {
            println!("  {:<23} {}", load.name(), load.description());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let requested = parse_list(&args.faults, &Fault::ALL, Fault::parse, "fault")?;
    let loads = parse_list(&args.workloads, &LoadKind::ALL, LoadKind::parse, "workload")?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64)
    });
    let binary = evlog_binary();
    let failpoints =
        failpoints_compiled_in(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let mut faults = Vec::new();
    let mut skipped = Vec::new();
    for fault in requested {
        match fault.needs_failpoints_build() {
            Some(failpoint) if !failpoints => skipped.push((
                fault,
                format!(
                    "{} was built without the failpoints feature (needs {failpoint})",
                    binary.display()
                ),
            )),
            _ => faults.push(fault),
        }
    }
    for (fault, reason) in &skipped {
        eprintln!("chaos: skipping {}: {reason}", fault.name());
    }
    let out_dir = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("target/chaos/seed-{seed}")));
    let duration = Duration::from_secs(args.duration.unwrap_or(if args.quick {
        QUICK_DURATION_SECS
    } else {
        DEFAULT_DURATION_SECS
    }));
    let options = CampaignOptions {
        faults,
        loads,
        runs: args.runs,
        duration,
        seed,
        quick: args.quick,
        out_dir: out_dir.clone(),
        read_policy: args.read_policy,
        node_timing: args.node_timing,
        skipped,
        binary,
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = if options.faults.is_empty() {
        bail!("no fault left to run (every chosen fault needs failpoints)");
    } else {
        runtime.block_on(run_campaign(options))
    };
    report
        .write(&out_dir)
        .with_context(|| format!("writing the report to {}", out_dir.display()))?;
    println!();
    print!("{}", report.summary());
    println!(
        "report: {} and {}",
        out_dir.join("summary.txt").display(),
        out_dir.join("report.json").display()
    );
    if report.violation_count() > 0 {
        println!(
            "chaos: {} violations; seed {} (replay commands above)",
            report.violation_count(),
            report.seed
        );
    }
    if report.interrupted {
        println!("chaos: interrupted before every run was done");
        return Ok(ExitCode::from(130));
    }
    if report.violation_count() > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
