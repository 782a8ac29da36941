//! Appends made at the same time through one client travel together: every append waiting
//! for an endpoint goes in one `AppendMany` call (a result per append), as a Kafka producer or
//! a NATS connection batches what its callers send meanwhile.
//!
//! Each endpoint has a lane: a task that takes what is queued and sends it. It never waits for
//! company: a lone append is sent at once (as a unary `Append`, so a single caller sees no
//! change), and batches form from the appends that arrive while earlier calls are on the
//! wire. A node of an older version answers `AppendMany` with `UNIMPLEMENTED` (nothing done):
//! the lane then sends that batch, and every later one, as unary appends.
//!
//! Every stage is bounded: at most `append_calls_in_flight` calls per endpoint
//! ([`DEFAULT_CALLS_IN_FLIGHT`] unless the client's options say); a batch holds at most
//! [`MAX_BATCH_APPENDS`] appends and about [`MAX_BATCH_BYTES`] (an append larger than that goes
//! alone); at most [`MAX_QUEUED`] appends wait per endpoint, and its callers hold at most
//! [`MAX_QUEUED_BYTES`] of appends until answered (past either, callers wait to queue).

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Transport;
use evlog_proto::v1 as pb;
use evlog_proto::v1::event_log_client::EventLogClient;
use prost::Message;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tonic::Status;

/// Calls on the wire per endpoint by default; appends arriving meanwhile wait and go together
/// next. One call at a time carried the most per call and measured fastest (16 clients: 11.1-11.5k
/// appends/s with 1, 9.6-9.9k with 2, 8.5-9.2k with 4; 128 clients: level with 2, ahead of 4).
pub const DEFAULT_CALLS_IN_FLIGHT: usize = 1;
/// Most appends in one call (the server's limit per `AppendMany`).
pub const MAX_BATCH_APPENDS: usize = 1_024;
/// Most encoded bytes of appends in one call, unless a single append is larger.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Most appends waiting per endpoint.
pub const MAX_QUEUED: usize = 4_096;
/// Most bytes of appends waiting or in flight per endpoint (an append larger than this takes
/// it all).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

type Reply = oneshot::Sender<Result<pb::AppendResponse, Status>>;

struct Queued {
    request: pb::AppendRequest,
    bytes: usize,
    timeout: Duration,
    reply: Reply,
}

/// How many calls carried how many appends (for a benchmark's report, and tests).
#[derive(Debug, Default)]
pub struct CoalescingStats {
    pub calls: AtomicU64,
    pub appends: AtomicU64,
}

/// The lanes of one client, one per endpoint.
pub struct Coalescer {
    lanes: Vec<mpsc::Sender<Queued>>,
    /// Per lane: bytes of the appends its callers are waiting on (at most
    /// [`MAX_QUEUED_BYTES`]; a caller waits for room before it queues).
    queued_bytes: Vec<Arc<Semaphore>>,
    stats: Arc<CoalescingStats>,
}

impl Coalescer {
    /// Starts a lane per channel, each with at most `calls_in_flight` calls on the wire, on
    /// the current Tokio runtime; counts into `stats` when given (lanes started again).
    pub fn start(
        channels: &[Transport],
        calls_in_flight: usize,
        stats: Option<Arc<CoalescingStats>>,
    ) -> Self {
        let stats = stats.unwrap_or_default();
        let queued_bytes = channels
            .iter()
            .map(|_| Arc::new(Semaphore::new(MAX_QUEUED_BYTES)))
            .collect();
        let lanes = channels
            .iter()
            .map(|channel| {
                let (sender, queue) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(run_lane(
                    channel.clone(),
                    queue,
                    calls_in_flight,
                    Arc::clone(&stats),
                ));
                sender
            })
            .collect();
        Self {
            lanes,
            queued_bytes,
            stats,
        }
    }

    pub fn stats_handle(&self) -> Arc<CoalescingStats> {
        Arc::clone(&self.stats)
    }

    /// Whether the lanes have stopped (the runtime they ran on is gone).
    pub fn stopped(&self) -> bool {
        self.lanes.iter().any(mpsc::Sender::is_closed)
    }

