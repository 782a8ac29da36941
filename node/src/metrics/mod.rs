//! What a node measures, for `/metrics` (Prometheus, OpenMetrics text) and the status page.
//!
//! [`Metrics`] holds what the code records as it works (requests, appends, fsyncs, leader
//! changes); [`state::StateCollector`] reads what is current at each scrape (Raft indexes,
//! replication, storage, consumer groups, the process). Names are stable: base units in the
//! name (`_seconds`, `_bytes`), `_total` only on counters; see the README's metric list.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

pub mod grpc_layer;
pub mod histogram;
pub mod leader;
pub mod process;
pub mod state;

pub use histogram::Histogram;

/// Labels of a per-method or per-peer metric.
pub type Labels = Vec<(&'static str, String)>;

/// The calls [`Metrics::append_duration`] times (from the gRPC layer: arrival to answer).
const APPEND_METHODS: [&str; 2] = ["/evlog.v1.EventLog/Append", "/evlog.v1.EventLog/AppendMany"];

/// Leader changes the status page lists.
pub const LEADER_HISTORY: usize = 20;

/// One change of leader this node saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// Unix milliseconds when this node saw it.
    pub at_ms: u64,
    pub term: u64,
    /// `None`: the cluster had no leader this node knew of.
    pub leader_id: Option<u64>,
}

/// Everything a node records as it works. Cheap to share (`Arc`); recording is lock-free
/// except for the short leader-history lock on a leader change.
#[derive(Debug)]
pub struct Metrics {
    pub grpc_requests: Family<Labels, Counter>,
    pub grpc_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// An acknowledged `Append` or `AppendMany` call from its arrival to its answer.
    pub append_duration: Histogram,
    /// Events in each batch of appends proposed to Raft together.
    pub proposal_batch_events: Histogram,
    pub leader_changes: Counter,
    pub elections_started: Counter,
    pub snapshots_sent: Counter,
    pub snapshots_installed: Counter,
    /// Peer messages refused, by reason (`cluster_id`: sent by a node of another cluster;
    /// `group_id`: for a Raft group this node does not run; `missing_header`;
    /// `certificate_name`: with TLS, the sender's certificate does not name it, or the
    /// message speaks for another node).
    pub peer_messages_refused: Family<Labels, Counter>,
    /// Certificate reloads on SIGHUP, by result (`ok`; `error`: a file was bad, the old
    /// certificates stay).
    pub tls_reloads: Family<Labels, Counter>,
    /// Round trip of a replication RPC to each peer (leader only).
    pub peer_rtt: Family<Labels, Histogram, fn() -> Histogram>,
    pub store_fsync: Histogram,
    pub store_commit: Histogram,
    pub store_db_sync: Histogram,
    pub store_batch_ops: Histogram,
    pub store_queue_depth: Gauge,
    leaders: Mutex<VecDeque<LeaderChange>>,
    refusals: RefusalLog,
}

/// Logs refused calls at info, at most one line a second (with how many it left out), so a
/// misbehaving client cannot flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    /// Milliseconds since `started` of the last line logged (0: none yet).
    last_ms: std::sync::atomic::AtomicU64,
    left_out: std::sync::atomic::AtomicU64,
    started: std::sync::OnceLock<std::time::Instant>,
}

impl RefusalLog {
    const EVERY_MS: u64 = 1_000;

