//! The client load of a chaos run, recording every operation into a [`History`].
//!
//! A few client tasks per node, each sending one request at a time to its node (followers
//! forward appends to the leader), of one of four kinds ([`LoadKind`]):
//!
//! - `appends`: appends of 1..=3 events spread over many streams, no key, any version;
//! - `mixed`: appends and linearizable reads of the end of a stream or of the whole log, 1:1;
//! - `contention`: every client appends to one hot stream at the version it last saw
//!   (`expected_version`), with an idempotency key per request, retrying an unknown outcome
//!   with the same key, and learning the actual version from a conflict;
//! - `idempotent`: keyed appends over many streams, each retried with the same key (through
//!   another node) until it is acknowledged or refused, and sometimes sent once more after its
//!   acknowledgement, which must come back deduplicated;
//! - `subscribe`: the appends of `appends`, under twice the subscribers of the other loads
//!   (a stream subscription, one from a position, one by event type, each reading slowly:
//!   see `subscribers.rs`);
//! - `coalesced`: the appends of `appends` from four times the clients, sent through one
//!   `evlog-client` per node (one attempt each), which coalesces the appends waiting for a
//!   node into `AppendMany` calls: each append's own answer, forwarded and under faults;
//! - `consumer`: the appends of `appends`, consumed by a KEYED consumer group of four members
//!   (see `consumers.rs`), checked against the group's promises.
//!
//! Every operation is entered in the history before it is sent (as in flight) and completed
//! when its answer arrives, so a client cut off mid-request leaves a truthful record. Every
//! loop is bounded by an operation count and a time; after an error a client pauses briefly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use evlog_client::{ClientOptions, EvlogClient};
use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_proto::v1::{
    AllStreams, AppendRequest, AppendResponse, Consistency, Direction, EventData, ReadRequest,
    read_request,
};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cluster::{Cluster, request, with_deadline};
use crate::history::{History, Operation, Outcome, ReadOperation, ReadOutcome, ReadTarget};
use crate::wait::{Probe, poll};

/// The kinds of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoadKind {
    Appends,
    Mixed,
    Contention,
    Idempotent,
    Subscribe,
    Coalesced,
    Consumer,
}

