//! Idempotency keys, as pure functions: whether a keyed append is a retry (answered with the
//! original outcome), a key reused for another request (refused), or new; and which of the
//! oldest keys expire. Expiry is measured in leader-assigned append timestamps and counts,
//! never a local clock, so every replica expires the same keys at the same log index.

use super::mutation::Mutation;
use super::view::StateView;
use crate::error::StoreError;
use crate::types::AppendCommand;
use crate::types::AppendOutcome;
use crate::types::CommandResponse;
use crate::types::IdempotencyPolicy;
use crate::types::IdempotentRecord;

/// Most keys one apply expires, so apply work stays bounded; expiry catches up over time.
pub const MAX_EXPIRED_PER_APPLY: usize = 64;

/// Decides a keyed append against what the key already holds: `Some(response)` answers it
/// without appending (a retry, or a key reused for another request); `None` appends as usual.
/// A record older than the command's window (in append timestamps, `now_ms` being this
/// append's) no longer counts.
pub fn decide_idempotent(
    existing: Option<IdempotentRecord>,
    command: &AppendCommand,
    now_ms: u64,
) -> Option<CommandResponse> {
    let record = existing?;
    if now_ms.saturating_sub(record.timestamp_ms) > command.idempotency.window_ms {
        return None;
    }
    if record.fingerprint != command.request_fingerprint {
        return Some(CommandResponse::IdempotencyKeyReused);
    }
    Some(CommandResponse::Appended(AppendOutcome {
        deduplicated: true,
        ..record.outcome
    }))
}

/// Whether the oldest kept key should expire now, given the newest append's timestamp.
pub fn should_expire(
    oldest: &IdempotentRecord,
    key_count: u64,
    now_ms: u64,
    window_ms: u64,
    max_keys: u64,
) -> bool {
    key_count > max_keys || now_ms.saturating_sub(oldest.timestamp_ms) > window_ms
}

/// Remembers `key` with `record` (replacing `existing`, an expired record of the same key),
/// then expires the oldest keys, at most [`MAX_EXPIRED_PER_APPLY`]: while there are more than
/// `policy.max_keys` or the oldest is older than `policy.window_ms` than this append. Pushes
/// the mutations; reads only `view` (the state before them).
///
/// The expiry order seen is the one the put leaves: the view's without the key's old place,
/// then the key itself at its new place (its log index, the newest of all).
pub fn remember(
    view: &impl StateView,
    key: &str,
    record: IdempotentRecord,
    existing: Option<IdempotentRecord>,
    policy: IdempotencyPolicy,
    mutations: &mut Vec<Mutation>,
) -> Result<(), StoreError> {
    let replaces_order = existing.map(|old| old.order);
    mutations.push(Mutation::PutIdempotencyKey {
        key: key.to_string(),
        record,
        replaces_order,
    });
    let mut count = view.idempotency_key_count()? + u64::from(existing.is_none());
    let mut after = None;
    let mut own_place_seen = false;
    let mut expired = 0;
    while expired < MAX_EXPIRED_PER_APPLY {
        let (order, oldest_key, oldest) = match view.next_idempotency_key(after)? {
            Some((order, oldest_key, _)) if Some(order) == replaces_order && oldest_key == key => {
                after = Some(order);
                continue;
            }
            Some(found) => {
                after = Some(found.0);
                found
            }
            None if !own_place_seen => {
                own_place_seen = true;
                (record.order, key.to_string(), record)
            }
            None => break,
        };
        if !should_expire(
            &oldest,
            count,
            record.timestamp_ms,
            policy.window_ms,
            policy.max_keys,
        ) {
            break;
        }
        mutations.push(Mutation::ExpireIdempotencyKey {
            key: oldest_key,
            order,
        });
        count -= 1;
        expired += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::test_support::command;

    fn record(fingerprint: u64, timestamp_ms: u64) -> IdempotentRecord {
        IdempotentRecord {
            fingerprint,
            outcome: AppendOutcome {
                first_position: 4,
                last_position: 5,
                stream_version: 2,
                deduplicated: false,
            },
            order: 9,
            timestamp_ms,
        }
    }

    #[test]
    fn a_retry_with_the_same_key_returns_the_original_outcome() {
        let response = decide_idempotent(Some(record(7, 90)), &command(2, None), 1_000);
        let expected = AppendOutcome {
            first_position: 4,
            last_position: 5,
            stream_version: 2,
            deduplicated: true,
        };
        assert_eq!(response, Some(CommandResponse::Appended(expected)));
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused() {
        let response = decide_idempotent(Some(record(8, 90)), &command(2, None), 1_000);
        assert_eq!(response, Some(CommandResponse::IdempotencyKeyReused));
    }

    #[test]
    fn an_unknown_or_expired_key_appends_as_usual() {
        assert_eq!(decide_idempotent(None, &command(1, None), 1_000), None);
        let mut short_window = command(1, None);
        short_window.idempotency.window_ms = 30;
        assert_eq!(
            decide_idempotent(Some(record(7, 10)), &short_window, 99),
            None
        );
        assert!(decide_idempotent(Some(record(7, 10)), &short_window, 40).is_some());
    }

    #[test]
    fn expiry_is_by_age_and_by_count() {
        assert!(!should_expire(&record(1, 100), 10, 150, 100, 10));
        assert!(should_expire(&record(1, 100), 10, 201, 100, 10));
        assert!(should_expire(&record(1, 100), 11, 150, 100, 10));
    }
}
