//! `evlog append`: events from the arguments, or one JSON event per stdin line.

use std::io::BufRead;

use clap::Args;
use evlog_proto::v1 as pb;

use super::ClientArgs;
use super::status_error;

#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The stream to append to.
    pub stream: String,
    /// Event payloads, one event each. None: read JSON events from stdin, one per line, e.g.
    /// {"type":"OrderPlaced","data":{"total":3},"id":"…","metadata":{"k":"v"}}.
    pub data: Vec<String>,
    /// The type of events given as arguments.
    #[arg(long = "type", default_value = "Event")]
    pub event_type: String,
    /// The content type of events given as arguments.
    #[arg(long, default_value = "text/plain")]
    pub content_type: String,
    /// Append only if the stream has exactly this many events (0: it must not exist).
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Retries with the same key append once.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Parses one stdin line into an event.
fn parse_event_line(line: &str) -> anyhow::Result<pb::EventData> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|error| anyhow::anyhow!("not JSON ({error}): {line}"))?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let data = match value.get("data") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let content_type = match (text("content_type"), value.get("data")) {
        (given, _) if !given.is_empty() => given,
        (_, Some(serde_json::Value::String(_))) | (_, None) => "text/plain".to_string(),
        _ => "application/json".to_string(),
    };
    let metadata = value
        .get("metadata")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let event_type = text("type");
    Ok(pb::EventData {
        id: text("id"),
        r#type: if event_type.is_empty() {
            "Event".to_string()
        } else {
            event_type
        },
        content_type,
        data: data.into(),
        metadata,
    })
}

pub async fn append(args: AppendArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let events = if args.data.is_empty() {
        let mut events = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                events.push(parse_event_line(&line)?);
            }
        }
        events
    } else {
        args.data
            .iter()
            .map(|data| pb::EventData {
                id: String::new(),
                r#type: args.event_type.clone(),
                content_type: args.content_type.clone(),
                data: data.clone().into_bytes().into(),
                metadata: Default::default(),
            })
            .collect()
    };
    let request = pb::AppendRequest {
        stream: args.stream.clone(),
        events,
        expected_version: args.expected_version,
        idempotency_key: args.idempotency_key.clone(),
    };
    let response = client.append(request).await.map_err(status_error)?;
    let receipt = response.receipt.unwrap_or_default();
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "stream": args.stream,
                "first_position": response.first_position,
                "last_position": response.last_position,
                "stream_version": response.stream_version,
                "deduplicated": response.deduplicated,
                "receipt": {"term": receipt.term, "log_index": receipt.log_index, "leader_id": receipt.leader_id},
            })
        );
    } else {
        println!(
            "appended to {}: positions {}..={}, stream version {}{} (log index {}, term {}, leader {})",
            args.stream,
            response.first_position,
            response.last_position,
            response.stream_version,
            if response.deduplicated {
                ", deduplicated: already appended"
            } else {
                ""
            },
            receipt.log_index,
            receipt.term,
            receipt.leader_id
        );
    }
    Ok(())
}
