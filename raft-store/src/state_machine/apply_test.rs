//! The apply decisions, with the state in maps: what each entry writes and answers, and the
//! rules that keep replicas identical.

use std::collections::BTreeMap;

use super::*;
use crate::state_machine::test_support::command;
use crate::type_config::LeaderId;
use crate::type_config::LogId;
use crate::type_config::Membership;
use crate::types::AppendOutcome;
use crate::types::IdempotencyPolicy;
use crate::types::RetentionCommand;
use crate::types::RetentionResponse;
use crate::types::StreamInfo;
use crate::types::StreamMeta;
use crate::types::StreamRetention;

/// The state machine's tables as maps, with the same meaning as the redb ones.
#[derive(Default)]
struct MemoryView {
    /// (stream, version) -> position.
    index: BTreeMap<(String, u64), u64>,
    keys: BTreeMap<String, IdempotentRecord>,
    /// Expiry order: log index of first use -> key.
    order: BTreeMap<u64, String>,
    metas: BTreeMap<String, StreamMeta>,
    skips: BTreeMap<String, crate::types::ConsumerSkips>,
    machine: MachineMeta,
}

/// No consumer groups: these tests are of appends (`consumer/decide_test.rs` has groups').
impl crate::consumer::ConsumerView for MemoryView {
    fn consumer(&self, _: &str) -> Result<Option<crate::consumer::ConsumerRecord>, StoreError> {
        Ok(None)
    }

    fn pending(
        &self,
        _: &str,
        _: u64,
    ) -> Result<Option<crate::consumer::PendingRecord>, StoreError> {
        Ok(None)
    }

    fn dead_letter(
        &self,
        _: &str,
        _: u64,
    ) -> Result<Option<crate::consumer::DeadLetterRecord>, StoreError> {
        Ok(None)
    }

    fn dead_letters(
        &self,
        _: &str,
        _: u64,
        _: usize,
    ) -> Result<Vec<(u64, crate::consumer::DeadLetterRecord)>, StoreError> {
        Ok(Vec::new())
    }
}

impl StateView for MemoryView {
    fn stream(&self, stream: &str) -> Result<Option<StreamInfo>, StoreError> {
        let mut entries = self
            .index
            .range((stream.to_string(), 1)..=(stream.to_string(), u64::MAX));
        let Some(((_, first_version), first)) = entries.next() else {
            return Ok(None);
        };
        let (version, last) = match entries.next_back() {
            Some(((_, version), last)) => (*version, *last),
            None => (*first_version, *first),
        };
        Ok(Some(StreamInfo {
            version,
            first_version: *first_version,
            first_position: *first,
            last_position: last,
        }))
    }

    fn consumer_skips(
        &self,
        name: &str,
    ) -> Result<Option<crate::types::ConsumerSkips>, StoreError> {
        Ok(self.skips.get(name).copied())
    }

    fn stream_meta(&self, stream: &str) -> Result<Option<StreamMeta>, StoreError> {
        Ok(self.metas.get(stream).copied())
    }

    fn idempotency_key(&self, key: &str) -> Result<Option<IdempotentRecord>, StoreError> {
        Ok(self.keys.get(key).copied())
    }

    fn idempotency_key_count(&self) -> Result<u64, StoreError> {
        Ok(self.keys.len() as u64)
    }

    fn next_idempotency_key(
        &self,
        after: Option<u64>,
    ) -> Result<Option<(u64, String, IdempotentRecord)>, StoreError> {
        let from = after.map_or(0, |after| after + 1);
        Ok(self
            .order
            .range(from..)
            .next()
            .map(|(order, key)| (*order, key.clone(), self.keys[key])))
    }
}

impl MemoryView {
    /// Decides `entry` part by part, executing each part before the next is decided; returns
    /// the parts' mutations and the entry's response.
    fn apply(&mut self, entry: &Entry) -> Decision {
        let mut mutations = Vec::new();
        let mut responses = Vec::new();
        for part in 0..parts(entry) {
            let decision = self.apply_part(entry, part);
            mutations.extend(decision.mutations);
            responses.push(decision.response);
        }
        Decision {
            mutations,
            response: respond(entry, responses),
        }
    }

