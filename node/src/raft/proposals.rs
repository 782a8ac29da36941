//! Appends waiting at the same moment go to Raft as one proposal batch.
//!
//! One task per node takes every append waiting (up to a bound) and hands them to openraft in
//! one `client_write_many` call: one message to the Raft core, one log write, one replication
//! round for the lot, instead of one of each per append. A lone append goes at once (the task
//! never waits for company), so batching adds no latency; under load, batches form by
//! themselves from the appends that arrive while the previous batch is being handed over.
//! Each append's answer comes back to its caller as its entry is applied, in log order.

use std::sync::Arc;

use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use futures::StreamExt;
use openraft::error::ClientWriteError;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::raft::Raft;
use crate::raft::errors::LeaderHint;
use crate::raft::errors::ProposeError;
use crate::raft::receipt::Receipt;

/// Most appends waiting to be proposed; a full queue makes callers wait (backpressure).
const MAX_WAITING: usize = 16_384;
/// Most appends in one proposal batch.
const MAX_BATCH: usize = 1_024;
/// Most proposal batches handed to Raft and not yet answered; past it the proposing task waits
/// (and the queue above fills, then callers wait: every stage is bounded).
const MAX_BATCHES_IN_FLIGHT: usize = 64;

type Answer = Result<(CommandResponse, Receipt), ProposeError>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Answer>,
}

/// A handle to the proposing task; cheap to clone.
#[derive(Clone)]
pub struct Proposals {
    queue: mpsc::Sender<Pending>,
}

impl Proposals {
    pub fn start(raft: Raft) -> Self {
        let (queue, mut waiting) = mpsc::channel::<Pending>(MAX_WAITING);
        let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
        tokio::spawn(async move {
            let mut batch = Vec::new();
            // Ends when every handle is gone (the node is shutting down).
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // A caller that gave up before its append was proposed: it is not proposed.
                batch.retain(|pending: &Pending| !pending.reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<Answer>>) = batch
                    .drain(..)
                    .map(|pending| (pending.command, pending.reply))
                    .unzip();
                match raft.client_write_many(commands).await {
                    Ok(results) => {
                        // Answers arrive in log order as entries apply; hand them out while the
                        // next batch is proposed.
                        tokio::spawn(async move {
                            answer_in_order(results, replies).await;
                            drop(permit);
                        });
                    }
                    Err(fatal) => {
                        // Refused before anything was proposed: nothing was appended.
                        for reply in replies {
                            reply
                                .send(Err(ProposeError::Halted(fatal.to_string())))
                                .ok();
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Proposes `command` and waits until it is applied (or refused).
    pub async fn propose(&self, command: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        answer.await.map_err(|_| {
            ProposeError::Stopped("the node stopped before the entry was applied".to_string())
        })?
    }
}

async fn answer_in_order(
    mut results: futures::stream::BoxStream<
        'static,
        Result<
            openraft::raft::WriteResult<evlog_raft_store::type_config::TypeConfig>,
            openraft::error::Fatal<evlog_raft_store::type_config::TypeConfig>,
        >,
    >,
    replies: Vec<oneshot::Sender<Answer>>,
) {
    let mut replies = replies.into_iter();
    while let Some(result) = results.next().await {
        let Some(reply) = replies.next() else {
            break;
        };
        let answer = match result {
            Ok(Ok(written)) => Ok((
                written.response,
                Receipt {
                    term: written.log_id.leader_id.term,
                    log_index: written.log_id.index,
                    leader_id: written.log_id.leader_id.node_id,
                },
            )),
            Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader(LeaderHint::from_forward(forward)))
            }
            Ok(Err(ClientWriteError::LogEntryDiscarded(discarded))) => {
                Err(ProposeError::Discarded(discarded.to_string()))
            }
            // A membership change error cannot come of a normal entry; say what it was.
            Ok(Err(error)) => Err(ProposeError::Discarded(error.to_string())),
            Err(fatal) => Err(ProposeError::Stopped(fatal.to_string())),
        };
        reply.send(answer).ok();
    }
    // The stream ended early (raft stopped): the rest have an unknown outcome.
    for reply in replies {
        reply
            .send(Err(ProposeError::Stopped(
                "the answers ended before this entry was applied".to_string(),
            )))
            .ok();
    }
}
