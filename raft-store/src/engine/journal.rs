//! The log's redo journal, `<data_dir>/evlog.journal`: what makes an appended entry durable.
//!
//! redb's durable commit writes a new copy of every page a commit changed (some sixteen for a
//! small append: the log's leaf and branches, the tables' roots, the allocator's state) and
//! then fsyncs; done per batch, it was most of the writer's work. Now the writer commits the
//! database without fsync (its writes are readable at once) and makes a batch's log appends
//! and truncations durable by writing them here, one short sequential write and one fsync.
//! The database commits durably only now and then ([`DB_SYNC_INTERVAL`], or when the journal
//! grows past [`MAX_JOURNAL_BYTES`], or idle, or for a vote, a purge or a snapshot install),
//! after which the journal holds nothing the database lacks and is emptied.
//!
//! At open, the database is at its last durable commit and the journal holds every log
//! append and truncation since, in order: replaying them gives back the log as it was
//! acknowledged (applied state is not journaled: it is applied again from the log).
//!
//! A record is `u32 body length`, the body (`u8 kind`, then an encoded log entry, kind 1, or
//! `opt<log id>`, kind 2: truncate after it), and a CRC-32 of the length and the body. A
//! record cut short or failing its checksum ends the journal: it was written by a batch whose
//! fsync never returned, so nobody heard of it, and nothing after it was synced either.

use std::fmt::Debug;
use std::io;
use std::time::Duration;

use crate::codec;
use crate::error::CorruptRecord;
use crate::error::StoreError;
use crate::type_config::Entry;
use crate::type_config::LogId;

/// The journal's file name in the data directory.
pub const JOURNAL_FILE: &str = "evlog.journal";

/// The longest the database goes without a durable commit while the writer is busy (idle, it
/// commits after `IDLE_SYNC_DELAY`): the journal replayed at open holds about this much.
pub(crate) const DB_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The journal's size past which the next batch commits the database durably and empties it.
pub(crate) const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// The largest record body read back: an entry is at most a proposal batch (about 1 MiB of
/// appends, or one append of up to the request limit) with room to spare.
const MAX_RECORD_BYTES: u32 = 256 << 20;

const KIND_APPEND: u8 = 1;
const KIND_TRUNCATE: u8 = 2;

/// The file the journal is kept in: a plain file, or (tests) one that can lose power.
pub trait JournalFile: Send + Sync + Debug {
    /// The file's length in bytes.
    fn byte_len(&self) -> io::Result<u64>;
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
}

impl JournalFile for std::fs::File {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, out, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// Opens (or creates) the journal as a plain file.
pub(crate) fn open_file(path: &std::path::Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// A log change the journal records.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    /// An entry appended after the log's last one (or, replayed, one the database has).
    Append(Entry),
    /// Every entry after this one removed (`None`: all of them).
    TruncateAfter(Option<LogId>),
}

/// The writer's journal: records of the current batch are staged, then written and synced
/// together.
pub(crate) struct Journal {
    file: std::sync::Arc<dyn JournalFile>,
    /// Bytes in the file.
    len: u64,
    /// Records staged by the current batch, not written yet.
    staged: Vec<u8>,
}

impl Journal {
    /// The journal in `file`, which must be empty (as replay leaves it).
    pub(crate) fn new(file: std::sync::Arc<dyn JournalFile>) -> Self {
        Self {
            file,
            len: 0,
            staged: Vec::new(),
        }
    }

    /// Bytes written to the file since it was last emptied.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Stages an appended entry, given as its encoded record.
    pub(crate) fn stage_append(&mut self, encoded_entry: &[u8]) {
        self.stage(KIND_APPEND, encoded_entry);
    }

    /// Stages a truncation after `last`.
    pub(crate) fn stage_truncate(&mut self, last: Option<LogId>) {
        let body = match last {
            Some(log_id) => {
                let mut body = vec![1];
                body.extend_from_slice(&codec::encode_log_id(&log_id));
                body
            }
            None => vec![0],
        };
        self.stage(KIND_TRUNCATE, &body);
    }

    fn stage(&mut self, kind: u8, payload: &[u8]) {
        let body_len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
        let start = self.staged.len();
        self.staged.extend_from_slice(&body_len.to_le_bytes());
        self.staged.push(kind);
        self.staged.extend_from_slice(payload);
        let crc = crc32fast::hash(&self.staged[start..]);
        self.staged.extend_from_slice(&crc.to_le_bytes());
    }

    /// Whether records wait to be written.
    #[cfg(test)]
    fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Writes the staged records after the file's end and syncs them: once this returns they
    /// survive a crash.
    pub(crate) fn write_and_sync(&mut self) -> Result<(), StoreError> {
        if !self.staged.is_empty() {
            self.file
                .write_at(self.len, &self.staged)
                .map_err(|error| journal_error("write", error))?;
            self.len += self.staged.len() as u64;
            self.staged.clear();
        }
        self.file
            .sync_data()
            .map_err(|error| journal_error("fsync", error))
    }

    /// Empties the journal (staged records too): the database's durable commit, just made,
    /// holds everything it held. Synced, so no stale record outlives the next ones written.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        self.staged.clear();
        if self.len == 0 {
            return Ok(());
        }
        self.file
            .set_len(0)
            .map_err(|error| journal_error("empty", error))?;
        self.file
            .sync_data()
            .map_err(|error| journal_error("fsync", error))?;
        self.len = 0;
        Ok(())
    }
}

