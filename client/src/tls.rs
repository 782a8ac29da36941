//! TLS for client connections: the CA a client trusts (`--ca`) and, for a server that asks
//! for client certificates, its own certificate (`--cert`, `--key`). Files are read here, once,
//! with errors that name the file, so a typo is reported before the first call rather than as
//! a handshake failure. rustls (ring) through tonic: the one crypto provider of the workspace.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {detail}", path.display())]
pub struct TlsFileError {
    /// The flag (or option) that named the file, e.g. `--ca`.
    pub flag: String,
    pub path: PathBuf,
    pub detail: String,
}

/// A file, with the flag (or option) that named it, for errors: `("--ca", path)`.
pub type NamedFile<'a> = (&'a str, &'a Path);

/// Reads the PEM file `path`, given as `flag`: an unreadable file, or one holding no PEM block,
/// is an error naming both.
pub fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let error = |detail: String| TlsFileError {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|io| error(format!("cannot read it: {io}")))?;
    if !pem.windows(11).any(|window| window == b"-----BEGIN ") {
        return Err(error("not a PEM file (no -----BEGIN line)".to_string()));
    }
    Ok(pem)
}

/// A certificate and its private key, both PEM files (`cert_flag`, `key_flag` name them in
/// errors).
pub fn read_identity(
    (cert_flag, cert): NamedFile<'_>,
    (key_flag, key): NamedFile<'_>,
) -> Result<Identity, TlsFileError> {
    Ok(Identity::from_pem(
        read_pem(cert_flag, cert)?,
        read_pem(key_flag, key)?,
    ))
}

/// What a client trusts and presents: the CA that signed the servers' certificates and,
/// optionally, its own certificate and key.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl ClientTls {
    /// Trusts the CA in `ca` (`--ca`), and presents `identity` (`--cert`, `--key`) when given.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsFileError> {
        Self::from_named_files(
            ("--ca", ca),
            identity.map(|(cert, key)| (("--cert", cert), ("--key", key))),
        )
    }

    /// As [`ClientTls::from_files`], with the flags that named the files (a node's outgoing
    /// connections use its `--peer-*` files).
    pub fn from_named_files(
        (ca_flag, ca): NamedFile<'_>,
        identity: Option<(NamedFile<'_>, NamedFile<'_>)>,
    ) -> Result<Self, TlsFileError> {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(ca_flag, ca)?));
        if let Some((cert, key)) = identity {
            config = config.identity(read_identity(cert, key)?);
        }
        Ok(Self { config })
    }

    /// The tonic configuration, for an `Endpoint`.
    pub fn config(&self) -> ClientTlsConfig {
        self.config.clone()
    }
}

/// The URI of `endpoint` (`host:port`, `http://…` or `https://…`): `https://` when `tls` is
/// given, `http://` otherwise. Refused: an `http://` endpoint with TLS configured (no silent
/// downgrade) and an `https://` one without (no CA to check the server against).
pub fn endpoint_uri(endpoint: &str, tls: bool) -> Result<String, String> {
    match (endpoint.split_once("://"), tls) {
        (None, false) => Ok(format!("http://{endpoint}")),
        (None, true) => Ok(format!("https://{endpoint}")),
        (Some(("http", _)), false) | (Some(("https", _)), true) => Ok(endpoint.to_string()),
        (Some(("http", _)), true) => Err(format!(
            "endpoint {endpoint:?} is plaintext (http://) but TLS is configured: use https:// or \
             a bare host:port"
        )),
        (Some(("https", _)), false) => Err(format!(
            "endpoint {endpoint:?} is https:// but no CA is given: pass --ca FILE (the CA that \
             signed the servers' certificates)"
        )),
        (Some((scheme, _)), _) => Err(format!(
            "endpoint {endpoint:?}: unknown scheme {scheme:?} (use http:// or https://)"
        )),
    }
}

/// What a server's port speaks, as far as [`probe`] can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    /// TLS (an evlog node started with `--tls-cert`).
    Tls,
    /// Plaintext HTTP/2.
    Plaintext,
}

