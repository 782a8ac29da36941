//! `--ca`, `--cert`, `--key`: how the CLI and the bench reach a cluster whose client port
//! serves TLS (`evlog serve --tls-cert …`). With `--ca`, endpoints are `https://` (bare
//! `host:port` ones too); without it they are plaintext, and an `https://` endpoint is refused.
//! And `--token` (or `EVLOG_TOKEN`), for a cluster with access control on (`--auth`).

use std::path::PathBuf;

use clap::Args;
use evlog_client::ClientTls;

#[derive(Clone, Debug, Default, Args)]
pub struct ClientTlsArgs {
    /// TLS: the CA certificate (PEM) that signed the nodes' client-port certificates; makes
    /// every endpoint https://.
    #[arg(long, global = true, env = "EVLOG_CA")]
    pub ca: Option<PathBuf>,
    /// TLS: this client's certificate (PEM), for nodes started with --client-ca (with --key).
    #[arg(long, global = true, env = "EVLOG_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS: the private key (PEM) of --cert.
    #[arg(long, global = true, env = "EVLOG_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Access control: the token every call carries (evl_…), for nodes started with --auth.
    /// Prefer the environment variable: a flag shows in the process list and shell history.
    #[arg(long, global = true, env = "EVLOG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientTlsArgs {
    /// The TLS configuration the flags name (files read now), or `None` for plaintext.
    pub fn client_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        match &self.ca {
            Some(ca) => Ok(Some(ClientTls::from_files(ca, identity)?)),
            None if identity.is_some() => {
                anyhow::bail!(
                    "--cert and --key need --ca (the CA that signed the nodes' certificates)"
                )
            }
            None => Ok(None),
        }
    }
}
