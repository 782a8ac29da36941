//! A Rust client for an evlog cluster: it takes every endpoint, follows the leader, retries
//! retryable failures (`UNAVAILABLE`) with backoff within a total deadline, and gives every
//! append an idempotency key, so a retry after an unknown outcome is safe to send.
//!
//! Appends made concurrently through one client (and its clones) are coalesced: those waiting
//! for the same node go in one `AppendMany` call, each with its own result (see `coalesce`).
//! A lone append is sent at once.
//!
//! [`EvlogClient::subscribe`] follows the log: when the node serving a subscription fails
//! (or loses its leader), it resumes on another node from the last `next_from`, exactly.
//!
//! It depends on the wire contract (`evlog-proto`) only: a service that uses it builds
//! neither openraft nor redb. The `evlog` CLI and its benchmark use it.

mod coalesce;
mod consume;
mod credentials;
mod subscribe;
pub mod tls;

pub use coalesce::CoalescingStats;
pub use consume::ConsumeOptions;
pub use consume::Consumer;
pub use consume::Delivery;
pub use consume::SettleStatus;
pub use subscribe::Subscription;
pub use tls::ClientTls;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evlog_proto::v1 as pb;
use evlog_proto::v1::access_client::AccessClient;
use evlog_proto::v1::cluster_client::ClusterClient;
use evlog_proto::v1::consumers_client::ConsumersClient;
use evlog_proto::v1::event_log_client::EventLogClient;
use evlog_proto::v1::maintenance_client::MaintenanceClient;
use tonic::Code;
use tonic::Status;
use tonic::transport::Endpoint;

pub use credentials::Credentials;
pub use credentials::Transport;

use crate::coalesce::Coalescer;

/// The endpoints of the local cluster `scripts/cluster.sh up` starts.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053";

/// How the client retries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Total time one call may take, retries included.
    pub deadline: Duration,
    /// First backoff between retries; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Most attempts per call.
    pub max_attempts: u32,
    /// Append calls on the wire per endpoint; appends made meanwhile wait and go together in
    /// the next call (Kafka's `max.in.flight.requests.per.connection`).
    pub append_calls_in_flight: usize,
    /// TLS to every endpoint (`https://`): the CA to trust and an optional client
    /// certificate. `None`: plaintext.
    pub tls: Option<ClientTls>,
    /// The token every call carries (`authorization: Bearer <token>`), for a cluster with
    /// access control on. `None`: none.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            max_attempts: 50,
            append_calls_in_flight: coalesce::DEFAULT_CALLS_IN_FLIGHT,
            tls: None,
            token: None,
        }
    }
}

/// A cluster client. Cheap to clone.
#[derive(Clone)]
pub struct EvlogClient {
    endpoints: Vec<String>,
    channels: Vec<Transport>,
    preferred: Arc<AtomicUsize>,
    options: ClientOptions,
    /// Started at the first append (its lanes are tasks on that append's runtime), shared by
    /// every clone; started again if that runtime is gone.
    coalescer: Arc<Mutex<Option<Arc<Coalescer>>>>,
}

/// Whether a failed call may be retried (on any endpoint): `UNAVAILABLE`, and a call that a
/// node shutting down gracefully never processed: hyper cancels what it had queued on a
/// connection that closes before sending it (tonic: `CANCELLED`), and HTTP/2 fails the
/// streams a server's `GOAWAY` (`NO_ERROR`) did not take (tonic: `INTERNAL`, "h2 protocol
/// error"; by RFC 9113 §6.8 those were not processed).
pub fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Cancelled => cancelled_unsent(status),
        Code::Internal => refused_by_goaway(status),
        _ => false,
    }
}

