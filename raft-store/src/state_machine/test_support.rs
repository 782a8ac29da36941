//! What the state machine's unit tests share.

use bytes::Bytes;

use crate::types::AppendCommand;
use crate::types::NewEvent;

/// An append of `events` one-byte events to stream `s`, at timestamp 99, fingerprint 7.
pub(crate) fn command(events: usize, expected_version: Option<u64>) -> AppendCommand {
    AppendCommand {
        stream: "s".to_string(),
        events: (0..events)
            .map(|i| NewEvent {
                id: format!("e{i}"),
                event_type: "T".to_string(),
                content_type: String::new(),
                data: Bytes::from(vec![i as u8]),
                metadata: vec![],
                encoding: Default::default(),
            })
            .collect(),
        expected_version,
        idempotency_key: None,
        timestamp_ms: 99,
        request_fingerprint: 7,
        idempotency: Default::default(),
    }
}
