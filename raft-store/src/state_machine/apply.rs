//! Deciding what applying one committed entry does, as a pure function of the entry, the state
//! machine's meta and a [`StateView`]: the mutations to write and the response to give. Every
//! rule that keeps replicas identical is here, where it is unit-tested without I/O:
//! - entries apply once, in log order;
//! - an append's events are recorded at `max(proposed timestamp, previous event's)`, so
//!   timestamps never go backwards along the log (seek by time relies on it);
//! - positions and versions follow the head and the stream's version ([`decide_append`]);
//! - idempotency keys answer retries, refuse reuse, and expire by recorded time and count
//!   ([`super::idempotency`]);
//! - the head and the last timestamp advance only with events appended.
//!
//! The writer's transaction executes the decision (`store.rs`). A new command adds its own
//! `decide_*` here, not writer code.

use super::MachineMeta;
use super::append::decide_append;
use super::idempotency;
use super::idempotency::decide_idempotent;
use super::mutation::Decision;
use super::mutation::Mutation;
use super::view::StateView;
use crate::error::StoreError;
use crate::type_config::Entry;
use crate::type_config::EntryPayload;
use crate::type_config::StoredMembership;
use crate::types::AppendCommand;
use crate::types::Command;
use crate::types::CommandResponse;
use crate::types::IdempotentRecord;

/// Decides what applying `entry` does to a state machine that `machine` and `view` describe.
pub fn decide(
    view: &impl StateView,
    machine: &MachineMeta,
    entry: &Entry,
) -> Result<Decision, StoreError> {
    if let Some(last) = machine.last_applied
        && entry.log_id.index <= last.index
    {
        return Err(StoreError::Invariant(format!(
            "apply of log index {} after {}: an entry is applied once, in log order",
            entry.log_id.index, last.index
        )));
    }
    let mut mutations = vec![Mutation::SetLastApplied(entry.log_id)];
    let response = match &entry.payload {
        EntryPayload::Blank => CommandResponse::Empty,
        EntryPayload::Membership(membership) => {
            mutations.push(Mutation::SetMembership(StoredMembership::new(
                Some(entry.log_id),
                membership.clone(),
            )));
            CommandResponse::Empty
        }
        EntryPayload::Normal(Command::Append(command)) => {
            decide_append_entry(view, machine, entry.log_id.index, command, &mut mutations)?
        }
    };
    Ok(Decision {
        mutations,
        response,
    })
}

/// An append entry at `log_index`: a retry or a reused key is answered from the key's record;
/// otherwise the append is decided against its stream, and its key (if any) remembered.
fn decide_append_entry(
    view: &impl StateView,
    machine: &MachineMeta,
    log_index: u64,
    command: &AppendCommand,
    mutations: &mut Vec<Mutation>,
) -> Result<CommandResponse, StoreError> {
    // Timestamps never go backwards in the log (seek by time relies on it).
    let timestamp_ms = command.timestamp_ms.max(machine.last_timestamp_ms);
    let existing = match &command.idempotency_key {
        Some(key) => view.idempotency_key(key)?,
        None => None,
    };
    if command.idempotency_key.is_some()
        && let Some(response) = decide_idempotent(existing, command, timestamp_ms)
    {
        return Ok(response);
    }
    let current = view.stream(&command.stream)?;
    let decision = decide_append(machine.head_position, current, command, timestamp_ms);
    let Some(writes) = decision.writes else {
        return Ok(decision.response);
    };
    mutations.extend(writes.events.into_iter().map(Mutation::PutEvent));
    mutations.push(Mutation::AdvanceHead {
        head_position: writes.info.last_position,
        last_timestamp_ms: timestamp_ms,
    });
    if let (Some(key), CommandResponse::Appended(outcome)) =
        (&command.idempotency_key, &decision.response)
    {
        let record = IdempotentRecord {
            fingerprint: command.request_fingerprint,
            outcome: *outcome,
            log_index,
            timestamp_ms,
        };
        idempotency::remember(view, key, record, existing, command.idempotency, mutations)?;
    }
    Ok(decision.response)
}

#[cfg(test)]
#[path = "apply_test.rs"]
mod apply_test;
