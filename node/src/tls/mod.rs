//! TLS for a node's two gRPC ports, with rustls (ring), the TLS of tonic. Off unless
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
//! The files are read at start, with errors naming the flag and the file, and again on
//! SIGHUP ([`LiveTls`]): every file is read anew, and if all are good both ports serve the new
//! certificates (and trust the new CAs) from their next connection on, while the connections
//! open keep theirs; if any is bad, the error is logged (flag and file) and the ports keep
//! what they had: a node never goes without TLS. The node's outgoing connections present
//! the new `--peer-cert` and trust the new `--peer-ca` from their next connection (or
//! reconnection) on.
//!
//! **Peer certificates name their node.** On the peer port a certificate of `--peer-ca` is
//! not enough: every peer message says which node sends it, and the sender's certificate
//! must carry the DNS subject alternative name `node-<id>` for that node id ([`peer_name`];
//! `evlog dev-certs` writes `node-N` into node N's certificate). A message from a node its
//! certificate does not name, or a Raft message speaking for another node (a vote, an
//! append, a snapshot or a leadership transfer of another), is refused with
//! `PERMISSION_DENIED` and counted (`evlog_peer_messages_refused_total{reason=
//! "certificate_name"}`): a stolen or misissued certificate of one node cannot pose as
//! another (see `raft::transport::identity`). The client-port certificate needs no such name.
//!
//! tonic's `ServerTlsConfig` and `ClientTlsConfig` cannot change their certificates, so the
//! ports accept TLS themselves ([`ServerTls`]) and hand tonic the decrypted streams, and the
//! outgoing channels dial through a connector of their own ([`OutgoingTls`]).

mod expiry;
mod live_tls;
mod outgoing_tls;
mod server_tls;

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use evlog_client::tls::NamedFile;
use evlog_client::tls::TlsFileError;
use evlog_client::tls::read_pem;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::server::ParsedCertificate;
use rustls::server::WebPkiClientVerifier;

pub use live_tls::LiveTls;
pub use outgoing_tls::OutgoingTls;
pub use server_tls::ServerTls;

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
    pub client_port: Arc<ServerConfig>,
    /// The peer port's server configuration (client certificates required).
    pub peer_port: Arc<ServerConfig>,
    /// This node's outgoing connections, to peer ports and client ports alike.
    pub outgoing: Arc<ClientConfig>,
    /// When the served certificates expire, for the log: `--tls-cert … expires …`.
    pub expiry: String,
}

impl TlsFiles {
    /// Reads every file; the first that cannot be used is the error.
    pub fn load(&self) -> Result<NodeTls, TlsFileError> {
        let cert = ("--tls-cert", self.cert.as_path());
        let key = ("--tls-key", self.key.as_path());
        let client_ca = self
            .client_ca
            .as_deref()
            .map(|client_ca| ("--client-ca", client_ca));
        let peer_cert = ("--peer-cert", self.peer_cert.as_path());
        let peer_key = ("--peer-key", self.peer_key.as_path());
        let peer_ca = ("--peer-ca", self.peer_ca.as_path());
        let (client_port, client_port_expiry) = server_config(cert, key, client_ca)?;
        // A client CA makes client authentication required, never optional.
        let (peer_port, peer_port_expiry) = server_config(peer_cert, peer_key, Some(peer_ca))?;
        let outgoing = client_config(peer_ca, peer_cert, peer_key)?;
        Ok(NodeTls {
            client_port,
            peer_port,
            outgoing,
            expiry: format!(
                "--tls-cert {} expires {client_port_expiry}, --peer-cert {} expires \
                 {peer_port_expiry}",
                self.cert.display(),
                self.peer_cert.display()
            ),
        })
    }
}

/// The name a node's peer certificate must carry for the node to speak as `node_id` on the
/// peer port: the DNS subject alternative name `node-<id>` (what `evlog dev-certs` writes).
pub fn peer_name(node_id: u64) -> String {
    format!("node-{node_id}")
}

/// Whether the end-entity certificate `certificate` names node `node_id` ([`peer_name`]), as
/// a server certificate names its host: an exact DNS subject alternative name (a wildcard
/// `*.…` never matches `node-<id>`, which has no dot).
pub fn names_node(certificate: &CertificateDer<'_>, node_id: u64) -> bool {
    let Ok(name) = ServerName::try_from(peer_name(node_id)) else {
        return false;
    };
    ParsedCertificate::try_from(certificate)
        .is_ok_and(|parsed| rustls::client::verify_server_name(&parsed, &name).is_ok())
}

/// The crypto of every configuration: ring, named rather than left to a process default
/// (which a second provider in the tree would make ambiguous).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(flag: &str, path: &Path, detail: String) -> TlsFileError {
    TlsFileError {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        detail,
    }
}

