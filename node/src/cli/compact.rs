//! `evlog compact --data-dir DIR`: shrinks a stopped node's database file after retention or
//! deletions removed events (see `evlog_raft_store::engine::compact`). A running node's
//! database is refused (redb locks it).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The stopped node's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let compacted = evlog_raft_store::engine::compact::compact_offline(&args.data_dir)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "data_dir": args.data_dir.display().to_string(),
                "bytes_before": compacted.bytes_before,
                "bytes_after": compacted.bytes_after,
                "rows_deleted": compacted.rows_deleted,
            })
        );
    } else {
        println!(
            "compacted {}: {} -> {} bytes ({} rows of removed events deleted first)",
            args.data_dir.display(),
            compacted.bytes_before,
            compacted.bytes_after,
            compacted.rows_deleted
        );
    }
    Ok(())
}
