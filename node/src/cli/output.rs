//! Output of the client commands: events as lines for people or as JSON.

use evlog_proto::v1 as pb;

/// Writes `event` as one line: a JSON object with `json`, else `#position stream@version type
/// data` for people.
pub(super) fn write_event(
    out: &mut impl std::io::Write,
    event: &pb::RecordedEvent,
    json: bool,
) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", event_json(event))
    } else {
        writeln!(
            out,
            "#{:<6} {}@{} {} {}",
            event.position,
            event.stream,
            event.stream_version,
            event.r#type,
            String::from_utf8_lossy(&event.data)
        )
    }
}

pub(super) fn event_json(event: &pb::RecordedEvent) -> serde_json::Value {
    let data = match std::str::from_utf8(&event.data) {
        Ok(text) => serde_json::from_str(text)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
        Err(_) => serde_json::Value::String(format!("<{} bytes>", event.data.len())),
    };
    serde_json::json!({
        "position": event.position,
        "stream": event.stream,
        "stream_version": event.stream_version,
        "id": event.id,
        "type": event.r#type,
        "content_type": event.content_type,
        "data": data,
        "metadata": event.metadata,
        "timestamp_ms": event.timestamp_ms,
    })
}

pub(super) fn summary_json(stream: &pb::StreamSummary) -> serde_json::Value {
    serde_json::json!({
        "stream": stream.stream,
        "version": stream.version,
        "first_version": stream.first_version,
        "first_position": stream.first_position,
        "last_position": stream.last_position,
    })
}
