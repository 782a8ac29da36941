//! An append as the service sees it: the request as the client sent it (domain types), its
//! validation against the limits, its idempotency fingerprint, and the command it becomes.
//! Pure functions, unit-tested here.

use bytes::Bytes;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::AppendOutcome;
use evlog_raft_store::types::DataEncoding;
use evlog_raft_store::types::NewEvent;

use crate::config::Limits;
use crate::raft::receipt::Receipt;
use crate::service::error::ServiceError;

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 200;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// An append request as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    pub stream: String,
    pub events: Vec<EventData>,
    /// `None`: any version; `Some(0)`: the stream has no events; `Some(n)`: exactly n.
    pub expected_version: Option<u64>,
    pub idempotency_key: Option<String>,
}

/// An event as the client sent it (an empty id gets a UUIDv7 when the command is built).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventData {
    pub id: String,
    pub event_type: String,
    pub content_type: String,
    pub data: Bytes,
    /// Sorted by key.
    pub metadata: Vec<(String, String)>,
}

impl EventData {
    /// What the event weighs against the event and append limits.
    pub fn size(&self) -> usize {
        evlog_raft_store::types::event_size(
            &self.data,
            &self.id,
            &self.event_type,
            &self.content_type,
            &self.metadata,
        )
    }
}

impl AppendRequest {
    /// What the request weighs: its events' sizes.
    pub fn size(&self) -> usize {
        self.events.iter().map(EventData::size).sum()
    }
}

/// A successful append: what applying it decided, and where it landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub outcome: AppendOutcome,
    pub receipt: Receipt,
}

/// Checks a stream name: 1-200 bytes of `A-Z a-z 0-9 _ - . : /`; `$` names are the system's.
pub fn validate_stream_name(stream: &str) -> Result<(), ServiceError> {
    if stream.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "stream name is empty".to_string(),
        ));
    }
    if stream.len() > MAX_STREAM_NAME_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "stream name is {} bytes; the limit is {MAX_STREAM_NAME_BYTES}",
            stream.len()
        )));
    }
    if stream.starts_with('$') {
        return Err(ServiceError::InvalidArgument(format!(
            "stream name {stream:?} begins with '$', which is reserved for system streams"
        )));
    }
    if let Some(bad) = stream
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')))
    {
        return Err(ServiceError::InvalidArgument(format!(
            "stream name {stream:?} contains {bad:?}; allowed are A-Z a-z 0-9 _ - . : /"
        )));
    }
    Ok(())
}

/// Checks the name of a stream to read: a client stream's, or a system stream's (`$` and a
/// name, e.g. `$deleted-streams`).
pub fn validate_stream_name_to_read(stream: &str) -> Result<(), ServiceError> {
    match stream.strip_prefix('$') {
        Some(rest) if !rest.is_empty() && !rest.starts_with('$') => validate_stream_name(rest),
        _ => validate_stream_name(stream),
    }
}

