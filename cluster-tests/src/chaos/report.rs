//! The campaign report: `report.json` (every run, every violation, the availability figures)
//! and `summary.txt`, a table per fault: runs, operations, violations, and the availability
//! percentiles over its runs; then violations by kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::availability::Percentiles;
use super::campaign::CampaignOptions;
use super::fault::Fault;
use super::run::RunResult;
use crate::checker::ViolationKind;

/// Violations listed per run in `report.json` (all are counted; a failing run's history file
/// lists them all).
const MAX_LISTED_VIOLATIONS: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct ViolationRecord {
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AvailabilityRecord {
    pub longest_gap_ms: Option<f64>,
    pub first_ack_after_fault_ms: Option<f64>,
    pub first_ack_after_heal_ms: Option<f64>,
}

/// One run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub index: usize,
    pub seed: u64,
    pub fault: &'static str,
    pub workload: &'static str,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub append_attempts: usize,
    pub acknowledged: usize,
    pub refused: usize,
    pub unknown: usize,
    pub reads: usize,
    pub reads_served: usize,
    pub subscribers: usize,
    pub subscription_events: usize,
    pub subscription_resumes: usize,
    /// Events in the final log.
    pub events: Option<usize>,
    pub unknown_present: Option<usize>,
    pub unknown_absent: Option<usize>,
    pub violation_count: usize,
    /// The first violations (at most 100).
    pub violations: Vec<ViolationRecord>,
    pub availability: AvailabilityRecord,
    pub notes: Vec<String>,
    pub cluster_dir: Option<PathBuf>,
    pub history_file: Option<PathBuf>,
    pub replay: String,
}

/// One fault over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSummary {
    pub fault: &'static str,
    pub runs: usize,
    pub append_attempts: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub refused: usize,
    pub reads: usize,
    pub violations: usize,
    pub longest_gap: Percentiles,
    pub first_ack_after_fault: Percentiles,
    pub first_ack_after_heal: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedFault {
    pub fault: &'static str,
    pub reason: String,
}

/// The whole campaign.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub quick: bool,
    pub binary: PathBuf,
    /// The nodes' `--read-policy`, when the campaign set one.
    pub read_policy: Option<String>,
    pub elapsed_s: f64,
    /// The campaign was stopped by a signal before every run was done.
    pub interrupted: bool,
    pub runs: Vec<RunRecord>,
    pub faults: Vec<FaultSummary>,
    pub violations_by_kind: BTreeMap<&'static str, usize>,
    pub skipped: Vec<SkippedFault>,
}

fn millis(duration: Option<Duration>) -> Option<f64> {
    duration.map(|duration| duration.as_secs_f64() * 1_000.0)
}

impl Report {
    pub fn new(options: &CampaignOptions, results: Vec<RunResult>, elapsed: Duration) -> Report {
        let runs: Vec<RunRecord> = results
            .iter()
            .map(|result| RunRecord {
                index: result.spec.index,
                seed: result.spec.seed,
                fault: result.spec.fault.name(),
                workload: result.spec.load.name(),
                duration_s: result.spec.duration.as_secs_f64(),
                elapsed_s: result.elapsed.as_secs_f64(),
                append_attempts: result.operations,
                acknowledged: result.acknowledged,
                refused: result.refused,
                unknown: result.unknown,
                reads: result.reads,
                reads_served: result.reads_served,
                subscribers: result.subscribers,
                subscription_events: result.subscription_events,
                subscription_resumes: result.subscription_resumes,
                events: result.check.as_ref().map(|check| check.events),
                unknown_present: result.check.as_ref().map(|check| check.unknown_present),
                unknown_absent: result.check.as_ref().map(|check| check.unknown_absent),
                violation_count: result.violations.len(),
                violations: result
                    .violations
                    .iter()
                    .take(MAX_LISTED_VIOLATIONS)
                    .map(|violation| ViolationRecord {
                        kind: violation.kind.name(),
                        message: violation.message.clone(),
                    })
                    .collect(),
                availability: AvailabilityRecord {
                    longest_gap_ms: millis(result.availability.longest_gap),
                    first_ack_after_fault_ms: millis(result.availability.first_ack_after_fault),
                    first_ack_after_heal_ms: millis(result.availability.first_ack_after_heal),
                },
                notes: result.notes.clone(),
                cluster_dir: result.cluster_dir.clone(),
                history_file: result.history_file.clone(),
                replay: options.replay_command(&result.spec),
            })
            .collect();
        let faults = Fault::ALL
            .into_iter()
            .filter_map(|fault| {
                let of_fault: Vec<&RunResult> = results
                    .iter()
                    .filter(|result| result.spec.fault == fault)
                    .collect();
                (!of_fault.is_empty()).then(|| FaultSummary {
                    fault: fault.name(),
                    runs: of_fault.len(),
                    append_attempts: of_fault.iter().map(|result| result.operations).sum(),
                    acknowledged: of_fault.iter().map(|result| result.acknowledged).sum(),
                    unknown: of_fault.iter().map(|result| result.unknown).sum(),
                    refused: of_fault.iter().map(|result| result.refused).sum(),
                    reads: of_fault.iter().map(|result| result.reads_served).sum(),
                    violations: of_fault.iter().map(|result| result.violations.len()).sum(),
                    longest_gap: Percentiles::of(
                        of_fault
                            .iter()
                            .map(|result| result.availability.longest_gap),
                    ),
                    first_ack_after_fault: Percentiles::of(
                        of_fault
                            .iter()
                            .map(|result| result.availability.first_ack_after_fault),
                    ),
                    first_ack_after_heal: Percentiles::of(
                        of_fault
                            .iter()
                            .map(|result| result.availability.first_ack_after_heal),
                    ),
                })
            })
            .collect();
        let mut violations_by_kind = BTreeMap::new();
        for result in &results {
            for violation in &result.violations {
                *violations_by_kind.entry(violation.kind.name()).or_insert(0) += 1;
            }
        }
        Report {
            seed: options.seed,
            quick: options.quick,
            binary: options.binary.clone(),
            read_policy: options.read_policy.clone(),
            elapsed_s: elapsed.as_secs_f64(),
            interrupted: false,
            runs,
            faults,
            violations_by_kind,
            skipped: options
                .skipped
                .iter()
                .map(|(fault, reason)| SkippedFault {
                    fault: fault.name(),
                    reason: reason.clone(),
                })
                .collect(),
        }
    }

