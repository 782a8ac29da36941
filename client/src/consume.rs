//! A member of a consumer group that survives the loss of the node serving it: a task keeps
//! one `Consume` stream open (joining again through another node, with backoff, when it
//! fails), hands deliveries out, sends settlements and answers each with the server's
//! `Settled` result.
//!
//! Credit is a window: the member asks for `credit` deliveries at first and one more for each
//! delivery settled, so at most `credit` are unsettled at a time. Deliveries handed out before
//! a reconnect stay valid: their settlements go through the new stream (the server knows a
//! delivery by its id, whichever node it was sent from). A settlement whose answer was lost
//! with a stream is sent again; if the first one had committed, the second is answered
//! `STALE`.

use std::collections::HashMap;
use std::time::Duration;

use evlog_proto::v1 as pb;
use evlog_proto::v1::consumers_client::ConsumersClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::Status;

use crate::EvlogClient;

/// How a member consumes.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// Most deliveries unsettled at this member at once (1 to 10,000).
    pub credit: u32,
    /// A name for people (shown in the group's members and dead letters).
    pub member_name: String,
    /// Give up after failing to join for this long.
    pub rejoin_deadline: Duration,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            // On the 2-CPU test machine, 4 members of a KEYED group drain 1.3-1.5x as fast
            // with 128 as with 64, ack -> settled p99 under 20 ms; 256 is faster yet but holds
            // twice the deliveries per member at a p99 near 30 ms (README: consumer figures).
            credit: 128,
            member_name: String::new(),
            rejoin_deadline: Duration::from_secs(30),
        }
    }
}

/// How a settlement ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleStatus {
    /// Committed.
    Ok,
    /// The delivery had been settled or redelivered already: nothing changed.
    Stale,
}

/// One delivery; settle it with [`Delivery::ack`], [`Delivery::retry`] or
/// [`Delivery::dead_letter`].
#[derive(Debug)]
pub struct Delivery {
    pub delivery_id: String,
    pub attempt: u32,
    pub event: pb::RecordedEvent,
    commands: mpsc::Sender<Command>,
}

impl Delivery {
    pub async fn ack(&self) -> Result<SettleStatus, Status> {
        self.settle(pb::SettleOutcome::Ack, 0, String::new()).await
    }

    /// Deliver again after `delay` (`None`: the group's backoff schedule).
    pub async fn retry(&self, delay: Option<Duration>) -> Result<SettleStatus, Status> {
        let delay_ms = delay.map_or(0, |delay| {
            delay.as_millis().clamp(1, u32::MAX as u128) as u32
        });
        self.settle(pb::SettleOutcome::Retry, delay_ms, String::new())
            .await
    }

    /// Restarts this delivery's `ack_wait` (work in progress); no answer comes. Does nothing
    /// once the delivery is settled or redelivered.
    pub async fn extend(&self) -> Result<(), Status> {
        self.commands
            .send(Command::Extend {
                delivery_id: self.delivery_id.clone(),
            })
            .await
            .map_err(|_| Status::cancelled("the consumer has stopped"))
    }

    pub async fn dead_letter(&self, reason: &str) -> Result<SettleStatus, Status> {
        self.settle(pb::SettleOutcome::DeadLetter, 0, reason.to_string())
            .await
    }

    /// Sends the settlement and waits for its answer.
    pub async fn settle(
        &self,
        outcome: pb::SettleOutcome,
        delay_ms: u32,
        reason: String,
    ) -> Result<SettleStatus, Status> {
        let (answer, answered) = oneshot::channel();
        self.commands
            .send(Command::Settle {
                settlement: pb::Settlement {
                    delivery_id: self.delivery_id.clone(),
                    outcome: outcome as i32,
                    delay_ms,
                    reason,
                },
                answer,
            })
            .await
            .map_err(|_| Status::cancelled("the consumer has stopped"))?;
        answered
            .await
            .map_err(|_| Status::cancelled("the consumer stopped before the answer came"))?
    }
}

