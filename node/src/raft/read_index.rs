//! Concurrent linearizable reads share one read-index confirmation.
//!
//! One task per node takes every request waiting, confirms a read index once for all of them
//! (on the leader: openraft's ReadIndex, a quorum round; on a follower: one `ReadIndex` RPC to
//! the leader), and hands the same index to each. A request that arrives while a confirmation
//! is under way waits for the next one, which starts after it arrived, so every read still gets
//! an index confirmed after it began: linearizable, with one round per batch instead of one
//! per read.

use std::future::Future;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::raft::errors::ReadIndexError;

/// Most requests waiting for the next confirmation; a full queue makes callers wait.
const MAX_WAITING: usize = 65_536;
/// Most requests answered by one confirmation (the rest wait for the next).
const MAX_BATCH: usize = 16_384;

type Reply = oneshot::Sender<Result<u64, ReadIndexError>>;

/// A handle to the batching task; cheap to clone.
#[derive(Clone)]
pub struct ReadIndexBatcher {
    requests: mpsc::Sender<Reply>,
}

impl ReadIndexBatcher {
    /// Starts the task. `confirm` obtains one read index confirmed after it was called.
    pub fn start<F, Fut>(confirm: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, ReadIndexError>> + Send,
    {
        let (requests, mut waiting) = mpsc::channel::<Reply>(MAX_WAITING);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            // Ends when every handle is gone (the node is shutting down).
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                batch.retain(|reply| !reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let result = confirm().await;
                for reply in batch.drain(..) {
                    reply.send(result.clone()).ok();
                }
            }
        });
        Self { requests }
    }

    /// A read index confirmed after this call began.
    pub async fn read_index(&self) -> Result<u64, ReadIndexError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| ReadIndexError::ShuttingDown)?;
        answer.await.map_err(|_| ReadIndexError::ShuttingDown)?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_confirmations_and_each_gets_a_later_one() {
        let rounds = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&rounds);
        let batcher = ReadIndexBatcher::start(move || {
            let counter = Arc::clone(&counter);
            async move {
                // The "read index" is the round number: it grows with every confirmation.
                let round = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::task::yield_now().await;
                Ok(round)
            }
        });
        let before = rounds.load(Ordering::SeqCst);
        let answers = futures::future::join_all((0..200).map(|_| batcher.read_index())).await;
        let total_rounds = rounds.load(Ordering::SeqCst);
        for answer in &answers {
            let index = answer.as_ref().expect("confirmed");
            assert!(
                *index > before,
                "a confirmation from before the request: {index}"
            );
        }
        assert!(
            total_rounds < 200,
            "200 concurrent reads took {total_rounds} confirmations"
        );
    }

    #[tokio::test]
    async fn a_failed_confirmation_fails_its_batch_with_the_reason() {
        let batcher = ReadIndexBatcher::start(|| async {
            Err(ReadIndexError::NoQuorum("2 of 3 silent".to_string()))
        });
        let error = batcher.read_index().await.expect_err("no quorum");
        assert_eq!(error, ReadIndexError::NoQuorum("2 of 3 silent".to_string()));
    }
}
