//! The `evlog` command line: clap definitions, and one file per command. `serve` runs a node
//! (`serve.rs`); `append`, `read`, `tail`, `streams`, `status` and `cluster` are clients of a cluster, through
//! `evlog-client`; `bench` drives one (`crate::bench`).

use std::time::Duration;

use clap::Args;
use clap::Parser;
use clap::Subcommand;
use evlog_client::ClientOptions;
use evlog_client::DEFAULT_ENDPOINTS;
use evlog_client::EvlogClient;

mod access;
mod append;
mod backup;
mod client_tls;
mod cluster;
mod compact;
mod consumer;
mod dev_certs;
mod output;
mod read;
mod retention;
pub mod serve;
mod status;
mod streams;
mod tail;
mod verify;

pub use access::AccessArgs;
pub use append::AppendArgs;
pub use backup::BackupArgs;
pub use backup::RestoreArgs;
pub use client_tls::ClientTlsArgs;
pub use cluster::ClusterArgs;
pub use compact::CompactArgs;
pub use consumer::ConsumeArgs;
pub use consumer::ConsumerArgs;
pub use dev_certs::DevCertsArgs;
pub use read::ReadArgs;
pub use retention::DeleteStreamArgs;
pub use retention::StreamMetaArgs;
pub use serve::ServeArgs;
pub use status::StatusArgs;
pub use streams::StreamsArgs;
pub use tail::TailArgs;
pub use verify::VerifyArgs;

#[derive(Debug, Parser)]
#[command(
    name = "evlog",
    version,
    about = "A replicated event log: serve a node, or talk to a cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run a node.
    Serve(ServeArgs),
    /// Append events to a stream (from arguments, or one JSON event per stdin line).
    Append(AppendArgs),
    /// Read events from a stream or the whole log.
    Read(ReadArgs),
    /// Print a stream's or the whole log's events as they arrive, and follow until interrupted.
    Tail(TailArgs),
    /// Show every endpoint's view of the cluster.
    Status(StatusArgs),
    /// Shrink a stopped node's database file after retention or deletions removed events.
    Compact(CompactArgs),
    /// List streams (by name prefix), or show one stream's summary.
    Streams(StreamsArgs),
    /// Show a stream's retention metadata, or set it (--max-count, --max-age-s,
    /// --truncate-before).
    StreamMeta(StreamMetaArgs),
    /// Delete a stream's events (soft: it goes on from its version; --tombstone: for good).
    DeleteStream(DeleteStreamArgs),
    /// See and change the membership; move the leadership.
    Cluster(ClusterArgs),
    /// Manage consumer groups and their dead letters.
    Consumer(ConsumerArgs),
    /// Join a consumer group: print each delivery and ack it (or retry it, --nack-type).
    Consume(ConsumeArgs),
    /// Copy the whole state of a running cluster to a file (`backup verify FILE` checks one).
    Backup(BackupArgs),
    /// Create a node's data directory from a backup (each member of the new cluster from the
    /// same file), or serve a backup read-only in a local sandbox (--sandbox).
    Restore(RestoreArgs),
    /// Check that every member holds the same events (up to the lowest head among them), and
    /// name the first position where one differs.
    Verify(VerifyArgs),
    /// Tokens and roles of a cluster with access control on (`serve --auth`).
    Access(AccessArgs),
    /// Drive a running cluster and report throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Write a throwaway CA and certificates for a local cluster (`scripts/cluster.sh up
    /// --tls`, tests): never for production.
    #[command(hide = true)]
    DevCerts(DevCertsArgs),
}

/// How to reach the cluster; global, so that a command with subcommands (`cluster`,
/// `consumer`) takes them after its subcommand too (`evlog cluster members --json`).
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The cluster's endpoints, comma-separated.
    #[arg(long, global = true, env = "EVLOG_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Total time for the command, retries included.
    #[arg(long, global = true, default_value_t = 15_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl ClientArgs {
    pub(crate) fn client(&self) -> anyhow::Result<EvlogClient> {
        self.client_of(&self.endpoints)
    }

    /// A client of other endpoints (a node the command was pointed at, the members a node
    /// listed), with the same options.
    pub(crate) fn client_of(&self, endpoints: &[String]) -> anyhow::Result<EvlogClient> {
        let options = ClientOptions {
            deadline: Duration::from_millis(self.timeout_ms),
            tls: self.tls.client_tls()?,
            token: self.tls.token.clone(),
            ..ClientOptions::default()
        };
        EvlogClient::new(endpoints, options).map_err(anyhow::Error::msg)
    }
}

