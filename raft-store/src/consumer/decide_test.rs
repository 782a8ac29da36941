//! The consumer decisions over maps: retries and dead letters, stale settlements, steps
//! planned against an old state, KEYED readiness, redrives.

use std::collections::BTreeMap;

use super::decide::decide;
use super::*;

/// Groups in maps, with the same meaning as the tables.
#[derive(Default)]
struct Memory {
    consumers: BTreeMap<String, ConsumerRecord>,
    pending: BTreeMap<(String, u64), PendingRecord>,
    dead: BTreeMap<(String, u64), DeadLetterRecord>,
    index: u64,
}

impl ConsumerView for Memory {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        Ok(self.consumers.get(name).cloned())
    }
    fn pending(&self, name: &str, key: u64) -> Result<Option<PendingRecord>, StoreError> {
        Ok(self.pending.get(&(name.to_string(), key)).cloned())
    }
    fn dead_letter(&self, name: &str, key: u64) -> Result<Option<DeadLetterRecord>, StoreError> {
        Ok(self.dead.get(&(name.to_string(), key)).cloned())
    }
    fn dead_letters(
        &self,
        name: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, StoreError> {
        Ok(self
            .dead
            .range((name.to_string(), from)..=(name.to_string(), u64::MAX))
            .take(limit)
            .map(|((_, key), record)| (*key, record.clone()))
            .collect())
    }
}

impl Memory {
    fn run(&mut self, command: ConsumerCommand) -> ConsumerResponse {
        self.index += 1;
        let (mutations, response) =
            decide(self, &command, self.index, |_| Ok(100)).expect("decides");
        for mutation in mutations {
            match mutation {
                ConsumerMutation::PutConsumer(record) => {
                    self.consumers.insert(record.name.clone(), record);
                }
                ConsumerMutation::DeleteConsumer(name) => {
                    self.consumers.remove(&name);
                    self.pending.retain(|(group, _), _| *group != name);
                    self.dead.retain(|(group, _), _| *group != name);
                }
                ConsumerMutation::PutPending { name, key, record } => {
                    self.pending.insert((name, key), record);
                }
                ConsumerMutation::RemovePending { name, key } => {
                    self.pending.remove(&(name, key));
                }
                ConsumerMutation::PutDeadLetter { name, key, record } => {
                    self.dead.insert((name, key), record);
                }
                ConsumerMutation::RemoveDeadLetter { name, key } => {
                    self.dead.remove(&(name, key));
                }
            }
        }
        response
    }

    fn group(&self) -> ConsumerRecord {
        self.consumers.get("g").cloned().expect("group g")
    }

    fn step(
        &mut self,
        settlements: Vec<Settlement>,
        redeliveries: Vec<Redelivery>,
        advance: Option<Advance>,
        now: u64,
    ) -> ConsumerResponse {
        let group = self.group();
        self.run(ConsumerCommand::Step {
            name: "g".to_string(),
            created_index: group.created_index,
            revision: group.revision,
            settlements,
            redeliveries,
            advance,
            timestamp_ms: now,
        })
    }
}

fn settings(mode: DispatchMode) -> ConsumerSettings {
    ConsumerSettings {
        mode,
        ack_wait_ms: 1_000,
        max_deliveries: 3,
        backoff_ms: vec![10, 20],
        max_in_flight: 100,
    }
}

fn created(mode: DispatchMode) -> Memory {
    let mut memory = Memory::default();
    memory.run(ConsumerCommand::Create {
        name: "g".to_string(),
        target: ConsumerTarget::All,
        filter: ConsumerFilter::default(),
        start: ConsumerStart::At(1),
        settings: settings(mode),
        timestamp_ms: 5,
    });
    memory
}

fn taken(key: u64, stream: &str, member: Option<&str>) -> NewPending {
    NewPending {
        key,
        position: key,
        stream: stream.to_string(),
        event_timestamp_ms: key,
        event_bytes: 10,
        deliver_to: member.map(str::to_string),
    }
}

fn settle(key: u64, attempt: u32, outcome: Outcome) -> Settlement {
    Settlement {
        key,
        attempt,
        outcome,
        reason: "r".to_string(),
        member: "m".to_string(),
    }
}

fn advance(from: u64, to: u64, taken: Vec<NewPending>) -> Option<Advance> {
    Some(Advance { from, to, taken })
}