/// Whether `status` is HTTP/2's failure of a stream above the last one a server's graceful
/// `GOAWAY` took: h2's `GoAway(_, NO_ERROR, Remote)` below the transport error (matched on
/// its debug form: h2 is not a dependency of this crate).
fn refused_by_goaway(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let debug = format!("{error:?}");
        if debug.contains("GoAway(") && debug.contains("NO_ERROR, Remote)") {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether an error below `status` says `words`.
fn error_chain_mentions(status: &Status, words: &str) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.to_string().contains(words) {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether `status` is the transport's cancellation of a request it never sent: hyper's
/// "operation was canceled" caused by "connection closed", below a tonic transport error.
fn cancelled_unsent(status: &Status) -> bool {
    let mut canceled = false;
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let text = error.to_string();
        if text == "operation was canceled" {
            canceled = true;
        } else if canceled && text == "connection closed" {
            return true;
        }
        source = error.source();
    }
    false
}

impl EvlogClient {
    /// `endpoints` are `host:port` (or `http://host:port`; `https://host:port` with
    /// [`ClientOptions::tls`], which makes bare `host:port` endpoints https too).
    pub fn new(endpoints: &[String], options: ClientOptions) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("no endpoints given".to_string());
        }
        let credentials = Credentials::new(options.token.as_deref())?;
        let mut channels = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = tls::endpoint_uri(endpoint, options.tls.is_some())?;
            let mut channel = Endpoint::from_shared(uri)
                .map_err(|error| format!("bad endpoint {endpoint:?}: {error}"))?;
            if let Some(tls) = &options.tls {
                channel = channel
                    .tls_config(tls.config())
                    .map_err(|error| format!("endpoint {endpoint:?}: TLS: {error}"))?;
            }
            let channel = channel
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.push(Transport::new(channel, credentials.clone()));
        }
        Ok(Self {
            endpoints: endpoints.to_vec(),
            channels,
            preferred: Default::default(),
            options,
            coalescer: Default::default(),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The event-log client of endpoint `index`.
    pub fn event_log(&self, index: usize) -> EventLogClient<Transport> {
        EventLogClient::new(self.channels[index % self.channels.len()].clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    pub(crate) fn channel(&self, index: usize) -> Transport {
        self.channels[index % self.channels.len()].clone()
    }

    /// The consumer-groups client of endpoint `index`.
    pub fn consumers(&self, index: usize) -> ConsumersClient<Transport> {
        ConsumersClient::new(self.channel(index))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Joins consumer group `consumer` as a member (see [`Consumer`]): it rejoins through
    /// another node when the one serving it fails.
    pub fn consume(&self, consumer: &str, options: ConsumeOptions) -> Consumer {
        consume::start(self.clone(), consumer.to_string(), options)
    }

    /// Calls a consumer-groups RPC with retries.
    pub async fn consumers_call<Req, Resp, F>(
        &self,
        request: Req,
        call: impl Fn(ConsumersClient<Transport>, tonic::Request<Req>) -> F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.unary_call(|index| self.consumers(index), request, call)
            .await
    }

    /// Calls an event-log RPC with retries (stream metadata and deletion: a follower hands
    /// them to the leader).
    pub async fn event_log_call<Req, Resp, F>(
        &self,
        request: Req,
        call: impl Fn(EventLogClient<Transport>, tonic::Request<Req>) -> F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.unary_call(|index| self.event_log(index), request, call)
            .await
    }

    /// Calls a unary RPC of the client `client` makes for an endpoint, with retries: each
    /// attempt carries the time left as its deadline.
    async fn unary_call<C, Req, Resp, F>(
        &self,
        client: impl Fn(usize) -> C,
        request: Req,
        call: impl Fn(C, tonic::Request<Req>) -> F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.with_retries(|index, remaining| {
            let mut grpc = tonic::Request::new(request.clone());
            grpc.set_timeout(remaining);
            let future = call(client(index), grpc);
            async move { future.await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// The maintenance (backup) client of endpoint `index`.
    pub fn maintenance(&self, index: usize) -> MaintenanceClient<Transport> {
        MaintenanceClient::new(self.channel(index)).max_decoding_message_size(usize::MAX)
    }

    /// The access-control client of endpoint `index`.
    pub fn access(&self, index: usize) -> AccessClient<Transport> {
        AccessClient::new(self.channel(index))
    }

    /// Calls an access-control RPC with retries (changes are answered by the leader: a
    /// follower hands them on).
    pub async fn access_call<Req, Resp, F>(
        &self,
        request: Req,
        call: impl Fn(AccessClient<Transport>, tonic::Request<Req>) -> F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.unary_call(|index| self.access(index), request, call)
            .await
    }

    /// The cluster client of endpoint `index`.
    pub fn cluster(&self, index: usize) -> ClusterClient<Transport> {
        ClusterClient::new(self.channels[index % self.channels.len()].clone())
    }

    /// Calls a cluster RPC with retries (membership changes and leader transfers are answered
    /// by the leader: a follower hands them on).
    pub async fn cluster_call<Req, Resp, F>(
        &self,
        request: Req,
        call: impl Fn(ClusterClient<Transport>, tonic::Request<Req>) -> F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.unary_call(|index| self.cluster(index), request, call)
            .await
    }

    /// Adds node `node_id`, serving clients at `address` and peers at `peer_address` (empty:
    /// the server derives it, `address`'s port + 2000), as a learner (a non-voting member that
    /// receives the log); answers once it has caught up.
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: String,
        peer_address: String,
    ) -> Result<pb::MembershipResponse, Status> {
        self.cluster_call(
            pb::AddLearnerRequest {
                node_id,
                address,
                peer_address,
            },
            |mut client, request| async move { client.add_learner(request).await },
        )
        .await
    }

    /// Sets the complete set of voters.
    pub async fn change_membership(
        &self,
        voters: Vec<u64>,
    ) -> Result<pb::MembershipResponse, Status> {
        self.cluster_call(
            pb::ChangeMembershipRequest { voters },
            |mut client, request| async move { client.change_membership(request).await },
        )
        .await
    }

    /// Hands leadership to voter `to` (absent: the most caught-up voting follower); answers
    /// once it leads.
    pub async fn transfer_leader(
        &self,
        to: Option<u64>,
    ) -> Result<pb::TransferLeaderResponse, Status> {
        self.cluster_call(
            pb::TransferLeaderRequest { to },
            |mut client, request| async move { client.transfer_leader(request).await },
        )
        .await
    }

    /// Runs `call` against the preferred endpoint, moving to the next one (and backing off)
    /// on a retryable failure, until it succeeds, fails for good, or the deadline passes.
    ///
    /// `call` returns a future that owns what it needs (not an async closure: a future
    /// borrowing from a higher-ranked closure is not `Send` enough for `tokio::spawn`).
    async fn with_retries<T, F>(
        &self,
        mut call: impl FnMut(usize, Duration) -> F,
    ) -> Result<T, Status>
    where
        F: Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.options.deadline;
        let mut backoff = self.options.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let index = self.preferred.load(Ordering::Relaxed) % self.channels.len();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = match tokio::time::timeout(remaining, call(index, remaining)).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms; the outcome is unknown",
                    self.options.deadline.as_millis()
                ))),
            };
            match result {
                Err(status) if retryable(&status) && attempt < self.options.max_attempts => {
                    let now = tokio::time::Instant::now();
                    if now + backoff >= deadline {
                        return Err(self.explain(index, status).await);
                    }
                    // A follower that names the leader is not the one to ask again.
                    let leader_hint = status
                        .metadata()
                        .get(evlog_proto::metadata::LEADER_ADDRESS)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|address| {
                            self.endpoints
                                .iter()
                                .position(|endpoint| endpoint.ends_with(address))
                        });
                    let next = leader_hint.unwrap_or(index + 1);
                    self.preferred
                        .store(next % self.channels.len(), Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
                Err(status) => return Err(self.explain(index, status).await),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    /// The error a call that failed on endpoint `index` ends with: `status`, or, when it is
    /// a failure of the connection and the node there speaks the other protocol (TLS to a
    /// plaintext port, or plaintext to a TLS one, which otherwise shows as an HTTP/2 protocol
    /// error or a corrupt TLS message), a status that says so.
    async fn explain(&self, index: usize, status: Status) -> Status {
        // A node's own answer has no source; a connection's failure has the transport error.
        // One that never connected (refused, unreachable, timed out) met no server to probe:
        // the probe would only add its own timeout.
        let connection_failed = std::error::Error::source(&status).is_some()
            && matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            );
        if !connection_failed || error_chain_mentions(&status, "tcp connect error") {
            return status;
        }
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        match tls::protocol_mismatch(endpoint, self.options.tls.is_some()).await {
            Some(mismatch) => Status::unavailable(format!("{mismatch} ({})", status.message())),
            None => status,
        }
    }

    /// Appends with retries, coalesced with the appends other callers make meanwhile. A
    /// request without an idempotency key gets one, so that every retry of it is the same
    /// append.
    pub async fn append(
        &self,
        mut request: pb::AppendRequest,
    ) -> Result<pb::AppendResponse, Status> {
        if request.idempotency_key.is_none() {
            request.idempotency_key = Some(uuid::Uuid::now_v7().to_string());
        }
        let coalescer = self.coalescer();
        self.with_retries(|index, remaining| coalescer.append(index, request.clone(), remaining))
            .await
    }

    /// The lanes appends go through: started at the first append, and again when the runtime
    /// they ran on is gone (a client kept across runtimes).
    fn coalescer(&self) -> Arc<Coalescer> {
        let mut coalescer = self
            .coalescer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match coalescer.as_ref() {
            Some(running) if !running.stopped() => Arc::clone(running),
            _ => {
                let started = Arc::new(Coalescer::start(
                    &self.channels,
                    self.options.append_calls_in_flight.max(1),
                    coalescer.as_ref().map(|old| old.stats_handle()),
                ));
                *coalescer = Some(Arc::clone(&started));
                started
            }
        }
    }

    /// How many calls have carried how many appends so far (this client and its clones).
    pub fn coalescing_stats(&self) -> Arc<CoalescingStats> {
        self.coalescer().stats_handle()
    }

    /// Reads one page with retries.
    pub async fn read(&self, request: pb::ReadRequest) -> Result<pb::ReadResponse, Status> {
        self.with_retries(|index, remaining| {
            let mut grpc = tonic::Request::new(request.clone());
            grpc.set_timeout(remaining);
            let mut client = self.event_log(index);
            async move { client.read(grpc).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// One stream's summary, with retries.
    pub async fn get_stream(
        &self,
        request: pb::GetStreamRequest,
    ) -> Result<pb::GetStreamResponse, Status> {
        self.with_retries(|index, remaining| {
            let mut grpc = tonic::Request::new(request.clone());
            grpc.set_timeout(remaining);
            let mut client = self.event_log(index);
            async move {
                client
                    .get_stream(grpc)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// One page of stream summaries, with retries.
    pub async fn list_streams(
        &self,
        request: pb::ListStreamsRequest,
    ) -> Result<pb::ListStreamsResponse, Status> {
        self.with_retries(|index, remaining| {
            let mut grpc = tonic::Request::new(request.clone());
            grpc.set_timeout(remaining);
            let mut client = self.event_log(index);
            async move {
                client
                    .list_streams(grpc)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// The status of endpoint `index` (no retries: it describes that node).
    pub async fn status(
        &self,
        index: usize,
        timeout: Duration,
    ) -> Result<pb::StatusResponse, Status> {
        let mut request = tonic::Request::new(pb::StatusRequest {});
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.cluster(index).status(request)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An error with a message and an optional cause, to build source chains.
    #[derive(Debug)]
    struct Chained(&'static str, Option<Box<Chained>>);

    impl std::fmt::Display for Chained {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chained {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|cause| cause as &(dyn std::error::Error + 'static))
        }
    }

    fn cancelled_with(chain: Chained) -> Status {
        let mut status = Status::cancelled("operation was canceled");
        status.set_source(Arc::new(chain));
        status
    }

    #[test]
    fn unavailable_and_a_call_cancelled_unsent_are_retried_other_cancellations_not() {
        assert!(retryable(&Status::unavailable("no leader")));
        let unsent = Chained(
            "transport error",
            Some(Box::new(Chained(
                "operation was canceled",
                Some(Box::new(Chained("connection closed", None))),
            ))),
        );
        assert!(retryable(&cancelled_with(unsent)));
        assert!(!retryable(&Status::cancelled("the server cancelled")));
        let other = Chained(
            "transport error",
            Some(Box::new(Chained("operation was canceled", None))),
        );
        assert!(!retryable(&cancelled_with(other)));
        assert!(!retryable(&Status::deadline_exceeded("late")));
    }

    /// Debug-formats as h2's error for a stream a server's GOAWAY did not take.
    #[derive(Debug)]
    struct Error {
        #[allow(dead_code)]
        kind: Kind,
    }

    #[derive(Debug)]
    #[allow(dead_code, non_camel_case_types, clippy::upper_case_acronyms)]
    enum Kind {
        GoAway(&'static str, Reason, Initiator),
    }

    #[derive(Debug)]
    #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
    enum Reason {
        NO_ERROR,
        PROTOCOL_ERROR,
    }

    #[derive(Debug)]
    enum Initiator {
        Remote,
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("http2 error")
        }
    }

    impl std::error::Error for Error {}

    #[test]
    fn a_stream_a_graceful_goaway_did_not_take_is_retried_other_internal_errors_not() {
        let goaway = |reason| {
            let mut status = Status::internal("h2 protocol error: http2 error");
            status.set_source(Arc::new(Error {
                kind: Kind::GoAway("", reason, Initiator::Remote),
            }));
            status
        };
        assert!(retryable(&goaway(Reason::NO_ERROR)));
        assert!(!retryable(&goaway(Reason::PROTOCOL_ERROR)));
        assert!(!retryable(&Status::internal("a bug")));
    }
}