    fn apply_part(&mut self, entry: &Entry, part: usize) -> Decision {
        let decision = decide(self, &self.machine, entry, part).expect("decides");
        for mutation in decision.mutations.clone() {
            match mutation {
                Mutation::SetLastApplied(log_id) => self.machine.last_applied = Some(log_id),
                Mutation::SetMembership(membership) => self.machine.membership = membership,
                Mutation::PutEvent(event, _) => {
                    self.index
                        .insert((event.stream, event.stream_version), event.position);
                }
                Mutation::AdvanceHead {
                    head_position,
                    last_timestamp_ms,
                } => {
                    self.machine.head_position = head_position;
                    self.machine.last_timestamp_ms = last_timestamp_ms;
                }
                Mutation::PutIdempotencyKey {
                    key,
                    record,
                    replaces_order,
                } => {
                    let old = self.keys.insert(key.clone(), record);
                    assert_eq!(old.map(|old| old.order), replaces_order);
                    if let Some(order) = replaces_order {
                        self.order.remove(&order);
                    }
                    self.order.insert(record.order, key);
                }
                Mutation::ExpireIdempotencyKey { key, order } => {
                    self.keys.remove(&key);
                    assert_eq!(self.order.remove(&order), Some(key));
                }
                Mutation::Consumer(_) => panic!("no consumer groups here"),
                Mutation::PutStreamMeta { stream, meta, .. } => {
                    self.metas.insert(stream, meta);
                }
                Mutation::SetFirstPosition(position) => self.machine.first_position = position,
                Mutation::SetDictionary(bytes) => {
                    self.machine.dictionary = crate::dictionary::id_of(&bytes);
                }
                Mutation::SetAccess(state) => self.machine.access = state,
                Mutation::PutConsumerSkips { name, skips } => {
                    self.skips.insert(name, skips);
                }
                Mutation::ForgetConsumerSkips { name } => {
                    self.skips.remove(&name);
                }
            }
        }
        decision
    }
}

fn log_id(index: u64) -> LogId {
    LogId {
        leader_id: LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    }
}

fn append_entry(index: u64, command: AppendCommand) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Append(command)),
    }
}

fn keyed(key: &str, timestamp_ms: u64, policy: IdempotencyPolicy) -> AppendCommand {
    let mut command = command(1, None);
    command.idempotency_key = Some(key.to_string());
    command.request_fingerprint = key.len() as u64;
    command.timestamp_ms = timestamp_ms;
    command.idempotency = policy;
    command
}

fn expired_keys(decision: &Decision) -> Vec<String> {
    decision
        .mutations
        .iter()
        .filter_map(|mutation| match mutation {
            Mutation::ExpireIdempotencyKey { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn entries_apply_once_in_log_order() {
    let mut view = MemoryView::default();
    view.apply(&Entry {
        log_id: log_id(5),
        payload: EntryPayload::Blank,
    });
    for index in [5, 4] {
        let error = decide(
            &view,
            &view.machine,
            &Entry {
                log_id: log_id(index),
                payload: EntryPayload::Blank,
            },
            0,
        )
        .expect_err("an entry at or before the last applied one");
        assert!(matches!(error, StoreError::Invariant(_)), "{error}");
    }
}

#[test]
fn blank_and_membership_entries_only_move_the_applied_log_id() {
    let mut view = MemoryView::default();
    let blank = view.apply(&Entry {
        log_id: log_id(1),
        payload: EntryPayload::Blank,
    });
    assert_eq!(blank.mutations, vec![Mutation::SetLastApplied(log_id(1))]);
    assert_eq!(blank.response, CommandResponse::Empty);
    let membership = Membership::new_with_defaults(vec![[1u64, 2, 3].into()], []);
    let decision = view.apply(&Entry {
        log_id: log_id(2),
        payload: EntryPayload::Membership(membership.clone()),
    });
    assert_eq!(
        decision.mutations,
        vec![
            Mutation::SetLastApplied(log_id(2)),
            Mutation::SetMembership(StoredMembership::new(Some(log_id(2)), membership)),
        ]
    );
    assert_eq!(view.machine.head_position, 0);
}

#[test]
fn an_append_takes_the_next_positions_and_versions_and_moves_the_head() {
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(2, None)));
    let decision = view.apply(&append_entry(2, command(3, Some(2))));
    assert_eq!(
        decision.response,
        CommandResponse::Appended(AppendOutcome {
            first_position: 3,
            last_position: 5,
            stream_version: 5,
            deduplicated: false,
        })
    );
    assert_eq!(view.machine.head_position, 5);
    assert_eq!(view.machine.last_applied, Some(log_id(2)));
}

#[test]
fn timestamps_never_go_backwards_along_the_log() {
    let mut view = MemoryView::default();
    let mut late = command(1, None);
    late.timestamp_ms = 500;
    view.apply(&append_entry(1, late));
    // A new leader whose clock is behind proposes an earlier time.
    let mut early = command(2, None);
    early.timestamp_ms = 100;
    let decision = view.apply(&append_entry(2, early));
    for mutation in &decision.mutations {
        match mutation {
            Mutation::PutEvent(event, _) => assert_eq!(event.timestamp_ms, 500),
            Mutation::AdvanceHead {
                last_timestamp_ms, ..
            } => assert_eq!(*last_timestamp_ms, 500),
            _ => {}
        }
    }
    let mut later = command(1, None);
    later.timestamp_ms = 900;
    view.apply(&append_entry(3, later));
    assert_eq!(view.machine.last_timestamp_ms, 900);
}

#[test]
fn a_refused_append_writes_nothing_but_the_applied_log_id() {
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(1, None)));
    let before = view.machine.clone();
    let decision = view.apply(&append_entry(2, command(1, Some(0))));
    assert_eq!(
        decision.mutations,
        vec![Mutation::SetLastApplied(log_id(2))]
    );
    assert_eq!(
        decision.response,
        CommandResponse::WrongExpectedVersion {
            expected: 0,
            actual: 1
        }
    );
    assert_eq!(view.machine.head_position, before.head_position);
    assert_eq!(view.machine.last_timestamp_ms, before.last_timestamp_ms);
}

