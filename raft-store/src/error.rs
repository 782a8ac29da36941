//! Errors of the storage layer.
//!
//! Opening a data directory has its own narrow error ([`OpenError`]) because it is the one
//! place where a damaged or foreign directory must be refused with a clear message. Errors on
//! the running store become `std::io::Error`, which is what openraft's storage traits take.

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
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what}: {detail}")]
pub struct CorruptRecord {
    pub what: &'static str,
    pub detail: String,
}

impl From<CorruptRecord> for io::Error {
    fn from(error: CorruptRecord) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

/// Turns any storage-engine error into the `io::Error` openraft's traits expect.
pub(crate) fn io_error(error: impl Into<redb::Error>) -> io::Error {
    io::Error::other(error.into())
}
