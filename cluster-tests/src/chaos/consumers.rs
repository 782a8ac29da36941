//! The consumer group of the `consumer` workload: a KEYED group over the whole log with four
//! members, each through its own `evlog-client` (which rejoins through another node when the
//! one serving it fails), over the 64 streams of the load: one acks everything, one (with a
//! credit of 4) now and then sleeps past `ack_wait` before acking, one retries 1 % of its deliveries, one drops its membership every few seconds with
//! deliveries in hand and joins again. Every member retries "poison" events (positions that
//! are multiples of [`POISON_EVERY`]) until they are dead-lettered.
//!
//! Every delivery and settlement is recorded; after the run healed and its final log was read,
//! [`ConsumerGroup::finish`] waits for the group to go idle and [`check`] proves the group's
//! promises from the records, the final log, the group's counters and its dead letters:
//!
//! 1. an event whose ack was answered `OK` is never delivered again (no later attempt);
//! 2. nothing is skipped: every event of the final log was delivered or dead-lettered, and
//!    once idle the group settled exactly the log (acked + dead-lettered = events, lag 0);
//! 3. no event is delivered more than `max_deliveries` times (attempt numbers included),
//!    across every leader change; a poison event is delivered exactly that often and ends in
//!    the dead-letter queue;
//! 4. KEYED: the next event of a stream is first received only after the settlement that
//!    settled the one before it was sent (so never two unsettled at once), and a stream's OK
//!    acks were sent in version order;
//! 6. the group goes idle (lag 0) within [`IDLE_DEADLINE`] of the load stopping.
//!
//! (Invariant 5, redeliveries after a leader kill bounded by what was in flight, needs to know
//! which redeliveries the kill caused; `cluster-tests/tests/consumer_groups.rs` tests it.)

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use evlog_client::ClientOptions;
use evlog_client::ConsumeOptions;
use evlog_client::EvlogClient;
use evlog_client::SettleStatus;
use evlog_proto::v1::{
    AllStreams, ConsumerInfo, ConsumerSettings, CreateConsumerRequest, DispatchMode,
    GetConsumerRequest, ListDeadLettersRequest, RecordedEvent, create_consumer_request,
};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::task::JoinHandle;

use crate::checker::{Violation, ViolationKind};
use crate::cluster::Cluster;
use crate::wait::{Probe, poll};

/// The group's name.
pub const GROUP: &str = "chaos-group";
/// Events at positions that are multiples of this are retried until dead-lettered.
pub const POISON_EVERY: u64 = 97;
pub const MAX_DELIVERIES: u32 = 4;
const ACK_WAIT_MS: u32 = 1_000;
const BACKOFF_MS: [u32; 3] = [50, 100, 200];
const CREDIT: u32 = 16;
/// How long the group may take to go idle once the load stopped and the cluster settled.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a member's client keeps trying nodes before it gives up.
const REJOIN_DEADLINE: Duration = Duration::from_secs(180);

/// One delivery as a member received it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub member: usize,
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub attempt: u32,
    pub received: Instant,
}

/// One settlement a member sent, and its answer.
#[derive(Debug, Clone)]
pub struct SettleRecord {
    pub member: usize,
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub attempt: u32,
    /// "ack", "retry" or "dead_letter".
    pub outcome: &'static str,
    pub sent: Instant,
    /// `Some(true)`: OK, `Some(false)`: STALE, `None`: no answer (an error).
    pub ok: Option<bool>,
}

#[derive(Debug, Default)]
pub struct Records {
    pub deliveries: Vec<DeliveryRecord>,
    pub settles: Vec<SettleRecord>,
    pub joins: u64,
    pub errors: Vec<String>,
}

/// What the checker is given at the end.
#[derive(Debug, Clone)]
pub struct Final {
    /// The group once idle (`None`: it never went idle, or could not be read).
    pub info: Option<ConsumerInfo>,
    /// Dead letters: position and attempts recorded.
    pub dead_letters: Vec<(u64, usize)>,
    /// How long after the load stopped the group went idle.
    pub idle_after: Option<Duration>,
}

