//! `evlog backup`, `evlog backup verify` and `evlog restore`: a consistent copy of a running
//! cluster in one file, checked, and installed into new data directories (a new cluster, or a
//! local read-only sandbox).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use clap::Args;
use clap::Subcommand;
use evlog_proto::v1 as pb;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::snapshot::BackupSummary;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use serde::Serialize;

use super::ClientArgs;
use super::status_error;
use crate::config::NodeConfig;
use crate::config::parse_members;
use evlog_raft_store::type_config::MemberNode;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// The file to write (it must not exist; written as FILE.partial, checked, then renamed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Take the backup from this node (default: the first of --endpoints that serves it).
    #[arg(long)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Read a backup file whole and check it (format, every record, order, checksum); print
    /// what it holds.
    Verify { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The new node's data directory (must be empty or absent). With --sandbox: default a
    /// new directory under the system's temporary directory, removed when the sandbox stops.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The node id this data directory is for.
    #[arg(long = "id")]
    pub node_id: Option<u64>,
    /// The restored cluster's members, this node included: 1=HOST:PORT,2=HOST:PORT,... (the
    /// same on every member; each member restores from the same file).
    #[arg(long, default_value = "")]
    pub peers: String,
    /// The restored cluster's name (its nodes' --cluster-id).
    #[arg(long, default_value = "evlog")]
    pub cluster_id: String,
    /// The restored log's epoch [default: the backup's + 1]; it must be above the backup's.
    #[arg(long)]
    pub epoch: Option<u64>,
    /// Serve the backup at once from one local read-only node (appends refused) until
    /// interrupted: replay history into a new version of a consumer before deploying it.
    #[arg(long)]
    pub sandbox: bool,
    /// With --sandbox: the gRPC address to listen on [default: a free port on 127.0.0.1].
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

/// What `evlog backup` prints when done.
#[derive(Serialize)]
struct BackupDone {
    file: PathBuf,
    served_by: u64,
    seconds: f64,
    #[serde(flatten)]
    summary: BackupSummary,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if let Some(BackupCommand::Verify { file }) = args.command {
        let summary = tokio::task::spawn_blocking(move || {
            evlog_raft_store::snapshot::verify_file(&file)
                .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))
        })
        .await??;
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let Some(out) = args.out else {
        anyhow::bail!("give --out FILE (or `evlog backup verify FILE`)");
    };
    if out.exists() {
        anyhow::bail!(
            "{} exists; a backup never overwrites a file (choose another name)",
            out.display()
        );
    }
    let cluster = args.client.client()?;
    // Everything acknowledged before the backup began is at or below the linearizable head
    // (asked of any node): the serving node waits until it has applied it.
    let head = cluster
        .read(pb::ReadRequest {
            target: Some(pb::read_request::Target::All(pb::AllStreams {})),
            max_count: 1,
            direction: pb::Direction::Backward as i32,
            consistency: pb::Consistency::Linearizable as i32,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .head_position;
    let client = match &args.endpoint {
        Some(endpoint) => args.client.client_of(std::slice::from_ref(endpoint))?,
        None => cluster,
    };
    let started = std::time::Instant::now();
    let partial = partial_path(&out);
    let mut last_error = None;
    for index in 0..client.endpoints().len() {
        match take_checked_backup(&client, index, head, &partial).await {
            Ok((served_by, summary)) => {
                std::fs::rename(&partial, &out)?;
                sync_parent(&out)?;
                let done = BackupDone {
                    file: out,
                    served_by,
                    seconds: started.elapsed().as_secs_f64(),
                    summary,
                };
                println!("{}", serde_json::to_string(&done)?);
                return Ok(());
            }
            Err(error) => {
                std::fs::remove_file(&partial).ok();
                eprintln!(
                    "backup from {} failed: {error:#}",
                    client.endpoints()[index]
                );
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no endpoint")))
}

/// Streams a backup from endpoint `index` into `partial` (fsynced) and checks the file whole;
/// returns the serving node and what the file holds.
async fn take_checked_backup(
    client: &evlog_client::EvlogClient,
    index: usize,
    at_least_position: u64,
    partial: &Path,
) -> anyhow::Result<(u64, BackupSummary)> {
    let served_by = take_backup(client, index, at_least_position, partial).await?;
    let checked = partial.to_path_buf();
    let summary =
        tokio::task::spawn_blocking(move || evlog_raft_store::snapshot::verify_file(&checked))
            .await?
            .map_err(|error| anyhow::anyhow!("the backup written does not check: {error}"))?;
    Ok((served_by, summary))
}

/// Streams a backup from endpoint `index` into `partial` (fsynced); returns the serving node.
async fn take_backup(
    client: &evlog_client::EvlogClient,
    index: usize,
    at_least_position: u64,
    partial: &Path,
) -> anyhow::Result<u64> {
    use pb::backup_chunk::Item;
    let mut stream = client
        .maintenance(index)
        .backup(pb::BackupRequest { at_least_position })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(partial)?,
    );
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30} {bytes} of about {total_bytes} ({bytes_per_sec}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut served_by = None;
    let mut written = 0u64;
    loop {
        let chunk = stream.message().await.map_err(status_error)?;
        let Some(chunk) = chunk else {
            anyhow::bail!("the backup stream ended before it finished");
        };
        match chunk.item {
            Some(Item::Started(started)) => {
                served_by = Some(started.served_by);
                bar.set_length(started.estimated_bytes);
                bar.set_message(format!(
                    "node {}, applied index {}, head {}",
                    started.served_by, started.applied_index, started.head_position
                ));
            }
            Some(Item::Data(data)) => {
                if served_by.is_none() {
                    anyhow::bail!("the backup stream sent data before it started");
                }
                file.write_all(&data)?;
                written += data.len() as u64;
                bar.set_position(written);
            }
            Some(Item::Finished(finished)) => {
                if finished.bytes != written {
                    anyhow::bail!("the node sent {} bytes, {written} arrived", finished.bytes);
                }
                break;
            }
            None => anyhow::bail!("an empty backup chunk"),
        }
    }
    bar.finish_and_clear();
    file.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()?;
    served_by.ok_or_else(|| anyhow::anyhow!("the backup stream never started"))
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if args.sandbox {
        return sandbox(args).await;
    }
    let (Some(data_dir), Some(node_id)) = (args.data_dir.clone(), args.node_id) else {
        anyhow::bail!("give --data-dir and --id (and --peers), or --sandbox");
    };
    let members =
        parse_members(&args.peers).map_err(|error| anyhow::anyhow!("--peers: {error}"))?;
    if members.is_empty() {
        anyhow::bail!("give --peers: the restored cluster's members, this node included");
    }
    let summary = restore_store(&args, data_dir.clone(), node_id, members).await?;
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "data_dir": data_dir,
            "node_id": node_id,
            "restored": summary,
        }))?
    );
    Ok(())
}

