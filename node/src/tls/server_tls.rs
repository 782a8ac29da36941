//! A gRPC port's TLS, replaceable while it serves. tonic's own `ServerTlsConfig` builds its
//! rustls configuration once, so a node with TLS on accepts its connections here instead and
//! hands tonic streams that already speak TLS: each new connection takes the configuration
//! current at its handshake; a reload ([`ServerTls::replace`]) changes what later
//! connections get, and the open ones keep theirs.

use std::io;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use rustls::ServerConfig;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Most handshakes in progress at once on one port; further accepted connections wait their
/// turn (the port's connection limit bounds them too). Large, so that a few clients that
/// connect and say nothing cannot hold every slot for a [`HANDSHAKE_TIMEOUT`].
const MAX_HANDSHAKES: usize = 1_024;
/// How long a client may take over its handshake before its connection is closed (so one that
/// connects and says nothing cannot hold a handshake slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A port's current TLS configuration; clones share it.
#[derive(Clone, Debug)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: Arc::new(RwLock::new(config)),
        }
    }

    /// Connections accepted from now on use `config`.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        // A panic cannot leave an `Arc` half-written: a poisoned lock still holds a whole one.
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The connections of `incoming`, after a TLS handshake with the configuration current
    /// when each arrived: each handshake runs in a task of its own (one slow client delays no
    /// other), at most [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]. A
    /// connection whose handshake fails is closed and left out (the client sees the alert);
    /// an accept error passes through, for the server to judge as it does without TLS.
    pub fn accept<IO, S>(
        &self,
        incoming: S,
    ) -> impl Stream<Item = io::Result<TlsStream<IO>>> + use<IO, S>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Stream<Item = io::Result<IO>>,
    {
        let tls = self.clone();
        incoming
            .map(move |accepted| {
                let acceptor = TlsAcceptor::from(tls.current());
                async move {
                    let stream = match accepted {
                        Ok(stream) => stream,
                        Err(error) => return Some(Err(error)),
                    };
                    let handshake = tokio::spawn(tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    ));
                    match handshake.await {
                        Ok(Ok(Ok(stream))) => Some(Ok(stream)),
                        Ok(Ok(Err(error))) => {
                            tracing::debug!("TLS handshake failed: {error}");
                            None
                        }
                        Ok(Err(_)) => {
                            tracing::debug!(
                                "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}: closed"
                            );
                            None
                        }
                        Err(error) => {
                            tracing::warn!("TLS handshake task failed: {error}");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(MAX_HANDSHAKES)
            .filter_map(std::future::ready)
    }
}
