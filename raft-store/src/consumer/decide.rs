//! What a consumer command does, as a pure function of the command and a [`ConsumerView`]:
//! the mutations to make and the answer. The state machine and the leader's dispatcher
//! ([`super::GroupMirror`]) both run it, so they agree on every step.
//!
//! The rules:
//! - a settlement counts only for the delivery it names (its attempt) while that delivery is
//!   the event's latest and unsettled; one for an earlier attempt, an event already settled or
//!   one redelivered since is stale and changes nothing;
//! - a retry (or an expired delivery) of an event delivered `max_deliveries` times dead-letters
//!   it, so no event is ever delivered more than `max_deliveries` times;
//! - a redelivery is made only if the event is still where the leader saw it (its attempt
//!   count), and never to an event delivered and unsettled;
//! - new events are taken in only from where the frontier is, so a step planned by an old
//!   leader, or planned twice, takes nothing twice; a whole step is refused when the group
//!   changed since it was planned (another revision).

use std::collections::BTreeMap;

use super::Attempt;
use super::ConsumerCommand;
use super::ConsumerMutation;
use super::ConsumerRecord;
use super::ConsumerResponse;
use super::ConsumerStart;
use super::ConsumerTarget;
use super::ConsumerView;
use super::DeadLetterRecord;
use super::MAX_REMEMBERED_REDRIVES;
use super::Outcome;
use super::PendingRecord;
use super::PendingState;
use super::RedriveSelection;
use crate::error::StoreError;

/// Most dead letters a redrive by reason looks at.
pub const MAX_REDRIVE_SCAN: usize = 100_000;