/// Settlements sent and not yet answered, by delivery id, with whom to answer.
type Waiting = HashMap<
    String,
    (
        pb::Settlement,
        oneshot::Sender<Result<SettleStatus, Status>>,
    ),
>;

enum Command {
    Settle {
        settlement: pb::Settlement,
        answer: oneshot::Sender<Result<SettleStatus, Status>>,
    },
    Extend {
        delivery_id: String,
    },
}

/// A group member: deliveries come from [`Consumer::next`]. Dropping it leaves the group
/// (deliveries not settled by then are redelivered, to another member, after their member is
/// gone).
pub struct Consumer {
    deliveries: mpsc::Receiver<Result<Delivery, Status>>,
    member_id: tokio::sync::watch::Receiver<String>,
}

impl Consumer {
    /// The next delivery; `None` once the consumer stopped, after the error that stopped it.
    pub async fn next(&mut self) -> Option<Result<Delivery, Status>> {
        self.deliveries.recv().await
    }

    /// The member id the server gave at the last join.
    pub fn member_id(&self) -> String {
        self.member_id.borrow().clone()
    }
}

/// Whether a member whose stream failed so may join again: the node was the trouble.
fn rejoinable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::Cancelled
    )
}

pub(crate) fn start(client: EvlogClient, consumer: String, options: ConsumeOptions) -> Consumer {
    let window = options.credit.max(1);
    let (deliveries_tx, deliveries) = mpsc::channel(window as usize);
    let (commands_tx, commands) = mpsc::channel(1_024);
    let (member_tx, member_id) = tokio::sync::watch::channel(String::new());
    tokio::spawn(run(
        client,
        consumer,
        options,
        deliveries_tx,
        commands_tx,
        commands,
        member_tx,
    ));
    Consumer {
        deliveries,
        member_id,
    }
}

