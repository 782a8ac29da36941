//! Durability under SIGKILL: a child process appends log entries in a loop and reports each
//! one whose flush callback fired; the parent SIGKILLs it mid-stream, reopens the store and
//! checks that every reported entry is there, intact, with no hole. Several rounds, each
//! continuing the same log.
//!
//! SIGKILL leaves the kernel's page cache alone, so this checks the store's own crash
//! consistency (what redb holds in memory is lost, what it wrote is not); durability against
//! the loss of unsynced writes is `power_loss.rs`'s.

mod common;

use std::io::BufRead;
use std::io::BufReader;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use common::entry;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::type_config::TypeConfig;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;

const CHILD_ENV: &str = "EVLOG_CRASH_CHILD_DIR";
/// Set (to anything) when the child's store saves its allocator state with every commit.
const QUICK_REPAIR_ENV: &str = "EVLOG_CRASH_CHILD_QUICK_REPAIR";

fn config(dir: &std::path::Path, quick_repair: bool) -> StoreConfig {
    StoreConfig {
        quick_repair,
        ..StoreConfig::new(dir, 1, "crash")
    }
}

/// The child: appends forever (until killed), printing `acked <index>` after each flush.
/// Not a test of its own: the parent runs it (with `--ignored`) in a process it then kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of acknowledged_appends_survive_sigkill, run by it"]
async fn crash_child() {
    let dir = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!("crash_child runs only as the child of acknowledged_appends_survive_sigkill ({CHILD_ENV} is unset)")
    });
    let (_engine, mut log, _sm, _reader) = evlog_raft_store::open(&config(
        dir.as_ref(),
        std::env::var_os(QUICK_REPAIR_ENV).is_some(),
    ))
    .expect("opens");
    let state = log.get_log_state().await.expect("log state");
    let mut next = state.last_log_id.map(|id| id.index + 1).unwrap_or(1);
    // Bounded: the parent kills us long before this.
    for _ in 0..1_000_000 {
        // Several appends in flight share fsyncs; each is reported only after its own flush.
        let mut waits = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = TypeConfig::oneshot();
            log.append([entry(next)], IOFlushed::<TypeConfig>::signal(tx))
                .await
                .expect("append");
            waits.push((next, rx));
            next += 1;
        }
        for (index, rx) in waits {
            rx.await.expect("callback").expect("flushed");
            println!("acked {index}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    survive_sigkill(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_with_quick_repair() {
    survive_sigkill(true).await;
}

async fn survive_sigkill(quick_repair: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test executable");
    let mut highest_acked = 0u64;
    for round in 0..3 {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path());
        if quick_repair {
            command.env(QUICK_REPAIR_ENV, "1");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut acked_this_round = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            if let Some(index) = line.strip_prefix("acked ") {
                let index: u64 = index.trim().parse().expect("an index");
                highest_acked = highest_acked.max(index);
                acked_this_round += 1;
                // Kill at a different point each round, mid-stream.
                if acked_this_round >= 300 + 137 * round || Instant::now() > deadline {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        assert!(
            acked_this_round > 0,
            "round {round}: the child acknowledged nothing"
        );

        let (_engine, mut log, _sm, _reader) =
            evlog_raft_store::open(&config(dir.path(), quick_repair))
                .expect("reopens after SIGKILL");
        let state = log.get_log_state().await.expect("log state");
        let last = state.last_log_id.expect("entries survived").index;
        assert!(
            last >= highest_acked,
            "round {round}: acked up to {highest_acked} but the log ends at {last}"
        );
        let entries = log
            .try_get_log_entries(1..=last)
            .await
            .expect("entries read back");
        assert_eq!(entries.len() as u64, last, "no hole in the log");
        for (offset, found) in entries.iter().enumerate() {
            assert_eq!(
                *found,
                entry(offset as u64 + 1),
                "entry {} intact",
                offset + 1
            );
        }
    }
}
