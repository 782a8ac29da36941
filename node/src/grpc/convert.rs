//! Wire (protobuf) types to domain types and back, validating everything a client sends.

use evlog_proto::v1 as pb;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::NewEvent;
use evlog_raft_store::types::RecordedEvent;
use evlog_raft_store::types::StreamInfo;

use crate::config::Limits;
use crate::error::NodeError;

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 200;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// Checks a stream name: 1-200 bytes of `A-Z a-z 0-9 _ - . : /`; `$` names are the system's.
pub fn validate_stream_name(stream: &str) -> Result<(), NodeError> {
    if stream.is_empty() {
        return Err(NodeError::InvalidArgument(
            "stream name is empty".to_string(),
        ));
    }
    if stream.len() > MAX_STREAM_NAME_BYTES {
        return Err(NodeError::InvalidArgument(format!(
            "stream name is {} bytes; the limit is {MAX_STREAM_NAME_BYTES}",
            stream.len()
        )));
    }
    if stream.starts_with('$') {
        return Err(NodeError::InvalidArgument(format!(
            "stream name {stream:?} begins with '$', which is reserved for system streams"
        )));
    }
    if let Some(bad) = stream
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')))
    {
        return Err(NodeError::InvalidArgument(format!(
            "stream name {stream:?} contains {bad:?}; allowed are A-Z a-z 0-9 _ - . : /"
        )));
    }
    Ok(())
}

