//! Appends waiting at the same moment go to Raft together: as few log entries as possible.
//!
//! One task per node takes every append waiting (up to a bound) and makes them entries: the
//! appends of one entry (at most [`MAX_APPENDS_PER_ENTRY`], about [`MAX_ENTRY_BYTES`] of
//! events) are a [`Command::Appends`], applied one after the other, each on its own; a lone
//! append is a [`Command::Append`]. The entries go to openraft in one `client_write_many`
//! call: one message to the Raft core, one log write and one replication round for the lot,
//! and one entry to encode, store, send and apply for many appends. A lone append goes at
//! once (the task never waits for company), so batching adds no latency; under load, batches
//! form by themselves from the appends that arrive while the previous batch is being handed
//! over. Each append's answer comes back to its caller as its entry is applied, in log order.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use evlog_raft_store::types::NewEvent;
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
/// Most appends in one entry (the store takes up to 4,096).
pub const MAX_APPENDS_PER_ENTRY: usize = 1_024;
/// About the most bytes of events in one entry; an append larger than this is an entry alone.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Most proposal batches handed to Raft and not yet answered; past it the proposing task waits
/// (and the queue above fills, then callers wait: every stage is bounded).
const MAX_BATCHES_IN_FLIGHT: usize = 64;

type Answer = Result<(CommandResponse, Receipt), ProposeError>;

struct Pending {
    command: AppendCommand,
    reply: oneshot::Sender<Answer>,
}

/// One entry to propose, and whom to answer for each of its appends, in order.
struct Proposal {
    command: Command,
    replies: Vec<oneshot::Sender<Answer>>,
}

/// Append calls a node has taken and not yet answered, counted from the moment the connection
/// hands each to the service (before its task first runs), so the proposing task can tell
/// whether others are on their way (see [`Proposals::start`]).
#[derive(Clone, Default)]
pub struct AppendCalls(Arc<AtomicUsize>);

impl AppendCalls {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one call until the guard is dropped.
    pub fn start(&self) -> CallGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        CallGuard(Arc::clone(&self.0))
    }
}

/// One call counted in [`AppendCalls`], until dropped.
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A handle to the proposing task; cheap to clone.
#[derive(Clone)]
pub struct Proposals {
    queue: mpsc::Sender<Pending>,
    /// Appends proposed through this handle (and its clones) and not yet answered.
    pending: Arc<AtomicU64>,
}

