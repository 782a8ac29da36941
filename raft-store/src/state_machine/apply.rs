//! Deciding what applying one committed entry does, as a pure function of the entry, the state
//! machine's meta and a [`StateView`]: the mutations to write and the response to give. Every
//! rule that keeps replicas identical is here, where it is unit-tested without I/O:
//! - entries apply once, in log order;
//! - an append's events are recorded at `max(proposed timestamp, previous event's)`, so
//!   timestamps never go backwards along the log (seek by time relies on it);
//! - positions and versions follow the head and the stream's version ([`decide_append`]);
//! - idempotency keys answer retries, refuse reuse, and expire by recorded time and count
//!   ([`super::idempotency`]);
//! - the head and the last timestamp advance only with events appended;
//! - retention moves boundaries (a stream's first retained version, the log's first retained
//!   position) only up, and only as entries apply ([`super::retention`]); a tombstoned stream
//!   takes no append.
//!
//! An entry of several appends applies in parts, one per append, each decided against the
//! state the parts before it left ([`parts`]).
//!
//! The writer's transaction executes the decision (`execute.rs`). A new command adds its own
//! `decide_*` here, not writer code.

use super::MachineMeta;
use super::append::decide_append;
use super::idempotency;
use super::idempotency::decide_idempotent;
use super::mutation::Decision;
use super::mutation::Mutation;
use super::retention;
use super::view::StateView;
use crate::consumer;
use crate::consumer::ConsumerCommand;
use crate::consumer::ConsumerResponse;
use crate::consumer::ConsumerTarget;
use crate::error::StoreError;
use crate::type_config::Entry;
use crate::type_config::EntryPayload;
use crate::type_config::StoredMembership;
use crate::types::AppendCommand;
use crate::types::Command;
use crate::types::CommandResponse;
use crate::types::IdempotentRecord;
use crate::types::MAX_APPENDS_PER_ENTRY;
use crate::types::expiry_order;

/// How many parts applying `entry` takes: one per append of a [`Command::Appends`] entry
/// (each decided against the state the parts before it left, so a later append sees an
/// earlier one's stream version and idempotency key), else one.
pub fn parts(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(Command::Appends(appends)) => appends.len().max(1),
        _ => 1,
    }
}

/// The entry's response from its parts' responses (in order).
pub fn respond(entry: &Entry, mut responses: Vec<CommandResponse>) -> CommandResponse {
    match &entry.payload {
        EntryPayload::Normal(Command::Appends(_)) => CommandResponse::Many(responses),
        _ => responses.pop().unwrap_or(CommandResponse::Empty),
    }
}

