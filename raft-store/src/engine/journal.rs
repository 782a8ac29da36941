//! The log's redo journal, `<data_dir>/evlog.journal`: what makes an appended entry durable.
//!
//! redb's durable commit writes a new copy of every page a commit changed (some sixteen for a
//! small append: the log's leaf and branches, the tables' roots, the allocator's state) and
//! then fsyncs; done per batch, it was most of the writer's work. Now the writer commits the
//! database without fsync (its writes are readable at once) and makes a batch's log appends
//! and truncations durable by writing them here, one short sequential write and one fsync.
//! The database commits durably only now and then ([`DB_SYNC_INTERVAL`], or when the journal
//! grows past [`MAX_JOURNAL_BYTES`], or idle, or for a vote, a purge or a snapshot install),
//! after which the journal holds nothing the database lacks: each such commit also records a
//! new journal *generation* (`meta` `journal_generation`), and the journal starts over at its
//! beginning with records of that generation, writing over the old ones. Nothing is truncated
//! or zeroed: a record of another generation ends the journal, as a record cut short does.
//! The file grows in steps of [`PREALLOCATE_BYTES`] of zeros written ahead, so a record's
//! `fdatasync` finds the file's length unchanged and writes the data alone.
//!
//! At open, the database is at its last durable commit, and the journal's records of the
//! generation that commit recorded are every log append and truncation since, in order:
//! replaying them gives back the log as it was acknowledged (applied state is not journaled:
//! it is applied again from the log). Open then commits the next generation.
//!
//! A record is `u32 body length`, `u64 generation`, the body (`u8 kind`, then an encoded log
//! entry, kind 1, or `opt<log id>`, kind 2: truncate after it), and a CRC-32 of all before it.
//! A record cut short, failing its checksum, of another generation or of length 0 (the zeros
//! ahead) ends the journal: a record cut short or failing its checksum was written by a batch
//! whose fsync never returned, so nobody heard of it, and nothing after it was synced either.

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
pub(crate) const DB_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The journal's size past which the next batch commits the database durably and starts a new
/// generation.
pub(crate) const MAX_JOURNAL_BYTES: u64 = 16 << 20;

/// How far ahead of its records the journal's file is filled with zeros.
pub(crate) const PREALLOCATE_BYTES: u64 = 1 << 20;

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
    /// The generation records are written with (recorded durably in the database first).
    generation: u64,
    /// Bytes of records of this generation, from the file's start.
    len: u64,
    /// The file's length: zeros (or older records) past `len`.
    allocated: u64,
    /// Records staged by the current batch, not written yet.
    staged: Vec<u8>,
}

impl Journal {
    /// The journal in `file`, writing records of `generation` (which the database has durably
    /// recorded) from the file's start.
    pub(crate) fn new(
        file: std::sync::Arc<dyn JournalFile>,
        generation: u64,
    ) -> Result<Self, StoreError> {
        let allocated = file
            .byte_len()
            .map_err(|error| journal_error("read the length of", error))?;
        Ok(Self {
            file,
            generation,
            len: 0,
            allocated,
            staged: Vec::new(),
        })
    }

    /// Bytes of records written in this generation.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The generation after this one: what the database's next durable commit records.
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.wrapping_add(1)
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
        self.staged
            .extend_from_slice(&self.generation.to_le_bytes());
        self.staged.push(kind);
        self.staged.extend_from_slice(payload);
        let crc = crc32fast::hash(&self.staged[start..]);
        self.staged.extend_from_slice(&crc.to_le_bytes());
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
            if self.len > self.allocated {
                // Zeros ahead, synced with these records: the next syncs find the length
                // unchanged.
                let zeros = vec![0u8; PREALLOCATE_BYTES as usize];
                self.file
                    .write_at(self.len, &zeros)
                    .map_err(|error| journal_error("extend", error))?;
                self.allocated = self.len + PREALLOCATE_BYTES;
            }
        }
        self.file
            .sync_data()
            .map_err(|error| journal_error("fsync", error))
    }

    /// Starts `generation` (staged records dropped): the database's durable commit, just made,
    /// holds everything the journal held and records `generation`, so older records are stale.
    pub(crate) fn begin_generation(&mut self, generation: u64) {
        self.staged.clear();
        self.generation = generation;
        self.len = 0;
    }
}

fn journal_error(what: &str, error: io::Error) -> StoreError {
    StoreError::Io(format!("cannot {what} the log journal: {error}"))
}

/// What reading a journal found: its records in order, and whether an unfinished write of
/// the same generation followed them (dropped).
#[derive(Debug, PartialEq)]
pub(crate) struct Read {
    pub records: Vec<Record>,
    pub torn: bool,
}