#[test]
fn a_retried_key_answers_the_first_outcome_and_a_reused_one_is_refused() {
    let policy = IdempotencyPolicy::default();
    let mut view = MemoryView::default();
    let first = view.apply(&append_entry(1, keyed("k", 10, policy)));
    let retry = view.apply(&append_entry(2, keyed("k", 20, policy)));
    let CommandResponse::Appended(original) = first.response else {
        panic!("appended: {:?}", first.response)
    };
    assert_eq!(
        retry.response,
        CommandResponse::Appended(AppendOutcome {
            deduplicated: true,
            ..original
        })
    );
    assert_eq!(retry.mutations, vec![Mutation::SetLastApplied(log_id(2))]);
    let mut other = keyed("k", 30, policy);
    other.request_fingerprint = 99;
    let reused = view.apply(&append_entry(3, other));
    assert_eq!(reused.response, CommandResponse::IdempotencyKeyReused);
    assert_eq!(view.machine.head_position, 1);
}

#[test]
fn keys_expire_by_count_oldest_first() {
    let policy = IdempotencyPolicy {
        window_ms: 1_000_000,
        max_keys: 3,
    };
    let mut view = MemoryView::default();
    for (index, key) in ["a", "b", "c"].into_iter().enumerate() {
        let decision = view.apply(&append_entry(index as u64 + 1, keyed(key, 10, policy)));
        assert!(expired_keys(&decision).is_empty());
    }
    let decision = view.apply(&append_entry(4, keyed("d", 10, policy)));
    assert_eq!(expired_keys(&decision), vec!["a".to_string()]);
    assert_eq!(
        view.keys.keys().cloned().collect::<Vec<_>>(),
        vec!["b", "c", "d"]
    );
}

#[test]
fn keys_expire_by_recorded_age_at_most_64_per_apply() {
    let policy = IdempotencyPolicy {
        window_ms: 100,
        max_keys: 1_000,
    };
    let mut view = MemoryView::default();
    for index in 1..=100 {
        view.apply(&append_entry(
            index,
            keyed(&format!("old-{index:03}"), 10, policy),
        ));
    }
    // 200 ms later (in recorded time): every old key is past the window.
    let decision = view.apply(&append_entry(101, keyed("new", 210, policy)));
    let expired = expired_keys(&decision);
    assert_eq!(expired.len(), idempotency::MAX_EXPIRED_PER_APPLY);
    assert_eq!(expired[0], "old-001", "oldest first");
    let decision = view.apply(&append_entry(102, keyed("newer", 211, policy)));
    assert_eq!(
        expired_keys(&decision).len(),
        100 - 64,
        "the rest next time"
    );
    assert_eq!(
        view.keys.keys().cloned().collect::<Vec<_>>(),
        vec!["new", "newer"]
    );
}

