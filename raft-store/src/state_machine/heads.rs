//! The writer's cache of stream summaries: an append asks for its stream's version and first
//! position, which the stream index answers with two B-tree descents; the streams appended to
//! lately answer from memory instead.
//!
//! It is only ever a copy of committed-or-committing state: filled from the index on a miss,
//! moved along by every event the writer puts, and emptied when a snapshot replaces the state
//! machine. A failed write stops the store for good (fail-stop), so the cache never outlives a
//! transaction that did not commit. Bounded: past [`MAX_STREAM_HEADS`] streams it starts over.

use std::collections::HashMap;

use crate::types::RecordedEvent;
use crate::types::StreamInfo;

/// Most streams remembered (about 2-4 MiB with stream names of tens of bytes).
pub const MAX_STREAM_HEADS: usize = 16_384;

#[derive(Debug, Default)]
pub struct StreamHeads {
    heads: HashMap<String, StreamInfo>,
}

impl StreamHeads {
    /// `stream`'s summary when it is remembered.
    pub fn get(&self, stream: &str) -> Option<StreamInfo> {
        self.heads.get(stream).copied()
    }

    /// Remembers `stream`'s summary as the index holds it.
    pub fn remember(&mut self, stream: &str, info: StreamInfo) {
        if self.heads.len() >= MAX_STREAM_HEADS && !self.heads.contains_key(stream) {
            self.heads.clear();
        }
        self.heads.insert(stream.to_string(), info);
    }

    /// Moves `event`'s stream along: its summary after the event is stored.
    pub fn put(&mut self, event: &RecordedEvent) {
        if event.stream_version == 1 {
            self.remember(
                &event.stream,
                StreamInfo {
                    version: 1,
                    first_position: event.position,
                    last_position: event.position,
                },
            );
            return;
        }
        match self.heads.get_mut(event.stream.as_str()) {
            Some(info) if info.version + 1 == event.stream_version => {
                info.version = event.stream_version;
                info.last_position = event.position;
            }
            // Not remembered, or not the next version (never expected): ask the index next.
            Some(_) => {
                self.heads.remove(event.stream.as_str());
            }
            None => {}
        }
    }

    /// Forgets everything (the state machine was replaced).
    pub fn clear(&mut self) {
        self.heads.clear();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(stream: &str, stream_version: u64, position: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: stream.to_string(),
            stream_version,
            id: String::new(),
            event_type: String::new(),
            content_type: String::new(),
            data: Bytes::new(),
            metadata: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn heads_follow_the_events_put() {
        let mut heads = StreamHeads::default();
        heads.put(&event("a", 1, 10));
        heads.put(&event("a", 2, 12));
        assert_eq!(
            heads.get("a"),
            Some(StreamInfo {
                version: 2,
                first_position: 10,
                last_position: 12
            })
        );
        // A stream first seen past its first event is not guessed at.
        heads.put(&event("b", 5, 13));
        assert_eq!(heads.get("b"), None);
        // A gap in versions (never expected) forgets the stream rather than lie.
        heads.put(&event("a", 4, 14));
        assert_eq!(heads.get("a"), None);
    }

    #[test]
    fn it_stays_bounded() {
        let mut heads = StreamHeads::default();
        for n in 0..(MAX_STREAM_HEADS as u64 * 2 + 5) {
            heads.put(&event(&format!("s-{n}"), 1, n + 1));
            assert!(heads.heads.len() <= MAX_STREAM_HEADS);
        }
    }
}