#[test]
fn create_again_with_the_same_settings_is_ok_and_with_others_already_exists() {
    let mut memory = created(DispatchMode::Keyed);
    let again = memory.run(ConsumerCommand::Create {
        name: "g".to_string(),
        target: ConsumerTarget::All,
        filter: ConsumerFilter::default(),
        start: ConsumerStart::Head,
        settings: settings(DispatchMode::Keyed),
        timestamp_ms: 6,
    });
    assert!(matches!(again, ConsumerResponse::Group(_)), "{again:?}");
    let other = memory.run(ConsumerCommand::Create {
        name: "g".to_string(),
        target: ConsumerTarget::All,
        filter: ConsumerFilter::default(),
        start: ConsumerStart::At(1),
        settings: settings(DispatchMode::Shared),
        timestamp_ms: 6,
    });
    assert!(
        matches!(other, ConsumerResponse::AlreadyExists(_)),
        "{other:?}"
    );
    assert_eq!(
        memory.group().frontier,
        1,
        "the first create's start stands"
    );
}

#[test]
fn a_group_starting_at_the_head_starts_past_it() {
    let mut memory = Memory::default();
    memory.run(ConsumerCommand::Create {
        name: "g".to_string(),
        target: ConsumerTarget::All,
        filter: ConsumerFilter::default(),
        start: ConsumerStart::Head,
        settings: settings(DispatchMode::Keyed),
        timestamp_ms: 5,
    });
    assert_eq!(memory.group().frontier, 101);
}

#[test]
fn an_event_is_delivered_at_most_max_deliveries_times_then_dead_lettered_with_its_history() {
    let mut memory = created(DispatchMode::Keyed);
    memory.step(
        vec![],
        vec![],
        advance(1, 2, vec![taken(1, "s", Some("a"))]),
        100,
    );
    // Retry: waits the first backoff step (10 ms).
    memory.step(
        vec![settle(1, 1, Outcome::Retry { delay_ms: None })],
        vec![],
        None,
        110,
    );
    let record = memory
        .pending
        .get(&("g".to_string(), 1))
        .cloned()
        .expect("tracked");
    assert_eq!(record.state, PendingState::Waiting { not_before_ms: 120 });
    memory.step(
        vec![],
        vec![Redelivery {
            key: 1,
            attempts: 1,
            member: "b".into(),
        }],
        None,
        120,
    );
    // Expired: waits the second step (20 ms).
    memory.step(vec![settle(1, 2, Outcome::Expired)], vec![], None, 130);
    let record = memory
        .pending
        .get(&("g".to_string(), 1))
        .cloned()
        .expect("tracked");
    assert_eq!(record.state, PendingState::Waiting { not_before_ms: 150 });
    memory.step(
        vec![],
        vec![Redelivery {
            key: 1,
            attempts: 2,
            member: "a".into(),
        }],
        None,
        150,
    );
    // A fourth delivery is refused before the third is settled, and after it.
    let refused = memory.step(
        vec![],
        vec![Redelivery {
            key: 1,
            attempts: 3,
            member: "a".into(),
        }],
        None,
        151,
    );
    assert_eq!(
        refused,
        ConsumerResponse::Stepped {
            settled: vec![],
            redelivered: vec![false],
            advanced: false
        }
    );
    memory.step(
        vec![settle(1, 3, Outcome::Retry { delay_ms: Some(5) })],
        vec![],
        None,
        160,
    );
    assert!(memory.pending.is_empty());
    let dead = memory
        .dead
        .get(&("g".to_string(), 1))
        .cloned()
        .expect("dead-lettered");
    assert_eq!(dead.history.len(), 3);
    assert_eq!(
        dead.history
            .iter()
            .map(|a| (a.member.as_str(), a.outcome))
            .collect::<Vec<_>>(),
        vec![
            ("a", Some(Outcome::Retry { delay_ms: None })),
            ("b", Some(Outcome::Expired)),
            ("a", Some(Outcome::Retry { delay_ms: Some(5) })),
        ]
    );
    assert!(
        dead.reason
            .starts_with("delivered 3 times (max_deliveries)"),
        "{}",
        dead.reason
    );
    let stats = memory.group().stats;
    assert_eq!(
        (
            stats.delivered_total,
            stats.redelivered_total,
            stats.dead_lettered_total
        ),
        (3, 2, 1)
    );
    assert_eq!(
        (stats.dead_letters, stats.tracked, stats.in_flight),
        (1, 0, 0)
    );
}

