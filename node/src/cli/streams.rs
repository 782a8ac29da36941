//! `evlog streams`: stream summaries by name prefix, or one stream's.

use std::io::Write;

use clap::Args;
use evlog_proto::v1 as pb;

use super::ClientArgs;
use super::output::summary_json;
use super::status_error;

#[derive(Debug, Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show this stream's summary instead of a list.
    pub stream: Option<String>,
    /// List only streams whose names start with this.
    #[arg(long, default_value = "", conflicts_with = "stream")]
    pub prefix: String,
    /// Most streams to list (pages through them).
    #[arg(long, default_value_t = 1_000)]
    pub max_count: u64,
}

pub async fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(stream) = args.stream {
        let response = client
            .get_stream(pb::GetStreamRequest {
                stream,
                consistency: pb::Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .map_err(status_error)?;
        let summary = response.stream.unwrap_or_default();
        if args.client.json {
            writeln!(out, "{}", summary_json(&summary))?;
        } else {
            writeln!(
                out,
                "{}: version {} (first retained {}), positions {}..{}",
                summary.stream,
                summary.version,
                summary.first_version,
                summary.first_position,
                summary.last_position
            )?;
        }
        return Ok(());
    }
    let mut after = None;
    let mut printed = 0u64;
    // Bounded: at most max_count streams, in pages of at most 1,000.
    while printed < args.max_count {
        let page_size = (args.max_count - printed).min(1_000) as u32;
        let response = client
            .list_streams(pb::ListStreamsRequest {
                prefix: args.prefix.clone(),
                after: after.clone(),
                max_count: page_size,
                consistency: pb::Consistency::Linearizable as i32,
                at_least_position: 0,
            })
            .await
            .map_err(status_error)?;
        for summary in &response.streams {
            if args.client.json {
                writeln!(out, "{}", summary_json(summary))?;
            } else {
                writeln!(
                    out,
                    "{:<40} version {:<8} positions {}..{}",
                    summary.stream, summary.version, summary.first_position, summary.last_position
                )?;
            }
        }
        printed += response.streams.len() as u64;
        match response.next_after {
            Some(next) if !response.streams.is_empty() => after = Some(next),
            _ => break,
        }
    }
    Ok(())
}
