//! The subscribers of a chaos run: every run has one per node, through the Rust client
//! (`evlog-client`, which resumes on another node from the last `next_from` when the serving
//! one fails), each preferring its own node; the `subscribe` workload adds more shapes and a
//! subscriber that stops reading for seconds at a time. They outlive the load: after the
//! cluster healed and its final log was read, [`Subscribers::finish`] waits until each got
//! past the final head, and the checker compares what each received with the final log
//! ([`crate::checker`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use evlog_client::{ClientOptions, EvlogClient};
use evlog_proto::v1::subscribe_request::Start;
use evlog_proto::v1::subscribe_response::Item;
use evlog_proto::v1::{RecordedEvent, SubscribeRequest};
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::task::JoinHandle;

use super::load::LoadKind;
use crate::checker::view_head;
use crate::cluster::Cluster;
use crate::subscriber::{
    SubscriptionRecord, at_head, next_from, subscribe_all, subscribe_filtered, subscribe_stream,
};
use crate::wait::{Probe, poll};

/// How long a subscriber's client keeps trying nodes before it gives up (longer than any
/// fault keeps the whole cluster down).
const RESUME_DEADLINE: Duration = Duration::from_secs(180);

/// One subscriber to start.
struct Spec {
    name: String,
    /// The node its client tries first.
    node: u64,
    request: SubscribeRequest,
    /// Stops reading for a few seconds now and then.
    pauses: bool,
}

fn specs(cluster: &Cluster, kind: LoadKind) -> Vec<Spec> {
    let nodes = cluster.node_ids();
    let mut specs: Vec<Spec> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            let (shape, request) = match index % 3 {
                0 => ("all", subscribe_all(None)),
                // The load's streams are s-0 .. s-15 (and `hot`): this takes s-1 and s-10..s-15.
                1 => ("filtered", subscribe_filtered(None, &["s-1"], &[])),
                _ => ("head", subscribe_all(at_head())),
            };
            Spec {
                name: format!("subscriber {shape} on node {node}"),
                node: *node,
                request,
                pauses: false,
            }
        })
        .collect();
    if kind == LoadKind::Subscribe {
        for (index, node) in nodes.iter().enumerate() {
            let (shape, mut request) = match index % 3 {
                0 => ("stream", subscribe_stream("s-3", None)),
                1 => ("from 5", subscribe_all(Some(Start::From(5)))),
                _ => ("typed", subscribe_filtered(None, &[], &["Chaos"])),
            };
            request.max_batch_events = 7;
            specs.push(Spec {
                name: format!("slow subscriber {shape} on node {node}"),
                node: *node,
                request,
                pauses: true,
            });
        }
    }
    specs
}

/// The running subscribers.
#[derive(Debug)]
pub struct Subscribers {
    records: Vec<Arc<Mutex<SubscriptionRecord>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscribers {
    /// Starts the subscribers of a run of `kind` on `cluster`.
    pub fn start(cluster: &Cluster, kind: LoadKind, seed: u64) -> Subscribers {
        let mut records = Vec::new();
        let mut tasks = Vec::new();
        let nodes = cluster.node_ids();
        for (index, spec) in specs(cluster, kind).into_iter().enumerate() {
            // Its own node first, then the others.
            let mut endpoints = vec![cluster.address(spec.node)];
            endpoints.extend(
                nodes
                    .iter()
                    .filter(|node| **node != spec.node)
                    .map(|node| cluster.address(*node)),
            );
            let options = ClientOptions {
                deadline: RESUME_DEADLINE,
                ..ClientOptions::default()
            };
            let client = EvlogClient::new(&endpoints, options).expect("loopback endpoints");
            let record = Arc::new(Mutex::new(SubscriptionRecord {
                name: spec.name.clone(),
                request: spec.request.clone(),
                began: Instant::now(),
                events: Vec::new(),
                heads: Vec::new(),
                start: None,
                next_from: None,
                resumes: 0,
                error: None,
            }));
            let rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x51_7cc1));
            tasks.push(tokio::spawn(subscribe(
                client,
                spec,
                Arc::clone(&record),
                rng,
            )));
            records.push(record);
        }
        Subscribers { records, tasks }
    }

    /// Waits (at most `timeout`) until every subscriber that has not failed got past the end
    /// of its view of `log` (the final log), stops them, and returns what each saw; a
    /// subscriber that did not get there is reported by the checker from its record.
    pub async fn finish(self, log: &[RecordedEvent], timeout: Duration) -> Vec<SubscriptionRecord> {
        let records = &self.records;
        let _ = poll(timeout, async || {
            let behind: Vec<String> = records
                .iter()
                .map(|record| lock(record))
                .filter(|record| {
                    let head = view_head(record, log);
                    record.error.is_none() && record.next_from.is_none_or(|next| next <= head)
                })
                .map(|record| format!("{} at {:?}", record.name, record.next_from))
                .collect();
            if behind.is_empty() {
                Probe::Ready(())
            } else {
                Probe::NotYet(behind.join(", "))
            }
        })
        .await;
        for task in &self.tasks {
            task.abort();
        }
        self.records
            .iter()
            .map(|record| lock(record).clone())
            .collect()
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock(record: &Mutex<SubscriptionRecord>) -> std::sync::MutexGuard<'_, SubscriptionRecord> {
    record.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One subscriber: reads its subscription into its record until stopped or it fails.
async fn subscribe(
    client: EvlogClient,
    spec: Spec,
    record: Arc<Mutex<SubscriptionRecord>>,
    mut rng: StdRng,
) {
    lock(&record).began = Instant::now();
    let mut subscription = client.subscribe(spec.request);
    let mut next_pause = Instant::now() + Duration::from_millis(rng.random_range(500..3_000));
    while let Some(item) = subscription.next().await {
        if !note(&record, item) {
            return;
        }
        if spec.pauses && Instant::now() >= next_pause {
            // A slow consumer: nothing read for a while; the node holds nothing for it.
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
            next_pause = Instant::now() + Duration::from_millis(rng.random_range(500..3_000));
        }
    }
}

/// Enters `item` in `record`; false when it is the error that ended the subscription.
fn note(record: &Mutex<SubscriptionRecord>, item: Result<Item, tonic::Status>) -> bool {
    let mut record = lock(record);
    let item = match item {
        Err(status) => {
            record.error = Some(format!("{}: {}", status.code(), status.message()));
            return false;
        }
        Ok(item) => item,
    };
    record.next_from = Some(next_from(&item));
    match item {
        Item::Subscribed(subscribed) => {
            if record.start.is_none() {
                record.start = Some(subscribed.next_from);
            } else {
                record.resumes += 1;
            }
            record.heads.push(("subscribed", subscribed.head_position));
        }
        Item::CaughtUp(caught_up) => {
            record.heads.push(("caught_up", caught_up.head_position));
        }
        Item::Events(batch) => record.events.extend(batch.events),
        Item::Checkpoint(_) | Item::FellBehind(_) => {}
    }
    true
}
