//! Certificates reloaded on SIGHUP, without a restart: every file is read again
//! ([`TlsFiles::load`]); all good, both ports serve the new certificates from their next
//! connection on; one bad, the error names its flag and file and the ports keep the
//! certificates they had. Counted in `evlog_tls_reloads_total{result}`.

use prometheus_client::metrics::counter::Counter;
use tokio::signal::unix::SignalKind;
use tokio::signal::unix::signal;

use super::OutgoingTls;
use super::ServerTls;
use super::TlsFiles;
use crate::metrics::Metrics;
use evlog_client::tls::TlsFileError;

/// What a reload reads and what it replaces.
pub struct TlsReload {
    files: TlsFiles,
    client_port: ServerTls,
    peer_port: ServerTls,
    outgoing: OutgoingTls,
    succeeded: Counter,
    failed: Counter,
}

impl TlsReload {
    pub fn new(
        files: TlsFiles,
        client_port: ServerTls,
        peer_port: ServerTls,
        outgoing: OutgoingTls,
        metrics: &Metrics,
    ) -> Self {
        let reloads = |result: &str| {
            metrics
                .tls_reloads
                .get_or_create_owned(&vec![("result", result.to_string())])
        };
        Self {
            files,
            client_port,
            peer_port,
            outgoing,
            succeeded: reloads("ok"),
            failed: reloads("error"),
        }
    }

    /// Reads every file again and, if all are good, serves them on both ports and presents
    /// the new peer certificate on new outgoing connections; returns the
    /// new certificates' expiry. A bad file changes nothing.
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
                        "SIGHUP: certificates not reloaded, the ports keep serving the ones \
                         they had: {error}"
                    ),
                }
            }
        })
    }
}