fn journal_error(what: &str, error: io::Error) -> StoreError {
    StoreError::Io(format!("cannot {what} the log journal: {error}"))
}

/// What reading a journal found: its records in order, and the bytes of an unfinished write
/// at its end (dropped).
#[derive(Debug, PartialEq)]
pub(crate) struct Read {
    pub records: Vec<Record>,
    pub torn_bytes: u64,
}

/// Reads every record of `file`, stopping at the first one cut short or failing its checksum.
/// A record whose checksum holds but which does not decode is corruption: an error.
pub(crate) fn read(file: &dyn JournalFile) -> Result<Read, io::Error> {
    let len = file.byte_len()?;
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut bytes = vec![0u8; len];
    file.read_at(0, &mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = &bytes[at..];
        let Some(body_len) = rest
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        if body_len == 0 || body_len > MAX_RECORD_BYTES {
            break;
        }
        let body_len = body_len as usize;
        let Some(record) = rest.get(..4 + body_len + 4) else {
            break;
        };
        let (framed, crc) = record.split_at(4 + body_len);
        if crc32fast::hash(framed) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            break;
        }
        records.push(decode_body(&framed[4..]).map_err(io::Error::other)?);
        at += record.len();
    }
    Ok(Read {
        records,
        torn_bytes: (bytes.len() - at) as u64,
    })
}

fn decode_body(body: &[u8]) -> Result<Record, CorruptRecord> {
    let bad = |detail: String| CorruptRecord {
        what: "log journal record",
        detail,
    };
    match body.split_first() {
        Some((&KIND_APPEND, entry)) => Ok(Record::Append(codec::decode_entry(entry)?)),
        Some((&KIND_TRUNCATE, [0])) => Ok(Record::TruncateAfter(None)),
        Some((&KIND_TRUNCATE, [1, log_id @ ..])) => {
            Ok(Record::TruncateAfter(Some(codec::decode_log_id(log_id)?)))
        }
        Some((kind, _)) => Err(bad(format!("unknown kind {kind}"))),
        None => Err(bad("empty record".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::type_config::EntryPayload;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId {
                leader_id: crate::type_config::LeaderId {
                    term: 2,
                    node_id: 1,
                },
                index,
            },
            payload: EntryPayload::Blank,
        }
    }

    fn journal() -> (tempfile::TempDir, Arc<std::fs::File>, Journal) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = Arc::new(open_file(&dir.path().join(JOURNAL_FILE)).expect("the journal opens"));
        let journal = Journal::new(file.clone());
        (dir, file, journal)
    }

    #[test]
    fn records_read_back_in_order() {
        let (_dir, file, mut journal) = journal();
        journal.stage_append(&codec::encode_entry(&entry(1)));
        journal.stage_append(&codec::encode_entry(&entry(2)));
        journal.write_and_sync().expect("written");
        journal.stage_truncate(Some(entry(1).log_id));
        journal.stage_truncate(None);
        journal.write_and_sync().expect("written");
        let read = read(file.as_ref()).expect("read");
        assert_eq!(
            read.records,
            vec![
                Record::Append(entry(1)),
                Record::Append(entry(2)),
                Record::TruncateAfter(Some(entry(1).log_id)),
                Record::TruncateAfter(None),
            ]
        );
        assert_eq!(read.torn_bytes, 0);
    }

    #[test]
    fn a_torn_last_record_ends_the_journal_at_every_cut() {
        let (_dir, file, mut journal) = journal();
        journal.stage_append(&codec::encode_entry(&entry(1)));
        journal.write_and_sync().expect("written");
        let first_len = journal.len();
        journal.stage_append(&codec::encode_entry(&entry(2)));
        journal.write_and_sync().expect("written");
        let full = journal.len();
        for cut in first_len..full {
            file.set_len(cut).expect("cut");
            let read = read(file.as_ref()).expect("read");
            assert_eq!(read.records, vec![Record::Append(entry(1))], "cut at {cut}");
            assert_eq!(read.torn_bytes, cut - first_len);
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_journal_there() {
        let (_dir, file, mut journal) = journal();
        journal.stage_append(&codec::encode_entry(&entry(1)));
        journal.stage_append(&codec::encode_entry(&entry(2)));
        journal.write_and_sync().expect("written");
        let len = journal.len();
        let mut last = [0u8; 1];
        file.read_at(len - 6, &mut last).expect("read");
        file.write_at(len - 6, &[last[0] ^ 0xff]).expect("write");
        let read = read(file.as_ref()).expect("read");
        assert_eq!(read.records, vec![Record::Append(entry(1))]);
    }

    #[test]
    fn reset_empties_the_file() {
        let (_dir, file, mut journal) = journal();
        journal.stage_append(&codec::encode_entry(&entry(1)));
        journal.write_and_sync().expect("written");
        journal.stage_append(&codec::encode_entry(&entry(2)));
        journal.reset().expect("emptied");
        assert_eq!(file.byte_len().expect("len"), 0);
        assert!(!journal.has_staged());
        assert_eq!(read(file.as_ref()).expect("read").records, vec![]);
    }
}
