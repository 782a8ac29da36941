//! Counts and times every gRPC call: a tower layer around the whole server. A call is
//! recorded when it ends (its trailers are sent, or its response body is dropped: the client
//! went away), with the status code from its trailers (or from a trailers-only answer's
//! headers). The method label is one of the methods the node serves, or `unknown`, so a
//! client cannot grow the label set.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Instant;

use http_body::Body;
use http_body::Frame;
use prost::Message;
use tower_layer::Layer;
use tower_service::Service;

use super::MethodMetrics;
use super::Metrics;

/// The label of a path no service answers.
const UNKNOWN_METHOD: &str = "unknown";

/// The methods the node serves (on its client port and its peer port), as
/// `/package.Service/Method` paths.
fn known_paths() -> HashSet<String> {
    let mut paths = HashSet::new();
    let sets = [
        evlog_proto::FILE_DESCRIPTOR_SET,
        evlog_proto::PEER_FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    paths.insert(format!(
                        "/{package}.{service_name}/{}",
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    paths.insert("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_string());
    paths
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
    /// Each method the node serves, by path, with its series.
    methods: Arc<HashMap<String, Arc<MethodMetrics>>>,
    unknown: Arc<MethodMetrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let methods = known_paths()
            .into_iter()
            .map(|path| {
                let series = Arc::new(metrics.method(&path));
                (path, series)
            })
            .collect();
        let unknown = Arc::new(metrics.method(UNKNOWN_METHOD));
        Self {
            metrics,
            methods: Arc::new(methods),
            unknown,
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, Request, ResponseBody> Service<http::Request<Request>> for GrpcMetrics<S>
where
    S: Service<http::Request<Request>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Request>) -> Self::Future {
        let method = Arc::clone(
            self.layer
                .methods
                .get(request.uri().path())
                .unwrap_or(&self.layer.unknown),
        );
        let metrics = Arc::clone(&self.layer.metrics);
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let code = response.headers().get("grpc-status").map(code_name);
            let (parts, body) = response.into_parts();
            let call = Call {
                metrics,
                method,
                started,
                code,
            };
            Ok(http::Response::from_parts(
                parts,
                MeteredBody {
                    inner: body,
                    call: Some(call),
                },
            ))
        })
    }
}

struct Call {
    metrics: Arc<Metrics>,
    method: Arc<MethodMetrics>,
    started: Instant,
    code: Option<&'static str>,
}

impl Call {
    fn record(self, code: &'static str) {
        self.metrics.grpc_call(
            &self.method,
            self.code.unwrap_or(code),
            self.started.elapsed(),
        );
    }
}

/// A response body that records its call when it ends.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // Dropped before its end: the client cancelled, or the connection went away.
        if let Some(call) = self.call.take() {
            call.record("CANCELLED");
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    let code = trailers.get("grpc-status").map_or("OK", code_name);
                    call.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.record("INTERNAL");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.record("OK");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a `grpc-status` value.
fn code_name(value: &http::HeaderValue) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    value
        .to_str()
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .and_then(|code| NAMES.get(code).copied())
        .unwrap_or("UNKNOWN")
}