/// Decides what applying part `part` of `entry` (see [`parts`]) does to a state machine that
/// `machine` and `view` describe; the parts before it are applied.
pub fn decide(
    view: &impl StateView,
    machine: &MachineMeta,
    entry: &Entry,
    part: usize,
) -> Result<Decision, StoreError> {
    let mut mutations = Vec::new();
    if part == 0 {
        if let Some(last) = machine.last_applied
            && entry.log_id.index <= last.index
        {
            return Err(StoreError::Invariant(format!(
                "apply of log index {} after {}: an entry is applied once, in log order",
                entry.log_id.index, last.index
            )));
        }
        mutations.push(Mutation::SetLastApplied(entry.log_id));
    }
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
            let order = expiry_order(entry.log_id.index, 0);
            decide_append_entry(view, machine, order, command, &mut mutations)?
        }
        EntryPayload::Normal(Command::Appends(commands)) => {
            if commands.len() > MAX_APPENDS_PER_ENTRY {
                return Err(StoreError::Invariant(format!(
                    "{} appends in the entry at log index {}; at most {MAX_APPENDS_PER_ENTRY}",
                    commands.len(),
                    entry.log_id.index
                )));
            }
            match commands.get(part) {
                Some(command) => {
                    let order = expiry_order(entry.log_id.index, part);
                    decide_append_entry(view, machine, order, command, &mut mutations)?
                }
                // An entry of no appends (never proposed) applies as one empty part.
                None => CommandResponse::Empty,
            }
        }
        EntryPayload::Normal(Command::Consumer(command)) => {
            // Read before the command's changes: the group as the step was planned against.
            let skip = retention_skip(view, machine, command)?;
            let (changes, response) =
                consumer::decide::decide(view, command, entry.log_id.index, |target| {
                    Ok(match target {
                        ConsumerTarget::All => machine.head_position,
                        ConsumerTarget::Stream(stream) => {
                            view.stream(stream)?.map_or(0, |info| info.version)
                        }
                    })
                })?;
            mutations.extend(changes.into_iter().map(Mutation::Consumer));
            match (&response, skip) {
                (ConsumerResponse::Stepped { advanced: true, .. }, Some(mutation)) => {
                    mutations.push(mutation);
                }
                (ConsumerResponse::Deleted, _) => {
                    if let ConsumerCommand::Delete { name } = command
                        && view.consumer_skips(name)?.is_some()
                    {
                        mutations.push(Mutation::ForgetConsumerSkips { name: name.clone() });
                    }
                }
                _ => {}
            }
            CommandResponse::Consumer(response)
        }
        EntryPayload::Normal(Command::Retention(command)) => {
            retention::decide_retention(view, machine, command, &mut mutations)?
        }
        // The first dictionary is the log's for good; an entry too large is never proposed.
        EntryPayload::Normal(Command::Dictionary(bytes)) => {
            if machine.dictionary == 0
                && !bytes.is_empty()
                && bytes.len() <= crate::dictionary::MAX_DICTIONARY_BYTES
            {
                mutations.push(Mutation::SetDictionary(bytes.clone()));
            }
            CommandResponse::Empty
        }
        EntryPayload::Normal(Command::Access(command)) => {
            match crate::access::decide(&machine.access, command, entry.log_id.index) {
                Ok(state) => {
                    mutations.push(Mutation::SetAccess(std::sync::Arc::new(state)));
                    CommandResponse::Access(crate::access::AccessResponse::Done)
                }
                Err(refusal) => {
                    CommandResponse::Access(crate::access::AccessResponse::Refused(refusal))
                }
            }
        }
        // Hashed after it applies (see `reader::checks`): it changes nothing.
        EntryPayload::Normal(Command::Check(_)) => CommandResponse::Empty,
    };
    Ok(Decision {
        mutations,
        response,
    })
}

/// What a consumer step's advance passes over that retention removed: the keys below its
/// target's first retained one (a stream's first version; the log's first position), recorded
/// if the step's advance takes effect. Removed events in the middle of `all` (other streams'
/// limits) are not counted: the group never had them to take.
fn retention_skip(
    view: &impl StateView,
    machine: &MachineMeta,
    command: &ConsumerCommand,
) -> Result<Option<Mutation>, StoreError> {
    let ConsumerCommand::Step {
        name,
        advance: Some(advance),
        ..
    } = command
    else {
        return Ok(None);
    };
    let Some(group) = view.consumer(name)? else {
        return Ok(None);
    };
    let first_retained = match &group.target {
        ConsumerTarget::All => machine.first_position,
        ConsumerTarget::Stream(stream) => view
            .stream_meta(stream)?
            .map_or(1, |meta| meta.first_version),
    };
    let to = advance.to.min(first_retained);
    if to <= advance.from {
        return Ok(None);
    }
    let mut skips = view.consumer_skips(name)?.unwrap_or_default();
    skips.skipped_total += to - advance.from;
    skips.last_from = advance.from;
    skips.last_to = to;
    Ok(Some(Mutation::PutConsumerSkips {
        name: name.clone(),
        skips,
    }))
}

/// An append whose key (if any) takes place `order` in the expiry order: a retry or a reused
/// key is answered from the key's record; otherwise the append is decided against its
/// stream, and its key remembered.
fn decide_append_entry(
    view: &impl StateView,
    machine: &MachineMeta,
    order: u64,
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
    let meta = view.stream_meta(&command.stream)?;
    if meta.is_some_and(|meta| meta.tombstoned) {
        return Ok(CommandResponse::StreamTombstoned);
    }
    let current = view.stream(&command.stream)?;
    let decision = decide_append(machine.head_position, current, command, timestamp_ms);
    let Some(writes) = decision.writes else {
        return Ok(decision.response);
    };
    retention::after_append(&command.stream, meta, writes.info.version, mutations);
    mutations.extend(
        writes
            .events
            .into_iter()
            .map(|(event, encoding)| Mutation::PutEvent(event, encoding)),
    );
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
            order,
            timestamp_ms,
        };
        idempotency::remember(view, key, record, existing, command.idempotency, mutations)?;
    }
    Ok(decision.response)
}

#[cfg(test)]
#[path = "apply_test.rs"]
mod apply_test;