/// What the group did in a run, for the report.
#[derive(Debug, Clone, Default)]
pub struct ConsumerSummary {
    pub deliveries: usize,
    pub acked: usize,
    pub dead_letters: usize,
    pub redelivered: u64,
    pub joins: u64,
    pub idle_after_ms: Option<f64>,
}

fn lock(records: &Mutex<Records>) -> std::sync::MutexGuard<'_, Records> {
    records.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running group.
pub struct ConsumerGroup {
    records: Arc<Mutex<Records>>,
    tasks: Vec<JoinHandle<()>>,
}

fn client_of(cluster: &Cluster, first: u64) -> EvlogClient {
    let mut endpoints = vec![cluster.address(first)];
    endpoints.extend(
        cluster
            .node_ids()
            .into_iter()
            .filter(|node| *node != first)
            .map(|node| cluster.address(node)),
    );
    let options = ClientOptions {
        deadline: REJOIN_DEADLINE,
        ..ClientOptions::default()
    };
    EvlogClient::new(&endpoints, options).expect("loopback endpoints")
}

impl ConsumerGroup {
    /// Creates the group (from the first event) and starts its four members.
    pub async fn start(cluster: &Cluster, seed: u64) -> Result<ConsumerGroup, String> {
        let nodes = cluster.node_ids();
        let client = client_of(cluster, nodes[0]);
        let request = CreateConsumerRequest {
            name: GROUP.to_string(),
            target: Some(create_consumer_request::Target::All(AllStreams {})),
            filter: None,
            start: None,
            settings: Some(ConsumerSettings {
                mode: DispatchMode::Keyed as i32,
                ack_wait_ms: ACK_WAIT_MS,
                max_deliveries: MAX_DELIVERIES,
                backoff_ms: BACKOFF_MS.to_vec(),
                max_in_flight: 256,
            }),
        };
        client
            .consumers_call(request, |mut grpc, request| async move {
                grpc.create(request).await
            })
            .await
            .map_err(|status| format!("creating the group: {status}"))?;
        let records = Arc::new(Mutex::new(Records::default()));
        let tasks = (0..4)
            .map(|member| {
                let client = client_of(cluster, nodes[member % nodes.len()]);
                let rng = StdRng::seed_from_u64(seed ^ (member as u64).wrapping_mul(0x2545_f491));
                tokio::spawn(run_member(member, client, Arc::clone(&records), rng))
            })
            .collect();
        Ok(ConsumerGroup { records, tasks })
    }

    /// Waits (at most [`IDLE_DEADLINE`]) for the group to go idle, stops the members, and
    /// checks everything against `log` (the final log).
    pub async fn finish(
        self,
        cluster: &Cluster,
        log: &[RecordedEvent],
        load_stopped: Instant,
    ) -> (ConsumerSummary, Vec<Violation>) {
        // The cluster may have moved since: ask the nodes that are up.
        let client = client_of(
            cluster,
            cluster.live_node_ids().first().copied().unwrap_or(1),
        );
        let expected = log.len() as u64;
        let idle = poll(IDLE_DEADLINE, async || match get(&client).await {
            Ok(info)
                if info.lag_events == 0
                    && info.in_flight == 0
                    && info.acked_total + info.dead_lettered_total >= expected =>
            {
                Probe::Ready(info)
            }
            Ok(info) => Probe::NotYet(format!(
                "lag {} events, in flight {}, acked {} + dead {} of {expected}",
                info.lag_events, info.in_flight, info.acked_total, info.dead_lettered_total
            )),
            Err(status) => Probe::NotYet(status.to_string()),
        })
        .await;
        let idle_after = idle.is_ok().then(|| load_stopped.elapsed());
        for task in &self.tasks {
            task.abort();
        }
        let info = match idle {
            Ok(info) => Some(info),
            Err(_) => get(&client).await.ok(),
        };
        let dead_letters = dead_letters(&client).await.unwrap_or_default();
        let records = std::mem::take(&mut *lock(&self.records));
        let fin = Final {
            info,
            dead_letters,
            idle_after,
        };
        let mut violations = check(&records, log, &fin);
        if fin.idle_after.is_none() {
            violations.push(Violation::new(
                ViolationKind::Liveness,
                format!("the consumer group did not go idle within {IDLE_DEADLINE:?} of the load stopping"),
            ));
        }
        let summary = ConsumerSummary {
            deliveries: records.deliveries.len(),
            acked: records
                .settles
                .iter()
                .filter(|settle| settle.outcome == "ack" && settle.ok == Some(true))
                .count(),
            dead_letters: fin.dead_letters.len(),
            redelivered: fin.info.as_ref().map_or(0, |info| info.redelivered_total),
            joins: records.joins,
            idle_after_ms: fin.idle_after.map(|after| after.as_secs_f64() * 1e3),
        };
        (summary, violations)
    }
}