/// A failed call, as the CLI reports it.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

impl CliCommand {
    /// How the command reaches the cluster, if it does.
    fn client_args(&self) -> Option<&ClientArgs> {
        match self {
            CliCommand::Append(args) => Some(&args.client),
            CliCommand::Read(args) => Some(&args.client),
            CliCommand::Tail(args) => Some(&args.client),
            CliCommand::Status(args) => Some(&args.client),
            CliCommand::Streams(args) => Some(&args.client),
            CliCommand::StreamMeta(args) => Some(&args.client),
            CliCommand::DeleteStream(args) => Some(&args.client),
            CliCommand::Cluster(args) => Some(&args.client),
            CliCommand::Consumer(args) => Some(&args.client),
            CliCommand::Consume(args) => Some(&args.client),
            CliCommand::Backup(args) => Some(&args.client),
            CliCommand::Verify(args) => Some(&args.client),
            CliCommand::Access(args) => Some(&args.client),
            CliCommand::Serve(_)
            | CliCommand::Compact(_)
            | CliCommand::Restore(_)
            | CliCommand::Bench(_)
            | CliCommand::DevCerts(_) => None,
        }
    }
}

/// Words of a failure to connect (or to speak HTTP/2 over the connection), as tonic, hyper,
/// h2 and rustls put them, and as the commands that report per endpoint do.
const CONNECTION_FAILURES: [&str; 6] = [
    "transport error",
    "h2 protocol error",
    "corrupt message",
    "unreachable",
    "no endpoint answered",
    "no node took",
];

/// The error of a command that failed to reach the cluster, with the reason when it is that a
/// node speaks the other protocol than the command (TLS or plaintext): the Rust client says
/// so for the calls it retries; commands that call nodes one by one (`status`, `tail`) get it
/// here, from a probe of every endpoint (at once, each bounded in time).
async fn explain_connection_failure(
    error: anyhow::Error,
    endpoints: &[String],
    tls: bool,
) -> anyhow::Error {
    let text = format!("{error:#}");
    let explained = text.contains("serves TLS") || text.contains("does not serve TLS");
    if explained || !CONNECTION_FAILURES.iter().any(|words| text.contains(words)) {
        return error;
    }
    let probes = endpoints
        .iter()
        .map(|endpoint| evlog_client::tls::protocol_mismatch(endpoint, tls));
    match futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .next()
    {
        Some(mismatch) => error.context(mismatch),
        None => error,
    }
}

/// Runs a client command (every command but `serve` and `bench`).
pub async fn run_client(command: CliCommand) -> anyhow::Result<()> {
    let reach = command
        .client_args()
        .map(|args| (args.endpoints.clone(), args.tls.ca.is_some()));
    let result = run_client_command(command).await;
    match (result, reach) {
        (Err(error), Some((endpoints, tls))) => {
            Err(explain_connection_failure(error, &endpoints, tls).await)
        }
        (result, _) => result,
    }
}

async fn run_client_command(command: CliCommand) -> anyhow::Result<()> {
    match command {
        CliCommand::Append(args) => append::append(args).await,
        CliCommand::Read(args) => read::read(args).await,
        CliCommand::Tail(args) => tail::tail(args).await,
        CliCommand::Status(args) => status::status(args).await,
        CliCommand::Compact(args) => compact::compact(args),
        CliCommand::Streams(args) => streams::streams(args).await,
        CliCommand::StreamMeta(args) => retention::stream_meta(args).await,
        CliCommand::DeleteStream(args) => retention::delete_stream(args).await,
        CliCommand::Cluster(args) => cluster::cluster(args).await,
        CliCommand::Consumer(args) => consumer::consumer(args).await,
        CliCommand::Consume(args) => consumer::consume(args).await,
        CliCommand::Backup(args) => backup::backup(args).await,
        CliCommand::Restore(args) => backup::restore(args).await,
        CliCommand::Verify(args) => verify::verify(args).await,
        CliCommand::Access(args) => access::access(args).await,
        CliCommand::DevCerts(args) => dev_certs::dev_certs(&args),
        CliCommand::Serve(_) | CliCommand::Bench(_) => {
            anyhow::bail!("not a client command")
        }
    }
}