    /// Every violation of every run.
    pub fn violation_count(&self) -> usize {
        self.violations_by_kind.values().sum()
    }

    /// The readable summary: a table per fault, then violations by kind.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "evlog chaos campaign: seed {}{}{}, {} runs in {:.0}s, {} violations",
            self.seed,
            if self.quick { " (quick)" } else { "" },
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.runs.len(),
            self.elapsed_s,
            self.violation_count()
        );
        let _ = writeln!(
            text,
            "binary: {}; read policy: {}",
            self.binary.display(),
            self.read_policy.as_deref().unwrap_or("the node's default")
        );
        let _ = writeln!(text);
        let _ = writeln!(
            text,
            "{:<23} {:>4} {:>8} {:>7} {:>7} {:>7} {:>6} {:>4}  {:<17}  {:<17}  {:<17}",
            "fault",
            "runs",
            "appends",
            "acked",
            "unknown",
            "refused",
            "reads",
            "viol",
            "longest gap",
            "1st ack after fault",
            "1st ack after heal"
        );
        let _ = writeln!(
            text,
            "{:<23} {:>4} {:>8} {:>7} {:>7} {:>7} {:>6} {:>4}  {:<17}  {:<17}  {:<17}",
            "", "", "", "", "", "", "", "", "p50 / p99", "p50 / p99", "p50 / p99"
        );
        for fault in &self.faults {
            let _ = writeln!(
                text,
                "{:<23} {:>4} {:>8} {:>7} {:>7} {:>7} {:>6} {:>4}  {:<17}  {:<17}  {:<17}",
                fault.fault,
                fault.runs,
                fault.append_attempts,
                fault.acknowledged,
                fault.unknown,
                fault.refused,
                fault.reads,
                fault.violations,
                fault.longest_gap.describe(),
                fault.first_ack_after_fault.describe(),
                fault.first_ack_after_heal.describe()
            );
        }
        let total =
            |field: fn(&FaultSummary) -> usize| -> usize { self.faults.iter().map(field).sum() };
        let _ = writeln!(
            text,
            "{:<23} {:>4} {:>8} {:>7} {:>7} {:>7} {:>6} {:>4}",
            "total",
            total(|fault| fault.runs),
            total(|fault| fault.append_attempts),
            total(|fault| fault.acknowledged),
            total(|fault| fault.unknown),
            total(|fault| fault.refused),
            total(|fault| fault.reads),
            total(|fault| fault.violations)
        );
        let _ = writeln!(text);
        let _ = writeln!(text, "violations by kind:");
        if self.violations_by_kind.is_empty() {
            let _ = writeln!(text, "  none");
        }
        for kind in ViolationKind::ALL {
            if let Some(count) = self.violations_by_kind.get(kind.name()) {
                let _ = writeln!(text, "  {:<26} {count}", kind.name());
            }
        }
        for run in self.runs.iter().filter(|run| !run.violations.is_empty()) {
            let _ = writeln!(
                text,
                "  run {} ({} × {}, seed {}): {}",
                run.index, run.fault, run.workload, run.seed, run.replay
            );
            if let Some(file) = &run.history_file {
                let _ = writeln!(text, "    history: {}", file.display());
            }
            if let Some(dir) = &run.cluster_dir {
                let _ = writeln!(text, "    cluster: {}", dir.display());
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(text);
            let _ = writeln!(text, "skipped faults:");
            for skipped in &self.skipped {
                let _ = writeln!(text, "  {:<23} {}", skipped.fault, skipped.reason);
            }
        }
        text
    }

    /// Writes `report.json` and `summary.txt` into `dir`.
    ///
    /// # Errors
    ///
    /// When the directory or a file cannot be written.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("summary.txt"), self.summary())
    }
}
