//! What applying an entry changes, as data: the decision (`apply.rs`) returns these, the
//! writer's transaction executes them (`store.rs`), in order.

use crate::consumer::ConsumerMutation;
use crate::type_config::LogId;
use crate::type_config::StoredMembership;
use crate::types::CommandResponse;
use crate::types::ConsumerSkips;
use crate::types::DataEncoding;
use crate::types::IdempotentRecord;
use crate::types::RecordedEvent;
use crate::types::StreamMeta;

/// One change to the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The entry at this log id is applied (every entry's first mutation).
    SetLastApplied(LogId),
    /// A membership entry: the cluster's members from now on.
    SetMembership(StoredMembership),
    /// An event, stored at its position and indexed under its stream and version; its data
    /// encoded as the log entry carries it.
    PutEvent(RecordedEvent, DataEncoding),
    /// The log's head moved to `head_position`; the last event was recorded at
    /// `last_timestamp_ms` (no later event may be recorded earlier).
    AdvanceHead {
        head_position: u64,
        last_timestamp_ms: u64,
    },
    /// An idempotency key and the outcome of its append, first used at `record.log_index`.
    /// `replaces_order`: the place in the expiry order of the key's earlier (expired) record.
    PutIdempotencyKey {
        key: String,
        record: IdempotentRecord,
        replaces_order: Option<u64>,
    },
    /// An idempotency key expired: removed, with its place `order` in the expiry order.
    ExpireIdempotencyKey { key: String, order: u64 },
    /// A change to consumer groups.
    Consumer(ConsumerMutation),
    /// A stream's metadata (retention limits, first retained version, tombstone). `reclaim`:
    /// its first retained version rose, so rows below it are to be deleted.
    PutStreamMeta {
        stream: String,
        meta: StreamMeta,
        reclaim: bool,
    },
    /// The log's first retained position rose to this (log-wide retention).
    SetFirstPosition(u64),
    /// The log's compression dictionary (it had none).
    SetDictionary(bytes::Bytes),
    /// The access state after an access command (`sm_meta` `access`).
    SetAccess(std::sync::Arc<crate::access::AccessState>),
    /// What retention took from consumer group `name` so far (its frontier moved past removed
    /// events).
    PutConsumerSkips { name: String, skips: ConsumerSkips },
    /// Consumer group `name` was deleted: so is what retention took from it.
    ForgetConsumerSkips { name: String },
}

/// What applying one entry decided: what to write, and what to answer the proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mutations: Vec<Mutation>,
    pub response: CommandResponse,
}
