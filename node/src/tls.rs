//! TLS for a node's two gRPC ports, through tonic's rustls (ring provider). Off unless
//! `--tls-cert` is given; then every other file it needs must be given too (no half-secure
//! node, no silent downgrade):
//!
//! - the client port serves `--tls-cert`/`--tls-key`, and asks clients for a certificate
//!   signed by `--client-ca` when that is given;
//! - the peer port requires mutual TLS: it serves `--peer-cert`/`--peer-key` and accepts only
//!   a peer presenting a certificate signed by `--peer-ca`;
//! - the node's outgoing connections (Raft to the peer ports, forwarded client requests and
//!   status calls to the other nodes' client ports) trust `--peer-ca` and present the peer
//!   certificate. So `--peer-ca` must also have signed the nodes' client-port certificates,
//!   and with `--client-ca`, that CA must have signed the nodes' peer certificates (with one
//!   CA for everything, as `evlog dev-certs` makes, both hold).
//!
//! The files are read once, at start, with errors naming the flag and the file. Reloading on
//! SIGHUP is not done yet: new certificates need a (rolling) restart.

use std::path::PathBuf;

use evlog_client::ClientTls;
use evlog_client::tls::TlsFileError;
use evlog_client::tls::read_identity;
use evlog_client::tls::read_pem;
use tonic::transport::Certificate;
use tonic::transport::ServerTlsConfig;

/// The certificate files of a node with TLS on.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// `--tls-cert`, `--tls-key`: the client port's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--client-ca`: when given, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
    /// `--peer-cert`, `--peer-key`: what this node presents to peers (serving and dialing).
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    /// `--peer-ca`: the CA peers' certificates (and other nodes' client-port certificates,
    /// for forwarded requests) must be signed by.
    pub peer_ca: PathBuf,
}

/// A node's TLS, loaded.
#[derive(Clone, Debug)]
pub struct NodeTls {
    /// The client port's server configuration.
    pub client_port: ServerTlsConfig,
    /// The peer port's server configuration (client certificates required).
    pub peer_port: ServerTlsConfig,
    /// This node's outgoing connections, to peer ports and client ports alike.
    pub outgoing: ClientTls,
}

impl TlsFiles {
    /// Reads every file; the first that cannot be used is the error.
    pub fn load(&self) -> Result<NodeTls, TlsFileError> {
        let mut client_port = ServerTlsConfig::new().identity(read_identity(
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
        )?);
        if let Some(client_ca) = &self.client_ca {
            client_port = client_port
                .client_ca_root(Certificate::from_pem(read_pem("--client-ca", client_ca)?));
        }
        let peer_cert = ("--peer-cert", self.peer_cert.as_path());
        let peer_key = ("--peer-key", self.peer_key.as_path());
        let peer_ca = ("--peer-ca", self.peer_ca.as_path());
        // A client CA makes client authentication required (tonic's default), never optional.
        let peer_port = ServerTlsConfig::new()
            .identity(read_identity(peer_cert, peer_key)?)
            .client_ca_root(Certificate::from_pem(read_pem(peer_ca.0, peer_ca.1)?))
            .client_auth_optional(false);
        let outgoing = ClientTls::from_named_files(peer_ca, Some((peer_cert, peer_key)))?;
        Ok(NodeTls {
            client_port,
            peer_port,
            outgoing,
        })
    }
}