#[test]
fn a_settlement_of_an_earlier_attempt_or_a_settled_event_is_stale() {
    let mut memory = created(DispatchMode::Shared);
    memory.step(
        vec![],
        vec![],
        advance(
            1,
            3,
            vec![taken(1, "s", Some("a")), taken(2, "t", Some("a"))],
        ),
        100,
    );
    memory.step(vec![settle(1, 1, Outcome::Expired)], vec![], None, 101);
    memory.step(
        vec![],
        vec![Redelivery {
            key: 1,
            attempts: 1,
            member: "b".into(),
        }],
        None,
        200,
    );
    let response = memory.step(
        vec![
            settle(1, 1, Outcome::Ack), // redelivered since: stale
            settle(2, 1, Outcome::Ack),
            settle(2, 1, Outcome::Ack), // settled just before: stale
            settle(9, 1, Outcome::Ack), // never delivered
        ],
        vec![],
        None,
        201,
    );
    assert_eq!(
        response,
        ConsumerResponse::Stepped {
            settled: vec![false, true, false, false],
            redelivered: vec![],
            advanced: false
        }
    );
    assert!(memory.pending.contains_key(&("g".to_string(), 1)));
    assert_eq!(memory.group().stats.acked_total, 1);
}

#[test]
fn a_late_ack_of_an_expired_delivery_not_yet_redelivered_counts() {
    let mut memory = created(DispatchMode::Keyed);
    memory.step(
        vec![],
        vec![],
        advance(1, 2, vec![taken(1, "s", Some("a"))]),
        100,
    );
    memory.step(vec![settle(1, 1, Outcome::Expired)], vec![], None, 101);
    let response = memory.step(vec![settle(1, 1, Outcome::Ack)], vec![], None, 102);
    assert_eq!(
        response,
        ConsumerResponse::Stepped {
            settled: vec![true],
            redelivered: vec![],
            advanced: false
        }
    );
    assert!(memory.pending.is_empty());
}

#[test]
fn a_step_planned_against_another_revision_or_frontier_takes_nothing() {
    let mut memory = created(DispatchMode::Keyed);
    let group = memory.group();
    memory.step(
        vec![],
        vec![],
        advance(1, 2, vec![taken(1, "s", Some("a"))]),
        100,
    );
    // The same step again (say, planned twice): refused whole.
    let again = memory.run(ConsumerCommand::Step {
        name: "g".into(),
        created_index: group.created_index,
        revision: group.revision,
        settlements: vec![],
        redeliveries: vec![],
        advance: advance(1, 2, vec![taken(1, "s", Some("b"))]),
        timestamp_ms: 101,
    });
    assert_eq!(
        again,
        ConsumerResponse::StepRefused {
            revision: group.revision + 1
        }
    );
    // An advance from a frontier the group has passed takes nothing.
    let stale = memory.step(
        vec![],
        vec![],
        advance(1, 3, vec![taken(2, "t", Some("b"))]),
        102,
    );
    assert_eq!(
        stale,
        ConsumerResponse::Stepped {
            settled: vec![],
            redelivered: vec![],
            advanced: false
        }
    );
    assert_eq!(memory.group().frontier, 2);
    assert_eq!(memory.group().stats.delivered_total, 1);
    // A group deleted and created again refuses the old one's steps.
    memory.run(ConsumerCommand::Delete { name: "g".into() });
    memory.run(ConsumerCommand::Create {
        name: "g".to_string(),
        target: ConsumerTarget::All,
        filter: ConsumerFilter::default(),
        start: ConsumerStart::At(1),
        settings: settings(DispatchMode::Keyed),
        timestamp_ms: 5,
    });
    let old = memory.run(ConsumerCommand::Step {
        name: "g".into(),
        created_index: group.created_index,
        revision: 1,
        settlements: vec![],
        redeliveries: vec![],
        advance: advance(1, 2, vec![taken(1, "s", Some("b"))]),
        timestamp_ms: 103,
    });
    assert_eq!(old, ConsumerResponse::StepRefused { revision: 1 });
}

