//! A node whose disk fills up stops, with a clear message and a non-zero status, instead of
//! going on answering with a store that cannot write (a failed write or fsync is never
//! retried); the other two keep serving; nothing acknowledged is lost; once the space is
//! freed, the node starts again and catches up.
//!
//! The full disk is a real one where the harness may mount: a small tmpfs over the node's
//! data directory (as root). Elsewhere, the failpoints build's crash backend plays the disk
//! (`EVLOG_TEST_DISK_FREE_BYTES`), failing writes past the space given with "no space left on
//! device" just as the file system would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evlog_cluster_tests::proto::{AppendRequest, Consistency, EventData};
use evlog_cluster_tests::{Cluster, ClusterOptions, RecordingWriter, checker, timeouts};

/// Free space left on the victim's disk when it starts again.
const FREE_BYTES: u64 = 6 << 20;
/// Size of the tmpfs, when one can be mounted: once the filler goes, room for the victim to
/// catch up on everything the others took meanwhile (with its journal, up to a second of
/// entries, and the database's pages freed only at its next durable commit). 64 MiB was
/// short now and then once replication was pipelined: the victim stopped again while catching
/// up on the leader's ~100 MiB.
const TMPFS_BYTES: u64 = 128 << 20;
/// Bytes of each event the load appends.
const EVENT_BYTES: usize = 64 << 10;
/// Most appends before the victim must have stopped (far more than the free space takes).
const MAX_APPENDS: usize = 400;

/// A tmpfs mounted over a directory; unmounted when dropped.
struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path`, or `None` when this process may not mount.
    fn mount(path: &Path, bytes: u64) -> Option<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            mount_point: path.to_path_buf(),
        })
    }

    fn filler(&self) -> PathBuf {
        self.mount_point.join("filler")
    }

    /// Writes a filler file that leaves `free` bytes of the tmpfs free.
    fn fill_leaving(&self, free: u64) {
        let used: u64 = walk_size(&self.mount_point);
        let filler = TMPFS_BYTES.saturating_sub(used).saturating_sub(free);
        let bytes = vec![0xEEu8; 1 << 20];
        let mut written = 0u64;
        let mut file = std::fs::File::create(self.filler()).expect("the filler is created");
        while written < filler {
            let chunk = (filler - written).min(bytes.len() as u64) as usize;
            std::io::Write::write_all(&mut file, &bytes[..chunk]).expect("the filler is written");
            written += chunk as u64;
        }
        file.sync_all().expect("the filler is synced");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .stdin(Stdio::null())
            .status();
    }
}

fn walk_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk_size(&path)
            } else {
                entry.metadata().map_or(0, |metadata| metadata.len())
            }
        })
        .sum()
}

/// Copies the files of `from` (recursively) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the target directory is created");
    for entry in std::fs::read_dir(from).expect("the source directory reads") {
        let path = entry.expect("a directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("a file copies");
        }
    }
}

fn big_events(index: usize) -> Vec<EventData> {
    (0..4)
        .map(|n| EventData {
            id: format!("big-{index}-{n}"),
            r#type: "Big".to_string(),
            content_type: "application/octet-stream".to_string(),
            data: vec![(index % 251) as u8; EVENT_BYTES].into(),
            metadata: Default::default(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_stops_and_catches_up_once_there_is_room() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(timeouts::LEADER).await;
    let victim = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut writer = RecordingWriter::new("disk-full");
    for index in 0..5 {
        writer
            .append(&cluster, leader, "small", index % 2 + 1)
            .await;
    }

    // The victim's data moves onto a small disk.
    cluster.kill(victim).await;
    let data_dir = cluster.data_dir(victim);
    let saved = cluster.path().join("victim-data");
    copy_dir(&data_dir, &saved);
    let tmpfs = Tmpfs::mount(&data_dir, TMPFS_BYTES);
    let mut env = Vec::new();
    match &tmpfs {
        Some(tmpfs) => {
            copy_dir(&saved, &data_dir);
            tmpfs.fill_leaving(FREE_BYTES);
            eprintln!("disk-full: node {victim} on a {TMPFS_BYTES}-byte tmpfs, {FREE_BYTES} free");
        }
        None => {
            env.push((
                "EVLOG_TEST_DISK_FREE_BYTES".to_string(),
                FREE_BYTES.to_string(),
            ));
            eprintln!(
                "disk-full: cannot mount a tmpfs here; node {victim}'s crash backend plays a \
                 disk with {FREE_BYTES} bytes free"
            );
        }
    }
    cluster.restart_with_env(victim, &env);
    cluster
        .wait_for_applied(victim, 1, timeouts::CATCH_UP)
        .await;

    // Load until the victim's disk is full and it stops; the others acknowledge throughout.
    let started = Instant::now();
    let mut status = None;
    for index in 0..MAX_APPENDS {
        writer
            .append_request(
                &cluster,
                leader,
                AppendRequest {
                    stream: format!("big-{}", index % 4),
                    events: big_events(index),
                    expected_version: None,
                    idempotency_key: None,
                },
            )
            .await;
        if cluster.exited_nodes().iter().any(|(id, _)| *id == victim) {
            status = cluster.wait_for_crash(victim, Duration::from_secs(5)).await;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "node {victim} was still running after 240 s of load"
        );
    }
    let status = status.unwrap_or_else(|| {
        panic!("node {victim} never stopped though its disk must be full ({MAX_APPENDS} appends)")
    });
    assert!(!status.success(), "node {victim} exited with {status}");
    let log = cluster.log_tail(victim, 30);
    assert!(
        log.contains("its store failed") && log.to_lowercase().contains("no space left"),
        "node {victim}'s log says why it stopped:\n{log}"
    );

    // The other two keep serving.
    for index in 0..5 {
        writer
            .append(&cluster, leader, "after", index % 2 + 1)
            .await;
    }

    // Room again: the victim starts, catches up, and everything acknowledged is everywhere.
    if let Some(tmpfs) = &tmpfs {
        std::fs::remove_file(tmpfs.filler()).expect("the filler goes");
    }
    cluster.restart(victim);
    cluster.wait_for_convergence(timeouts::CATCH_UP).await;
    let logs = cluster
        .read_all_from_live_nodes(Consistency::Linearizable)
        .await;
    let report = checker::assert_valid(writer.history(), &logs);
    assert!(report.acknowledged > 10, "{report:?}");
    // The nodes stop first (a file open on the tmpfs keeps it mounted), then the tmpfs goes,
    // then the cluster's directory (a mount point in it cannot be removed: the directory, with
    // every node's data, was left in /tmp after each passing run).
    for id in cluster.live_node_ids() {
        cluster.kill(id).await;
    }
    drop(tmpfs);
    drop(cluster);
}
