//! A subscription that survives the loss of the node serving it: on a failure it resumes on
//! the next node from the last `next_from` the server sent (every item carries one), so the
//! events it yields have no gap and no repeat across resumes. It never resumes into another
//! log epoch (a cluster restored from a backup meanwhile): positions of two epochs are not
//! comparable, so it ends with `FAILED_PRECONDITION` instead.

use std::pin::Pin;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use evlog_proto::metadata;
use evlog_proto::v1 as pb;
use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;

use crate::EvlogClient;

/// A subscription's items (`subscribed` again after each resume); it ends with the error that
/// stopped it for good. Cancel it by dropping it.
pub struct Subscription {
    items: BoxStream<'static, Result<pb::subscribe_response::Item, Status>>,
}

impl Stream for Subscription {
    type Item = Result<pb::subscribe_response::Item, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_next_unpin(cx)
    }
}

/// Whether a subscription that failed so may resume on another node: the node, not the
/// request, was the trouble.
fn resumable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Internal
        | Code::Aborted
        | Code::Cancelled => true,
        // Busy (its subscription slots are taken), not too large.
        Code::ResourceExhausted => status.metadata().get(metadata::BUSY).is_some(),
        _ => false,
    }
}

/// The state a subscription carries from one node to the next.
struct Resuming {
    client: EvlogClient,
    request: pb::SubscribeRequest,
    endpoint: usize,
    stream: Option<tonic::Streaming<pb::SubscribeResponse>>,
    /// When the current run of failed attempts began (`None`: the last attempt got in).
    failing_since: Option<Instant>,
    backoff: Duration,
    done: bool,
    /// The log epoch the first node to serve the subscription reported.
    epoch: Option<u64>,
}

impl Resuming {
    /// The next item, resuming on failure; `None` once it failed for good.
    async fn next(&mut self) -> Option<Result<pb::subscribe_response::Item, Status>> {
        while !self.done {
            let failure = match self.stream.as_mut() {
                None => match self.open().await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    Err(status) => status,
                },
                Some(stream) => match stream.message().await {
                    Ok(Some(pb::SubscribeResponse { item: Some(item) })) => {
                        if let Err(status) = self.same_epoch(&item) {
                            self.done = true;
                            return Some(Err(status));
                        }
                        self.advance(&item);
                        return Some(Ok(item));
                    }
                    // An item of a kind this client does not know: skip it.
                    Ok(Some(pb::SubscribeResponse { item: None })) => continue,
                    Ok(None) => Status::unavailable("the node ended the subscription"),
                    Err(status) => status,
                },
            };
            self.stream = None;
            if let Err(status) = self.pause_after(failure).await {
                self.done = true;
                return Some(Err(status));
            }
        }
        None
    }

    async fn open(&mut self) -> Result<tonic::Streaming<pb::SubscribeResponse>, Status> {
        let response = self
            .client
            .event_log(self.endpoint)
            .subscribe(self.request.clone())
            .await?;
        Ok(response.into_inner())
    }

    /// Refuses a resume in another log epoch than the subscription started in.
    fn same_epoch(&mut self, item: &pb::subscribe_response::Item) -> Result<(), Status> {
        let pb::subscribe_response::Item::Subscribed(subscribed) = item else {
            return Ok(());
        };
        match self.epoch {
            None => {
                self.epoch = Some(subscribed.epoch);
                Ok(())
            }
            Some(epoch) if epoch == subscribed.epoch => Ok(()),
            Some(epoch) => Err(Status::failed_precondition(format!(
                "the log's epoch changed from {epoch} to {} (the cluster was restored from a \
                 backup): positions of the two epochs are not comparable, so the subscription \
                 does not resume; start it again from a position of the new epoch",
                subscribed.epoch
            ))),
        }
    }

    /// Moves the resume point to where `item` says the subscription got.
    fn advance(&mut self, item: &pb::subscribe_response::Item) {
        use pb::subscribe_response::Item;
        let next_from = match item {
            Item::Subscribed(subscribed) => {
                self.failing_since = None;
                self.backoff = self.client.options.initial_backoff;
                subscribed.next_from
            }
            Item::Events(batch) => batch.next_from,
            Item::CaughtUp(caught_up) => caught_up.next_from,
            Item::Checkpoint(checkpoint) => checkpoint.next_from,
            Item::FellBehind(fell_behind) => fell_behind.next_from,
        };
        self.request.start = Some(pb::subscribe_request::Start::From(next_from));
    }

    /// After a failure: gives up (the error) if it is not the node's fault or the failures
    /// have lasted the client's deadline; otherwise moves to the next node and backs off.
    async fn pause_after(&mut self, failure: Status) -> Result<(), Status> {
        if !resumable(&failure) {
            return Err(failure);
        }
        let failing_since = *self.failing_since.get_or_insert_with(Instant::now);
        let deadline = failing_since + self.client.options.deadline;
        let now = Instant::now();
        if now + self.backoff >= deadline {
            return Err(Status::new(
                failure.code(),
                format!(
                    "no node took the subscription for {} ms; the last said: {}",
                    self.client.options.deadline.as_millis(),
                    failure.message()
                ),
            ));
        }
        self.endpoint = (self.endpoint + 1) % self.client.endpoints.len();
        // Jitter (from the random low bits of a UUIDv7), so subscribers cut off together do not all come back at once.
        let jitter = u64::from(uuid::Uuid::now_v7().as_u128() as u16) % 1_000;
        tokio::time::sleep(self.backoff.mul_f64(0.5 + jitter as f64 / 2_000.0)).await;
        self.backoff = (self.backoff * 2).min(self.client.options.max_backoff);
        Ok(())
    }
}

impl EvlogClient {
    /// Subscribes (see `EventLog.Subscribe`): the items as the server sends them, resumed on
    /// another node from the last `next_from` when the serving node fails, loses its leader
    /// or is busy, with backoff, for at most the client's deadline without a node taking it.
    /// A `subscribed` item starts every resume; events never repeat and never skip.
    pub fn subscribe(&self, request: pb::SubscribeRequest) -> Subscription {
        let resuming = Resuming {
            client: self.clone(),
            request,
            endpoint: self.preferred.load(std::sync::atomic::Ordering::Relaxed),
            stream: None,
            failing_since: None,
            backoff: self.options.initial_backoff,
            done: false,
            epoch: None,
        };
        let items = futures::stream::unfold(resuming, |mut resuming| async move {
            let item = resuming.next().await?;
            Some((item, resuming))
        });
        Subscription {
            items: items.boxed(),
        }
    }
}