#[test]
fn keyed_delivers_one_event_per_stream_at_a_time_in_key_order() {
    let mut memory = created(DispatchMode::Keyed);
    memory.step(
        vec![],
        vec![],
        advance(
            1,
            5,
            vec![
                taken(1, "s", Some("a")),
                taken(2, "s", None),
                taken(3, "t", Some("b")),
                taken(4, "s", None),
            ],
        ),
        100,
    );
    let group = memory.group();
    let pending: Vec<(u64, PendingRecord)> = memory
        .pending
        .iter()
        .map(|((_, key), record)| (*key, record.clone()))
        .collect();
    let mut mirror = GroupMirror::new(group, pending);
    assert!(mirror.must_hold("s") && mirror.must_hold("t") && !mirror.must_hold("u"));
    assert_eq!(
        mirror.ready(1_000, 10),
        vec![],
        "s and t each have a delivery out"
    );
    // Ack 1: 2 becomes ready (not 4); retry 3: t waits its backoff.
    let step = ConsumerCommand::Step {
        name: "g".into(),
        created_index: mirror.record.created_index,
        revision: mirror.record.revision,
        settlements: vec![
            settle(1, 1, Outcome::Ack),
            settle(3, 1, Outcome::Retry { delay_ms: None }),
        ],
        redeliveries: vec![],
        advance: None,
        timestamp_ms: 200,
    };
    let (mutations, _) = decide(&mirror, &step, 9, |_| Ok(0)).expect("decides");
    mirror.apply(mutations);
    assert_eq!(mirror.ready(205, 10), vec![(2, 0)]);
    assert_eq!(mirror.ready(210, 10), vec![(2, 0), (3, 1)]);
    assert_eq!(mirror.next_due_ms(), Some(210));
}

#[test]
fn shared_delivers_every_ready_event() {
    let mut memory = created(DispatchMode::Shared);
    memory.step(
        vec![],
        vec![],
        advance(
            1,
            3,
            vec![taken(1, "s", Some("a")), taken(2, "s", Some("b"))],
        ),
        100,
    );
    let group = memory.group();
    let pending: Vec<(u64, PendingRecord)> = memory
        .pending
        .iter()
        .map(|((_, key), record)| (*key, record.clone()))
        .collect();
    let mirror = GroupMirror::new(group, pending);
    assert!(!mirror.must_hold("s"));
    assert_eq!(mirror.in_flight().count(), 2);
}

#[test]
fn a_redrive_gives_dead_letters_back_once_with_fresh_counts() {
    let mut memory = created(DispatchMode::Shared);
    memory.step(
        vec![],
        vec![],
        advance(
            1,
            4,
            vec![
                taken(1, "s", Some("a")),
                taken(2, "s", Some("a")),
                taken(3, "s", Some("a")),
            ],
        ),
        100,
    );
    memory.step(
        vec![
            Settlement {
                reason: "bad json".into(),
                ..settle(1, 1, Outcome::DeadLetter)
            },
            Settlement {
                reason: "timeout".into(),
                ..settle(2, 1, Outcome::DeadLetter)
            },
            Settlement {
                reason: "bad json".into(),
                ..settle(3, 1, Outcome::DeadLetter)
            },
        ],
        vec![],
        None,
        101,
    );
    assert_eq!(memory.group().stats.dead_letters, 3);
    let redrive = |memory: &mut Memory, id: &str| {
        memory.run(ConsumerCommand::Redrive {
            name: "g".into(),
            redrive_id: id.into(),
            selection: RedriveSelection::Reason {
                text: "json".into(),
                limit: 10,
            },
            max: 100,
            timestamp_ms: 200,
        })
    };
    assert_eq!(
        redrive(&mut memory, "r1"),
        ConsumerResponse::Redriven {
            count: 2,
            repeated: false
        }
    );
    assert_eq!(
        redrive(&mut memory, "r1"),
        ConsumerResponse::Redriven {
            count: 2,
            repeated: true
        }
    );
    assert_eq!(
        memory.dead.keys().map(|(_, key)| *key).collect::<Vec<_>>(),
        vec![2]
    );
    let back = memory
        .pending
        .get(&("g".to_string(), 1))
        .cloned()
        .expect("tracked again");
    assert_eq!(
        (back.attempts, back.state),
        (0, PendingState::Waiting { not_before_ms: 200 })
    );
    let stats = memory.group().stats;
    assert_eq!(
        (stats.dead_letters, stats.tracked, stats.redriven_total),
        (1, 2, 2)
    );
    // A redrive moves no more than the room the leader gave it.
    let bounded = |memory: &mut Memory, id: &str, max: u64| {
        memory.run(ConsumerCommand::Redrive {
            name: "g".into(),
            redrive_id: id.into(),
            selection: RedriveSelection::All { limit: 10 },
            max,
            timestamp_ms: 300,
        })
    };
    assert_eq!(
        bounded(&mut memory, "r2", 0),
        ConsumerResponse::Redriven {
            count: 0,
            repeated: false
        }
    );
    assert_eq!(
        bounded(&mut memory, "r3", 1),
        ConsumerResponse::Redriven {
            count: 1,
            repeated: false
        }
    );
    assert!(memory.dead.is_empty());
}
