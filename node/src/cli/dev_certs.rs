//! `evlog dev-certs` (hidden): a throwaway CA and certificates for a local TLS cluster, made
//! with rcgen so `scripts/cluster.sh up --tls` and the tests need no openssl. Writes into
//! `--out`: `ca.pem` (trust it with `--ca`, `--peer-ca`, `--client-ca`), `node-N.pem` and
//! `node-N.key` for each node (one certificate serves the client port, the peer port and the
//! node's outgoing connections: it is valid for server and client authentication, and names
//! `node-N` (the DNS name the peer port requires of node N, see `crate::tls`), `localhost`
//! and the `--hosts`), and `client.pem` / `client.key` (a client
//! certificate, for nodes started with `--client-ca`). The CA's key is not kept: more
//! certificates mean a new CA. Never for production: the keys are written unencrypted.

use std::path::Path;
use std::path::PathBuf;

use clap::Args;
use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::CertifiedIssuer;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;

#[derive(Debug, Args)]
pub struct DevCertsArgs {
    /// The directory to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Node certificates to make: node-1 .. node-N.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Host names and IP addresses every node certificate is valid for, besides node-N.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
}

pub fn dev_certs(args: &DevCertsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", args.out.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: a verifier looks a certificate's issuer up by name, so two
    // development CAs of one name would make a stranger's certificate fail on its signature
    // rather than as unknown.
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("evlog development CA {}", created.as_nanos()),
    );
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    write(&args.out.join("ca.pem"), &ca.pem())?;
    for id in 1..=args.nodes {
        let name = format!("node-{id}");
        let mut names = vec![name.clone()];
        names.extend(args.hosts.iter().cloned());
        leaf(&args.out, &name, names, &ca)?;
    }
    leaf(&args.out, "client", vec!["client".to_string()], &ca)?;
    println!(
        "wrote ca.pem, node-1..{} .pem/.key and client.pem/.key to {}",
        args.nodes,
        args.out.display()
    );
    Ok(())
}

/// A certificate named `name`, valid for `names`, for server and client authentication,
/// signed by `ca`: `DIR/NAME.pem` and `DIR/NAME.key`.
fn leaf(
    dir: &Path,
    name: &str,
    names: Vec<String>,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> anyhow::Result<()> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, ca)?;
    write(&dir.join(format!("{name}.pem")), &certificate.pem())?;
    write(&dir.join(format!("{name}.key")), &key.serialize_pem())
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents)
        .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))
}