/// The bytes a plaintext HTTP/2 client opens with: the connection preface and an empty
/// SETTINGS frame (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Asks the server at `endpoint` (`host:port`, `http://…` or `https://…`) what it speaks:
/// sends what a plaintext HTTP/2 client sends first and reads the start of the answer. A TLS
/// server answers with a TLS record (an alert: `0x15 0x03 …`), a plaintext HTTP/2 server with
/// its SETTINGS frame (frame type 4). `None`: no connection, no answer within `timeout`, or
/// anything else.
pub async fn probe(endpoint: &str, timeout: Duration) -> Option<PortProtocol> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;

    let address = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    let answer = tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(HTTP2_PREFACE).await.ok()?;
        let mut answer = [0u8; 4];
        let mut read = 0;
        while read < answer.len() {
            let more = stream.read(&mut answer[read..]).await.ok()?;
            if more == 0 {
                break;
            }
            read += more;
        }
        Some((answer, read))
    })
    .await
    .ok()??;
    match answer {
        ([0x15 | 0x16, 0x03, ..], 2..) => Some(PortProtocol::Tls),
        ([_, _, _, 0x04], 4) => Some(PortProtocol::Plaintext),
        _ => None,
    }
}

/// After a connection to `endpoint` failed (`tls`: the client spoke TLS): a sentence saying
/// that the server speaks the other protocol and what to do, when [`probe`] shows it does.
/// It names the CLI's flag, `--ca`; in the Rust client that is [`ClientTls`] in
/// `ClientOptions::tls`.
pub async fn protocol_mismatch(endpoint: &str, tls: bool) -> Option<String> {
    match (probe(endpoint, PROBE_TIMEOUT).await?, tls) {
        (PortProtocol::Tls, false) => Some(format!(
            "the node at {endpoint} serves TLS: use an https:// endpoint and --ca (the CA that \
             signed its certificate)"
        )),
        (PortProtocol::Plaintext, true) => Some(format!(
            "the node at {endpoint} does not serve TLS: use an http:// (or bare host:port) \
             endpoint, without --ca"
        )),
        _ => None,
    }
}

/// How long [`protocol_mismatch`] waits for a server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_tls_setting_and_never_downgrade() {
        assert_eq!(endpoint_uri("h:1", false).as_deref(), Ok("http://h:1"));
        assert_eq!(endpoint_uri("h:1", true).as_deref(), Ok("https://h:1"));
        assert_eq!(
            endpoint_uri("https://h:1", true).as_deref(),
            Ok("https://h:1")
        );
        assert!(endpoint_uri("http://h:1", true).is_err());
        assert!(endpoint_uri("https://h:1", false).is_err());
        assert!(endpoint_uri("ftp://h:1", false).is_err());
    }

    /// A server on loopback that answers every connection with `answer`, then closes it.
    async fn answering(answer: &'static [u8]) -> String {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port 0");
        let address = listener.local_addr().expect("an address").to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                stream.write_all(answer).await.ok();
            }
        });
        address
    }

    #[tokio::test]
    async fn a_probe_tells_tls_from_plaintext_http2_by_the_first_bytes_of_the_answer() {
        let timeout = Duration::from_secs(10);
        // What rustls answers to a plaintext preface: a fatal alert record.
        let tls = answering(b"\x15\x03\x03\x00\x02\x02\x32").await;
        // What an HTTP/2 server answers first: its SETTINGS frame (type 4, stream 0).
        let plaintext =
            answering(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x01\x00").await;
        let neither = answering(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        assert_eq!(probe(&tls, timeout).await, Some(PortProtocol::Tls));
        assert_eq!(
            probe(&format!("http://{plaintext}"), timeout).await,
            Some(PortProtocol::Plaintext)
        );
        assert_eq!(probe(&neither, timeout).await, None);

        let hint = protocol_mismatch(&tls, false).await.expect("a mismatch");
        assert!(
            hint.contains("serves TLS: use an https:// endpoint and --ca"),
            "{hint}"
        );
        assert_eq!(protocol_mismatch(&tls, true).await, None);
        let hint = protocol_mismatch(&plaintext, true)
            .await
            .expect("a mismatch");
        assert!(hint.contains("does not serve TLS"), "{hint}");
        assert_eq!(protocol_mismatch(&plaintext, false).await, None);
    }

    #[test]
    fn a_missing_or_foreign_file_is_refused_with_its_name() {
        let missing = read_pem("--ca", Path::new("/nonexistent/ca.pem")).expect_err("missing");
        assert!(
            missing.to_string().contains("--ca /nonexistent/ca.pem"),
            "{missing}"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("not-pem");
        std::fs::write(&path, b"hello").expect("write");
        let foreign = read_pem("--ca", &path).expect_err("not PEM");
        assert!(foreign.to_string().contains("not a PEM file"), "{foreign}");
    }
}