impl Drop for ConsumerGroup {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn get(client: &EvlogClient) -> Result<ConsumerInfo, tonic::Status> {
    client
        .consumers_call(
            GetConsumerRequest {
                name: GROUP.to_string(),
            },
            |mut grpc, request| async move { grpc.get(request).await },
        )
        .await
}

async fn dead_letters(client: &EvlogClient) -> Result<Vec<(u64, usize)>, tonic::Status> {
    let mut all = Vec::new();
    let mut from = 0;
    // Bounded: at most 100 pages of 1,000.
    for _ in 0..100 {
        let page = client
            .consumers_call(
                ListDeadLettersRequest {
                    consumer: GROUP.to_string(),
                    from,
                    max_count: 1_000,
                },
                |mut grpc, request| async move { grpc.list_dead_letters(request).await },
            )
            .await?;
        all.extend(page.dead_letters.iter().map(|dead| {
            (
                dead.event.as_ref().map_or(0, |event| event.position),
                dead.attempts.len(),
            )
        }));
        if page.next_from == 0 {
            break;
        }
        from = page.next_from;
    }
    Ok(all)
}

/// One member: consumes until aborted, as its number says.
async fn run_member(
    member: usize,
    client: EvlogClient,
    records: Arc<Mutex<Records>>,
    mut rng: StdRng,
) {
    loop {
        lock(&records).joins += 1;
        let mut consumer = client.consume(
            GROUP,
            ConsumeOptions {
                // The slow member holds little: its stalls hold its streams back.
                credit: if member == 1 { 4 } else { CREDIT },
                member_name: format!("chaos-{member}"),
                rejoin_deadline: REJOIN_DEADLINE,
            },
        );
        // Member 3 leaves with deliveries in hand every few seconds.
        let leave_at = (member == 3)
            .then(|| Instant::now() + Duration::from_millis(rng.random_range(2_000..4_000)));
        loop {
            let next = match leave_at {
                Some(at) => {
                    match tokio::time::timeout(
                        at.saturating_duration_since(Instant::now()),
                        consumer.next(),
                    )
                    .await
                    {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
                None => consumer.next().await,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(status)) => {
                    lock(&records)
                        .errors
                        .push(format!("member {member}: {status}"));
                    break;
                }
                None => break,
            };
            let event = &delivery.event;
            lock(&records).deliveries.push(DeliveryRecord {
                member,
                position: event.position,
                stream: event.stream.clone(),
                version: event.stream_version,
                attempt: delivery.attempt,
                received: Instant::now(),
            });
            if member == 3 && rng.random_range(0..10) == 0 {
                // Crashes with this one in hand.
                break;
            }
            let poison = event.position % POISON_EVERY == 0;
            let outcome = if poison || (member == 2 && rng.random_range(0..100) == 0) {
                "retry"
            } else {
                "ack"
            };
            if member == 1 && rng.random_range(0..100) == 0 {
                // Past ack_wait: redelivered meanwhile; this ack is likely stale.
                tokio::time::sleep(Duration::from_millis(u64::from(ACK_WAIT_MS) * 2)).await;
            }
            // Settled without waiting for the answer (the credit bounds what is out), so a
            // member works on several deliveries at once.
            let records = Arc::clone(&records);
            let (position, stream, version, attempt) = (
                event.position,
                event.stream.clone(),
                event.stream_version,
                delivery.attempt,
            );
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = if outcome == "retry" {
                    delivery.retry(None).await
                } else {
                    delivery.ack().await
                };
                let ok = answer.ok().map(|status| status == SettleStatus::Ok);
                lock(&records).settles.push(SettleRecord {
                    member,
                    position,
                    stream,
                    version,
                    attempt,
                    outcome,
                    sent,
                    ok,
                });
            });
        }
        drop(consumer);
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

/// Proves the group's promises (see the module's list) from what happened.
pub fn check(records: &Records, log: &[RecordedEvent], fin: &Final) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut fail = |message: String| {
        if violations.len() < 50 {
            violations.push(Violation::new(ViolationKind::ConsumerGroup, message));
        }
    };
    // 1. Acked OK: never delivered again, never acked OK twice.
    let mut acked: HashMap<u64, u32> = HashMap::new();
    for settle in records
        .settles
        .iter()
        .filter(|s| s.outcome == "ack" && s.ok == Some(true))
    {
        if let Some(before) = acked.insert(settle.position, settle.attempt) {
            fail(format!(
                "event {} acked OK twice (attempts {before} and {})",
                settle.position, settle.attempt
            ));
        }
    }
    for delivery in &records.deliveries {
        if let Some(attempt) = acked.get(&delivery.position)
            && delivery.attempt > *attempt
        {
            fail(format!(
                "event {} was delivered again (attempt {}, to member {}) after attempt {attempt} was acked OK",
                delivery.position, delivery.attempt, delivery.member
            ));
        }
    }
    // 3. At most max_deliveries.
    let mut attempts: BTreeMap<u64, u32> = BTreeMap::new();
    for delivery in &records.deliveries {
        if delivery.attempt > MAX_DELIVERIES || delivery.attempt == 0 {
            fail(format!(
                "event {} delivered as attempt {} (max_deliveries {MAX_DELIVERIES})",
                delivery.position, delivery.attempt
            ));
        }
        let seen = attempts.entry(delivery.position).or_default();
        *seen = (*seen).max(delivery.attempt);
    }
    // 2. Nothing skipped: every event reached a member or the dead-letter queue (a delivery
    // can be lost with its member's connection, or sit unread in a member that crashed, and
    // expire until it is dead-lettered without a member ever seeing it).
    let dead: HashMap<u64, usize> = fin.dead_letters.iter().copied().collect();
    for event in log {
        if !attempts.contains_key(&event.position) && !dead.contains_key(&event.position) {
            fail(format!(
                "event {} ({}@{}) was never delivered nor dead-lettered",
                event.position, event.stream, event.stream_version
            ));
        }
    }
    if let Some(info) = &fin.info
        && fin.idle_after.is_some()
    {
        let settled = info.acked_total + info.dead_lettered_total;
        if settled != log.len() as u64
            || info.lag_events != 0
            || info.ack_floor != log.len() as u64 + 1
        {
            fail(format!(
                "idle, the group settled {settled} events (acked {}, dead-lettered {}) with lag {} and ack floor {}; the log holds {}",
                info.acked_total,
                info.dead_lettered_total,
                info.lag_events,
                info.ack_floor,
                log.len()
            ));
        }
    }
    for event in log
        .iter()
        .filter(|event| event.position % POISON_EVERY == 0)
    {
        match dead.get(&event.position) {
            Some(tries) if *tries == MAX_DELIVERIES as usize => {}
            Some(tries) => fail(format!(
                "poison event {} dead-lettered after {tries} attempts, not {MAX_DELIVERIES}",
                event.position
            )),
            None if fin.idle_after.is_some() && !acked.contains_key(&event.position) => {
                fail(format!(
                    "poison event {} is not in the dead-letter queue",
                    event.position
                ))
            }
            None => {}
        }
    }
    // 4. KEYED: a stream's next event first arrives after its previous one's final settlement
    // was sent; OK acks of a stream were sent in version order.
    let mut first_received: HashMap<(String, u64), Instant> = HashMap::new();
    for delivery in &records.deliveries {
        first_received
            .entry((delivery.stream.clone(), delivery.version))
            .and_modify(|at| *at = (*at).min(delivery.received))
            .or_insert(delivery.received);
    }
    let mut settled_by: HashMap<(String, u64), Instant> = HashMap::new();
    for settle in &records.settles {
        let is_final = settle.ok == Some(true)
            && (settle.outcome != "retry" || settle.attempt >= MAX_DELIVERIES);
        if is_final {
            settled_by
                .entry((settle.stream.clone(), settle.version))
                .and_modify(|at| *at = (*at).min(settle.sent))
                .or_insert(settle.sent);
        }
    }
    for ((stream, version), sent) in &settled_by {
        if let Some(next) = first_received.get(&(stream.clone(), version + 1))
            && next < sent
        {
            fail(format!(
                "{stream}@{} was delivered before {stream}@{version} was settled (two unsettled deliveries of one stream)",
                version + 1
            ));
        }
    }
    let mut acks_by_stream: BTreeMap<&str, Vec<(Instant, u64)>> = BTreeMap::new();
    for settle in records
        .settles
        .iter()
        .filter(|s| s.outcome == "ack" && s.ok == Some(true))
    {
        acks_by_stream
            .entry(settle.stream.as_str())
            .or_default()
            .push((settle.sent, settle.version));
    }
    for (stream, mut acks) in acks_by_stream {
        acks.sort();
        if let Some(pair) = acks.windows(2).find(|pair| pair[1].1 < pair[0].1) {
            fail(format!(
                "{stream}: version {} was acked OK after version {}",
                pair[1].1, pair[0].1
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, stream: &str, version: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: stream.to_string(),
            stream_version: version,
            ..RecordedEvent::default()
        }
    }

    fn delivery(
        at: Instant,
        position: u64,
        stream: &str,
        version: u64,
        attempt: u32,
    ) -> DeliveryRecord {
        DeliveryRecord {
            member: 0,
            position,
            stream: stream.to_string(),
            version,
            attempt,
            received: at,
        }
    }

    fn ack(at: Instant, position: u64, stream: &str, version: u64, attempt: u32) -> SettleRecord {
        SettleRecord {
            member: 0,
            position,
            stream: stream.to_string(),
            version,
            attempt,
            outcome: "ack",
            sent: at,
            ok: Some(true),
        }
    }

    fn idle(events: u64) -> Final {
        Final {
            info: Some(ConsumerInfo {
                acked_total: events,
                ack_floor: events + 1,
                ..ConsumerInfo::default()
            }),
            dead_letters: vec![],
            idle_after: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn a_clean_history_passes_and_each_broken_promise_is_found() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let log = vec![event(1, "a", 1), event(2, "a", 2), event(3, "b", 1)];
        let clean = Records {
            deliveries: vec![
                delivery(ms(1), 1, "a", 1, 1),
                delivery(ms(1), 3, "b", 1, 1),
                delivery(ms(5), 2, "a", 2, 1),
            ],
            settles: vec![
                ack(ms(2), 1, "a", 1, 1),
                ack(ms(2), 3, "b", 1, 1),
                ack(ms(6), 2, "a", 2, 1),
            ],
            ..Records::default()
        };
        assert_eq!(check(&clean, &log, &idle(3)), vec![]);

        // Delivered again after an OK ack.
        let mut again = Records {
            deliveries: clean.deliveries.clone(),
            settles: clean.settles.clone(),
            ..Records::default()
        };
        again.deliveries.push(delivery(ms(9), 3, "b", 1, 2));
        assert!(!check(&again, &log, &idle(3)).is_empty());

        // a@2 arrived before a@1's ack was sent.
        let mut overlap = Records {
            deliveries: clean.deliveries.clone(),
            settles: clean.settles.clone(),
            ..Records::default()
        };
        overlap.deliveries[2].received = ms(1);
        assert!(!check(&overlap, &log, &idle(3)).is_empty());

        // An event never delivered.
        let mut skipped = Records {
            deliveries: clean.deliveries.clone(),
            settles: clean.settles.clone(),
            ..Records::default()
        };
        skipped.deliveries.remove(1);
        assert!(!check(&skipped, &log, &idle(3)).is_empty());

        // Too many deliveries.
        let mut many = Records {
            deliveries: clean.deliveries.clone(),
            settles: clean.settles.clone(),
            ..Records::default()
        };
        many.deliveries
            .push(delivery(ms(0), 3, "b", 1, MAX_DELIVERIES + 1));
        assert!(!check(&many, &log, &idle(3)).is_empty());

        // The group says it settled fewer events than the log holds.
        assert!(!check(&clean, &log, &idle(2)).is_empty());
    }
}
