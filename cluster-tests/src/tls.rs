//! Certificates for a TLS test cluster ([`crate::ClusterOptions::tls`]), made by the binary
//! under test (`evlog dev-certs`, rcgen) into the cluster's directory: one CA, a certificate
//! per node (for its client port, its peer port and its outgoing connections) and a client
//! certificate. [`TestTls::generate`] also makes certificates of *another* CA, for the tests
//! that check a stranger is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use evlog_client::ClientTls;

/// A directory of certificates written by `evlog dev-certs`.
#[derive(Clone, Debug)]
pub struct TestTls {
    dir: PathBuf,
}

impl TestTls {
    /// Runs `evlog dev-certs --out DIR --nodes NODES`: a new CA and its certificates.
    ///
    /// # Panics
    ///
    /// When the command fails.
    pub fn generate(dir: &Path, nodes: u64) -> TestTls {
        let output = Command::new(crate::evlog_binary())
            .args(["dev-certs", "--out"])
            .arg(dir)
            .args(["--nodes", &nodes.to_string()])
            .output()
            .expect("running evlog dev-certs");
        assert!(
            output.status.success(),
            "evlog dev-certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        TestTls {
            dir: dir.to_path_buf(),
        }
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate (`node-N`, `client`) and its key.
    pub fn certificate(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// What a client trusts (this CA) and presents (the client certificate: a node ignores
    /// it unless it runs with `--client-ca`).
    pub fn client(&self) -> ClientTls {
        let (cert, key) = self.certificate("client");
        ClientTls::from_files(&self.ca(), Some((&cert, &key))).expect("the client certificate")
    }

    /// The `evlog serve` TLS flags of node `id`: its certificate on both ports, this CA for
    /// peers.
    pub fn serve_args(&self, id: u64) -> Vec<String> {
        let (cert, key) = self.certificate(&format!("node-{id}"));
        let path = |path: PathBuf| path.display().to_string();
        vec![
            "--tls-cert".to_owned(),
            path(cert.clone()),
            "--tls-key".to_owned(),
            path(key.clone()),
            "--peer-cert".to_owned(),
            path(cert),
            "--peer-key".to_owned(),
            path(key),
            "--peer-ca".to_owned(),
            path(self.ca()),
        ]
    }
}