/// Checks an append against the limits (stream name, event count and sizes, types, key),
/// before anything else is done with it: a follower refuses a bad request without a round
/// trip to the leader.
pub fn validate(request: &AppendRequest, limits: &Limits) -> Result<(), ServiceError> {
    validate_stream_name(&request.stream)?;
    if request.events.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "an append needs at least one event".to_string(),
        ));
    }
    if request.events.len() > limits.max_events_per_append {
        return Err(ServiceError::TooLarge(format!(
            "{} events in one append; the limit is {}",
            request.events.len(),
            limits.max_events_per_append
        )));
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(ServiceError::InvalidArgument(format!(
            "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    let mut total = 0usize;
    for (index, event) in request.events.iter().enumerate() {
        let size = event.size();
        if size > limits.max_event_bytes {
            return Err(ServiceError::TooLarge(format!(
                "event {index} is {size} bytes; the limit is {} bytes",
                limits.max_event_bytes
            )));
        }
        total += size;
        if total > limits.max_append_bytes {
            return Err(ServiceError::TooLarge(format!(
                "the append's events reach {total} bytes at event {index}; the limit is {} \
                 bytes per append",
                limits.max_append_bytes
            )));
        }
        if event.event_type.is_empty() {
            return Err(ServiceError::InvalidArgument(format!(
                "event {index} has no type"
            )));
        }
    }
    Ok(())
}

/// A 64-bit FNV-1a hash of the request as the client sent it (event ids as given, empty or
/// not; metadata sorted). A retry hashes the same, on any node and any version of evlog;
/// another request under the same key does not.
pub fn request_fingerprint(request: &AppendRequest) -> u64 {
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
        hash.bytes(event.event_type.as_bytes());
        hash.bytes(event.content_type.as_bytes());
        hash.bytes(&event.data);
        for (key, value) in &event.metadata {
            hash.bytes(key.as_bytes());
            hash.bytes(value.as_bytes());
        }
    }
    hash.0
}

/// The command a validated request becomes on the leader, proposed at `timestamp_ms`, each
/// event's data as `encode` gives it. Empty event ids become UUIDv7s (a fresh one on every
/// call: a command refused before it reached the log is built again).
pub fn command(
    request: &AppendRequest,
    limits: &Limits,
    timestamp_ms: u64,
    encode: impl Fn(&Bytes) -> (Bytes, DataEncoding),
) -> AppendCommand {
    AppendCommand {
        stream: request.stream.clone(),
        events: request
            .events
            .iter()
            .map(|event| {
                let (data, encoding) = encode(&event.data);
                NewEvent {
                    id: if event.id.is_empty() {
                        uuid::Uuid::now_v7().to_string()
                    } else {
                        event.id.clone()
                    },
                    event_type: event.event_type.clone(),
                    content_type: event.content_type.clone(),
                    data,
                    metadata: event.metadata.clone(),
                    encoding,
                }
            })
            .collect(),
        expected_version: request.expected_version,
        idempotency_key: request.idempotency_key.clone(),
        timestamp_ms,
        request_fingerprint: request_fingerprint(request),
        idempotency: limits.idempotency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: usize) -> EventData {
        EventData {
            id: String::new(),
            event_type: "T".to_string(),
            content_type: String::new(),
            data: vec![0u8; data].into(),
            metadata: Vec::new(),
        }
    }

    fn request(stream: &str, events: Vec<EventData>) -> AppendRequest {
        AppendRequest {
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
                    Err(ServiceError::InvalidArgument(_))
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
        assert!(validate(&request("s", vec![event(5)]), &limits).is_ok());
        assert!(matches!(
            validate(&request("s", vec![event(11)]), &limits),
            Err(ServiceError::TooLarge(_))
        ));
        assert!(matches!(
            validate(&request("s", vec![event(1); 3]), &limits),
            Err(ServiceError::TooLarge(_))
        ));
        assert!(matches!(
            validate(&request("s", vec![event(8), event(8)]), &limits),
            Err(ServiceError::TooLarge(_))
        ));
        assert!(matches!(
            validate(&request("s", vec![]), &limits),
            Err(ServiceError::InvalidArgument(_))
        ));
        let mut untyped = event(1);
        untyped.event_type.clear();
        assert!(matches!(
            validate(&request("s", vec![untyped]), &limits),
            Err(ServiceError::InvalidArgument(_))
        ));
        let mut keyed = request("s", vec![event(1)]);
        keyed.idempotency_key = Some(String::new());
        assert!(matches!(
            validate(&keyed, &limits),
            Err(ServiceError::InvalidArgument(_))
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

    /// The fingerprint is stored with every key and compared across nodes and versions: it
    /// must not change. The value is FNV-1a over the length-prefixed fields in this order, as
    /// every release has computed it (worked out by hand for this request).
    #[test]
    fn the_fingerprint_is_stable_across_versions() {
        let mut with_metadata = event(3);
        with_metadata.id = "e-1".to_string();
        with_metadata.content_type = "text/plain".to_string();
        with_metadata.metadata = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ];
        let mut request = request("orders-1", vec![with_metadata, event(0)]);
        request.expected_version = Some(7);
        request.idempotency_key = Some("k".to_string());
        assert_eq!(request_fingerprint(&request), 0x0407_6ef5_ef68_a4b9);
    }

    #[test]
    fn empty_ids_get_a_uuid_and_the_rest_is_kept() {
        let mut event = event(1);
        event.metadata = vec![("a".to_string(), "1".to_string())];
        let command = command(&request("s", vec![event]), &Limits::default(), 7, |data| {
            (data.clone(), DataEncoding::Raw)
        });
        assert_eq!(command.events[0].id.len(), 36);
        assert_eq!(
            command.events[0].metadata,
            vec![("a".to_string(), "1".to_string())]
        );
        assert_eq!(command.timestamp_ms, 7);
    }
}