async fn run(
    client: EvlogClient,
    consumer: String,
    options: ConsumeOptions,
    deliveries: mpsc::Sender<Result<Delivery, Status>>,
    commands_tx: mpsc::Sender<Command>,
    mut commands: mpsc::Receiver<Command>,
    member_id: tokio::sync::watch::Sender<String>,
) {
    let window = options.credit.clamp(1, 10_000);
    // Deliveries handed out and not yet settled (their settlements may come any time).
    let mut unsettled: usize = 0;
    // Settlements sent and not yet answered, by delivery id (sent again after a rejoin).
    let mut waiting: Waiting = HashMap::new();
    let mut endpoint = 0usize;
    let mut backoff = Duration::from_millis(50);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        if deliveries.is_closed() {
            return;
        }
        let (requests, outgoing) = mpsc::channel::<pb::ConsumeRequest>(1_024);
        let credit = window.saturating_sub(unsettled as u32);
        let join = pb::ConsumeRequest {
            msg: Some(pb::consume_request::Msg::Join(pb::Join {
                consumer: consumer.clone(),
                credit,
                member_name: options.member_name.clone(),
            })),
        };
        requests.try_send(join).ok();
        // At most 10,000 waiting (the window): a few messages, well within the channel.
        for request in settle_requests(waiting.values().map(|(settlement, _)| settlement.clone())) {
            requests.try_send(request).ok();
        }
        let mut grpc =
            ConsumersClient::new(client.channel(endpoint)).max_decoding_message_size(usize::MAX);
        let stream = tokio_stream_from(outgoing);
        let opened = grpc.consume(stream).await;
        let ended: Status = 'stream: {
            let mut inbound = match opened {
                Ok(response) => response.into_inner(),
                Err(status) => break 'stream status,
            };
            loop {
                tokio::select! {
                    item = inbound.next() => match item {
                        None => break Status::unavailable("the consume stream ended"),
                        Some(Err(status)) => break status,
                        Some(Ok(response)) => match response.msg {
                            Some(pb::consume_response::Msg::Joined(joined)) => {
                                member_id.send_replace(joined.member_id);
                                failing_since = None;
                                backoff = Duration::from_millis(50);
                            }
                            Some(pb::consume_response::Msg::Delivery(delivery)) => {
                                let Some(event) = delivery.event else { continue };
                                unsettled += 1;
                                let handed = deliveries.send(Ok(Delivery {
                                    delivery_id: delivery.delivery_id,
                                    attempt: delivery.attempt,
                                    event,
                                    commands: commands_tx.clone(),
                                })).await;
                                if handed.is_err() {
                                    return;
                                }
                            }
                            Some(pb::consume_response::Msg::Settled(settled)) => {
                                let mut credit = 0;
                                for result in settled.results {
                                    if let Some((_, answer)) = waiting.remove(&result.delivery_id) {
                                        unsettled = unsettled.saturating_sub(1);
                                        credit += 1;
                                        let status = if result.status == pb::SettleStatus::Ok as i32 {
                                            SettleStatus::Ok
                                        } else {
                                            SettleStatus::Stale
                                        };
                                        answer.send(Ok(status)).ok();
                                    }
                                }
                                if credit > 0 {
                                    requests.send(pb::ConsumeRequest {
                                        msg: Some(pb::consume_request::Msg::Credit(pb::Credit { count: credit })),
                                    }).await.ok();
                                }
                            }
                            // The status that follows says what to do (join the leader it
                            // names, or stop: the group is gone).
                            Some(pb::consume_response::Msg::Revoked(_)) => {}
                            None => {}
                        },
                    },
                    command = commands.recv() => match command {
                        // Every delivery (which holds a sender) and the consumer are gone.
                        None => return,
                        // Every command waiting goes in as few messages as the limits allow
                        // (nothing waits for company: a lone settlement goes at once).
                        Some(first) => {
                            let mut settlements = Vec::new();
                            let mut extends = Vec::new();
                            let mut next = Some(first);
                            while let Some(command) = next.take() {
                                match command {
                                    Command::Settle { settlement, answer } => {
                                        settlements.push(settlement.clone());
                                        waiting.insert(settlement.delivery_id.clone(), (settlement, answer));
                                    }
                                    Command::Extend { delivery_id } => extends.push(delivery_id),
                                }
                                if settlements.len() + extends.len() < MAX_COMMANDS_TAKEN {
                                    next = commands.try_recv().ok();
                                }
                            }
                            for request in settle_requests(settlements.into_iter()) {
                                requests.send(request).await.ok();
                            }
                            for delivery_ids in extends.chunks(MAX_PER_MESSAGE) {
                                requests.send(pb::ConsumeRequest {
                                    msg: Some(pb::consume_request::Msg::Extend(pb::Extend {
                                        delivery_ids: delivery_ids.to_vec(),
                                    })),
                                }).await.ok();
                            }
                        }
                    },
                    () = deliveries.closed() => return,
                }
            }
        };
        if !rejoin_or_stop(
            &ended,
            &mut failing_since,
            &options,
            &deliveries,
            &mut waiting,
        )
        .await
        {
            return;
        }
        endpoint = next_endpoint(&client, &ended, endpoint);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Most settlements (or extended deliveries) in one message: the server takes up to 4,096.
const MAX_PER_MESSAGE: usize = 4_096;
/// About the most bytes of settlements in one message (a reason is at most 1 KiB).
const MAX_SETTLE_BYTES: usize = 1 << 20;
/// Most commands the member's task takes from its queue before it sends them.
const MAX_COMMANDS_TAKEN: usize = 4 * MAX_PER_MESSAGE;