async fn restore_store(
    args: &RestoreArgs,
    data_dir: PathBuf,
    node_id: u64,
    members: BTreeMap<u64, MemberNode>,
) -> anyhow::Result<BackupSummary> {
    let config = StoreConfig {
        founding: false,
        ..StoreConfig::new(data_dir, node_id, &args.cluster_id)
    };
    let file = args.file.clone();
    let epoch = args.epoch;
    Ok(tokio::task::spawn_blocking(move || {
        evlog_raft_store::engine::restore(&config, &file, &members, epoch)
    })
    .await??)
}

/// Restores into a fresh directory as the only member of a new cluster and serves it,
/// read-only, until interrupted.
async fn sandbox(args: RestoreArgs) -> anyhow::Result<()> {
    // Registered before anything else, so the temporary directory is removed however early
    // the sandbox is stopped.
    let stop = crate::app::shutdown_signal()?;
    crate::telemetry::init(crate::telemetry::LogFormat::Text);
    let temporary = args.data_dir.is_none();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("evlog-sandbox-{}", std::process::id()))
    });
    let node_id = args.node_id.unwrap_or(1);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    let address = listener.local_addr()?.to_string();
    // A sandbox has no peers; its peer port is any free one on the same interface.
    let peer_listener =
        tokio::net::TcpListener::bind(std::net::SocketAddr::new(args.listen.ip(), 0)).await?;
    let peer_address = peer_listener.local_addr()?.to_string();
    let members = BTreeMap::from([(node_id, MemberNode::new(address.clone(), peer_address))]);
    let summary = restore_store(&args, data_dir.clone(), node_id, members.clone()).await?;
    let config = NodeConfig {
        node_id,
        listen_addr: listener.local_addr()?,
        advertise_addr: address.clone(),
        peer_listen_addr: peer_listener.local_addr()?,
        http_listen_addr: None,
        data_dir: data_dir.clone(),
        initial_members: members,
        cluster_id: args.cluster_id.clone(),
        bootstrap: false,
        read_only: true,
        ..NodeConfig::default()
    };
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "sandbox": address,
            "data_dir": data_dir,
            "temporary": temporary,
            "restored": summary,
        }))?
    );
    std::io::stdout().flush()?;
    let listeners = crate::app::Listeners {
        client: listener,
        peer: peer_listener,
    };
    let served = crate::app::run(config, listeners, stop).await;
    if temporary {
        std::fs::remove_dir_all(&data_dir).ok();
    }
    served
}
