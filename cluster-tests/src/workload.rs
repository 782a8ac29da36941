//! A bounded concurrent append load that records every operation.
//!
//! A few appender tasks per node each send appends of one to a few events to a handful of
//! shared streams, one request at a time, until told to stop, or until their operation count or
//! time runs out. Every operation is entered in the shared history *before* it is sent (as
//! in flight) and completed when its answer arrives, so even an appender cut off mid-request
//! leaves a truthful record. After an error an appender pauses briefly before its next append,
//! so a dead node does not turn the load into a busy loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_proto::v1::{AppendRequest, EventData};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cluster::{Cluster, request, with_deadline};
use crate::history::{History, Operation, Outcome};
use crate::wait::wait_for;

/// The shape and bounds of a [`Workload`].
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Appender tasks per node; each sends to its one node (followers forward to the leader).
    pub appenders_per_node: usize,
    /// The most appends one appender sends, successful or not.
    pub max_operations_per_appender: u64,
    /// The longest an appender runs.
    pub max_duration: Duration,
    /// How many streams the appenders share (`load-0`, `load-1`, …).
    pub streams: usize,
    /// Appends carry 1..=this many events.
    pub max_events_per_append: usize,
    /// The deadline of each append.
    pub rpc_timeout: Duration,
    /// The pause after a failed append.
    pub backoff_after_error: Duration,
    /// The nodes the appenders send to; empty: every member.
    pub nodes: Vec<u64>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            appenders_per_node: 2,
            max_operations_per_appender: 20_000,
            max_duration: Duration::from_secs(240),
            streams: 4,
            max_events_per_append: 3,
            rpc_timeout: Duration::from_secs(5),
            backoff_after_error: Duration::from_millis(50),
            nodes: Vec::new(),
        }
    }
}

/// A running load. Stop it with [`Workload::stop`] to get its history.
#[derive(Debug)]
pub struct Workload {
    options: WorkloadOptions,
    stop: Arc<AtomicBool>,
    operations: Arc<Mutex<Vec<Operation>>>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock(operations: &Mutex<Vec<Operation>>) -> MutexGuard<'_, Vec<Operation>> {
    // Appenders only push and update whole fields: a poisoned lock holds consistent data.
    operations.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Workload {
    /// Starts the appenders against every node of `cluster` (live or not: appenders of a dead
    /// node keep failing until it comes back).
    pub fn start(cluster: &Cluster, options: WorkloadOptions) -> Workload {
        assert!(options.streams >= 1, "the workload needs a stream");
        assert!(
            options.max_events_per_append >= 1,
            "appends carry at least one event"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let operations = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let node_ids = if options.nodes.is_empty() {
            cluster.node_ids()
        } else {
            options.nodes.clone()
        };
        let appenders = node_ids.len() * options.appenders_per_node;
        for appender in 0..appenders {
            let node = node_ids[appender % node_ids.len()];
            let task = Appender {
                index: appender,
                node,
                client: cluster.client(node),
                options: options.clone(),
                stop: Arc::clone(&stop),
                operations: Arc::clone(&operations),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        eprintln!("cluster-tests: workload started: {appenders} appenders over nodes {node_ids:?}");
        Workload {
            options,
            stop,
            operations,
            tasks,
        }
    }

    /// How many appends were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        lock(&self.operations)
            .iter()
            .filter(|operation| operation.acknowledged_at().is_some())
            .count()
    }

    /// How many appends were acknowledged at or after `instant`.
    pub fn acknowledged_since(&self, instant: Instant) -> usize {
        lock(&self.operations)
            .iter()
            .filter(|operation| operation.acknowledged_at().is_some_and(|at| at >= instant))
            .count()
    }

    /// A copy of the history so far (operations in flight show as such).
    pub fn history(&self) -> History {
        History::from_operations(lock(&self.operations).clone())
    }

    /// Waits until at least `count` appends were acknowledged at or after `instant`.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first.
    pub async fn wait_for_acknowledged_since(
        &self,
        instant: Instant,
        count: usize,
        timeout: Duration,
    ) {
        wait_for(
            timeout,
            &format!("{count} acknowledged appends"),
            async || {
                let acknowledged = self.acknowledged_since(instant);
                if acknowledged >= count {
                    Ok(())
                } else {
                    Err(format!(
                        "{acknowledged} acknowledged; {}",
                        self.history().summary()
                    ))
                }
            },
        )
        .await;
    }

    /// Stops the appenders, waits for them (bounded: an append in flight ends within its
    /// deadline), and returns the history.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        let grace =
            self.options.rpc_timeout + self.options.backoff_after_error + Duration::from_secs(5);
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(grace, task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_panic() => {
                    std::panic::resume_unwind(error.into_panic());
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    // Its operation in flight stays recorded as such: outcome unknown.
                    abort.abort();
                }
            }
        }
        let history = History::from_operations(std::mem::take(&mut *lock(&self.operations)));
        eprintln!("cluster-tests: workload stopped: {}", history.summary());
        history
    }
}

/// One appender task.
struct Appender {
    index: usize,
    node: u64,
    client: EventLogClient<Channel>,
    options: WorkloadOptions,
    stop: Arc<AtomicBool>,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Appender {
    async fn run(mut self) {
        let started = Instant::now();
        for sequence in 0..self.options.max_operations_per_appender {
            if self.stop.load(Ordering::SeqCst) || started.elapsed() >= self.options.max_duration {
                return;
            }
            let failed = self.append(sequence).await;
            if failed {
                tokio::time::sleep(self.options.backoff_after_error).await;
            }
        }
    }

    /// Sends one append and records it; returns whether it failed.
    async fn append(&mut self, sequence: u64) -> bool {
        let stream = format!(
            "load-{}",
            (self.index + sequence as usize) % self.options.streams
        );
        let count = (sequence as usize % self.options.max_events_per_append) + 1;
        let events: Vec<EventData> = (0..count)
            .map(|position_in_batch| {
                let id = format!("load-a{}-o{sequence}-e{position_in_batch}", self.index);
                EventData {
                    data: format!("payload of {id} for {stream}").into_bytes().into(),
                    id,
                    r#type: "LoadTest".to_owned(),
                    content_type: "text/plain".to_owned(),
                    metadata: HashMap::from([("appender".to_owned(), self.index.to_string())]),
                }
            })
            .collect();
        let invoked = Instant::now();
        let slot = {
            let mut operations = lock(&self.operations);
            operations.push(Operation {
                client: format!("appender {}", self.index),
                node: self.node,
                stream: stream.clone(),
                events: events.clone(),
                expected_version: None,
                idempotency_key: None,
                invoked,
                completed: None,
                outcome: Outcome::in_flight(),
            });
            operations.len() - 1
        };
        let timeout = self.options.rpc_timeout;
        let result = with_deadline(
            timeout,
            &format!("Append to node {}", self.node),
            self.client.append(request(
                AppendRequest {
                    stream,
                    events,
                    expected_version: None,
                    idempotency_key: None,
                },
                timeout,
            )),
        )
        .await;
        let completed = Instant::now();
        let mut operations = lock(&self.operations);
        let operation = &mut operations[slot];
        operation.completed = Some(completed);
        operation.outcome = Outcome::from_result(&result);
        result.is_err()
    }
}
