//! What a decision may read of the state machine: a narrow view, so that deciding stays pure
//! (the writer's transaction implements it in `store.rs`, the unit tests with maps).

use crate::consumer::ConsumerView;
use crate::error::StoreError;
use crate::types::ConsumerSkips;
use crate::types::IdempotentRecord;
use crate::types::StreamInfo;
use crate::types::StreamMeta;

/// Reads of the state machine as the writer's transaction sees it, before the entry's own
/// mutations.
pub trait StateView: ConsumerView {
    /// A stream's summary; `None` when it has no events.
    fn stream(&self, stream: &str) -> Result<Option<StreamInfo>, StoreError>;

    /// What an idempotency key holds (expired or not); `None` for an unknown key.
    fn idempotency_key(&self, key: &str) -> Result<Option<IdempotentRecord>, StoreError>;

    /// A stream's metadata; `None` when it has neither metadata nor a deletion.
    fn stream_meta(&self, stream: &str) -> Result<Option<StreamMeta>, StoreError>;

    /// What retention took from consumer group `name` (`None`: nothing).
    fn consumer_skips(&self, name: &str) -> Result<Option<ConsumerSkips>, StoreError>;

    /// How many idempotency keys are kept.
    fn idempotency_key_count(&self) -> Result<u64, StoreError>;

    /// The oldest key in the expiry order after place `after` (from the start with `None`):
    /// its place (the log index of its first use), the key, and its record.
    fn next_idempotency_key(
        &self,
        after: Option<u64>,
    ) -> Result<Option<(u64, String, IdempotentRecord)>, StoreError>;
}
