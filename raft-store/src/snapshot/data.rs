//! A snapshot's data as openraft carries it: a leaf module (the type configuration names it;
//! it names nothing of the crate).

use std::path::PathBuf;
use std::sync::Arc;

use redb::ReadTransaction;

/// A snapshot's data: openraft's `SnapshotData` for evlog.
#[derive(Clone)]
pub enum SnapshotData {
    /// The state machine as of a read transaction: what this node builds and sends.
    Live(Arc<ReadTransaction>),
    /// A snapshot file received from the leader, to install.
    File(PathBuf),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::Live(_) => f.write_str("SnapshotData::Live"),
            SnapshotData::File(path) => write!(f, "SnapshotData::File({})", path.display()),
        }
    }
}