    /// Sends `request` to endpoint `index` with the appends waiting there, and waits for its
    /// own result: exactly what a unary `Append` of it would have answered.
    pub async fn append(
        &self,
        index: usize,
        request: pb::AppendRequest,
        timeout: Duration,
    ) -> Result<pb::AppendResponse, Status> {
        let lane = index % self.lanes.len();
        let bytes = request.encoded_len();
        // Held until this append is answered (or its caller gives up).
        let weight = u32::try_from(bytes.min(MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
        let _room = Arc::clone(&self.queued_bytes[lane])
            .acquire_many_owned(weight)
            .await
            .map_err(|_| Status::cancelled("the client's append lane stopped"))?;
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            bytes,
            request,
            timeout,
            reply,
        };
        self.lanes[lane]
            .send(queued)
            .await
            .map_err(|_| Status::cancelled("the client's append lane stopped"))?;
        answer
            .await
            .map_err(|_| Status::cancelled("the client's append lane stopped"))?
    }
}

/// Takes what is queued for one endpoint and sends it, while fewer than `calls_in_flight`
/// calls are on the wire. Ends when the client is dropped.
async fn run_lane(
    channel: Transport,
    mut queue: mpsc::Receiver<Queued>,
    calls_in_flight: usize,
    stats: Arc<CoalescingStats>,
) {
    let in_flight = Arc::new(Semaphore::new(calls_in_flight));
    let support = Arc::new(AtomicU8::new(UNKNOWN));
    let mut carried: Option<Queued> = None;
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(queued) => queued,
            None => match queue.recv().await {
                Some(queued) => {
                    // Callers answered by the call that just ended are queuing their next
                    // appends now: one pass of the scheduler lets them in, so they go together
                    // rather than the first alone and the rest in the call after it.
                    tokio::task::yield_now().await;
                    queued
                }
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_APPENDS {
            match queue.try_recv() {
                Ok(next) if bytes + next.bytes > MAX_BATCH_BYTES => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        // A caller that gave up before its append was sent: it is not sent.
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats
            .appends
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tokio::spawn(send(channel.clone(), batch, Arc::clone(&support), permit));
    }
}

/// Whether the endpoint serves `AppendMany`: not known until a call succeeds; a node of an
/// older version answers `UNIMPLEMENTED`, and its lane then sends appends one by one.
const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

/// Sends each append of `batch` as a unary `Append`, at once.
async fn send_one_by_one(
    client: &EventLogClient<Transport>,
    batch: Vec<Queued>,
    timeout: Duration,
) {
    let calls = batch.into_iter().map(|queued| {
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(queued.request);
            request.set_timeout(timeout);
            let result = client
                .append(request)
                .await
                .map(tonic::Response::into_inner);
            queued.reply.send(result).ok();
        }
    });
    futures::future::join_all(calls).await;
}

/// One call for `batch`; each caller gets its own result (or the call's failure).
async fn send(
    channel: Transport,
    batch: Vec<Queued>,
    support: Arc<AtomicU8>,
    _permit: OwnedSemaphorePermit,
) {
    let client = EventLogClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let timeout = batch
        .iter()
        .map(|queued| queued.timeout)
        .max()
        .unwrap_or_default();
    let known = support.load(Ordering::Relaxed);
    if batch.len() == 1 || known == UNSUPPORTED {
        send_one_by_one(&client, batch, timeout).await;
        return;
    }
    // Until the endpoint is known to serve AppendMany, keep the appends to send them one by
    // one if it does not.
    let kept: Option<Vec<pb::AppendRequest>> =
        (known == UNKNOWN).then(|| batch.iter().map(|queued| queued.request.clone()).collect());
    let (requests, replies): (Vec<pb::AppendRequest>, Vec<Reply>) = batch
        .into_iter()
        .map(|queued| (queued.request, queued.reply))
        .unzip();
    let mut request = tonic::Request::new(pb::AppendManyRequest { appends: requests });
    request.set_timeout(timeout);
    let mut many = client.clone();
    let answer = many.append_many(request).await;
    match (&answer, kept) {
        (Err(status), Some(kept)) if status.code() == tonic::Code::Unimplemented => {
            support.store(UNSUPPORTED, Ordering::Relaxed);
            let batch = kept
                .into_iter()
                .zip(replies)
                .map(|(request, reply)| Queued {
                    bytes: 0,
                    request,
                    timeout,
                    reply,
                })
                .collect();
            send_one_by_one(&client, batch, timeout).await;
            return;
        }
        (Ok(_), _) => support.store(SUPPORTED, Ordering::Relaxed),
        _ => {}
    }
    match answer {
        Ok(response) => {
            let results = response.into_inner().results;
            if results.len() != replies.len() {
                let status = Status::internal(format!(
                    "the node answered {} results for {} appends",
                    results.len(),
                    replies.len()
                ));
                for reply in replies {
                    reply.send(Err(status.clone())).ok();
                }
                return;
            }
            for (reply, result) in replies.into_iter().zip(results) {
                reply.send(append_result(result)).ok();
            }
        }
        Err(status) => {
            for reply in replies {
                reply.send(Err(status.clone())).ok();
            }
        }
    }
}

/// One append's answer as a unary `Append` would have given it.
fn append_result(result: pb::AppendResult) -> Result<pb::AppendResponse, Status> {
    match result.result {
        Some(pb::append_result::Result::Appended(response)) => Ok(response),
        Some(pb::append_result::Result::Error(error)) => Err(error.to_status()),
        None => Err(Status::internal(
            "the node answered an append with neither a result nor an error",
        )),
    }
}