    fn note(&self, method: &str, code: &str) {
        use std::sync::atomic::Ordering;
        let started = self.started.get_or_init(std::time::Instant::now);
        let now_ms =
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) + Self::EVERY_MS;
        let last_ms = self.last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last_ms) >= Self::EVERY_MS
            && self
                .last_ms
                .compare_exchange(last_ms, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let left_out = self.left_out.swap(0, Ordering::Relaxed);
            tracing::info!(
                method,
                code,
                left_out,
                "refused a call (left_out: refusals not logged since the last line, at most one line a second)"
            );
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(histogram::duration_buckets())
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(duration_histogram),
            append_duration: duration_histogram(),
            proposal_batch_events: Histogram::new(histogram::count_buckets()),
            leader_changes: Counter::default(),
            elections_started: Counter::default(),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            peer_messages_refused: Family::default(),
            tls_reloads: Family::default(),
            peer_rtt: Family::new_with_constructor(duration_histogram),
            store_fsync: duration_histogram(),
            store_commit: duration_histogram(),
            store_db_sync: duration_histogram(),
            store_batch_ops: Histogram::new(histogram::count_buckets()),
            store_queue_depth: Gauge::default(),
            leaders: Mutex::new(VecDeque::with_capacity(LEADER_HISTORY)),
            refusals: RefusalLog::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records a leader change this node saw (the newest [`LEADER_HISTORY`] are kept).
    pub fn leader_changed(&self, change: LeaderChange) {
        let mut leaders = self
            .leaders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if leaders.len() == LEADER_HISTORY {
            leaders.pop_front();
        }
        leaders.push_back(change);
    }

    /// The last leader changes, oldest first.
    pub fn leader_history(&self) -> Vec<LeaderChange> {
        self.leaders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// A registry of every metric: these, and the state `collector` reads at each scrape.
    pub fn registry(&self, collector: state::StateCollector) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "evlog_grpc_requests",
            "gRPC calls answered, by method and status code",
            self.grpc_requests.clone(),
        );
        registry.register_with_unit(
            "evlog_grpc_request_duration",
            "gRPC calls from arrival to their end (a stream: its whole life), by method",
            Unit::Seconds,
            self.grpc_duration.clone(),
        );
        registry.register_with_unit(
            "evlog_append_duration",
            "Appends (and AppendMany calls) on this node from arrival to acknowledgement: a \
             quorum has them on disk and they are applied here",
            Unit::Seconds,
            self.append_duration.clone(),
        );
        registry.register(
            "evlog_raft_proposal_batch_events",
            "Events in each batch of appends proposed to Raft together (leader)",
            self.proposal_batch_events.clone(),
        );
        registry.register(
            "evlog_raft_leader_changes",
            "Times this node saw the leader change (a new leader, or none)",
            self.leader_changes.clone(),
        );
        registry.register(
            "evlog_raft_elections_started",
            "Times this node became a candidate",
            self.elections_started.clone(),
        );
        registry.register(
            "evlog_raft_snapshots_sent",
            "Snapshots this node sent to a follower",
            self.snapshots_sent.clone(),
        );
        registry.register(
            "evlog_raft_snapshots_installed",
            "Snapshots this node installed from a leader",
            self.snapshots_installed.clone(),
        );
        registry.register(
            "evlog_peer_messages_refused",
            "Peer messages this node refused, by reason: cluster_id (a node of another cluster \
             sent it), group_id (a Raft group this node does not run), missing_header, \
             certificate_name (the sender's certificate does not name it, or the message \
             speaks for another node)",
            self.peer_messages_refused.clone(),
        );
        registry.register(
            "evlog_tls_reloads",
            "Certificate reloads on SIGHUP, by result: ok, or error (a file was bad; the \
             certificates served before stay)",
            self.tls_reloads.clone(),
        );
        registry.register_with_unit(
            "evlog_raft_peer_round_trip",
            "Round trip of replication calls (entries or heartbeats) to each peer (leader)",
            Unit::Seconds,
            self.peer_rtt.clone(),
        );
        registry.register_with_unit(
            "evlog_store_fsync_duration",
            "Syncs that make the store's writes durable: the journal's, or a durable commit of \
             the database",
            Unit::Seconds,
            self.store_fsync.clone(),
        );
        registry.register_with_unit(
            "evlog_store_db_sync_duration",
            "Durable commits of the database alone (about once a second under load): the store \
             writes out what it buffered since the last one, and takes no other write meanwhile",
            Unit::Seconds,
            self.store_db_sync.clone(),
        );
        registry.register_with_unit(
            "evlog_store_commit_duration",
            "Commits of the store that make a batch readable, before its fsync",
            Unit::Seconds,
            self.store_commit.clone(),
        );
        registry.register(
            "evlog_store_writer_batch_ops",
            "Operations (log appends, applies, votes) the store writer took in one batch",
            self.store_batch_ops.clone(),
        );
        registry.register(
            "evlog_store_writer_queue_depth",
            "Operations waiting for the store writer when it took its last batch",
            self.store_queue_depth.clone(),
        );
        registry.register_collector(Box::new(collector));
        registry.register_collector(Box::new(process::ProcessCollector));
        registry
    }

    /// The store's observer: fsync and commit durations, batch sizes, queue depth.
    pub fn store_observer(self: &Arc<Self>) -> Arc<dyn evlog_raft_store::StoreObserver> {
        Arc::new(StoreMetrics(Arc::clone(self)))
    }

    /// The series of one method, looked up once (a call then records without a label lookup
    /// or an allocation when it succeeds).
    pub fn method(&self, method: &str) -> MethodMetrics {
        MethodMetrics {
            name: method.to_string(),
            ok: self.grpc_requests.get_or_create_owned(&vec![
                ("method", method.to_string()),
                ("code", "OK".to_string()),
            ]),
            duration: self
                .grpc_duration
                .get_or_create_owned(&vec![("method", method.to_string())]),
            appends: APPEND_METHODS.contains(&method),
        }
    }

    /// Records one gRPC call of `method`.
    pub fn grpc_call(&self, method: &MethodMetrics, code: &str, took: Duration) {
        method.duration.observe_duration(took);
        if code == "OK" {
            method.ok.inc();
            if method.appends {
                self.append_duration.observe_duration(took);
            }
            return;
        }
        self.grpc_requests
            .get_or_create(&vec![
                ("method", method.name.clone()),
                ("code", code.to_string()),
            ])
            .inc();
        if code != "CANCELLED" {
            self.refusals.note(&method.name, code);
        }
    }
}

/// One gRPC method's series (shared with the families: what this records, `/metrics` shows).
#[derive(Clone, Debug)]
pub struct MethodMetrics {
    name: String,
    ok: Counter,
    duration: Histogram,
    /// An `Append` or `AppendMany`: also timed in [`Metrics::append_duration`].
    appends: bool,
}

#[derive(Debug)]
struct StoreMetrics(Arc<Metrics>);

impl evlog_raft_store::StoreObserver for StoreMetrics {
    fn commit(&self, took: Duration) {
        self.0.store_commit.observe_duration(took);
    }

    fn fsync(&self, took: Duration) {
        self.0.store_fsync.observe_duration(took);
    }

    fn db_sync(&self, took: Duration) {
        self.0.store_db_sync.observe_duration(took);
    }

    fn batch(&self, ops: usize, queued: usize) {
        self.0.store_batch_ops.observe(ops as f64);
        self.0
            .store_queue_depth
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
    }
}