/// Counts one append as pending while it lives (its caller may give up at any await).
struct PendingGuard(Arc<AtomicU64>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Proposals {
    /// `batch_events` is told how many events each proposal batch holds; `calls` counts the
    /// append calls the node's clients have in progress.
    pub fn start(raft: Raft, batch_events: crate::metrics::Histogram, calls: AppendCalls) -> Self {
        let (queue, mut waiting) = mpsc::channel::<Pending>(MAX_WAITING);
        let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
        tokio::spawn(async move {
            let mut batch = Vec::new();
            // Ends when every handle is gone (the node is shutting down).
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // The first caller to queue wakes this task before the callers that arrived with
                // it (by one read of a connection) have queued: when more calls are in progress
                // than appends waiting, one pass of the scheduler lets them in, and they share
                // this entry. A lone call goes at once.
                if calls.get() > batch.len() {
                    tokio::task::yield_now().await;
                    while batch.len() < MAX_BATCH
                        && let Ok(pending) = waiting.try_recv()
                    {
                        batch.push(pending);
                    }
                }
                // A caller that gave up before its append was proposed: it is not proposed.
                batch.retain(|pending: &Pending| !pending.reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let events: usize = batch
                    .iter()
                    .map(|pending| pending.command.events.len())
                    .sum();
                batch_events.observe(events as f64);
                let (commands, replies): (Vec<Command>, Vec<Vec<oneshot::Sender<Answer>>>) =
                    entries(batch.drain(..))
                        .into_iter()
                        .map(|proposal| (proposal.command, proposal.replies))
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
                        for reply in replies.into_iter().flatten() {
                            reply
                                .send(Err(ProposeError::Halted(fatal.to_string())))
                                .ok();
                        }
                    }
                }
            }
        });
        Self {
            queue,
            pending: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Appends proposed and not yet answered (waiting, in Raft, or being applied).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Proposes `command` and waits until it is applied (or refused).
    pub async fn propose(&self, command: AppendCommand) -> Answer {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let _pending = PendingGuard(Arc::clone(&self.pending));
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

/// The waiting appends as entries, in order: consecutive appends share an entry up to
/// [`MAX_APPENDS_PER_ENTRY`] and [`MAX_ENTRY_BYTES`].
fn entries(waiting: impl Iterator<Item = Pending>) -> Vec<Proposal> {
    let mut proposals = Vec::new();
    let mut appends = Vec::new();
    let mut replies = Vec::new();
    let mut bytes = 0;
    let mut flush = |appends: &mut Vec<AppendCommand>, replies: &mut Vec<_>| {
        let command = match appends.len() {
            0 => return,
            1 => Command::Append(appends.pop().expect("one append")),
            _ => Command::Appends(std::sync::Arc::new(std::mem::take(appends))),
        };
        proposals.push(Proposal {
            command,
            replies: std::mem::take(replies),
        });
    };
    for pending in waiting {
        let size = pending
            .command
            .events
            .iter()
            .map(NewEvent::size)
            .sum::<usize>();
        if !appends.is_empty()
            && (appends.len() == MAX_APPENDS_PER_ENTRY || bytes + size > MAX_ENTRY_BYTES)
        {
            flush(&mut appends, &mut replies);
            bytes = 0;
        }
        bytes += size;
        appends.push(pending.command);
        replies.push(pending.reply);
    }
    flush(&mut appends, &mut replies);
    proposals
}

async fn answer_in_order(
    mut results: futures::stream::BoxStream<
        'static,
        Result<
            openraft::raft::WriteResult<evlog_raft_store::type_config::TypeConfig>,
            openraft::error::Fatal<evlog_raft_store::type_config::TypeConfig>,
        >,
    >,
    replies: Vec<Vec<oneshot::Sender<Answer>>>,
) {
    let mut replies = replies.into_iter();
    while let Some(result) = results.next().await {
        let Some(entry_replies) = replies.next() else {
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
        answer_entry(answer, entry_replies);
    }
    // The stream ended early (raft stopped): the rest have an unknown outcome.
    for reply in replies.flatten() {
        reply
            .send(Err(ProposeError::Stopped(
                "the answers ended before this entry was applied".to_string(),
            )))
            .ok();
    }
}

/// Gives each append of an entry its answer: its own response of an entry of several appends
/// ([`CommandResponse::Many`], in order), the entry's failure to all.
fn answer_entry(answer: Answer, replies: Vec<oneshot::Sender<Answer>>) {
    match answer {
        Ok((CommandResponse::Many(responses), receipt)) => {
            if responses.len() != replies.len() {
                let error = ProposeError::Stopped(format!(
                    "an entry of {} appends applied with {} responses",
                    replies.len(),
                    responses.len()
                ));
                for reply in replies {
                    reply.send(Err(error.clone())).ok();
                }
                return;
            }
            for (reply, response) in replies.into_iter().zip(responses) {
                reply.send(Ok((response, receipt))).ok();
            }
        }
        answer => {
            for reply in replies {
                reply.send(answer.clone()).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use evlog_raft_store::types::AppendOutcome;
    use evlog_raft_store::types::IdempotencyPolicy;
    use evlog_raft_store::types::NewEvent;

    use super::*;

    fn pending(data_bytes: usize) -> (Pending, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let command = AppendCommand {
            stream: "s".to_string(),
            events: vec![NewEvent {
                id: String::new(),
                event_type: String::new(),
                content_type: String::new(),
                data: Bytes::from(vec![0; data_bytes]),
                metadata: Vec::new(),
                encoding: Default::default(),
            }],
            expected_version: None,
            idempotency_key: None,
            request_fingerprint: data_bytes as u64,
            timestamp_ms: 0,
            idempotency: IdempotencyPolicy::default(),
        };
        (Pending { command, reply }, answer)
    }

    fn shape(proposals: &[Proposal]) -> Vec<usize> {
        proposals
            .iter()
            .map(|proposal| match &proposal.command {
                Command::Append(_) => 1,
                Command::Appends(appends) => {
                    assert!(appends.len() > 1, "a lone append is a plain Append");
                    appends.len()
                }
                Command::Consumer(_)
                | Command::Retention(_)
                | Command::Check(_)
                | Command::Access(_)
                | Command::Dictionary(_) => {
                    panic!("appends make no other commands")
                }
            })
            .collect()
    }

    #[test]
    fn waiting_appends_share_entries_up_to_their_bounds() {
        let (one, _answer) = pending(10);
        assert_eq!(shape(&entries([one].into_iter())), vec![1]);

        let many: Vec<_> = (0..MAX_APPENDS_PER_ENTRY + 5)
            .map(|_| pending(10))
            .collect();
        let proposals = entries(many.into_iter().map(|(pending, _)| pending));
        assert_eq!(shape(&proposals), vec![MAX_APPENDS_PER_ENTRY, 5]);

        // By bytes: a large append goes alone, small ones fill an entry up to the bound.
        let sizes = [
            100,
            MAX_ENTRY_BYTES + 1,
            100,
            MAX_ENTRY_BYTES / 2,
            MAX_ENTRY_BYTES / 2,
            1,
        ];
        let proposals = entries(sizes.iter().map(|size| pending(*size).0));
        assert_eq!(shape(&proposals), vec![1, 1, 2, 2]);
        // In order: the entries hold the appends as they waited.
        let order: Vec<u64> = proposals
            .iter()
            .flat_map(|proposal| match &proposal.command {
                Command::Append(append) => vec![append.request_fingerprint],
                Command::Appends(appends) => {
                    appends.iter().map(|a| a.request_fingerprint).collect()
                }
                Command::Consumer(_)
                | Command::Retention(_)
                | Command::Check(_)
                | Command::Access(_)
                | Command::Dictionary(_) => {
                    panic!("appends make no other commands")
                }
            })
            .collect();
        assert_eq!(
            order,
            sizes.iter().map(|size| *size as u64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn each_append_of_an_entry_gets_its_own_response() {
        let (first, mut first_answer) = pending(1);
        let (second, mut second_answer) = pending(2);
        let receipt = Receipt {
            term: 2,
            log_index: 9,
            leader_id: 1,
        };
        let outcome = |position| {
            CommandResponse::Appended(AppendOutcome {
                first_position: position,
                last_position: position,
                stream_version: position,
                deduplicated: false,
            })
        };
        answer_entry(
            Ok((CommandResponse::Many(vec![outcome(5), outcome(6)]), receipt)),
            vec![first.reply, second.reply],
        );
        assert_eq!(
            first_answer.try_recv().expect("answered").expect("ok").0,
            outcome(5)
        );
        assert_eq!(
            second_answer.try_recv().expect("answered").expect("ok").0,
            outcome(6)
        );
    }
}
