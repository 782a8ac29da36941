//! What the store's integration tests share: log entries that append one event each, and the
//! calls that append, flush and apply them.

#![allow(dead_code)] // Each test file uses its own part.

use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::EntryPayload;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::NewEvent;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::type_config::TypeConfigExt;

/// The log id of `index` in `term` (leader: node 1).
pub fn log_id_in(term: u64, index: u64) -> LogId {
    LogId {
        leader_id: LeaderId { term, node_id: 1 },
        index,
    }
}

/// The log id of `index` in term 1.
pub fn log_id(index: u64) -> LogId {
    log_id_in(1, index)
}

/// The id of the one event that entry `index` of `term` appends: `e-<term>-<index>`.
pub fn event_id(term: u64, index: u64) -> String {
    format!("e-{term}-{index}")
}

/// An entry at `index` of `term` appending one event ([`event_id`]) to stream `s-<index % 7>`.
pub fn entry_in(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id_in(term, index),
        payload: EntryPayload::Normal(Command::Append(AppendCommand {
            stream: format!("s-{}", index % 7),
            events: vec![NewEvent {
                id: event_id(term, index),
                event_type: "T".to_string(),
                content_type: String::new(),
                data: bytes::Bytes::from(format!("payload-{term}-{index}")),
                metadata: vec![],
                encoding: Default::default(),
            }],
            expected_version: None,
            idempotency_key: None,
            timestamp_ms: 1_000 + index,
            request_fingerprint: index,
            idempotency: Default::default(),
        })),
    }
}

/// [`entry_in`] term 1.
pub fn entry(index: u64) -> Entry {
    entry_in(1, index)
}

/// Appends `entries` and waits until their flush callback fired (they are durable).
pub async fn append_flushed(
    log: &mut evlog_raft_store::LogStore,
    entries: Vec<Entry>,
) -> std::io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::<TypeConfig>::signal(tx))
        .await?;
    rx.await
        .map_err(|_| std::io::Error::other("the flush callback was dropped"))?
}

/// Applies `entries` (nobody waits for their responses).
pub async fn apply(
    machine: &mut evlog_raft_store::StateMachine,
    entries: Vec<Entry>,
) -> std::io::Result<()> {
    machine
        .apply(futures::stream::iter(
            entries.into_iter().map(|entry| Ok((entry, None))),
        ))
        .await
}
