//! The replicated state machine: events, the stream index, idempotency keys.
//!
//! Applying an entry is decided apart from done. `apply.rs` decides, from the entry, the
//! state machine's meta and a read-only [`StateView`], which [`Mutation`]s to write and what
//! to answer: pure, with every replica-determinism rule in it, unit-tested without I/O
//! (`apply_test.rs`). `append.rs` and `idempotency.rs` are the pure pieces it is built of.
//! `execute.rs` carries the mutations out in the writer's transaction; `store.rs` is openraft's
//! `RaftStateMachine`.

pub mod append;
pub mod apply;
pub(crate) mod cache;
pub(crate) mod execute;
pub mod idempotency;
pub mod mutation;
pub(crate) mod reclaim;
pub mod retention;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod view;

pub use mutation::Decision;
pub use mutation::Mutation;
pub use view::StateView;

use crate::type_config::LogId;
use crate::type_config::StoredMembership;

/// What the state machine looks like now: kept in memory, changed only after a commit (the
/// writer stages a copy while it applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub head_position: u64,
    /// The timestamp of the last event (0 with none): apply never records an earlier one.
    pub last_timestamp_ms: u64,
    /// The log's epoch: changed only by a snapshot install or a restore.
    pub epoch: u64,
    /// The id of the log's compression dictionary (0: none); see [`crate::dictionary`].
    pub dictionary: u64,
    /// The log's first retained position: every event before it is removed (log-wide
    /// retention). 1 until the log-wide limits removed anything; at most `head_position + 1`.
    pub first_position: u64,
    /// Tokens and roles (see [`crate::access`]).
    pub access: std::sync::Arc<crate::access::AccessState>,
}

impl Default for MachineMeta {
    fn default() -> Self {
        Self {
            last_applied: None,
            membership: StoredMembership::default(),
            head_position: 0,
            last_timestamp_ms: 0,
            first_position: 1,
            epoch: 0,
            dictionary: 0,
            access: Default::default(),
        }
    }
}