/// Decides `command`, applied at `log_index`. `target_head` gives a target's last key (for a
/// group that starts at the head).
pub fn decide(
    view: &impl ConsumerView,
    command: &ConsumerCommand,
    log_index: u64,
    target_head: impl FnOnce(&ConsumerTarget) -> Result<u64, StoreError>,
) -> Result<(Vec<ConsumerMutation>, ConsumerResponse), StoreError> {
    let mut mutations = Vec::new();
    let response = match command {
        ConsumerCommand::Create {
            name,
            target,
            filter,
            start,
            settings,
            timestamp_ms,
        } => match view.consumer(name)? {
            Some(existing) => {
                if &existing.target == target
                    && &existing.filter == filter
                    && &existing.settings == settings
                {
                    ConsumerResponse::Group(Box::new(existing))
                } else {
                    ConsumerResponse::AlreadyExists(Box::new(existing))
                }
            }
            None => {
                let frontier = match start {
                    ConsumerStart::At(key) => (*key).max(1),
                    ConsumerStart::Head => target_head(target)?.saturating_add(1),
                };
                let record = ConsumerRecord {
                    name: name.clone(),
                    target: target.clone(),
                    filter: filter.clone(),
                    settings: settings.clone(),
                    created_index: log_index,
                    created_ms: *timestamp_ms,
                    revision: 1,
                    frontier,
                    stats: Default::default(),
                    redrives: Vec::new(),
                };
                mutations.push(ConsumerMutation::PutConsumer(record.clone()));
                ConsumerResponse::Group(Box::new(record))
            }
        },
        ConsumerCommand::Update { name, settings } => match view.consumer(name)? {
            None => ConsumerResponse::NotFound,
            Some(mut record) => {
                record.settings = settings.clone();
                record.revision += 1;
                mutations.push(ConsumerMutation::PutConsumer(record.clone()));
                ConsumerResponse::Group(Box::new(record))
            }
        },
        ConsumerCommand::Delete { name } => match view.consumer(name)? {
            None => ConsumerResponse::NotFound,
            Some(_) => {
                mutations.push(ConsumerMutation::DeleteConsumer(name.clone()));
                ConsumerResponse::Deleted
            }
        },
        ConsumerCommand::Step {
            name,
            created_index,
            revision,
            settlements,
            redeliveries,
            advance,
            timestamp_ms,
        } => {
            let Some(mut group) = view.consumer(name)? else {
                return Ok((mutations, ConsumerResponse::NotFound));
            };
            if group.created_index != *created_index || group.revision != *revision {
                return Ok((
                    mutations,
                    ConsumerResponse::StepRefused {
                        revision: group.revision,
                    },
                ));
            }
            group.revision += 1;
            let now = *timestamp_ms;
            let mut step = Overlay::new(view, name);
            let mut settled = Vec::with_capacity(settlements.len());
            for settlement in settlements {
                let Some(mut record) = step.get(settlement.key)? else {
                    settled.push(false);
                    continue;
                };
                let current = record.attempts == settlement.attempt
                    && match record.state {
                        PendingState::Delivered => true,
                        // A late answer for the latest delivery, not yet redelivered: an ack or
                        // a dead-letter still counts; a retry is what is happening already.
                        PendingState::Waiting { .. } => {
                            matches!(settlement.outcome, Outcome::Ack | Outcome::DeadLetter)
                        }
                        PendingState::Held => false,
                    };
                if !current {
                    settled.push(false);
                    continue;
                }
                settled.push(true);
                if record.state == PendingState::Delivered {
                    group.stats.in_flight = group.stats.in_flight.saturating_sub(1);
                }
                if let Some(last) = record.history.last_mut() {
                    last.outcome = Some(settlement.outcome);
                    last.settled_ms = now;
                    last.reason = settlement.reason.clone();
                }
                match settlement.outcome {
                    Outcome::Ack => {
                        group.stats.acked_total += 1;
                        group.stats.tracked = group.stats.tracked.saturating_sub(1);
                        step.remove(settlement.key);
                    }
                    Outcome::DeadLetter => {
                        let reason = if settlement.reason.is_empty() {
                            "dead-lettered by its consumer".to_string()
                        } else {
                            settlement.reason.clone()
                        };
                        step.dead_letter(&mut group, settlement.key, record, reason, now);
                    }
                    Outcome::Retry { .. } | Outcome::Expired
                        if record.attempts >= group.settings.max_deliveries =>
                    {
                        let why = match settlement.outcome {
                            Outcome::Expired => "not settled in time",
                            _ => "retried",
                        };
                        let mut reason = format!(
                            "delivered {} times (max_deliveries), last {why}",
                            record.attempts
                        );
                        if !settlement.reason.is_empty() {
                            reason.push_str(": ");
                            reason.push_str(&settlement.reason);
                        }
                        step.dead_letter(&mut group, settlement.key, record, reason, now);
                    }
                    Outcome::Retry { delay_ms } => {
                        let delay = delay_ms
                            .unwrap_or_else(|| group.settings.backoff_after(record.attempts));
                        record.state = PendingState::Waiting {
                            not_before_ms: now.saturating_add(u64::from(delay)),
                        };
                        step.put(settlement.key, record);
                    }
                    Outcome::Expired => {
                        let delay = group.settings.backoff_after(record.attempts);
                        record.state = PendingState::Waiting {
                            not_before_ms: now.saturating_add(u64::from(delay)),
                        };
                        step.put(settlement.key, record);
                    }
                }
            }
            let mut redelivered = Vec::with_capacity(redeliveries.len());
            for redelivery in redeliveries {
                let record = step.get(redelivery.key)?;
                let Some(mut record) = record.filter(|record| {
                    record.attempts == redelivery.attempts
                        && record.state != PendingState::Delivered
                        && record.attempts < group.settings.max_deliveries
                }) else {
                    redelivered.push(false);
                    continue;
                };
                redelivered.push(true);
                record.attempts += 1;
                record.state = PendingState::Delivered;
                record.history.push(Attempt {
                    member: redelivery.member.clone(),
                    delivered_ms: now,
                    outcome: None,
                    settled_ms: 0,
                    reason: String::new(),
                });
                group.stats.delivered_total += 1;
                group.stats.in_flight += 1;
                if record.attempts > 1 {
                    group.stats.redelivered_total += 1;
                }
                step.put(redelivery.key, record);
            }
            let mut advanced = false;
            if let Some(advance) = advance
                && advance.from == group.frontier
                && advance.to >= advance.from
                && advance
                    .taken
                    .iter()
                    .all(|taken| taken.key >= advance.from && taken.key < advance.to)
            {
                advanced = true;
                for taken in &advance.taken {
                    let delivered = taken.deliver_to.is_some();
                    let record = PendingRecord {
                        position: taken.position,
                        stream: taken.stream.clone(),
                        event_timestamp_ms: taken.event_timestamp_ms,
                        event_bytes: taken.event_bytes,
                        attempts: u32::from(delivered),
                        state: if delivered {
                            PendingState::Delivered
                        } else {
                            PendingState::Held
                        },
                        history: taken
                            .deliver_to
                            .iter()
                            .map(|member| Attempt {
                                member: member.clone(),
                                delivered_ms: now,
                                outcome: None,
                                settled_ms: 0,
                                reason: String::new(),
                            })
                            .collect(),
                    };
                    if step.get(taken.key)?.is_none() {
                        group.stats.tracked += 1;
                    }
                    if delivered {
                        group.stats.delivered_total += 1;
                        group.stats.in_flight += 1;
                    }
                    step.put(taken.key, record);
                }
                group.frontier = advance.to;
            }
            step.finish(&mut mutations);
            mutations.push(ConsumerMutation::PutConsumer(group));
            ConsumerResponse::Stepped {
                settled,
                redelivered,
                advanced,
            }
        }
        ConsumerCommand::Redrive {
            name,
            redrive_id,
            selection,
            max,
            timestamp_ms,
        } => {
            let Some(mut group) = view.consumer(name)? else {
                return Ok((mutations, ConsumerResponse::NotFound));
            };
            if let Some((_, count)) = group.redrives.iter().find(|(id, _)| id == redrive_id) {
                return Ok((
                    mutations,
                    ConsumerResponse::Redriven {
                        count: *count,
                        repeated: true,
                    },
                ));
            }
            let room = usize::try_from(*max).unwrap_or(usize::MAX);
            let chosen: Vec<(u64, DeadLetterRecord)> = match selection {
                RedriveSelection::All { limit } => {
                    view.dead_letters(name, 0, room.min(*limit as usize))?
                }
                RedriveSelection::Keys(keys) => {
                    let mut chosen = Vec::new();
                    for key in keys.iter().take(room) {
                        if let Some(record) = view.dead_letter(name, *key)? {
                            chosen.push((*key, record));
                        }
                    }
                    chosen.sort_by_key(|(key, _)| *key);
                    chosen.dedup_by_key(|(key, _)| *key);
                    chosen
                }
                RedriveSelection::Reason { text, limit } => {
                    let wanted = room.min(*limit as usize);
                    let mut chosen = Vec::new();
                    let mut from = 0;
                    let mut looked_at = 0;
                    while chosen.len() < wanted && looked_at < MAX_REDRIVE_SCAN {
                        let page = view.dead_letters(name, from, 1_000)?;
                        let Some((last, _)) = page.last() else { break };
                        from = last.saturating_add(1);
                        looked_at += page.len();
                        chosen.extend(
                            page.into_iter()
                                .filter(|(_, record)| record.reason.contains(text.as_str()))
                                .take(wanted - chosen.len()),
                        );
                    }
                    chosen
                }
            };
            let count = chosen.len() as u64;
            for (key, dead) in chosen {
                mutations.push(ConsumerMutation::RemoveDeadLetter {
                    name: name.clone(),
                    key,
                });
                mutations.push(ConsumerMutation::PutPending {
                    name: name.clone(),
                    key,
                    record: PendingRecord {
                        position: dead.position,
                        stream: dead.stream,
                        event_timestamp_ms: dead.event_timestamp_ms,
                        event_bytes: dead.event_bytes,
                        attempts: 0,
                        state: PendingState::Waiting {
                            not_before_ms: *timestamp_ms,
                        },
                        history: Vec::new(),
                    },
                });
            }
            group.stats.dead_letters = group.stats.dead_letters.saturating_sub(count);
            group.stats.tracked += count;
            group.stats.redriven_total += count;
            group.revision += 1;
            group.redrives.push((redrive_id.clone(), count));
            if group.redrives.len() > MAX_REMEMBERED_REDRIVES {
                group.redrives.remove(0);
            }
            mutations.push(ConsumerMutation::PutConsumer(group));
            ConsumerResponse::Redriven {
                count,
                repeated: false,
            }
        }
    };
    Ok((mutations, response))
}

