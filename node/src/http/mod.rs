//! The node's HTTP port: `/metrics` (Prometheus, OpenMetrics text), `/status` (a live page),
//! `/status.json` (what the page shows), `/healthz` (the process runs its Raft core) and
//! `/readyz` (the node serves reads). GET only, small answers, bounded: at most
//! [`MAX_CONNECTIONS`] connections (past it new ones are closed at once), requests' headers
//! within [`HEADER_TIMEOUT`] and [`MAX_HEADER_BYTES`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::Request;
use http::Response;
use http::StatusCode;
use http::header;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::metrics::state::StateCollector;
use crate::metrics::state::StateSource;

pub mod history;
mod status;

use history::History;

/// Most HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
const MAX_HEADER_BYTES: usize = 16 << 10;
/// How long gathering one answer may take (a store read, peers' status calls).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

const PAGE: &str = include_str!("status.html");
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the HTTP port answers from.
pub struct HttpState {
    source: StateSource,
    registry: Registry,
    collector: StateCollector,
    /// One scrape at a time: a scrape sets the collector's state, then encodes it.
    scrape: tokio::sync::Mutex<()>,
    history: History,
    metrics: Arc<Metrics>,
    /// Channels to the members' client addresses (their `Cluster.Status`).
    members: crate::raft::transport::channels::ChannelPool,
    /// This node's HTTP address, as other nodes and the page show it.
    http_address: String,
}

impl HttpState {
    pub fn new(
        source: StateSource,
        metrics: Arc<Metrics>,
        history: History,
        members: crate::raft::transport::channels::ChannelPool,
        http_address: String,
    ) -> Self {
        let collector = StateCollector::default();
        let registry = metrics.registry(collector.clone());
        Self {
            source,
            registry,
            collector,
            scrape: tokio::sync::Mutex::new(()),
            history,
            metrics,
            members,
            http_address,
        }
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little, do not spin.
                tracing::warn!("http: accepting a connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!("http: connection ended: {error}");
            }
            drop(permit);
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn answer(state: &HttpState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => match tokio::time::timeout(ANSWER_TIMEOUT, metrics_text(state)).await {
            Ok(Ok(text)) => respond(StatusCode::OK, OPENMETRICS, text),
            Ok(Err(error)) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("encoding the metrics failed: {error}\n"),
            ),
            Err(_) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "gathering the metrics took too long\n",
            ),
        },
        "/healthz" => {
            let status = state.source.handle().status();
            match status.stopped {
                None => respond(StatusCode::OK, TEXT, "ok\n"),
                Some(reason) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("the Raft core stopped: {reason}\n"),
                ),
            }
        }
        "/readyz" => match state.source.handle().status().not_serving_reason() {
            None => respond(StatusCode::OK, TEXT, "ready: serving reads\n"),
            Some(reason) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {reason}\n"),
            ),
        },
        "/status.json" => match tokio::time::timeout(ANSWER_TIMEOUT, status::json(state)).await {
            Ok(json) => respond(StatusCode::OK, "application/json", json.to_string()),
            Err(_) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "gathering the status took too long\n",
            ),
        },
        "/status" => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/" => {
            let mut response = respond(StatusCode::FOUND, TEXT, "see /status\n");
            response.headers_mut().insert(
                header::LOCATION,
                header::HeaderValue::from_static("/status"),
            );
            response
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /status, /status.json, /metrics, /healthz or /readyz\n",
        ),
    }
}

async fn metrics_text(state: &HttpState) -> Result<String, std::fmt::Error> {
    let _one_at_a_time = state.scrape.lock().await;
    state.collector.set(state.source.gather().await);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry)?;
    Ok(text)
}

/// The address clients reach the HTTP port at: the bound one, with the advertised gRPC
/// address's host when it is bound on every interface.
pub fn advertised(bound: SocketAddr, grpc_advertised: &str) -> String {
    if bound.ip().is_unspecified()
        && let Some((host, _)) = grpc_advertised.rsplit_once(':')
    {
        return format!("{host}:{}", bound.port());
    }
    bound.to_string()
}
