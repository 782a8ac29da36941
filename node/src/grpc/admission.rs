//! Appends in flight on a node, bounded in bytes.
//!
//! tonic reads a request's whole message before the service sees it, so a bound checked in
//! the service would come after the memory is spent. [`Admission`] wraps the `EventLog` server
//! and looks at an `Append` or `AppendMany` first: it reads only the gRPC message prefix (5
//! bytes: a flag and the message length) and takes that many bytes from a node-wide budget
//! before the message is read. With no room left the call is refused at once with `RESOURCE_EXHAUSTED` ("node
//! busy", nothing done, retry), its body never read; the bytes go back when the call ends
//! (acknowledged, refused, or failed), or when it has held them for twice the request timeout
//! (a client that declares a message and never sends it). No queue forms: a refused call
//! costs its headers.
//!
//! Small appends (64 KiB at most) have a reserve of their own (4 MiB) to fall back on, so a
//! client flooding the node with large appends cannot starve the others.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::future::Either;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

use crate::raft::proposals::AppendCalls;

/// The gRPC paths of the calls the budget covers.
const APPEND_PATHS: [&str; 2] = ["/evlog.v1.EventLog/Append", "/evlog.v1.EventLog/AppendMany"];
/// Failpoint (failpoints builds only): answer `AppendMany` `UNIMPLEMENTED`, as a node of an
/// older version does.
#[cfg(feature = "failpoints")]
pub const NO_APPEND_MANY: &str = "grpc::no-append-many";
/// A gRPC message's prefix: a compression flag and a 4-byte big-endian length.
const PREFIX_BYTES: usize = 5;
/// An append this small may take from the reserve when the budget is spent...
const SMALL_APPEND_BYTES: u32 = 64 << 10;
/// ...which holds this much.
const SMALL_RESERVE_BYTES: usize = 4 << 20;

/// The node-wide budget of append bytes in flight.
#[derive(Clone)]
pub struct AppendBudget {
    permits: Arc<Semaphore>,
    /// What small appends fall back on when `permits` is spent.
    reserve: Arc<Semaphore>,
    limit_bytes: u32,
    /// The largest message the server decodes: a call declaring more is let through to be
    /// refused as too large by the decoder, not counted as busy.
    max_message_bytes: u32,
    /// How long an admitted append may hold its bytes: reading its message and serving it.
    call_timeout: Duration,
}

impl AppendBudget {
    /// A budget of `limit_bytes` for messages of at most `max_message_bytes`, which it must
    /// hold with room for the prefix (so one message always fits an empty budget); an append
    /// holds its bytes for at most `call_timeout`.
    pub fn new(limit_bytes: u32, max_message_bytes: u32, call_timeout: Duration) -> Self {
        Self {
            call_timeout,
            permits: Arc::new(Semaphore::new(limit_bytes as usize)),
            reserve: Arc::new(Semaphore::new(SMALL_RESERVE_BYTES)),
            limit_bytes,
            max_message_bytes: max_message_bytes
                .min(limit_bytes.saturating_sub(PREFIX_BYTES as u32)),
        }
    }

    /// Bytes of appends in flight now (the reserve's not counted).
    pub fn in_flight_bytes(&self) -> u64 {
        u64::from(self.limit_bytes).saturating_sub(self.permits.available_permits() as u64)
    }

    /// Takes `weight` bytes, from the reserve if the budget is spent and the append is small.
    fn take(&self, weight: u32) -> Option<OwnedSemaphorePermit> {
        match Arc::clone(&self.permits).try_acquire_many_owned(weight) {
            Ok(permit) => Some(permit),
            Err(_) if weight <= SMALL_APPEND_BYTES => Arc::clone(&self.reserve)
                .try_acquire_many_owned(weight)
                .ok(),
            Err(_) => None,
        }
    }
}

/// A service (the `EventLog` server) whose appends take their size from an [`AppendBudget`]
/// before their message is read.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    budget: AppendBudget,
    calls: AppendCalls,
}