/// A 64-bit FNV-1a hash of the request as the client sent it (event ids as given, empty or
/// not; metadata sorted). A retry hashes the same; another request under the same key does not.
pub fn request_fingerprint(request: &pb::AppendRequest) -> u64 {
    struct Fnv(u64);
    impl Fnv {
        fn bytes(&mut self, bytes: &[u8]) {
            for part in [&(bytes.len() as u64).to_le_bytes()[..], bytes] {
                for byte in part {
                    self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
    }
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    hash.bytes(request.stream.as_bytes());
    hash.bytes(&request.expected_version.map_or([0xff; 9], |v| {
        let mut tagged = [0u8; 9];
        tagged[1..].copy_from_slice(&v.to_le_bytes());
        tagged
    }));
    for event in &request.events {
        hash.bytes(event.id.as_bytes());
        hash.bytes(event.r#type.as_bytes());
        hash.bytes(event.content_type.as_bytes());
        hash.bytes(&event.data);
        let mut metadata: Vec<_> = event.metadata.iter().collect();
        metadata.sort();
        for (key, value) in metadata {
            hash.bytes(key.as_bytes());
            hash.bytes(value.as_bytes());
        }
    }
    hash.0
}

/// Turns an append request into a command, enforcing the limits. Empty event ids become
/// UUIDv7s; metadata is sorted so the encoding is deterministic.
pub fn append_command(
    request: pb::AppendRequest,
    limits: &Limits,
    timestamp_ms: u64,
) -> Result<AppendCommand, NodeError> {
    validate_stream_name(&request.stream)?;
    let request_fingerprint = request_fingerprint(&request);
    if request.events.is_empty() {
        return Err(NodeError::InvalidArgument(
            "an append needs at least one event".to_string(),
        ));
    }
    if request.events.len() > limits.max_events_per_append {
        return Err(NodeError::TooLarge(format!(
            "{} events in one append; the limit is {}",
            request.events.len(),
            limits.max_events_per_append
        )));
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(NodeError::InvalidArgument(format!(
            "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    let mut total = 0usize;
    let mut events = Vec::with_capacity(request.events.len());
    for (index, event) in request.events.into_iter().enumerate() {
        let size = event.data.len()
            + event.id.len()
            + event.r#type.len()
            + event.content_type.len()
            + event
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > limits.max_event_bytes {
            return Err(NodeError::TooLarge(format!(
                "event {index} is {size} bytes; the limit is {} bytes",
                limits.max_event_bytes
            )));
        }
        total += size;
        if total > limits.max_append_bytes {
            return Err(NodeError::TooLarge(format!(
                "the append's events reach {total} bytes at event {index}; the limit is {} bytes \
                 per append",
                limits.max_append_bytes
            )));
        }
        if event.r#type.is_empty() {
            return Err(NodeError::InvalidArgument(format!(
                "event {index} has no type"
            )));
        }
        let id = if event.id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            event.id
        };
        let mut metadata: Vec<(String, String)> = event.metadata.into_iter().collect();
        metadata.sort();
        events.push(NewEvent {
            id,
            event_type: event.r#type,
            content_type: event.content_type,
            data: event.data,
            metadata,
        });
    }
    Ok(AppendCommand {
        stream: request.stream,
        events,
        expected_version: request.expected_version,
        idempotency_key: request.idempotency_key,
        timestamp_ms,
        request_fingerprint,
        idempotency: limits.idempotency,
    })
}

pub fn stream_summary(stream: String, info: StreamInfo) -> pb::StreamSummary {
    pb::StreamSummary {
        stream,
        version: info.version,
        first_position: info.first_position,
        last_position: info.last_position,
    }
}

pub fn recorded_event(event: RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        position: event.position,
        stream: event.stream,
        stream_version: event.stream_version,
        id: event.id,
        r#type: event.event_type,
        content_type: event.content_type,
        data: event.data,
        metadata: event.metadata.into_iter().collect(),
        timestamp_ms: event.timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: usize) -> pb::EventData {
        pb::EventData {
            id: String::new(),
            r#type: "T".to_string(),
            content_type: String::new(),
            data: vec![0u8; data].into(),
            metadata: Default::default(),
        }
    }

    fn request(stream: &str, events: Vec<pb::EventData>) -> pb::AppendRequest {
        pb::AppendRequest {
            stream: stream.to_string(),
            events,
            expected_version: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn stream_names_are_checked() {
        assert!(validate_stream_name("orders-42:eu/1.x_y").is_ok());
        for bad in ["", "$system", "has space", "é", &"x".repeat(201)] {
            assert!(
                matches!(
                    validate_stream_name(bad),
                    Err(NodeError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_event_bytes: 10,
            max_events_per_append: 2,
            max_append_bytes: 15,
            ..Limits::default()
        };
        assert!(append_command(request("s", vec![event(5)]), &limits, 0).is_ok());
        assert!(matches!(
            append_command(request("s", vec![event(11)]), &limits, 0),
            Err(NodeError::TooLarge(_))
        ));
        assert!(matches!(
            append_command(request("s", vec![event(1); 3]), &limits, 0),
            Err(NodeError::TooLarge(_))
        ));
        assert!(matches!(
            append_command(request("s", vec![event(8), event(8)]), &limits, 0),
            Err(NodeError::TooLarge(_))
        ));
        assert!(matches!(
            append_command(request("s", vec![]), &limits, 0),
            Err(NodeError::InvalidArgument(_))
        ));
    }

    #[test]
    fn fingerprints_tell_retries_from_other_requests() {
        let a = request("s", vec![event(3)]);
        assert_eq!(request_fingerprint(&a), request_fingerprint(&a.clone()));
        assert_ne!(
            request_fingerprint(&a),
            request_fingerprint(&request("s", vec![event(4)]))
        );
        assert_ne!(
            request_fingerprint(&a),
            request_fingerprint(&request("t", vec![event(3)]))
        );
        let mut expecting = a.clone();
        expecting.expected_version = Some(0);
        assert_ne!(request_fingerprint(&a), request_fingerprint(&expecting));
    }

    #[test]
    fn empty_ids_get_a_uuid_and_metadata_is_sorted() {
        let mut event = event(1);
        event.metadata.insert("b".to_string(), "2".to_string());
        event.metadata.insert("a".to_string(), "1".to_string());
        let command =
            append_command(request("s", vec![event]), &Limits::default(), 7).expect("valid");
        assert_eq!(command.events[0].id.len(), 36);
        assert_eq!(command.events[0].metadata[0].0, "a");
        assert_eq!(command.timestamp_ms, 7);
    }
}
