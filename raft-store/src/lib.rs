//! evlog's storage: the Raft log, the vote and the state machine of one node, in one redb
//! database, written by one thread in group-committed transactions.
//!
//! - [`engine`]: opening (refusing damaged or foreign data), the writer thread (ops, batching,
//!   durability), its statistics.
//! - [`log_store`]: openraft's `RaftLogStorage`: the pending tail, the log's ops in a
//!   transaction.
//! - [`state_machine`]: pure apply decisions (`decide` returns mutations and a response), and
//!   openraft's `RaftStateMachine`, which executes them.
//! - [`snapshot`]: live snapshots (a read transaction), streamed to followers; crash-atomic
//!   install.
//! - [`consumer`]: consumer groups' replicated state and its pure decisions.
//! - [`reader`]: the read path for clients.
//! - [`codec`], [`schema`]: the on-disk format (see `DESIGN.md`); [`types`]: the domain types
//!   (a leaf); [`type_config`]: openraft's type configuration.
//! - [`testing`] (feature `testing`): a storage backend that loses power.

pub mod access;
pub mod codec;
pub mod consumer;
pub mod dictionary;
pub mod engine;
pub mod error;
pub mod failpoint;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod log_store;
pub mod reader;
pub mod schema;
pub mod snapshot;
pub mod state_machine;
#[cfg(feature = "testing")]
pub mod testing;
pub mod type_config;
pub mod types;

pub use engine::Engine;
pub use engine::RestoreError;
pub use engine::StoreBackend;
pub use engine::StoreConfig;
pub use engine::StoreObserver;
pub use error::OpenError;
pub use error::StoreError;
pub use log_store::LogStore;
pub use reader::EventReader;
pub use reader::PageLimit;
pub use reader::ReadPage;
pub use reader::ReadStart;
pub use reader::ReadTarget;
pub use snapshot::SnapshotData;
pub use state_machine::store::StateMachine;

/// Opens a node's store and returns the handles openraft and the node need.
pub fn open(
    config: &StoreConfig,
) -> Result<(Engine, LogStore, StateMachine, EventReader), OpenError> {
    let engine = Engine::open(config)?;
    Ok((
        engine.clone(),
        LogStore::new(engine.clone()),
        StateMachine::new(engine.clone()),
        EventReader::new(&engine),
    ))
}