/// Reads the records of `generation` from the start of `file`, stopping at the first one cut
/// short, failing its checksum or of another generation. A record whose checksum holds but
/// which does not decode is corruption: an error.
pub(crate) fn read(file: &dyn JournalFile, generation: u64) -> Result<Read, io::Error> {
    // A record at a time: the file keeps its largest size and older records past this
    // generation's, so only what is replayed is held in memory.
    let len = file.byte_len()?;
    let mut records = Vec::new();
    let mut at = 0u64;
    let torn = loop {
        let rest = len - at;
        if rest < HEADER_BYTES as u64 {
            // A header cut short is an unfinished write; the file's end is the end.
            break rest > 0;
        }
        let mut header = [0u8; HEADER_BYTES];
        file.read_at(at, &mut header)?;
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        // Zeros ahead, or an older generation's record, end the journal; a header of this
        // generation that leads nowhere whole is an unfinished write.
        if body_len == 0 || header[4..] != generation.to_le_bytes() {
            break false;
        }
        let framed_len = HEADER_BYTES as u64 + u64::from(body_len);
        if body_len > MAX_RECORD_BYTES || framed_len + 4 > rest {
            break true;
        }
        let mut record = vec![0u8; usize::try_from(framed_len + 4).map_err(io::Error::other)?];
        file.read_at(at, &mut record)?;
        let (framed, crc) = record.split_at(HEADER_BYTES + body_len as usize);
        if crc32fast::hash(framed) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            break true;
        }
        records.push(decode_body(&framed[HEADER_BYTES..]).map_err(io::Error::other)?);
        at += record.len() as u64;
    };
    Ok(Read { records, torn })
}

/// A record's length and generation.
const HEADER_BYTES: usize = 12;

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
        let journal = Journal::new(file.clone(), 7).expect("a journal");
        (dir, file, journal)
    }

    fn append(journal: &mut Journal, index: u64) {
        journal.stage_append(&codec::encode_entry(&entry(index)));
    }

    #[test]
    fn records_read_back_in_order() {
        let (_dir, file, mut journal) = journal();
        append(&mut journal, 1);
        append(&mut journal, 2);
        journal.write_and_sync().expect("written");
        journal.stage_truncate(Some(entry(1).log_id));
        journal.stage_truncate(None);
        journal.write_and_sync().expect("written");
        let read = read(file.as_ref(), 7).expect("read");
        assert_eq!(
            read.records,
            vec![
                Record::Append(entry(1)),
                Record::Append(entry(2)),
                Record::TruncateAfter(Some(entry(1).log_id)),
                Record::TruncateAfter(None),
            ]
        );
        assert!(!read.torn);
        assert!(
            file.byte_len().expect("len") >= journal.len() + PREALLOCATE_BYTES / 2,
            "zeros ahead of the records"
        );
    }

    #[test]
    fn a_torn_last_record_ends_the_journal_at_every_cut() {
        let (_dir, file, mut journal) = journal();
        append(&mut journal, 1);
        journal.write_and_sync().expect("written");
        let first_len = journal.len();
        append(&mut journal, 2);
        journal.write_and_sync().expect("written");
        let full = journal.len();
        let mut whole = vec![0u8; full as usize];
        file.read_at(0, &mut whole).expect("read");
        for cut in first_len + 1..full {
            file.set_len(0).expect("emptied");
            file.write_at(0, &whole[..cut as usize]).expect("written");
            let read = read(file.as_ref(), 7).expect("read");
            assert_eq!(read.records, vec![Record::Append(entry(1))], "cut at {cut}");
            assert!(read.torn, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_journal_there() {
        let (_dir, file, mut journal) = journal();
        append(&mut journal, 1);
        append(&mut journal, 2);
        journal.write_and_sync().expect("written");
        let len = journal.len();
        let mut last = [0u8; 1];
        file.read_at(len - 6, &mut last).expect("read");
        file.write_at(len - 6, &[last[0] ^ 0xff]).expect("write");
        let read = read(file.as_ref(), 7).expect("read");
        assert_eq!(read.records, vec![Record::Append(entry(1))]);
        assert!(read.torn);
    }

    #[test]
    fn a_new_generation_writes_over_the_old_and_ends_where_it_ends() {
        let (_dir, file, mut journal) = journal();
        for index in 1..=5 {
            append(&mut journal, index);
        }
        journal.write_and_sync().expect("written");
        journal.begin_generation(8);
        append(&mut journal, 6);
        journal.write_and_sync().expect("written");
        // The records of generation 7 after the new one are stale: they end the journal.
        let found = read(file.as_ref(), 8).expect("read");
        assert_eq!(found.records, vec![Record::Append(entry(6))]);
        assert!(!found.torn);
        // Before generation 8 wrote anything, generation 8 has no record; 7's are all there.
        let (_dir, file, mut journal) = self::journal();
        append(&mut journal, 1);
        journal.write_and_sync().expect("written");
        journal.begin_generation(8);
        assert_eq!(read(file.as_ref(), 8).expect("read").records, vec![]);
        assert_eq!(
            read(file.as_ref(), 7).expect("read").records,
            vec![Record::Append(entry(1))]
        );
    }
}