/// A step's changes to tracked events, read through before the view.
struct Overlay<'v, V> {
    view: &'v V,
    name: &'v str,
    changed: BTreeMap<u64, Option<PendingRecord>>,
    dead: Vec<(u64, DeadLetterRecord)>,
}

impl<'v, V: ConsumerView> Overlay<'v, V> {
    fn new(view: &'v V, name: &'v str) -> Self {
        Self {
            view,
            name,
            changed: BTreeMap::new(),
            dead: Vec::new(),
        }
    }

    fn get(&self, key: u64) -> Result<Option<PendingRecord>, StoreError> {
        match self.changed.get(&key) {
            Some(record) => Ok(record.clone()),
            None => self.view.pending(self.name, key),
        }
    }

    fn put(&mut self, key: u64, record: PendingRecord) {
        self.changed.insert(key, Some(record));
    }

    fn remove(&mut self, key: u64) {
        self.changed.insert(key, None);
    }

    fn dead_letter(
        &mut self,
        group: &mut ConsumerRecord,
        key: u64,
        record: PendingRecord,
        reason: String,
        now: u64,
    ) {
        group.stats.dead_lettered_total += 1;
        group.stats.dead_letters += 1;
        group.stats.tracked = group.stats.tracked.saturating_sub(1);
        self.remove(key);
        self.dead.push((
            key,
            DeadLetterRecord {
                position: record.position,
                stream: record.stream,
                event_timestamp_ms: record.event_timestamp_ms,
                event_bytes: record.event_bytes,
                reason,
                dead_lettered_ms: now,
                history: record.history,
            },
        ));
    }

    fn finish(self, mutations: &mut Vec<ConsumerMutation>) {
        for (key, record) in self.changed {
            let name = self.name.to_string();
            mutations.push(match record {
                Some(record) => ConsumerMutation::PutPending { name, key, record },
                None => ConsumerMutation::RemovePending { name, key },
            });
        }
        for (key, record) in self.dead {
            mutations.push(ConsumerMutation::PutDeadLetter {
                name: self.name.to_string(),
                key,
                record,
            });
        }
    }
}