#[test]
fn an_expired_key_used_again_takes_a_new_place_in_the_expiry_order() {
    let policy = IdempotencyPolicy {
        window_ms: 100,
        max_keys: 1_000,
    };
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, keyed("k", 10, policy)));
    view.apply(&append_entry(2, keyed("j", 100, policy)));
    // Past its window, "k" is a new request: appended again, remembered in its old place's
    // stead, and its old place is not expired as if it were another key.
    let decision = view.apply(&append_entry(3, keyed("k", 150, policy)));
    assert!(matches!(
        decision.response,
        CommandResponse::Appended(AppendOutcome {
            deduplicated: false,
            ..
        })
    ));
    assert!(decision.mutations.contains(&Mutation::PutIdempotencyKey {
        key: "k".to_string(),
        record: view.keys["k"],
        replaces_order: Some(expiry_order(1, 0)),
    }));
    assert!(expired_keys(&decision).is_empty(), "{decision:?}");
    assert_eq!(
        view.order
            .iter()
            .map(|(order, key)| (*order, key.as_str()))
            .collect::<Vec<_>>(),
        vec![(expiry_order(2, 0), "j"), (expiry_order(3, 0), "k")]
    );
}

#[test]
fn the_key_count_stays_bounded_over_many_appends() {
    let policy = IdempotencyPolicy {
        window_ms: u64::MAX,
        max_keys: 50,
    };
    let mut view = MemoryView::default();
    for index in 1..=500 {
        view.apply(&append_entry(
            index,
            keyed(&format!("key-{index}"), index, policy),
        ));
        assert!(view.keys.len() <= 50, "after {index}: {}", view.keys.len());
    }
    assert_eq!(view.order.len(), 50);
    assert_eq!(
        view.order.keys().next(),
        Some(&expiry_order(451, 0)),
        "the newest 50 are kept"
    );
}

/// An entry of several appends applies them in order, each against the state the ones before
/// it left: a later append sees an earlier one's stream version and idempotency key, a refused
/// one writes nothing and does not stop the rest, and each key takes its own place in the
/// expiry order.
#[test]
fn the_appends_of_one_entry_apply_in_order_each_on_its_own() {
    let policy = IdempotencyPolicy::default();
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(2, None)));
    let in_stream = |expected| {
        let mut command = command(1, expected);
        command.stream = "other".to_string();
        command
    };
    let appends = vec![
        in_stream(Some(0)),
        in_stream(Some(1)),
        in_stream(Some(0)),
        keyed("k", 10, policy),
        keyed("k", 10, policy),
        keyed("j", 10, policy),
    ];
    let decision = view.apply(&Entry {
        log_id: log_id(2),
        payload: EntryPayload::Normal(Command::Appends(appends.into())),
    });
    let CommandResponse::Many(responses) = &decision.response else {
        panic!("{decision:?}");
    };
    let outcome = |first, stream_version, deduplicated| {
        CommandResponse::Appended(AppendOutcome {
            first_position: first,
            last_position: first,
            stream_version,
            deduplicated,
        })
    };
    assert_eq!(
        responses,
        &vec![
            outcome(3, 1, false),
            outcome(4, 2, false),
            CommandResponse::WrongExpectedVersion {
                expected: 0,
                actual: 2
            },
            outcome(5, 3, false),
            outcome(5, 3, true),
            outcome(6, 4, false),
        ]
    );
    assert_eq!(view.machine.head_position, 6);
    assert_eq!(view.machine.last_applied, Some(log_id(2)));
    assert_eq!(
        view.order
            .iter()
            .map(|(order, key)| (*order, key.as_str()))
            .collect::<Vec<_>>(),
        vec![(expiry_order(2, 3), "k"), (expiry_order(2, 5), "j")]
    );
    assert_eq!(
        decision
            .mutations
            .iter()
            .filter(|mutation| matches!(mutation, Mutation::SetLastApplied(_)))
            .count(),
        1
    );
}

/// Keys stored before entries carried several appends hold the bare log index as their place:
/// it sorts before every place taken since, so they still expire first.
#[test]
fn places_taken_by_older_versions_sort_before_new_ones() {
    for old_index in [1, 1_000, 1 << 40] {
        assert!(old_index < expiry_order(old_index, 0));
        assert!(expiry_order(old_index, 4_095) < expiry_order(old_index + 1, 0));
    }
}