impl<S> Admission<S> {
    /// Counts the append calls it serves in `calls` from the moment each arrives.
    pub fn new(inner: S, budget: AppendBudget, calls: AppendCalls) -> Self {
        Self {
            inner,
            budget,
            calls,
        }
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Admission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    /// Other calls go straight through, unboxed; an append is a boxed future of its own.
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !APPEND_PATHS.contains(&request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        // Plays a node of an older version, which has no AppendMany (the upgrade tests).
        #[cfg(feature = "failpoints")]
        if request.uri().path() == APPEND_PATHS[1] && fail::eval(NO_APPEND_MANY, |_| ()).is_some() {
            return Either::Right(Box::pin(async {
                Ok(Status::unimplemented("AppendMany is not served (failpoint)").into_http())
            }));
        }
        // The ready service answers this call; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let budget = self.budget.clone();
        let counted = self.calls.start();
        Either::Right(Box::pin(async move {
            let _counted = counted;
            let (parts, mut body) = request.into_parts();
            let mut head = VecDeque::new();
            let mut head_bytes = 0;
            while head_bytes < PREFIX_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            head_bytes += data.len();
                        }
                        head.push_back(frame);
                    }
                    Some(Err(status)) => return Ok(status.into_http()),
                    None => break,
                }
            }
            let declared = message_length(&head).unwrap_or(0);
            let body = Body::new(Replayed { head, rest: body });
            if declared > budget.max_message_bytes {
                // The decoder refuses it as too large without reading it: no bytes to hold.
                return inner.call(http::Request::from_parts(parts, body)).await;
            }
            let weight = declared.saturating_add(PREFIX_BYTES as u32);
            let Some(permit) = budget.take(weight) else {
                let mut status = Status::resource_exhausted(format!(
                    "node busy: {} bytes of appends are in flight here and this one brings {weight} \
                     (--max-append-bytes-in-flight {}); nothing was done, retry",
                    budget.in_flight_bytes(),
                    budget.limit_bytes
                ));
                status.metadata_mut().insert(
                    evlog_proto::metadata::BUSY,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                return Ok(status.into_http());
            };
            // Bounded, so a client that declares a message and never sends it cannot hold its
            // bytes of the budget for good (dropping the call gives them back).
            let call = inner.call(http::Request::from_parts(parts, body));
            let response = match tokio::time::timeout(budget.call_timeout, call).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the append did not finish within {} ms (its message arrived too slowly, or \
                     it did not commit in time); its outcome is unknown: retry with the same \
                     idempotency key",
                    budget.call_timeout.as_millis()
                ))
                .into_http()),
            };
            drop(permit);
            response
        }))
    }
}

/// The declared length of the gRPC message whose prefix starts the frames read.
fn message_length(head: &VecDeque<Frame<Bytes>>) -> Option<u32> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    for data in head.iter().filter_map(Frame::data_ref) {
        let take = (PREFIX_BYTES - filled).min(data.len());
        prefix[filled..filled + take].copy_from_slice(&data[..take]);
        filled += take;
        if filled == PREFIX_BYTES {
            return Some(u32::from_be_bytes([
                prefix[1], prefix[2], prefix[3], prefix[4],
            ]));
        }
    }
    None
}

/// A body that gives back the frames read ahead, then the rest.
struct Replayed {
    head: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Replayed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_is_read_across_frames() {
        let frames: VecDeque<Frame<Bytes>> = [
            Bytes::from_static(&[0, 0]),
            Bytes::from_static(&[1, 0]),
            Bytes::from_static(&[7, 9, 9]),
        ]
        .into_iter()
        .map(Frame::data)
        .collect();
        assert_eq!(message_length(&frames), Some(0x0001_0007));
        let short: VecDeque<Frame<Bytes>> = [Bytes::from_static(&[0, 1])]
            .into_iter()
            .map(Frame::data)
            .collect();
        assert_eq!(message_length(&short), None);
    }

    #[tokio::test]
    async fn the_budget_counts_what_is_taken_until_it_is_given_back() {
        let limit = 10 * SMALL_APPEND_BYTES;
        let budget = AppendBudget::new(limit, limit, Duration::from_secs(10));
        let large = budget.take(9 * SMALL_APPEND_BYTES).expect("room");
        assert_eq!(budget.in_flight_bytes(), u64::from(9 * SMALL_APPEND_BYTES));
        assert!(
            budget.take(2 * SMALL_APPEND_BYTES).is_none(),
            "a large append past the budget is refused"
        );
        let small = budget.take(SMALL_APPEND_BYTES).expect("fits the budget");
        let from_reserve = budget
            .take(SMALL_APPEND_BYTES)
            .expect("the budget is spent: a small append takes from the reserve");
        drop((large, small, from_reserve));
        assert_eq!(budget.in_flight_bytes(), 0);
    }
}
