//! A node's TLS as it runs, reloaded on SIGHUP without a restart: every file is read again
//! ([`TlsFiles::load`]); all good, both ports serve the new certificates and the node dials
//! with its new peer certificate from their next connection on; one bad, the error names its
//! flag and file and everything stays as it was. Counted in `evlog_tls_reloads_total{result}`.

use evlog_client::tls::TlsFileError;
use prometheus_client::metrics::counter::Counter;
use tokio::signal::unix::SignalKind;
use tokio::signal::unix::signal;

use super::OutgoingTls;
use super::ServerTls;
use super::TlsFiles;
use crate::metrics::Metrics;

/// What the ports serve and the node dials with, and the files it came from. Clones share it.
#[derive(Clone, Debug)]
pub struct LiveTls {
    files: TlsFiles,
    client_port: ServerTls,
    peer_port: ServerTls,
    outgoing: OutgoingTls,
    succeeded: Counter,
    failed: Counter,
}

impl LiveTls {
    /// Reads every file of `files` (the first that cannot be used is the error); also returns
    /// when the certificates expire, for the log.
    pub fn load(files: &TlsFiles, metrics: &Metrics) -> Result<(Self, String), TlsFileError> {
        let loaded = files.load()?;
        let reloads = |result: &str| {
            metrics
                .tls_reloads
                .get_or_create_owned(&vec![("result", result.to_string())])
        };
        let tls = Self {
            files: files.clone(),
            client_port: ServerTls::new(loaded.client_port),
            peer_port: ServerTls::new(loaded.peer_port),
            outgoing: OutgoingTls::new(loaded.outgoing),
            succeeded: reloads("ok"),
            failed: reloads("error"),
        };
        Ok((tls, loaded.expiry))
    }

    /// The client port's TLS.
    pub fn client_port(&self) -> ServerTls {
        self.client_port.clone()
    }

    /// The peer port's TLS (client certificates required).
    pub fn peer_port(&self) -> ServerTls {
        self.peer_port.clone()
    }

    /// The TLS of the node's connections to the others' peer and client ports.
    pub fn outgoing(&self) -> OutgoingTls {
        self.outgoing.clone()
    }

    /// Reads every file again and, if all are good, serves them on both ports and presents
    /// the new peer certificate on new outgoing connections; returns the new certificates'
    /// expiry. A bad file changes nothing.
    pub fn reload(&self) -> Result<String, TlsFileError> {
        match self.files.load() {
            Ok(tls) => {
                self.client_port.replace(tls.client_port);
                self.peer_port.replace(tls.peer_port);
                self.outgoing.replace(tls.outgoing);
                self.succeeded.inc();
                Ok(tls.expiry)
            }
            Err(error) => {
                self.failed.inc();
                Err(error)
            }
        }
    }

    /// Reloads on every SIGHUP, for as long as the returned future runs. The handler is
    /// registered before this returns: a SIGHUP from then on no longer ends the process.
    pub fn on_hangup(self) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
        let mut hangups = signal(SignalKind::hangup())?;
        Ok(async move {
            while hangups.recv().await.is_some() {
                match self.reload() {
                    Ok(expiry) => tracing::info!("SIGHUP: certificates reloaded ({expiry})"),
                    Err(error) => tracing::error!(
                        "SIGHUP: certificates not reloaded, the node keeps the ones it had: \
                         {error}"
                    ),
                }
            }
        })
    }
}
