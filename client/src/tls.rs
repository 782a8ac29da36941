//! TLS for client connections: the CA a client trusts (`--ca`) and, for a server that asks
//! for client certificates, its own certificate (`--cert`, `--key`). Files are read here, once,
//! with errors that name the file, so a typo is reported before the first call rather than as
//! a handshake failure. rustls (ring) through tonic: the one crypto provider of the workspace.

use std::path::Path;
use std::path::PathBuf;

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