/// `settlements` as `Settle` messages, each within [`MAX_PER_MESSAGE`] and
/// [`MAX_SETTLE_BYTES`].
fn settle_requests(settlements: impl Iterator<Item = pb::Settlement>) -> Vec<pb::ConsumeRequest> {
    let mut requests = Vec::new();
    let mut chunk: Vec<pb::Settlement> = Vec::new();
    let mut bytes = 0;
    for settlement in settlements {
        let size = settlement.delivery_id.len() + settlement.reason.len() + 16;
        if !chunk.is_empty() && (chunk.len() == MAX_PER_MESSAGE || bytes + size > MAX_SETTLE_BYTES)
        {
            requests.push(settle_request(std::mem::take(&mut chunk)));
            bytes = 0;
        }
        bytes += size;
        chunk.push(settlement);
    }
    if !chunk.is_empty() {
        requests.push(settle_request(chunk));
    }
    requests
}

fn settle_request(settlements: Vec<pb::Settlement>) -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        msg: Some(pb::consume_request::Msg::Settle(pb::Settle { settlements })),
    }
}

/// The node to join through next: the leader a refusal names, else the next one.
fn next_endpoint(client: &EvlogClient, status: &Status, endpoint: usize) -> usize {
    status
        .metadata()
        .get(evlog_proto::metadata::LEADER_ADDRESS)
        .and_then(|value| value.to_str().ok())
        .and_then(|address| {
            client
                .endpoints()
                .iter()
                .position(|endpoint| endpoint.ends_with(address))
        })
        .unwrap_or(endpoint + 1)
}

/// Whether to join again after `status`; if not, the consumer ends with it.
async fn rejoin_or_stop(
    status: &Status,
    failing_since: &mut Option<tokio::time::Instant>,
    options: &ConsumeOptions,
    deliveries: &mpsc::Sender<Result<Delivery, Status>>,
    waiting: &mut Waiting,
) -> bool {
    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
    if rejoinable(status) && since.elapsed() < options.rejoin_deadline {
        return true;
    }
    for (_, (_, answer)) in waiting.drain() {
        answer.send(Err(status.clone())).ok();
    }
    deliveries.send(Err(status.clone())).await.ok();
    false
}

/// The requests of one stream, from a channel.
fn tokio_stream_from(
    mut outgoing: mpsc::Receiver<pb::ConsumeRequest>,
) -> impl futures::Stream<Item = pb::ConsumeRequest> + Send + 'static {
    futures::stream::poll_fn(move |cx| outgoing.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settlement(index: usize, reason_bytes: usize) -> pb::Settlement {
        pb::Settlement {
            delivery_id: format!("d-{index}"),
            outcome: pb::SettleOutcome::Ack as i32,
            delay_ms: 0,
            reason: "r".repeat(reason_bytes),
        }
    }

    fn counts(requests: &[pb::ConsumeRequest]) -> Vec<usize> {
        requests
            .iter()
            .map(|request| match &request.msg {
                Some(pb::consume_request::Msg::Settle(settle)) => settle.settlements.len(),
                other => panic!("not a settle: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn settlements_go_in_as_few_messages_as_the_limits_allow_in_order() {
        assert!(settle_requests(std::iter::empty()).is_empty());
        assert_eq!(
            counts(&settle_requests((0..1).map(|i| settlement(i, 0)))),
            [1]
        );
        let requests = settle_requests((0..10_000).map(|i| settlement(i, 0)));
        assert_eq!(counts(&requests), [4_096, 4_096, 1_808]);
        let ids: Vec<String> = requests
            .iter()
            .flat_map(|request| match &request.msg {
                Some(pb::consume_request::Msg::Settle(settle)) => settle
                    .settlements
                    .iter()
                    .map(|s| s.delivery_id.clone())
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            ids,
            (0..10_000).map(|i| format!("d-{i}")).collect::<Vec<_>>()
        );
        // Reasons of 1 KiB: about a MiB a message.
        let requests = settle_requests((0..3_000).map(|i| settlement(i, 1_024)));
        assert!(counts(&requests).len() >= 3);
        assert!(
            counts(&requests)
                .iter()
                .all(|&n| n * 1_024 <= MAX_SETTLE_BYTES)
        );
    }
}
