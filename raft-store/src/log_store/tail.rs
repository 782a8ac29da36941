//! The log's tail as openraft sees it, ahead of what the writer has committed: `append()`
//! puts entries here and returns at once (they are readable meanwhile); the writer drops them
//! once its commit made them readable from the database.

use std::collections::BTreeMap;

use crate::type_config::Entry;
use crate::type_config::LogId;

/// Appended entries the writer has not committed yet, and the last log id appended.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Entries appended but not yet committed by the writer, by index.
    pub pending: BTreeMap<u64, Entry>,
    /// The last log id appended (pending or stored); `None` for an empty log.
    pub last_log_id: Option<LogId>,
}