/// The certificates of the PEM file `(flag, path)`: at least one.
fn read_certificates(
    (flag, path): NamedFile<'_>,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read_pem(flag, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(flag, path, format!("not a PEM certificate: {error}")))?;
    if certificates.is_empty() {
        return Err(file_error(
            flag,
            path,
            "holds no certificate (no -----BEGIN CERTIFICATE----- block)".to_string(),
        ));
    }
    Ok(certificates)
}

/// The private key of the PEM file `(flag, path)`.
fn read_key((flag, path): NamedFile<'_>) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read_pem(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|error| file_error(flag, path, format!("not a PEM private key: {error}")))
}

/// The CA certificates of the PEM file `ca`, as roots to check certificates against.
fn read_roots(ca: NamedFile<'_>) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(ca)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(ca.0, ca.1, format!("not a CA certificate: {error}")))?;
    }
    Ok(roots)
}

/// The outgoing configuration: it trusts `ca` and presents `cert` with `key` (HTTP/2 only).
fn client_config(
    ca: NamedFile<'_>,
    cert: NamedFile<'_>,
    key: NamedFile<'_>,
) -> Result<Arc<ClientConfig>, TlsFileError> {
    let roots = read_roots(ca)?;
    let chain = read_certificates(cert)?;
    let private_key = read_key(key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| file_error(cert.0, cert.1, format!("TLS versions: {error}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private_key)
        .map_err(|error| {
            file_error(
                key.0,
                key.1,
                format!(
                    "cannot present it with {} {}: {error}",
                    cert.0,
                    cert.1.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A port's server configuration: it serves `cert` with `key` (HTTP/2 only), and with
/// `client_ca` requires a client certificate that CA signed. Also the certificate's expiry.
fn server_config(
    cert: NamedFile<'_>,
    key: NamedFile<'_>,
    client_ca: Option<NamedFile<'_>>,
) -> Result<(Arc<ServerConfig>, String), TlsFileError> {
    let chain = read_certificates(cert)?;
    let private_key = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| file_error(cert.0, cert.1, format!("TLS versions: {error}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let roots = read_roots(client_ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|error| file_error(client_ca.0, client_ca.1, error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let expiry = chain
        .first()
        .and_then(|certificate| expiry::not_after(certificate))
        .unwrap_or_else(|| "(unknown)".to_string());
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|error| {
            file_error(
                key.0,
                key.1,
                format!(
                    "cannot serve it with {} {}: {error}",
                    cert.0,
                    cert.1.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), expiry))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a certificate naming `name` and its key into `dir`: (`NAME.pem`, `NAME.key`).
    fn write_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("parameters");
        let key = rcgen::KeyPair::generate().expect("a key");
        let certificate = params.self_signed(&key).expect("a certificate");
        let paths = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, certificate.pem()).expect("write");
        std::fs::write(&paths.1, key.serialize_pem()).expect("write");
        paths
    }

    #[test]
    fn every_file_is_checked_and_a_bad_one_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert, key) = write_certificate(dir.path(), "node-1");
        let (_, other_key) = write_certificate(dir.path(), "node-2");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
            peer_cert: cert.clone(),
            peer_key: key.clone(),
            // Self-signed: the certificate is its own CA.
            peer_ca: cert.clone(),
        };
        let loaded = files.load().expect("good files");
        assert!(
            loaded.expiry.contains("expires 4096-01-01"),
            "{}",
            loaded.expiry
        );

        let mismatched = TlsFiles {
            key: other_key.clone(),
            ..files.clone()
        };
        let error = mismatched.load().expect_err("another certificate's key");
        assert_eq!(error.flag, "--tls-key");
        assert!(
            error.detail.contains("cannot serve it with --tls-cert"),
            "{error}"
        );

        let garbage = dir.path().join("garbage.key");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let broken = TlsFiles {
            peer_key: garbage,
            ..files.clone()
        };
        let error = broken.load().expect_err("a broken key");
        assert_eq!(error.flag, "--peer-key");

        let not_a_certificate = TlsFiles {
            peer_ca: key,
            ..files
        };
        let error = not_a_certificate.load().expect_err("a key as the CA");
        assert_eq!(error.flag, "--peer-ca");
        assert!(error.detail.contains("no certificate"), "{error}");
    }

    #[test]
    fn a_certificate_names_a_node_by_its_exact_dns_name() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert, _) = write_certificate(dir.path(), "node-2");
        let pem = std::fs::read(&cert).expect("read");
        let der = CertificateDer::from_pem_slice(&pem).expect("a certificate");
        assert!(names_node(&der, 2));
        assert!(!names_node(&der, 1));
        assert!(!names_node(&der, 22));
        assert!(!names_node(&CertificateDer::from(vec![0x30, 0x00]), 2));
    }
}
