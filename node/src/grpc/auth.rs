//! Access control on the wire: a tower layer that authenticates every call to the client
//! services (`evlog.v1.*`) before it reaches its handler, from the `authorization` metadata
//! or the client certificate, and either refuses it `UNAUTHENTICATED` or hands the handler the
//! caller ([`principal`]). Health checks and reflection are open. The handlers check what the
//! caller may do (`service::access`); a live stream's caller is checked again whenever access
//! changes ([`until_denied`]).
//!
//! A follower forwarding a call to the leader sends the caller's token along
//! ([`forward_credentials`]): the leader authenticates and checks the call again, against the
//! same replicated state. A caller authenticated by its certificate is named instead
//! (`evlog-forwarded-principal`), which the leader believes only from a connection whose
//! certificate names a member node (`node-<id>`, as peer certificates must): a client
//! certificate cannot claim it. The caller of the call being served is kept in a task-local for
//! that, so the service layer's forwarding needs no knowledge of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;

use futures::Stream;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::ServerName;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpConnectInfo;
use tonic::transport::server::TlsConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc::status::to_status;
use crate::service::ServiceError;
use crate::service::access::AccessControl;
use crate::service::access::Authenticated;
use crate::service::access::Principal;

/// The metadata key of the caller's token.
const AUTHORIZATION: &str = "authorization";
/// The client services' path prefix: every other path (health, reflection) is open.
const CLIENT_SERVICES: &str = "/evlog.v1.";
/// Open too: a node's role, term and members (no data), which status pages, `evlog status`
/// and the other nodes' HTTP status pages ask every node for.
const OPEN_STATUS: &str = "/evlog.v1.Cluster/Status";

/// The metadata key naming a certificate-authenticated caller in a forwarded call.
const FORWARDED_PRINCIPAL: &str = "evlog-forwarded-principal";

/// What a forwarded call says of the caller of the call this task serves.
#[derive(Clone)]
enum Caller {
    Token(http::HeaderValue),
    Certificate(String),
}

tokio::task_local! {
    /// The caller of the call this task serves.
    static CALLER: Option<Caller>;
}

/// The caller of `request`, as the layer authenticated it (anonymous when access control is
/// off).
pub fn principal<T>(request: &tonic::Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

/// Adds the token of the call this task serves, if it came with one, to a call it forwards.
pub fn forward_credentials(metadata: &mut MetadataMap) {
    let caller = CALLER.try_with(|caller| caller.clone()).ok().flatten();
    let (key, value) = match &caller {
        Some(Caller::Token(value)) => (AUTHORIZATION, value.as_bytes()),
        Some(Caller::Certificate(name)) => (FORWARDED_PRINCIPAL, name.as_bytes()),
        None => return,
    };
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(key, value);
    }
}

/// A caller a follower named in a call it forwarded, believed only when the connection's
/// certificate names a member node.
fn forwarded_principal<B>(
    access: &AccessControl,
    request: &http::Request<B>,
) -> Option<Result<Principal, ServiceError>> {
    let name = request.headers().get(FORWARDED_PRINCIPAL)?;
    let from_a_node = client_certificate(request).is_some_and(|certificate| {
        access
            .node_names()
            .iter()
            .any(|node| valid_for(&certificate, node))
    });
    Some(match (from_a_node, name.to_str()) {
        (true, Ok(name)) => Ok(Principal {
            name: name.to_string(),
            by: Authenticated::Certificate,
        }),
        _ => Err(ServiceError::Unauthenticated(format!(
            "{FORWARDED_PRINCIPAL} is accepted only from a member node's certificate"
        ))),
    })
}

/// The caller's token in `authorization: Bearer <token>`; an error for any other form.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, ServiceError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ServiceError::Unauthenticated("the authorization metadata is not ASCII".to_string())
    })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ServiceError::Unauthenticated(
            "the authorization metadata must be \"Bearer <token>\"".to_string(),
        )),
    }
}

