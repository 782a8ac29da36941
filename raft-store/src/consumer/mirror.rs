//! The leader's copy of one group: its record and its tracked events, kept in step with the
//! store by running the same decisions over it ([`super::decide::decide`]), and the questions
//! the dispatcher asks of it (what may be delivered now).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use super::ConsumerMutation;
use super::ConsumerRecord;
use super::ConsumerView;
use super::DeadLetterRecord;
use super::DispatchMode;
use super::PendingRecord;
use super::PendingState;
use crate::error::StoreError;

/// One group as its dispatcher sees it.
#[derive(Clone, Debug)]
pub struct GroupMirror {
    pub record: ConsumerRecord,
    pending: BTreeMap<u64, PendingRecord>,
    /// Tracked keys per stream (to keep KEYED's one unsettled event per stream).
    by_stream: HashMap<String, BTreeSet<u64>>,
    /// Per stream, how many of its tracked events are delivered and unsettled.
    delivered: HashMap<String, usize>,
}

impl GroupMirror {
    pub fn new(record: ConsumerRecord, pending: Vec<(u64, PendingRecord)>) -> Self {
        let mut mirror = Self {
            record,
            pending: BTreeMap::new(),
            by_stream: HashMap::new(),
            delivered: HashMap::new(),
        };
        for (key, record) in pending {
            mirror.put(key, record);
        }
        mirror
    }

    fn put(&mut self, key: u64, record: PendingRecord) {
        self.unindex(key);
        self.by_stream
            .entry(record.stream.clone())
            .or_default()
            .insert(key);
        if record.state == PendingState::Delivered {
            *self.delivered.entry(record.stream.clone()).or_default() += 1;
        }
        self.pending.insert(key, record);
    }

    /// Takes the record at `key` out of the per-stream indexes (it stays in `pending`).
    fn unindex(&mut self, key: u64) {
        let Some(old) = self.pending.get(&key) else {
            return;
        };
        if let Some(keys) = self.by_stream.get_mut(&old.stream) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_stream.remove(&old.stream);
            }
        }
        if old.state == PendingState::Delivered
            && let Some(count) = self.delivered.get_mut(&old.stream)
        {
            *count -= 1;
            if *count == 0 {
                self.delivered.remove(&old.stream);
            }
        }
    }

    /// Makes the changes a decision over this mirror returned.
    pub fn apply(&mut self, mutations: Vec<ConsumerMutation>) {
        for mutation in mutations {
            match mutation {
                ConsumerMutation::PutConsumer(record) => self.record = record,
                ConsumerMutation::PutPending { key, record, .. } => self.put(key, record),
                ConsumerMutation::RemovePending { key, .. } => {
                    self.unindex(key);
                    self.pending.remove(&key);
                }
                ConsumerMutation::DeleteConsumer(_)
                | ConsumerMutation::PutDeadLetter { .. }
                | ConsumerMutation::RemoveDeadLetter { .. } => {}
            }
        }
    }

    pub fn pending(&self) -> &BTreeMap<u64, PendingRecord> {
        &self.pending
    }

    /// Whether a new event of `stream` must be held (KEYED: the stream has a tracked event).
    pub fn must_hold(&self, stream: &str) -> bool {
        self.record.settings.mode == DispatchMode::Keyed && self.by_stream.contains_key(stream)
    }

    /// Tracked events that may be delivered at `now_ms`, oldest key first, at most `max`:
    /// held or waiting ones whose time has come; in KEYED mode only the first tracked event of
    /// a stream, and only when none of the stream is delivered and unsettled.
    pub fn ready(&self, now_ms: u64, max: usize) -> Vec<(u64, u32)> {
        let due = |record: &PendingRecord| match record.state {
            PendingState::Delivered => false,
            PendingState::Held => true,
            PendingState::Waiting { not_before_ms } => not_before_ms <= now_ms,
        };
        if self.record.settings.mode != DispatchMode::Keyed {
            return self
                .pending
                .iter()
                .filter(|(_, record)| due(record))
                .take(max)
                .map(|(key, record)| (*key, record.attempts))
                .collect();
        }
        // KEYED: the first tracked event of each stream with none delivered.
        let mut ready: Vec<(u64, u32)> = self
            .by_stream
            .iter()
            .filter(|(stream, _)| !self.delivered.contains_key(*stream))
            .filter_map(|(_, keys)| {
                let key = keys.first()?;
                let record = self.pending.get(key)?;
                due(record).then_some((*key, record.attempts))
            })
            .collect();
        ready.sort_unstable();
        ready.truncate(max);
        ready
    }

    /// When the next waiting event is due (leader time), if any waits.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.pending
            .values()
            .filter_map(|record| match record.state {
                PendingState::Waiting { not_before_ms } => Some(not_before_ms),
                _ => None,
            })
            .min()
    }

    /// Delivered and unsettled: key, attempt, member.
    pub fn in_flight(&self) -> impl Iterator<Item = (u64, u32, &str)> {
        self.pending
            .iter()
            .filter(|(_, record)| record.state == PendingState::Delivered)
            .map(|(key, record)| {
                let member = record
                    .history
                    .last()
                    .map_or("", |last| last.member.as_str());
                (*key, record.attempts, member)
            })
    }

    pub fn in_flight_count(&self) -> usize {
        self.record.stats.in_flight as usize
    }

    pub fn tracked_count(&self) -> usize {
        self.pending.len()
    }
}

impl ConsumerView for GroupMirror {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        Ok((self.record.name == name).then(|| self.record.clone()))
    }

    fn pending(&self, name: &str, key: u64) -> Result<Option<PendingRecord>, StoreError> {
        if self.record.name != name {
            return Ok(None);
        }
        Ok(self.pending.get(&key).cloned())
    }

    fn dead_letter(&self, _name: &str, _key: u64) -> Result<Option<DeadLetterRecord>, StoreError> {
        Err(StoreError::Invariant(
            "a dispatcher's copy of a group holds no dead letters".to_string(),
        ))
    }

    fn dead_letters(
        &self,
        _name: &str,
        _from: u64,
        _limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, StoreError> {
        Err(StoreError::Invariant(
            "a dispatcher's copy of a group holds no dead letters".to_string(),
        ))
    }
}
