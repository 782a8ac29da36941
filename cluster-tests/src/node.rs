//! One `evlog serve` child process of a test cluster: its ports, data directory and log file
//! (which outlive the process, so a node restarts on the same port and data), and the signals
//! the tests send it.
//!
//! Signals other than SIGKILL go through the `kill` command, because the workspace forbids
//! `unsafe` (and with it `libc::kill`). The harness signals a pid only while it holds the
//! unreaped [`Child`] and `try_wait` says it has not exited, so the pid cannot have been reused.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::wait::{Probe, poll};

/// The environment variable the `fail` crate reads its failpoints from.
pub const FAILPOINTS: &str = "FAILPOINTS";

/// What a node's process is doing, as far as the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeState {
    /// Started and not stopped by a signal.
    Running,
    /// Stopped with SIGSTOP by the harness.
    Paused,
    /// Never started, or killed/terminated by the harness.
    Stopped,
    /// Exited on its own: a crash, or a refusal to start.
    Exited(ExitStatus),
}

/// One node of a test cluster.
#[derive(Debug)]
pub(crate) struct Node {
    id: u64,
    /// The client gRPC port.
    port: u16,
    /// The peer port (`--peer-listen`).
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// The running (or exited but not yet collected) process. A mutex so that the `&self`
    /// status checks of a wait can reap it with `try_wait`.
    child: Option<Mutex<Child>>,
    paused: bool,
    /// How many times the process was started, to label the sections of the log file.
    starts: u32,
}

impl Node {
    /// A node that is not started yet, keeping its data and log under `cluster_dir`.
    pub(crate) fn new(id: u64, port: u16, peer_port: u16, cluster_dir: &Path) -> Node {
        Node {
            id,
            port,
            peer_port,
            data_dir: cluster_dir.join(format!("node-{id}")),
            log_path: cluster_dir.join(format!("node-{id}.log")),
            child: None,
            paused: false,
            starts: 0,
        }
    }

