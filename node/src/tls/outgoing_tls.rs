//! The TLS of a node's outgoing connections (Raft to the peer ports, forwarded requests and
//! status calls to the client ports), replaceable while they run, as the ports' is
//! ([`super::ServerTls`]). tonic's `ClientTlsConfig` is fixed when a channel is built, and a
//! channel lives as long as its peer, so the channels of [`crate::raft::transport::channels`]
//! dial through [`TlsConnector`] instead: each new connection (a first dial, or a reconnect)
//! does its handshake with the configuration current at that moment.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::RwLock;
use std::task::Context;
use std::task::Poll;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The current client configuration; clones share it.
#[derive(Clone, Debug)]
pub struct OutgoingTls {
    current: Arc<RwLock<Arc<ClientConfig>>>,
}

impl OutgoingTls {
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            current: Arc::new(RwLock::new(config)),
        }
    }

    /// Connections made from now on use `config`; those open keep theirs.
    pub fn replace(&self, config: Arc<ClientConfig>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    fn current(&self) -> Arc<ClientConfig> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// A connector for `Endpoint::connect_with_connector_lazy`.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector { tls: self.clone() }
    }
}

/// Dials the URI's host and port over TCP (no delay), then TLS with the current
/// configuration, checking the server's certificate against the host name or address.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: OutgoingTls,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let connector = tokio_rustls::TlsConnector::from(self.tls.current());
        Box::pin(async move {
            let invalid = |detail: String| io::Error::new(io::ErrorKind::InvalidInput, detail);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?;
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("{uri}: no port")))?;
            // An IPv6 address comes bracketed in a URI.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .map_err(|error| invalid(format!("{host}: {error}")))?;
            let stream = TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(connector.connect(name, stream).await?))
        })
    }
}
