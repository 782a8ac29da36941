//! Errors of the storage layer, one enum per concern.
//!
//! - [`OpenError`]: a data directory that cannot be opened, with a message for the operator
//!   (a damaged or foreign directory must be refused clearly).
//! - [`StoreError`]: what a running store could not do. openraft's storage traits take
//!   `std::io::Error`, so at that boundary a `StoreError` travels inside one
//!   ([`StoreError::from_io`] gets it back out); everywhere else it is itself.
//! - [`CorruptRecord`]: bytes read from disk that do not decode.

use std::io;
use std::path::PathBuf;

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create or read data directory {path}: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("cannot open database {path}: {source}")]
    Database {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "data directory {path} belongs to cluster {found:?}, not {expected:?}; refusing to start \
         (point --data-dir at this cluster's data, or use an empty directory)"
    )]
    ForeignCluster {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "data directory {path} belongs to node {found}, not node {expected}; refusing to start"
    )]
    ForeignNode {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "data directory {path} has storage format version {found}, this evlog reads version \
         {supported}; refusing to start"
    )]
    UnknownFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("data directory {path} is damaged: {detail}; refusing to start")]
    Damaged { path: PathBuf, detail: String },
    #[error("storage error while opening {path}: {source}")]
    Storage { path: PathBuf, source: io::Error },
}

/// Bytes read from disk that do not decode: a checksum mismatch, a truncated record or an
/// unknown codec version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what}: {detail}")]
pub struct CorruptRecord {
    pub what: &'static str,
    pub detail: String,
}

/// What a running store could not do.
///
/// Every kind but [`StoreError::Stopped`] is fatal for the store: the writer stops at the
/// first, and the node with it (a failed write or fsync may have lost data the kernel had
/// accepted, so it is never retried; a broken invariant means the code or the disk is wrong).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database or the file system failed (a write, an fsync, a read).
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// Bytes read from disk do not decode.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    /// The store found a state it must never be in: a bug, or damage the checksums missed.
    #[error("store invariant violated: {0}")]
    Invariant(String),
    /// The store had stopped (after the failure named) before this was asked of it.
    #[error("the store has stopped after a failure: {0}")]
    Stopped(String),
}

impl StoreError {
    /// An error of the database engine (redb).
    pub(crate) fn db(error: impl Into<redb::Error>) -> Self {
        StoreError::Io(error.into().to_string())
    }

    /// The `StoreError` inside an `io::Error` that openraft passed along, if it is one.
    pub fn from_io(error: &io::Error) -> Option<&StoreError> {
        error.get_ref()?.downcast_ref::<StoreError>()
    }
}

/// A database engine error as the `io::Error` openraft's traits and file-level code take.
pub(crate) fn io_error(error: impl Into<redb::Error>) -> io::Error {
    StoreError::db(error).into()
}

impl From<io::Error> for StoreError {
    fn from(error: io::Error) -> Self {
        match StoreError::from_io(&error) {
            Some(inner) => inner.clone(),
            None => StoreError::Io(error.to_string()),
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(error: StoreError) -> Self {
        let kind = match error {
            StoreError::Corrupt(_) | StoreError::Invariant(_) => io::ErrorKind::InvalidData,
            StoreError::Io(_) | StoreError::Stopped(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

impl From<CorruptRecord> for io::Error {
    fn from(error: CorruptRecord) -> Self {
        StoreError::Corrupt(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_survives_the_trip_through_io_error() {
        let error = StoreError::Invariant("log index 5 after 7".to_string());
        let io: io::Error = error.clone().into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert_eq!(StoreError::from_io(&io), Some(&error));
        assert_eq!(StoreError::from(io), error);
        let plain = io::Error::other("disk full");
        assert_eq!(StoreError::from_io(&plain), None);
        assert!(matches!(StoreError::from(plain), StoreError::Io(_)));
    }
}
