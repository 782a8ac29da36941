//! What the store's writer remembers of the state machine between batches, so that deciding
//! an append reads fewer B-tree pages: the summaries of the streams appended to lately
//! ([`StreamHeads`]; the stream index answers with two descents), and the oldest idempotency
//! key ([`OldestKey`]; every keyed append checks whether it expires, a range seek and a get).
//!
//! It is only ever a copy of committed-or-committing state: filled from the tables on a miss,
//! moved along by every mutation the writer executes, and emptied when a snapshot replaces the
//! state machine. A failed write stops the store for good (fail-stop), so it never outlives a
//! transaction that did not commit; replicas decide exactly as without it.

use std::collections::HashMap;

use crate::types::IdempotentRecord;
use crate::types::RecordedEvent;
use crate::types::StreamInfo;

/// The writer's memory of the state machine (see the module's text).
#[derive(Debug, Default)]
pub struct WriterCache {
    pub streams: StreamHeads,
    pub oldest_key: OldestKey,
    pub reclaim: super::reclaim::ReclaimState,
}

impl WriterCache {
    /// Forgets everything (the state machine was replaced).
    pub fn clear(&mut self) {
        self.streams.clear();
        self.oldest_key.forget();
        self.reclaim = Default::default();
    }
}

/// The first key of the idempotency expiry order: its place, the key and its record.
pub type Oldest = Option<(u64, String, IdempotentRecord)>;

/// The first key of the expiry order as the tables hold it, when known.
#[derive(Debug, Default)]
pub struct OldestKey {
    known: Option<Oldest>,
}

impl OldestKey {
    /// The oldest key (`Some(None)`: there is none), when known.
    pub fn get(&self) -> Option<&Oldest> {
        self.known.as_ref()
    }

    /// Remembers what the tables hold first.
    pub fn set(&mut self, oldest: Oldest) {
        self.known = Some(oldest);
    }

    pub fn forget(&mut self) {
        self.known = None;
    }

    /// A key was put at place `order`, replacing its own place `replaces` (if any): the oldest
    /// changes when there was none, when it was the place replaced, or (never expected: places
    /// only grow) when the new place sorts first.
    pub fn put(&mut self, order: u64, replaces: Option<u64>) {
        match &self.known {
            Some(None) => self.forget(),
            Some(Some((oldest, _, _))) if Some(*oldest) == replaces || order < *oldest => {
                self.forget()
            }
            _ => {}
        }
    }

    /// The key at place `order` expired: if it was the oldest, the next one is not known.
    pub fn expire(&mut self, order: u64) {
        if let Some(Some((oldest, _, _))) = &self.known
            && *oldest == order
        {
            self.forget();
        }
    }
}

/// Most streams remembered (about 2-4 MiB with stream names of tens of bytes).
pub const MAX_STREAM_HEADS: usize = 16_384;

/// Stream summaries, at most [`MAX_STREAM_HEADS`] (past it the map starts over).
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
                    first_version: 1,
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
                first_version: 1,
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
    fn the_oldest_key_is_forgotten_when_it_may_have_changed() {
        let record = IdempotentRecord {
            fingerprint: 0,
            outcome: crate::types::AppendOutcome {
                first_position: 1,
                last_position: 1,
                stream_version: 1,
                deduplicated: false,
            },
            order: 5,
            timestamp_ms: 0,
        };
        let mut oldest = OldestKey::default();
        oldest.set(None);
        oldest.put(9, None);
        assert!(oldest.get().is_none(), "the first key put is the oldest");
        oldest.set(Some((5, "k".to_string(), record)));
        oldest.put(9, None);
        oldest.expire(7);
        assert!(
            oldest.get().is_some(),
            "a newer key and another's expiry leave it"
        );
        oldest.put(10, Some(5));
        assert!(oldest.get().is_none(), "the oldest key took a new place");
        oldest.set(Some((5, "k".to_string(), record)));
        oldest.expire(5);
        assert!(oldest.get().is_none(), "the oldest key expired");
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