    /// How many times the process was started.
    pub(crate) fn starts(&self) -> u32 {
        self.starts
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The node's client gRPC address, `127.0.0.1:<port>`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node's peer address, `127.0.0.1:<peer port>`.
    pub(crate) fn peer_address(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Starts `binary` with `args` and the extra environment `env`, stdout and stderr
    /// appended to the node's log file.
    ///
    /// # Panics
    ///
    /// When the node is already running, or the process cannot be started.
    pub(crate) fn spawn(&mut self, binary: &Path, args: &[String], env: &[(String, String)]) {
        let state = self.state();
        assert!(
            matches!(state, NodeState::Stopped | NodeState::Exited(_)),
            "node {} cannot be started: it is {state:?}",
            self.id
        );
        self.child = None;
        self.paused = false;
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("the node's log file should be writable");
        let env_text: String = env
            .iter()
            .map(|(key, value)| format!("{key}={value} "))
            .collect();
        writeln!(
            log,
            "==== evlog node {} start #{}: {env_text}{} {} ====",
            self.id,
            self.starts,
            binary.display(),
            args.join(" ")
        )
        .expect("the node's log file should be writable");
        let stderr = log
            .try_clone()
            .expect("the node's log file handle should be clonable");
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        // The node also reads EVLOG_* variables; the test sets everything by flags, so a
        // variable left in the developer's shell must not change what is tested.
        // Likewise failpoints: only the start that asks for them gets them.
        for (key, _) in std::env::vars_os() {
            if key
                .to_str()
                .is_some_and(|key| key.starts_with("EVLOG_") || key == FAILPOINTS)
            {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(key, value)| (key, value)));
        let child = command.spawn().unwrap_or_else(|error| {
            panic!(
                "starting node {} ({}) failed: {error}",
                self.id,
                binary.display()
            )
        });
        self.child = Some(Mutex::new(child));
    }

    fn lock_child(child: &Mutex<Child>) -> MutexGuard<'_, Child> {
        // A panic while holding the lock cannot leave a `Child` half-updated.
        child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The node's state; reaps the process if it exited.
    pub(crate) fn state(&self) -> NodeState {
        let Some(child) = &self.child else {
            return NodeState::Stopped;
        };
        match Self::lock_child(child).try_wait() {
            Ok(Some(status)) => NodeState::Exited(status),
            Ok(None) if self.paused => NodeState::Paused,
            Ok(None) => NodeState::Running,
            Err(error) => panic!("checking on node {} failed: {error}", self.id),
        }
    }

    /// The pid of the running process.
    ///
    /// # Panics
    ///
    /// When the process is not running (or paused), naming `action`.
    fn live_pid(&self, action: &str) -> u32 {
        let state = self.state();
        match (&self.child, state) {
            (Some(child), NodeState::Running | NodeState::Paused) => Self::lock_child(child).id(),
            _ => panic!("cannot {action} node {}: it is {state:?}", self.id),
        }
    }

    /// The pid of the running (or paused) process, for a signal sent from outside.
    pub(crate) fn pid(&self) -> u32 {
        self.live_pid("signal")
    }

    /// Sends `signal` (a name such as `STOP`) with the `kill` command.
    fn signal(&self, signal: &str) {
        let pid = self.live_pid(&format!("send SIG{signal} to"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|error| panic!("running `kill -{signal} {pid}` failed: {error}"));
        assert!(
            status.success(),
            "`kill -{signal} {pid}` (node {}) failed: {status}",
            self.id
        );
    }

    /// Stops the process with SIGSTOP: it keeps its sockets but answers nothing.
    pub(crate) fn pause(&mut self) {
        assert!(!self.paused, "node {} is already paused", self.id);
        self.signal("STOP");
        self.paused = true;
    }

    /// Continues a paused process with SIGCONT.
    pub(crate) fn resume(&mut self) {
        assert!(self.paused, "node {} is not paused", self.id);
        self.signal("CONT");
        self.paused = false;
    }

    /// Waits, polling, until the process has exited, and forgets it.
    async fn wait_for_exit(&mut self, timeout: Duration, why: &str) -> Option<ExitStatus> {
        let Some(child) = &self.child else {
            return None;
        };
        let id = self.id;
        let result = poll(timeout, async || match Self::lock_child(child).try_wait() {
            Ok(Some(status)) => Probe::Ready(status),
            Ok(None) => Probe::NotYet(format!("node {id} is still running after {why}")),
            Err(error) => Probe::Failed(format!("checking on node {id} failed: {error}")),
        })
        .await;
        match result {
            Ok(status) => {
                self.child = None;
                self.paused = false;
                Some(status)
            }
            Err(_) => None,
        }
    }

    /// Waits until the process exits on its own (a crash the test provoked), and forgets it,
    /// so that the node counts as stopped rather than as an unexpected exit. `None` when it is
    /// still running after `timeout`, or was not running.
    pub(crate) async fn wait_for_own_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.wait_for_exit(timeout, "waiting for it to crash").await
    }

    /// Kills the process with SIGKILL (also when paused) and waits until it is gone.
    ///
    /// # Panics
    ///
    /// When the node is not running, or does not die within `timeout`.
    pub(crate) async fn kill(&mut self, timeout: Duration) -> ExitStatus {
        let _ = self.live_pid("SIGKILL");
        if let Some(child) = &self.child {
            Self::lock_child(child)
                .kill()
                .unwrap_or_else(|error| panic!("SIGKILL to node {} failed: {error}", self.id));
        }
        let status = self.wait_for_exit(timeout, "SIGKILL").await;
        status
            .unwrap_or_else(|| panic!("node {} did not die within {timeout:?} of SIGKILL", self.id))
    }

    /// Asks the process to shut down with SIGTERM (continuing it first if paused, so it can
    /// handle the signal) and waits until it exits. Returns its exit status.
    ///
    /// # Panics
    ///
    /// When the node is not running, or does not exit within `timeout` (it is then killed).
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        if self.paused {
            self.signal("CONT");
            self.paused = false;
        }
        if let Some(status) = self.wait_for_exit(timeout, "SIGTERM").await {
            return status;
        }
        self.kill_now();
        panic!(
            "node {} did not shut down within {timeout:?} of SIGTERM; it was killed (log: {})",
            self.id,
            self.log_path.display()
        );
    }

    /// Kills the process, if any, without waiting asynchronously: for teardown in `Drop`.
    pub(crate) fn kill_now(&mut self) {
        if let Some(child) = self.child.take() {
            let mut child = child
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Ok(None) = child.try_wait() {
                // SIGKILL also ends a stopped process, and it dies at once: the wait is short.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.paused = false;
    }

    /// The last `lines` lines of the node's log file.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(error) => format!("(cannot read {}: {error})", self.log_path.display()),
        }
    }
}