/// The client certificate the connection presented (verified by the TLS handshake against
/// `--client-ca`), if any.
fn client_certificate<B>(request: &http::Request<B>) -> Option<CertificateDer<'static>> {
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certificates.first().cloned()
}

/// Whether `certificate` is valid for the DNS name `name` (its subject alternative names, as
/// a TLS client checks a server's).
fn valid_for(certificate: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    certificate.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Authenticates the calls to the client services.
#[derive(Clone)]
pub struct AuthLayer {
    access: Arc<AccessControl>,
}

impl AuthLayer {
    pub fn new(access: Arc<AccessControl>) -> Self {
        Self { access }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            access: Arc::clone(&self.access),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    access: Arc<AccessControl>,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Auth<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let path = request.uri().path();
        if !self.access.enabled() || !path.starts_with(CLIENT_SERVICES) || path == OPEN_STATUS {
            return Box::pin(self.inner.call(request));
        }
        let forwarded = forwarded_principal(&self.access, &request);
        let authenticated = forwarded.unwrap_or_else(|| {
            bearer(request.headers()).and_then(|token| {
                let certificate = client_certificate(&request);
                let certificate_for =
                    |name: &str| certificate.as_ref().is_some_and(|c| valid_for(c, name));
                let certificate_for: Option<&dyn Fn(&str) -> bool> =
                    certificate.is_some().then_some(&certificate_for);
                self.access.authenticate(token, certificate_for)
            })
        });
        match authenticated {
            Ok(principal) => {
                let caller = match (&principal.by, request.headers().get(AUTHORIZATION)) {
                    (_, Some(token)) => Some(Caller::Token(token.clone())),
                    (Authenticated::Certificate, None) => {
                        Some(Caller::Certificate(principal.name.clone()))
                    }
                    _ => None,
                };
                request.extensions_mut().insert(principal);
                Box::pin(CALLER.scope(caller, self.inner.call(request)))
            }
            Err(error) => {
                let status: Status = to_status(error, false);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// `stream`, ended with `denied`'s error as soon as it resolves (the caller's access was
/// revoked): the item that says why is the last.
pub fn until_denied<S, T: 'static>(
    stream: S,
    denied: impl Future<Output = ServiceError> + Send + 'static,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    UntilDenied {
        stream: Some(Box::pin(stream)),
        denied: Box::pin(denied),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct UntilDenied<T> {
    stream: Option<BoxStream<T>>,
    denied: Pin<Box<dyn Future<Output = ServiceError> + Send>>,
}

impl<T> Stream for UntilDenied<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let next = stream.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.stream = None;
            return Poll::Ready(None);
        }
        if let Poll::Ready(error) = self.denied.as_mut().poll(cx) {
            // Dropping the stream ends the subscription (or the consumer's membership).
            self.stream = None;
            return Poll::Ready(Some(Err(to_status(error, false))));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(value: &[u8]) -> Option<http::HeaderMap> {
        let value = http::HeaderValue::from_bytes(value).ok()?;
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        Some(headers)
    }

    #[test]
    fn only_bearer_credentials_are_taken() {
        let token = headers(b"Bearer evl_x_y").expect("a header");
        assert_eq!(bearer(&token).expect("bearer"), Some("evl_x_y"));
        let lower = headers(b"bearer  evl_x_y ").expect("a header");
        assert_eq!(bearer(&lower).expect("bearer"), Some("evl_x_y"));
        assert!(bearer(&headers(b"Basic dXNlcjpwYXNz").expect("a header")).is_err());
        assert!(bearer(&headers(b"evl_x_y").expect("a header")).is_err());
        assert_eq!(bearer(&http::HeaderMap::new()).expect("none"), None);
    }

    proptest! {
        /// Hostile authorization metadata: an error or a token, never a panic.
        #[test]
        fn any_authorization_value_never_panics(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(headers) = headers(&value) {
                let _ = bearer(&headers);
            }
        }
    }
}