impl LoadKind {
    pub const ALL: [LoadKind; 7] = [
        LoadKind::Appends,
        LoadKind::Mixed,
        LoadKind::Contention,
        LoadKind::Idempotent,
        LoadKind::Subscribe,
        LoadKind::Coalesced,
        LoadKind::Consumer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LoadKind::Appends => "appends",
            LoadKind::Mixed => "mixed",
            LoadKind::Contention => "contention",
            LoadKind::Idempotent => "idempotent",
            LoadKind::Subscribe => "subscribe",
            LoadKind::Coalesced => "coalesced",
            LoadKind::Consumer => "consumer",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            LoadKind::Appends => "appends of 1-3 events over many streams, from every node",
            LoadKind::Mixed => "appends and linearizable reads, 1:1, from every node",
            LoadKind::Contention => {
                "one hot stream, expected-version appends, keyed retries, from every node"
            }
            LoadKind::Idempotent => {
                "keyed appends retried with the same key through other nodes, plus re-sends"
            }
            LoadKind::Subscribe => {
                "appends under six subscribers (every run has three), three of them slow readers"
            }
            LoadKind::Coalesced => {
                "appends from 4x the clients through evlog-client, coalesced into AppendMany calls"
            }
            LoadKind::Consumer => {
                "appends consumed by a KEYED group of 4 members: slow ones, 1% nacks, poison \
                 events, a member that crashes and rejoins"
            }
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<LoadKind> {
        LoadKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The shape and bounds of a [`Load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Client tasks per node.
    pub clients_per_node: usize,
    /// Streams the `appends`, `mixed` and `idempotent` loads spread over.
    pub streams: usize,
    /// Appends carry 1..=this many events (the hot stream: one).
    pub max_events_per_append: usize,
    /// The most requests one client sends.
    pub max_operations_per_client: u64,
    /// The longest a client runs.
    pub max_duration: Duration,
    /// The deadline of each request.
    pub rpc_timeout: Duration,
    /// The pause after a failed request.
    pub backoff_after_error: Duration,
    /// Attempts of one keyed request before the client gives up on it.
    pub max_attempts: u32,
    /// Events returned by a read of the end.
    pub read_count: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clients_per_node: 2,
            streams: 16,
            max_events_per_append: 3,
            max_operations_per_client: 50_000,
            max_duration: Duration::from_secs(600),
            rpc_timeout: Duration::from_secs(4),
            backoff_after_error: Duration::from_millis(50),
            max_attempts: 5,
            read_count: 5,
        }
    }
}

/// The hot stream of the contention load.
const HOT_STREAM: &str = "hot";

/// Shared by the clients: the recorded operations and reads.
#[derive(Debug, Default)]
struct Recorder {
    operations: Mutex<Vec<Operation>>,
    reads: Mutex<Vec<ReadOperation>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Clients only push and update whole fields: a poisoned lock holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A node the clients talk to: its gRPC stub, and an `evlog-client` over it alone (one
/// attempt per append; the `coalesced` load's appends go through it).
#[derive(Clone)]
struct Target {
    id: u64,
    stub: EventLogClient<Channel>,
    coalescing: EvlogClient,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {}", self.id)
    }
}

/// The nodes the clients talk to; client `i` uses entry `i % len` (and the next ones for
/// retries). Replaced when a node is replaced.
type Targets = Arc<RwLock<Vec<Target>>>;

fn targets_of(cluster: &Cluster, options: &LoadOptions) -> Vec<Target> {
    cluster
        .node_ids()
        .into_iter()
        .map(|id| Target {
            id,
            stub: cluster.client(id),
            coalescing: EvlogClient::new(
                &[cluster.address(id)],
                ClientOptions {
                    deadline: options.rpc_timeout,
                    max_attempts: 1,
                    ..ClientOptions::default()
                },
            )
            .expect("a loopback endpoint"),
        })
        .collect()
}

/// A running load. Stop it with [`Load::stop`] to get its history; dropping it stops the
/// clients too.
#[derive(Debug)]
pub struct Load {
    options: LoadOptions,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    targets: Targets,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients_per_node` clients per member of `cluster`; `seed` seeds their choices.
    pub fn start(cluster: &Cluster, kind: LoadKind, options: LoadOptions, seed: u64) -> Load {
        assert!(options.streams >= 1, "the load needs a stream");
        assert!(options.max_events_per_append >= 1, "appends carry events");
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = Arc::new(Recorder::default());
        let targets: Targets = Arc::new(RwLock::new(targets_of(cluster, &options)));
        // Coalescing needs appends waiting at the same time.
        let per_node = match kind {
            LoadKind::Coalesced => options.clients_per_node * 4,
            _ => options.clients_per_node,
        };
        let clients = cluster.node_ids().len() * per_node;
        let tasks = (0..clients)
            .map(|index| {
                let client = Client {
                    index,
                    kind,
                    rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9)),
                    options: options.clone(),
                    stop: Arc::clone(&stop),
                    recorder: Arc::clone(&recorder),
                    targets: Arc::clone(&targets),
                    sequence: 0,
                };
                tokio::spawn(client.run())
            })
            .collect();
        Load {
            options,
            stop,
            recorder,
            targets,
            tasks,
        }
    }

    /// Points the clients at the cluster's current members (after a node was replaced).
    pub fn set_targets(&self, cluster: &Cluster) {
        let mut targets = self.targets.write().unwrap_or_else(PoisonError::into_inner);
        *targets = targets_of(cluster, &self.options);
    }

    /// How many attempts were acknowledged at or after `instant`, among those invoked at or
    /// after `invoked_since`.
    pub fn acknowledged_since(&self, invoked_since: Instant, instant: Instant) -> usize {
        lock(&self.recorder.operations)
            .iter()
            .filter(|operation| {
                operation.invoked >= invoked_since
                    && operation.acknowledged_at().is_some_and(|at| at >= instant)
            })
            .count()
    }

    /// Waits until `count` appends invoked at or after `instant` were acknowledged; false when
    /// `timeout` passes first.
    pub async fn wait_for_acknowledged(
        &self,
        instant: Instant,
        count: usize,
        timeout: Duration,
    ) -> bool {
        poll(timeout, async || {
            let acknowledged = self.acknowledged_since(instant, instant);
            if acknowledged >= count {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{acknowledged} of {count} acknowledged"))
            }
        })
        .await
        .is_ok()
    }

    /// Stops the clients, waits for them (bounded: a request in flight ends within its
    /// deadline), and returns the history.
    pub async fn stop(mut self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        let grace =
            self.options.rpc_timeout + self.options.backoff_after_error + Duration::from_secs(5);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            match tokio::time::timeout(grace, task).await {
                Ok(Err(error)) if error.is_panic() => {
                    std::panic::resume_unwind(error.into_panic());
                }
                Ok(_) => {}
                // Its operation in flight stays recorded as such: outcome unknown.
                Err(_) => abort.abort(),
            }
        }
        let operations = std::mem::take(&mut *lock(&self.recorder.operations));
        let reads = std::mem::take(&mut *lock(&self.recorder.reads));
        History::from_parts(operations, reads)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One client task.
struct Client {
    index: usize,
    kind: LoadKind,
    rng: StdRng,
    options: LoadOptions,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    targets: Targets,
    /// Requests sent so far, for unique event ids and keys.
    sequence: u64,
}

/// The result of one recorded append attempt.
enum Sent {
    Acknowledged(AppendResponse),
    Failed { actual_version: Option<u64> },
    Unknown,
}

impl Client {
    fn stopped(&self, started: Instant) -> bool {
        self.stop.load(Ordering::SeqCst)
            || started.elapsed() >= self.options.max_duration
            || self.sequence >= self.options.max_operations_per_client
    }

    async fn run(mut self) {
        let started = Instant::now();
        let mut known_version: Option<u64> = None;
        while !self.stopped(started) {
            let ok = match self.kind {
                LoadKind::Appends
                | LoadKind::Subscribe
                | LoadKind::Coalesced
                | LoadKind::Consumer => self.plain_append().await,
                LoadKind::Mixed => {
                    if self.sequence.is_multiple_of(2) {
                        self.plain_append().await
                    } else {
                        self.sequence += 1;
                        self.read_end().await.is_some()
                    }
                }
                LoadKind::Contention => self.contend(&mut known_version).await,
                LoadKind::Idempotent => self.idempotent_append().await,
            };
            if !ok {
                tokio::time::sleep(self.options.backoff_after_error).await;
            }
        }
    }

    /// The target for attempt `attempt` of a request: the client's own node first, then the
    /// next ones.
    fn target(&self, attempt: usize) -> Option<Target> {
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        if targets.is_empty() {
            return None;
        }
        targets.get((self.index + attempt) % targets.len()).cloned()
    }

    fn name(&self) -> String {
        format!("{} client {}", self.kind.name(), self.index)
    }

    /// Fresh events for request `sequence`.
    fn events(&mut self, stream: &str, count: usize) -> Vec<EventData> {
        let sequence = self.sequence;
        (0..count)
            .map(|offset| {
                let id = format!("{}-c{}-o{sequence}-e{offset}", self.kind.name(), self.index);
                EventData {
                    data: format!("payload of {id} for {stream}").into_bytes().into(),
                    id,
                    r#type: "Chaos".to_owned(),
                    content_type: "text/plain".to_owned(),
                    metadata: HashMap::from([("client".to_owned(), self.index.to_string())]),
                }
            })
            .collect()
    }

    fn random_stream(&mut self) -> String {
        format!("s-{}", self.rng.random_range(0..self.options.streams))
    }

    /// Sends one attempt of `append` through target `attempt` and records it.
    async fn send(&mut self, append: &AppendRequest, attempt: usize) -> Sent {
        let Some(target) = self.target(attempt) else {
            return Sent::Unknown;
        };
        let node = target.id;
        let slot = {
            let mut operations = lock(&self.recorder.operations);
            operations.push(Operation {
                client: self.name(),
                node,
                stream: append.stream.clone(),
                events: append.events.clone(),
                expected_version: append.expected_version,
                idempotency_key: append.idempotency_key.clone(),
                invoked: Instant::now(),
                completed: None,
                outcome: Outcome::in_flight(),
            });
            operations.len() - 1
        };
        let timeout = self.options.rpc_timeout;
        let result = match self.kind {
            LoadKind::Coalesced => target.coalescing.append(append.clone()).await,
            _ => {
                let mut client = target.stub;
                with_deadline(
                    timeout,
                    &format!("Append to node {node}"),
                    client.append(request(append.clone(), timeout)),
                )
                .await
            }
        };
        let outcome = Outcome::from_result(&result);
        let sent = match (&result, &outcome) {
            (Ok(response), _) => Sent::Acknowledged(*response),
            (Err(_), Outcome::Failed { actual_version, .. }) => Sent::Failed {
                actual_version: *actual_version,
            },
            (Err(_), _) => Sent::Unknown,
        };
        let mut operations = lock(&self.recorder.operations);
        let operation = &mut operations[slot];
        operation.completed = Some(Instant::now());
        operation.outcome = outcome;
        sent
    }

    /// A new append of a few events to a random stream, any version, with `key`.
    fn random_append(&mut self, key: Option<String>) -> AppendRequest {
        let stream = self.random_stream();
        let count = self
            .rng
            .random_range(1..=self.options.max_events_per_append);
        let append = AppendRequest {
            events: self.events(&stream, count),
            stream,
            expected_version: None,
            idempotency_key: key,
        };
        self.sequence += 1;
        append
    }

    /// One append, no key, any version; returns whether it was acknowledged.
    async fn plain_append(&mut self) -> bool {
        let append = self.random_append(None);
        matches!(self.send(&append, 0).await, Sent::Acknowledged(_))
    }

    /// One keyed append over many streams, retried with its key through the next nodes until
    /// it is acknowledged or refused; after an acknowledgement, sometimes sent once more.
    async fn idempotent_append(&mut self) -> bool {
        let key = format!("key-c{}-o{}", self.index, self.sequence);
        let append = self.random_append(Some(key));
        for attempt in 0..self.options.max_attempts as usize {
            match self.send(&append, attempt).await {
                Sent::Acknowledged(_) => {
                    if self.rng.random_bool(0.2) {
                        // A retry of a committed request: deduplicated, same positions.
                        let _ = self.send(&append, attempt + 1).await;
                    }
                    return true;
                }
                Sent::Failed { .. } => return false,
                Sent::Unknown => {
                    if self.stop.load(Ordering::SeqCst) {
                        return false;
                    }
                    tokio::time::sleep(self.options.backoff_after_error).await;
                }
            }
        }
        false
    }

    /// One round on the hot stream: learn its version if unknown (a linearizable read), then
    /// append at that version with a key, retrying an unknown outcome with the same key.
    async fn contend(&mut self, known_version: &mut Option<u64>) -> bool {
        let version = match *known_version {
            Some(version) => version,
            None => match self.read_hot_version().await {
                Some(version) => version,
                None => return false,
            },
        };
        let append = AppendRequest {
            events: self.events(HOT_STREAM, 1),
            stream: HOT_STREAM.to_owned(),
            expected_version: Some(version),
            idempotency_key: Some(format!("key-c{}-o{}", self.index, self.sequence)),
        };
        self.sequence += 1;
        for attempt in 0..self.options.max_attempts as usize {
            match self.send(&append, attempt).await {
                Sent::Acknowledged(response) => {
                    *known_version = Some(response.stream_version);
                    return true;
                }
                Sent::Failed { actual_version } => {
                    *known_version = actual_version;
                    return actual_version.is_some();
                }
                Sent::Unknown => {
                    if self.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(self.options.backoff_after_error).await;
                }
            }
        }
        *known_version = None;
        false
    }

    /// The hot stream's version, from a recorded linearizable read of its last event.
    async fn read_hot_version(&mut self) -> Option<u64> {
        self.sequence += 1;
        let events = self
            .read(ReadTarget::Stream(HOT_STREAM.to_owned()), 1)
            .await?;
        Some(
            events
                .iter()
                .map(|event| event.stream_version)
                .max()
                .unwrap_or(0),
        )
    }

    /// A linearizable read of the end of a random stream or of the whole log.
    async fn read_end(&mut self) -> Option<Vec<evlog_proto::v1::RecordedEvent>> {
        let target = if self.rng.random_bool(0.5) {
            ReadTarget::All
        } else {
            ReadTarget::Stream(self.random_stream())
        };
        let count = self.options.read_count;
        self.read(target, count).await
    }

    /// Reads the last `count` events of `target`, linearizably, and records the read.
    async fn read(
        &mut self,
        target: ReadTarget,
        count: u32,
    ) -> Option<Vec<evlog_proto::v1::RecordedEvent>> {
        let Target {
            id: node,
            stub: mut client,
            ..
        } = self.target(0)?;
        let slot = {
            let mut reads = lock(&self.recorder.reads);
            reads.push(ReadOperation {
                client: self.name(),
                node,
                target: target.clone(),
                from_end: true,
                linearizable: true,
                invoked: Instant::now(),
                completed: None,
                outcome: ReadOutcome::Failed {
                    code: None,
                    message: "the read never completed".to_owned(),
                },
            });
            reads.len() - 1
        };
        let wire_target = match &target {
            ReadTarget::All => read_request::Target::All(AllStreams {}),
            ReadTarget::Stream(stream) => read_request::Target::Stream(stream.clone()),
        };
        let timeout = self.options.rpc_timeout;
        let result = with_deadline(
            timeout,
            &format!("Read from node {node}"),
            client.read(request(
                ReadRequest {
                    filter: None,
                    target: Some(wire_target),
                    from: None,
                    max_count: count,
                    direction: Direction::Backward as i32,
                    consistency: Consistency::Linearizable as i32,
                    at_least_position: 0,
                    from_timestamp_ms: None,
                },
                timeout,
            )),
        )
        .await;
        let completed = Instant::now();
        let (outcome, events) = match result {
            Ok(response) => (
                ReadOutcome::Served {
                    events: response.events.clone(),
                    head_position: response.head_position,
                    served_by: response.served_by,
                },
                Some(response.events),
            ),
            Err(status) => (
                ReadOutcome::Failed {
                    code: Some(status.code()),
                    message: status.message().to_owned(),
                },
                None,
            ),
        };
        let mut reads = lock(&self.recorder.reads);
        let read = &mut reads[slot];
        read.completed = Some(completed);
        read.outcome = outcome;
        events
    }
}