fn retention_entry(index: u64, command: RetentionCommand) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Retention(command)),
    }
}

fn set_max_count(max_count: u64, expected: Option<u64>) -> RetentionCommand {
    RetentionCommand::SetMetadata {
        stream: "s".to_string(),
        expected_metadata_version: expected,
        retention: StreamRetention {
            max_count: Some(max_count),
            ..Default::default()
        },
    }
}

#[test]
fn max_count_removes_old_versions_when_set_and_as_appends_apply() {
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(20, None)));
    let decision = view.apply(&retention_entry(2, set_max_count(10, Some(0))));
    let CommandResponse::Retention(RetentionResponse::Metadata(meta)) = decision.response else {
        panic!("metadata set: {:?}", decision.response);
    };
    assert_eq!((meta.metadata_version, meta.first_version), (1, 11));
    assert!(decision.mutations.contains(&Mutation::PutStreamMeta {
        stream: "s".to_string(),
        meta,
        reclaim: true
    }));
    view.apply(&append_entry(3, command(5, None)));
    assert_eq!(
        view.metas["s"].first_version, 16,
        "25 events, the last 10 kept"
    );
    // Compare-and-set: a stale metadata version changes nothing.
    let decision = view.apply(&retention_entry(4, set_max_count(1, Some(0))));
    assert_eq!(
        decision.response,
        CommandResponse::Retention(RetentionResponse::WrongMetadataVersion {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(view.metas["s"].first_version, 16);
}

#[test]
fn a_tombstone_removes_everything_announces_itself_and_refuses_appends() {
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(3, None)));
    let delete = |expected_version| RetentionCommand::Delete {
        stream: "s".to_string(),
        expected_version,
        tombstone: true,
        timestamp_ms: 5,
    };
    let decision = view.apply(&retention_entry(2, delete(Some(2))));
    assert_eq!(
        decision.response,
        CommandResponse::Retention(RetentionResponse::WrongExpectedVersion {
            expected: 2,
            actual: 3
        })
    );
    let decision = view.apply(&retention_entry(3, delete(Some(3))));
    assert_eq!(
        decision.response,
        CommandResponse::Retention(RetentionResponse::Deleted {
            version: 3,
            position: 4
        })
    );
    assert!(view.metas["s"].tombstoned);
    assert_eq!(view.metas["s"].first_version, 4);
    assert_eq!(
        view.index
            .get(&(crate::types::DELETIONS_STREAM.to_string(), 1)),
        Some(&4)
    );
    let decision = view.apply(&append_entry(4, command(1, None)));
    assert_eq!(decision.response, CommandResponse::StreamTombstoned);
    assert!(
        decision
            .mutations
            .iter()
            .all(|m| !matches!(m, Mutation::PutEvent(..)))
    );
}

#[test]
fn a_soft_deleted_stream_goes_on_from_its_version() {
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(3, None)));
    view.apply(&retention_entry(
        2,
        RetentionCommand::Delete {
            stream: "s".to_string(),
            expected_version: None,
            tombstone: false,
            timestamp_ms: 5,
        },
    ));
    let decision = view.apply(&append_entry(3, command(1, Some(3))));
    let CommandResponse::Appended(outcome) = decision.response else {
        panic!("appended: {:?}", decision.response);
    };
    assert_eq!(outcome.stream_version, 4);
    assert_eq!(view.metas["s"].first_version, 4, "the new event is kept");
}

#[test]
fn expiry_never_moves_a_boundary_back_nor_past_the_head() {
    let mut view = MemoryView::default();
    view.apply(&append_entry(1, command(10, None)));
    view.apply(&retention_entry(
        2,
        RetentionCommand::ExpireLog { before_position: 6 },
    ));
    assert_eq!(view.machine.first_position, 6);
    view.apply(&retention_entry(
        3,
        RetentionCommand::ExpireLog { before_position: 3 },
    ));
    assert_eq!(view.machine.first_position, 6);
    view.apply(&retention_entry(
        4,
        RetentionCommand::ExpireLog {
            before_position: 1000,
        },
    ));
    assert_eq!(view.machine.first_position, 11);
    view.apply(&retention_entry(
        5,
        RetentionCommand::ExpireStream {
            stream: "s".to_string(),
            before_version: 500,
        },
    ));
    assert_eq!(view.metas["s"].first_version, 11);
}
