//! `evlog stream-meta` (show or set a stream's retention) and `evlog delete-stream`.

use clap::Args;
use evlog_proto::v1 as pb;

use super::ClientArgs;
use super::status_error;

#[derive(Debug, Args)]
pub struct StreamMetaArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub stream: String,
    /// Keep only the latest N events.
    #[arg(long)]
    pub max_count: Option<u64>,
    /// Remove events recorded more than this many seconds ago.
    #[arg(long)]
    pub max_age_s: Option<u64>,
    /// Remove the versions below this one.
    #[arg(long)]
    pub truncate_before: Option<u64>,
    /// Set only if the stream's metadata version is this (0: none was set); otherwise the
    /// change is refused with the current one.
    #[arg(long)]
    pub expected_metadata_version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DeleteStreamArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub stream: String,
    /// Delete only if the stream is at this version.
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Delete for good: every later append is refused (a soft delete lets the stream go on
    /// from its version).
    #[arg(long)]
    pub tombstone: bool,
}

/// Shows the metadata, or sets it when a limit is given (every limit not given is unset).
pub async fn stream_meta(args: StreamMetaArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let set =
        args.max_count.is_some() || args.max_age_s.is_some() || args.truncate_before.is_some();
    let meta = if set {
        let request = pb::SetStreamMetadataRequest {
            stream: args.stream.clone(),
            expected_metadata_version: args.expected_metadata_version,
            retention: Some(pb::StreamRetention {
                max_age_s: args.max_age_s,
                max_count: args.max_count,
                truncate_before: args.truncate_before,
            }),
        };
        client
            .event_log_call(request, |mut grpc, request| async move {
                grpc.set_stream_metadata(request).await
            })
            .await
    } else {
        let request = pb::GetStreamMetadataRequest {
            stream: args.stream.clone(),
            consistency: pb::Consistency::Linearizable as i32,
            at_least_position: 0,
        };
        client
            .event_log_call(request, |mut grpc, request| async move {
                grpc.get_stream_metadata(request).await
            })
            .await
    }
    .map_err(status_error)?;
    let retention = meta.retention.unwrap_or_default();
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "stream": meta.stream,
                "metadata_version": meta.metadata_version,
                "max_age_s": retention.max_age_s,
                "max_count": retention.max_count,
                "truncate_before": retention.truncate_before,
                "first_version": meta.first_version,
                "tombstoned": meta.tombstoned,
            })
        );
    } else {
        let limit =
            |value: Option<u64>| value.map_or("none".to_string(), |value| value.to_string());
        println!(
            "{}: metadata version {}, max_age_s {}, max_count {}, truncate_before {}, first \
             retained version {}{}",
            meta.stream,
            meta.metadata_version,
            limit(retention.max_age_s),
            limit(retention.max_count),
            limit(retention.truncate_before),
            meta.first_version,
            if meta.tombstoned { ", tombstoned" } else { "" }
        );
    }
    Ok(())
}

pub async fn delete_stream(args: DeleteStreamArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let request = pb::DeleteStreamRequest {
        stream: args.stream.clone(),
        expected_version: args.expected_version,
        tombstone: args.tombstone,
    };
    let deleted = client
        .event_log_call(request, |mut grpc, request| async move {
            grpc.delete_stream(request).await
        })
        .await
        .map_err(status_error)?;
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "stream": args.stream,
                "version": deleted.version,
                "position": deleted.position,
                "tombstone": args.tombstone,
            })
        );
    } else {
        println!(
            "deleted {} at version {}{} ($stream-deleted at position {})",
            args.stream,
            deleted.version,
            if args.tombstone { " for good" } else { "" },
            deleted.position
        );
    }
    Ok(())
}
