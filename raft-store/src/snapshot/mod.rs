//! Snapshots: the whole state machine at one applied log id.
//!
//! [`SnapshotData`] (what openraft carries around) is in `data.rs`, a leaf the type
//! configuration names; the format, building, sending and installing are here.
//!
//! Building a snapshot costs nothing: it is a redb read transaction (an MVCC view that never
//! stops the writer) and the meta read from it ([`SnapshotData::Live`]). Its records are
//! serialized only when a lagging follower needs them, while they are sent, in chunks, so a
//! snapshot is never held whole in memory nor written to the sender's disk. The follower writes
//! what it receives to a file ([`SnapshotData::File`]) and installs it inside ONE write
//! transaction that replaces every state-machine table: a crash during install leaves the old
//! state whole. (An event log's state is every event: rewriting it to a file every N entries
//! would cost work and disk in proportion to the whole log, again and again.)
//!
//! Wire and file layout (all integers little-endian):
//! ```text
//! magic "EVLSNAP1" | u32 format version (`SNAPSHOT_FORMAT_VERSION`, 8; 3 to 7 are read too)
//! record*          | u8 tag | u32 length | length bytes
//!   tag 1 header   : codec record: optional last-applied log id, membership, head position,
//!                    log epoch (format 6 on; earlier formats: epoch 0)
//!   tag 2 event    : u64 position | codec event record
//!   tag 4 key      : u32 key length | idempotency key | codec idempotency record
//!   tag 5 consumer : u32 name length | group name | consumer record
//!   tag 6 pending  : u64 key | u32 name length | group name | pending-event record
//!   tag 7 dead     : u64 key | u32 name length | group name | dead-letter record
//!   tag 8 stream   : u32 name length | stream name | stream metadata record
//!   tag 9 first    : u64 the log's first retained position (absent: 1)
//!   tag 10 skips   : u32 name length | group name | consumer skips record
//!   tag 11 dict    : the log's compression dictionary (format 7; before every event)
//!   tag 12 access  : tokens and roles, `access::encode_state` (format 8; at most one)
//! trailer          | u8 255 | u64 record count | u32 CRC-32 of every byte before the trailer's CRC
//! ```
//! The stream index (which is also every stream's summary) and the idempotency expiry order are
//! not shipped: install rebuilds them. (Tag 3 held format 2's stream summaries; format 3 has
//! none.)
//!
//! A backup (`backup.rs`) is a snapshot file: the same bytes, written by a client from a live
//! snapshot it was streamed; a restore installs it with a new membership and epoch.
//!
//! Removed events are not shipped either, but for each stream's last event, which
//! carries the stream's version into the rebuilt index (reads never return it: the stream's
//! metadata or the log's first position, shipped too, say it is removed).

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use redb::ReadTransaction;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::WriteTransaction;
use tokio::sync::mpsc;

use crate::codec;
use crate::error::io_error;
use crate::schema::CONSUMER_PENDING;
use crate::schema::CONSUMER_SKIPS;
use crate::schema::CONSUMERS;
use crate::schema::DEAD_LETTERS;
use crate::schema::EVENTS;
use crate::schema::FORMAT_3;
use crate::schema::IDEMPOTENCY;
use crate::schema::IDEMPOTENCY_ORDER;
use crate::schema::RECLAIM_STREAMS;
use crate::schema::SM_META;
use crate::schema::SNAPSHOT_FORMAT_EPOCH;
use crate::schema::SNAPSHOT_FORMAT_VERSION;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::schema::sm_key;
use crate::type_config::SnapshotMeta;

mod backup;
mod data;

pub use backup::BackupHeader;
pub use backup::BackupSummary;
pub(crate) use backup::restore;
pub use backup::verify_file;
pub use data::SnapshotData;

const MAGIC: &[u8; 8] = b"EVLSNAP1";
const TAG_HEADER: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_KEY: u8 = 4;
const TAG_CONSUMER: u8 = 5;
const TAG_PENDING: u8 = 6;
const TAG_DEAD_LETTER: u8 = 7;
const TAG_STREAM_META: u8 = 8;
const TAG_FIRST_POSITION: u8 = 9;
const TAG_CONSUMER_SKIPS: u8 = 10;
const TAG_DICTIONARY: u8 = 11;
const TAG_ACCESS: u8 = 12;
const TAG_END: u8 = 255;
/// Largest record a snapshot may hold (an event is limited far below this).
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Writes records and keeps the running checksum.
struct SnapshotWriter<W: Write> {
    out: W,
    hasher: crc32fast::Hasher,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    fn new(out: W) -> io::Result<Self> {
        let mut writer = Self {
            out,
            hasher: crc32fast::Hasher::new(),
            records: 0,
        };
        writer.raw(MAGIC)?;
        writer.raw(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
        Ok(writer)
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    fn record(&mut self, tag: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let len = u32::try_from(len).map_err(|_| io::Error::other("snapshot record too large"))?;
        self.raw(&[tag])?;
        self.raw(&len.to_le_bytes())?;
        for part in parts {
            self.raw(part)?;
        }
        self.records += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.raw(&[TAG_END])?;
        self.raw(&self.records.to_le_bytes())?;
        let checksum = self.hasher.clone().finalize();
        self.out.write_all(&checksum.to_le_bytes())?;
        self.out.flush()
    }
}

/// Reads records, checking the checksum when the trailer is reached.
struct SnapshotReader {
    input: BufReader<File>,
    hasher: crc32fast::Hasher,
    records: u64,
    /// The file's format version.
    version: u32,
    /// Bytes read so far.
    bytes: u64,
    /// The CRC-32 stored in the trailer, once it has been read and checked.
    checksum: Option<u32>,
}

enum Record {
    Header(Vec<u8>),
    Event(u64, Vec<u8>),
    Key(String, Vec<u8>),
    Consumer(String, Vec<u8>),
    /// A pending event (tag 6) or a dead letter (tag 7): tag, group, key, record.
    GroupRow(u8, String, u64, Vec<u8>),
    StreamMeta(String, Vec<u8>),
    FirstPosition(u64),
    ConsumerSkips(String, Vec<u8>),
    Dictionary(Vec<u8>),
    Access(Vec<u8>),
    End,
}

fn invalid(detail: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot: {}", detail.into()),
    )
}

impl SnapshotReader {
    fn open(path: &Path) -> io::Result<Self> {
        let mut reader = Self {
            input: BufReader::with_capacity(1 << 20, File::open(path)?),
            hasher: crc32fast::Hasher::new(),
            records: 0,
            version: 0,
            bytes: 0,
            checksum: None,
        };
        let mut magic = [0u8; 8];
        reader.raw(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not an evlog snapshot file"));
        }
        let mut version = [0u8; 4];
        reader.raw(&mut version)?;
        let version = u32::from_le_bytes(version);
        // A snapshot of formats 3 to 5 (from a leader not yet upgraded) holds what format 6
        // reads, at epoch 0.
        if !(FORMAT_3..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(invalid(format!(
                "format version {version}, this evlog reads {FORMAT_3} to {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        reader.version = version;
        Ok(reader)
    }

    fn raw(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buffer)?;
        self.hasher.update(buffer);
        self.bytes += buffer.len() as u64;
        Ok(())
    }

    /// The first record, which must be the header.
    fn header(&mut self) -> io::Result<Header> {
        match self.next()? {
            Record::Header(header) => decode_header(&header, self.version),
            _ => Err(invalid("first record is not the header")),
        }
    }

    fn next(&mut self) -> io::Result<Record> {
        let mut tag = [0u8; 1];
        self.raw(&mut tag)?;
        if tag[0] == TAG_END {
            let mut count = [0u8; 8];
            self.raw(&mut count)?;
            let expected = self.hasher.clone().finalize();
            let mut stored = [0u8; 4];
            self.input.read_exact(&mut stored)?;
            self.bytes += 4;
            if u32::from_le_bytes(stored) != expected {
                return Err(invalid("checksum mismatch"));
            }
            self.checksum = Some(expected);
            if u64::from_le_bytes(count) != self.records {
                return Err(invalid("record count mismatch"));
            }
            // A file with more after its trailer is not what was written (found by fuzzing:
            // a byte appended to a backup went unnoticed).
            let mut after = [0u8; 1];
            if self.input.read(&mut after)? != 0 {
                return Err(invalid("data after the end of the snapshot"));
            }
            return Ok(Record::End);
        }
        let mut len = [0u8; 4];
        self.raw(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(invalid(format!("record of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.raw(&mut body)?;
        self.records += 1;
        match tag[0] {
            TAG_HEADER => Ok(Record::Header(body)),
            TAG_EVENT => {
                if body.len() < 8 {
                    return Err(invalid("short event record"));
                }
                let (position, event) = body.split_at(8);
                let mut array = [0u8; 8];
                array.copy_from_slice(position);
                Ok(Record::Event(u64::from_le_bytes(array), event.to_vec()))
            }
            TAG_KEY => {
                let (name, value) = named(&body)?;
                Ok(Record::Key(name, value))
            }
            TAG_CONSUMER => {
                let (name, value) = named(&body)?;
                Ok(Record::Consumer(name, value))
            }
            tag @ (TAG_PENDING | TAG_DEAD_LETTER) => {
                if body.len() < 8 {
                    return Err(invalid("short group record"));
                }
                let (key, rest) = body.split_at(8);
                let mut array = [0u8; 8];
                array.copy_from_slice(key);
                let (name, value) = named(rest)?;
                Ok(Record::GroupRow(
                    tag,
                    name,
                    u64::from_le_bytes(array),
                    value,
                ))
            }
            TAG_STREAM_META => {
                let (name, value) = named(&body)?;
                Ok(Record::StreamMeta(name, value))
            }
            TAG_CONSUMER_SKIPS => {
                let (name, value) = named(&body)?;
                Ok(Record::ConsumerSkips(name, value))
            }
            TAG_FIRST_POSITION => {
                let array: [u8; 8] = body
                    .as_slice()
                    .try_into()
                    .map_err(|_| invalid("first position record is not 8 bytes"))?;
                Ok(Record::FirstPosition(u64::from_le_bytes(array)))
            }
            TAG_DICTIONARY => {
                if body.is_empty() || body.len() > crate::dictionary::MAX_DICTIONARY_BYTES {
                    return Err(invalid(format!("dictionary of {} bytes", body.len())));
                }
                Ok(Record::Dictionary(body))
            }
            TAG_ACCESS => Ok(Record::Access(body)),
            other => Err(invalid(format!("unknown record tag {other}"))),
        }
    }
}

/// A record's name (u32 length, UTF-8) and the value after it.
fn named(body: &[u8]) -> io::Result<(String, Vec<u8>)> {
    if body.len() < 4 {
        return Err(invalid("short named record"));
    }
    let name_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if body.len() < 4 + name_len {
        return Err(invalid("truncated record name"));
    }
    let name = String::from_utf8(body[4..4 + name_len].to_vec())
        .map_err(|_| invalid("record name is not UTF-8"))?;
    Ok((name, body[4 + name_len..].to_vec()))
}

/// A snapshot's header record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    meta: SnapshotMeta,
    head_position: u64,
    epoch: u64,
}

fn encode_header(header: &Header) -> Vec<u8> {
    let mut writer = codec::Writer::new();
    match header.meta.last_log_id {
        None => writer.u8(0),
        Some(log_id) => {
            writer.u8(1);
            writer.bytes(&codec::encode_log_id(&log_id));
        }
    }
    writer.bytes(&codec::encode_stored_membership(
        &header.meta.last_membership,
    ));
    writer.u64(header.head_position);
    writer.u64(header.epoch);
    writer.finish()
}

/// A header of a file of format `version` (before 6: no epoch, so 0).
fn decode_header(record: &[u8], version: u32) -> io::Result<Header> {
    let mut reader = codec::Reader::new("snapshot header", record)?;
    let last_log_id = match reader.u8()? {
        0 => None,
        1 => Some(codec::decode_log_id(reader.bytes()?)?),
        tag => return Err(reader.invalid(format!("bad option tag {tag}")).into()),
    };
    let last_membership = codec::decode_stored_membership(reader.bytes()?)?;
    let head_position = reader.u64()?;
    let epoch = if version >= SNAPSHOT_FORMAT_EPOCH {
        reader.u64()?
    } else {
        0
    };
    reader.end()?;
    Ok(Header {
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
        },
        head_position,
        epoch,
    })
}

/// The state machine as it is now, as a snapshot (its meta has no log id before anything was
/// applied).
pub(crate) fn live(db: &redb::Database) -> io::Result<(SnapshotMeta, SnapshotData)> {
    let txn = db.begin_read().map_err(io_error)?;
    let header = read_header_of(&txn)?;
    Ok((header.meta, SnapshotData::Live(Arc::new(txn))))
}

/// The state machine as it is now, for a backup: its header and the read transaction.
pub(crate) fn backup_view(db: &redb::Database) -> io::Result<(BackupHeader, SnapshotData)> {
    let txn = db.begin_read().map_err(io_error)?;
    let header = read_header_of(&txn)?;
    Ok((BackupHeader::of(&header), SnapshotData::Live(Arc::new(txn))))
}

/// The header of the snapshot a read transaction sees.
fn read_header_of(txn: &ReadTransaction) -> io::Result<Header> {
    let sm = txn.open_table(SM_META).map_err(io_error)?;
    let last_log_id = match sm.get(sm_key::LAST_APPLIED).map_err(io_error)? {
        None => None,
        Some(value) => Some(codec::decode_log_id(value.value())?),
    };
    let last_membership = match sm.get(sm_key::MEMBERSHIP).map_err(io_error)? {
        None => Default::default(),
        Some(value) => codec::decode_stored_membership(value.value())?,
    };
    let head_position = match sm.get(sm_key::HEAD_POSITION).map_err(io_error)? {
        None => 0,
        Some(value) => codec::decode_u64("head position", value.value())?,
    };
    let epoch = match sm.get(sm_key::EPOCH).map_err(io_error)? {
        None => 0,
        Some(value) => codec::decode_u64("epoch", value.value())?,
    };
    Ok(Header {
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
        },
        head_position,
        epoch,
    })
}

/// Writes the snapshot's bytes (the layout above) to `out`: a live snapshot's records as its
/// read transaction sees them, a file's bytes as they are.
pub fn write_to(data: &SnapshotData, out: impl Write) -> io::Result<()> {
    let txn = match data {
        SnapshotData::File(path) => {
            let mut out = out;
            io::copy(&mut File::open(path)?, &mut out)?;
            return out.flush();
        }
        SnapshotData::Live(txn) => txn,
    };
    let header = read_header_of(txn)?;
    let mut writer = SnapshotWriter::new(out)?;
    writer.record(TAG_HEADER, &[&encode_header(&header)])?;
    let sm = txn.open_table(SM_META).map_err(io_error)?;
    let first_position = match sm.get(sm_key::FIRST_POSITION).map_err(io_error)? {
        None => 1,
        Some(value) => codec::decode_u64("first position", value.value())?,
    };
    if first_position > 1 {
        writer.record(TAG_FIRST_POSITION, &[&first_position.to_le_bytes()])?;
    }
    // Before the events: a reader needs it to decode those compressed with it.
    if let Some(dictionary) = sm.get(sm_key::DICTIONARY).map_err(io_error)? {
        writer.record(TAG_DICTIONARY, &[dictionary.value()])?;
    }
    if let Some(access) = sm.get(sm_key::ACCESS).map_err(io_error)? {
        writer.record(TAG_ACCESS, &[access.value()])?;
    }
    let metas = txn.open_table(STREAM_META).map_err(io_error)?;
    let index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
    let mut retained = crate::reader::retention::Retained::new(first_position, &metas);
    let events = txn.open_table(EVENTS).map_err(io_error)?;
    for item in events.iter().map_err(io_error)? {
        let (position, value) = item.map_err(io_error)?;
        let position = position.value();
        let head = codec::peek_event(value.value())?;
        if !retained
            .keeps(position, head.stream, head.stream_version)
            .map_err(io::Error::other)?
            && !is_last_of_stream(&index, head.stream, head.stream_version)?
        {
            continue;
        }
        writer.record(TAG_EVENT, &[&position.to_le_bytes(), value.value()])?;
    }
    for item in metas.iter().map_err(io_error)? {
        let (name, value) = item.map_err(io_error)?;
        let name = name.value();
        let name_len = u32::try_from(name.len()).map_err(|_| invalid("stream name too long"))?;
        writer.record(
            TAG_STREAM_META,
            &[&name_len.to_le_bytes(), name.as_bytes(), value.value()],
        )?;
    }
    let skips = txn.open_table(CONSUMER_SKIPS).map_err(io_error)?;
    for item in skips.iter().map_err(io_error)? {
        let (name, value) = item.map_err(io_error)?;
        let name = name.value();
        let name_len = u32::try_from(name.len()).map_err(|_| invalid("group name too long"))?;
        writer.record(
            TAG_CONSUMER_SKIPS,
            &[&name_len.to_le_bytes(), name.as_bytes(), value.value()],
        )?;
    }
    let keys = txn.open_table(IDEMPOTENCY).map_err(io_error)?;
    for item in keys.iter().map_err(io_error)? {
        let (key, value) = item.map_err(io_error)?;
        let key = key.value();
        let key_len = u32::try_from(key.len()).map_err(|_| invalid("idempotency key too long"))?;
        writer.record(
            TAG_KEY,
            &[&key_len.to_le_bytes(), key.as_bytes(), value.value()],
        )?;
    }
    let name_len =
        |name: &str| u32::try_from(name.len()).map_err(|_| invalid("group name too long"));
    let consumers = txn.open_table(CONSUMERS).map_err(io_error)?;
    for item in consumers.iter().map_err(io_error)? {
        let (name, value) = item.map_err(io_error)?;
        let name = name.value();
        writer.record(
            TAG_CONSUMER,
            &[
                &name_len(name)?.to_le_bytes(),
                name.as_bytes(),
                value.value(),
            ],
        )?;
    }
    for (tag, table) in [
        (TAG_PENDING, CONSUMER_PENDING),
        (TAG_DEAD_LETTER, DEAD_LETTERS),
    ] {
        let table = txn.open_table(table).map_err(io_error)?;
        for item in table.iter().map_err(io_error)? {
            let (key, value) = item.map_err(io_error)?;
            let (name, key) = key.value();
            writer.record(
                tag,
                &[
                    &key.to_le_bytes(),
                    &name_len(name)?.to_le_bytes(),
                    name.as_bytes(),
                    value.value(),
                ],
            )?;
        }
    }
    writer.finish()
}

/// Whether `version` is `stream`'s last (a removed stream's last event is kept: see the module).
fn is_last_of_stream(
    index: &redb::ReadOnlyTable<(&'static str, u64), u64>,
    stream: &str,
    version: u64,
) -> io::Result<bool> {
    Ok(index
        .range((stream, version + 1)..=(stream, u64::MAX))
        .map_err(io_error)?
        .next()
        .is_none())
}

/// Writes the snapshot to a new file at `path`, fsynced.
pub fn write_file(data: &SnapshotData, path: &Path) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    write_to(data, &mut out)?;
    out.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()
}

/// How long the serializing of [`chunks`] waits for the receiver to take a chunk before it
/// gives up: a receiver that stopped taking them (a stalled client) must not hold the read
/// transaction and the blocking thread for good.
pub const CHUNK_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The snapshot's bytes in chunks of about `chunk_bytes`, serialized on a blocking thread at the
/// pace the receiver takes them (two chunks ahead at most). A failure ends the chunks with the
/// error; dropping the receiver, or not taking a chunk for [`CHUNK_STALL_TIMEOUT`], stops the
/// serializing (and drops the snapshot's read transaction).
pub fn chunks(data: SnapshotData, chunk_bytes: usize) -> mpsc::Receiver<io::Result<Bytes>> {
    let (sender, receiver) = mpsc::channel(2);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            sender: sender.clone(),
            runtime,
            buffer: Vec::with_capacity(chunk_bytes),
            chunk_bytes,
        };
        let written = write_to(&data, &mut sink).and_then(|()| sink.send_buffer());
        if let Err(error) = written {
            sender.blocking_send(Err(error)).ok();
        }
    });
    receiver
}

/// Collects written bytes into chunks and hands each full one to the channel.
struct ChunkSink {
    sender: mpsc::Sender<io::Result<Bytes>>,
    runtime: tokio::runtime::Handle,
    buffer: Vec<u8>,
    chunk_bytes: usize,
}

impl ChunkSink {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.chunk_bytes));
        let sent = self.runtime.block_on(tokio::time::timeout(
            CHUNK_STALL_TIMEOUT,
            self.sender.send(Ok(Bytes::from(chunk))),
        ));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "snapshot transfer ended",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the receiver took no snapshot chunk for {} s",
                    CHUNK_STALL_TIMEOUT.as_secs()
                ),
            )),
        }
    }
}

impl Write for ChunkSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= self.chunk_bytes {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What an install wrote.
pub(crate) struct Installed {
    pub head_position: u64,
    pub epoch: u64,
    pub first_position: u64,
    /// The compression dictionary's id (0: none).
    pub dictionary: u64,
    /// Tokens and roles.
    pub access: Arc<crate::access::AccessState>,
}

/// Replaces the state machine with the snapshot in the file at `path`, inside `txn`. The
/// snapshot's meta must match `meta`; the whole file is checked (checksum) before `txn` can
/// commit.
pub(crate) fn install(
    txn: &WriteTransaction,
    meta: &SnapshotMeta,
    path: &Path,
) -> io::Result<Installed> {
    let mut reader = SnapshotReader::open(path)?;
    let header = reader.header()?;
    if &header.meta != meta {
        return Err(invalid(format!(
            "file holds {}, expected {meta}",
            header.meta
        )));
    }
    let counts = replace_state(txn, &mut reader, &header)?;
    let sm = txn.open_table(SM_META).map_err(io_error)?;
    let access = match sm.get(sm_key::ACCESS).map_err(io_error)? {
        Some(record) => Arc::new(crate::access::decode_state(record.value())?),
        None => Default::default(),
    };
    Ok(Installed {
        head_position: header.head_position,
        epoch: header.epoch,
        first_position: counts.first_position,
        dictionary: counts.dictionary,
        access,
    })
}

/// What a snapshot file's records hold, counted while they are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    events: u64,
    idempotency_keys: u64,
    consumer_groups: u64,
    pending: u64,
    dead_letters: u64,
    stream_metadata: u64,
    consumer_skips: u64,
    /// The log's first retained position (1: nothing removed log-wide).
    first_position: u64,
    /// The compression dictionary's id (0: none); registered as it was read.
    dictionary: u64,
    /// The access record was read.
    access: bool,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            events: 0,
            idempotency_keys: 0,
            consumer_groups: 0,
            pending: 0,
            dead_letters: 0,
            stream_metadata: 0,
            consumer_skips: 0,
            first_position: 1,
            dictionary: 0,
            access: false,
        }
    }
}

/// Replaces every state-machine table inside `txn` with the records `reader` has left, and
/// the state-machine facts with `header`'s. Fails (so `txn` must not commit) on any record
/// that does not decode, on events out of order or not ending at the header's head, and on a
/// bad checksum.
fn replace_state(
    txn: &WriteTransaction,
    reader: &mut SnapshotReader,
    header: &Header,
) -> io::Result<Counts> {
    txn.delete_table(EVENTS).map_err(io_error)?;
    txn.delete_table(IDEMPOTENCY).map_err(io_error)?;
    txn.delete_table(CONSUMERS).map_err(io_error)?;
    txn.delete_table(STREAM_INDEX).map_err(io_error)?;
    txn.delete_table(IDEMPOTENCY_ORDER).map_err(io_error)?;
    txn.delete_table(CONSUMER_PENDING).map_err(io_error)?;
    txn.delete_table(DEAD_LETTERS).map_err(io_error)?;
    txn.delete_table(STREAM_META).map_err(io_error)?;
    txn.delete_table(CONSUMER_SKIPS).map_err(io_error)?;
    let mut skips = txn.open_table(CONSUMER_SKIPS).map_err(io_error)?;
    // Rows the old state machine had still to delete are gone with it.
    txn.delete_table(RECLAIM_STREAMS).map_err(io_error)?;
    let mut metas = txn.open_table(STREAM_META).map_err(io_error)?;
    let mut consumers = txn.open_table(CONSUMERS).map_err(io_error)?;
    let mut pending = txn.open_table(CONSUMER_PENDING).map_err(io_error)?;
    let mut dead_letters = txn.open_table(DEAD_LETTERS).map_err(io_error)?;
    let mut events = txn.open_table(EVENTS).map_err(io_error)?;
    let mut index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
    let mut keys = txn.open_table(IDEMPOTENCY).map_err(io_error)?;
    let mut key_order = txn.open_table(IDEMPOTENCY_ORDER).map_err(io_error)?;
    let mut access = None;
    let counts = read_records(reader, header, |record| {
        match record {
            Checked::Event {
                position,
                stream,
                version,
                record,
            } => {
                events.insert(position, record).map_err(io_error)?;
                index
                    .insert((stream, version), position)
                    .map_err(io_error)?;
            }
            Checked::Key { key, order, record } => {
                keys.insert(key, record).map_err(io_error)?;
                key_order.insert(order, key).map_err(io_error)?;
            }
            Checked::Consumer { name, record } => {
                consumers.insert(name, record).map_err(io_error)?;
            }
            Checked::GroupRow {
                tag,
                name,
                key,
                record,
            } => {
                let table = if tag == TAG_PENDING {
                    &mut pending
                } else {
                    &mut dead_letters
                };
                table.insert((name, key), record).map_err(io_error)?;
            }
            Checked::StreamMeta { name, record } => {
                metas.insert(name, record).map_err(io_error)?;
            }
            Checked::ConsumerSkips { name, record } => {
                skips.insert(name, record).map_err(io_error)?;
            }
            Checked::Access { record } => access = Some(record.to_vec()),
        }
        Ok(())
    })?;
    let mut sm = txn.open_table(SM_META).map_err(io_error)?;
    match header.meta.last_log_id {
        Some(log_id) => sm.insert(
            sm_key::LAST_APPLIED,
            codec::encode_log_id(&log_id).as_slice(),
        ),
        None => sm.remove(sm_key::LAST_APPLIED),
    }
    .map_err(io_error)?;
    sm.insert(
        sm_key::MEMBERSHIP,
        codec::encode_stored_membership(&header.meta.last_membership).as_slice(),
    )
    .map_err(io_error)?;
    sm.insert(
        sm_key::HEAD_POSITION,
        codec::encode_u64(header.head_position).as_slice(),
    )
    .map_err(io_error)?;
    sm.insert(sm_key::EPOCH, codec::encode_u64(header.epoch).as_slice())
        .map_err(io_error)?;
    if counts.first_position > 1 {
        sm.insert(
            sm_key::FIRST_POSITION,
            codec::encode_u64(counts.first_position).as_slice(),
        )
    } else {
        sm.remove(sm_key::FIRST_POSITION)
    }
    .map_err(io_error)?;
    match crate::dictionary::bytes(counts.dictionary).filter(|_| counts.dictionary != 0) {
        Some(dictionary) => sm.insert(sm_key::DICTIONARY, dictionary.as_ref()),
        None => sm.remove(sm_key::DICTIONARY),
    }
    .map_err(io_error)?;
    match &access {
        Some(record) => sm.insert(sm_key::ACCESS, record.as_slice()),
        None => sm.remove(sm_key::ACCESS),
    }
    .map_err(io_error)?;
    Ok(counts)
}

/// A record after the header, decoded and checked.
enum Checked<'a> {
    Event {
        position: u64,
        stream: &'a str,
        version: u64,
        record: &'a [u8],
    },
    Key {
        key: &'a str,
        order: u64,
        record: &'a [u8],
    },
    Consumer {
        name: &'a str,
        record: &'a [u8],
    },
    GroupRow {
        tag: u8,
        name: &'a str,
        key: u64,
        record: &'a [u8],
    },
    StreamMeta {
        name: &'a str,
        record: &'a [u8],
    },
    ConsumerSkips {
        name: &'a str,
        record: &'a [u8],
    },
    Access {
        record: &'a [u8],
    },
}

/// Reads every record after the header to the trailer, decoding and checking each (events in
/// position order up to the header's head position), hands each to `visit`, and counts them.
/// The checksum is checked at the trailer, so an error may come after `visit` saw records.
fn read_records(
    reader: &mut SnapshotReader,
    header: &Header,
    mut visit: impl FnMut(Checked<'_>) -> io::Result<()>,
) -> io::Result<Counts> {
    let mut counts = Counts::default();
    let mut last_position = 0;
    loop {
        match reader.next()? {
            Record::Header(_) => return Err(invalid("second header")),
            Record::Event(position, record) => {
                let event = codec::decode_event(position, &record)?;
                if position <= last_position {
                    return Err(invalid("event positions out of order"));
                }
                last_position = position;
                counts.events += 1;
                visit(Checked::Event {
                    position,
                    stream: &event.stream,
                    version: event.stream_version,
                    record: &record,
                })?;
            }
            Record::Key(key, record) => {
                let decoded = codec::decode_idempotent_record(&record)?;
                counts.idempotency_keys += 1;
                visit(Checked::Key {
                    key: &key,
                    order: decoded.order,
                    record: &record,
                })?;
            }
            Record::Consumer(name, record) => {
                crate::consumer::decode::<crate::consumer::ConsumerRecord>(
                    "consumer group",
                    &record,
                )?;
                counts.consumer_groups += 1;
                visit(Checked::Consumer {
                    name: &name,
                    record: &record,
                })?;
            }
            Record::GroupRow(tag, name, key, record) => {
                if tag == TAG_PENDING {
                    crate::consumer::decode::<crate::consumer::PendingRecord>(
                        "pending event",
                        &record,
                    )?;
                    counts.pending += 1;
                } else {
                    crate::consumer::decode::<crate::consumer::DeadLetterRecord>(
                        "dead letter",
                        &record,
                    )?;
                    counts.dead_letters += 1;
                }
                visit(Checked::GroupRow {
                    tag,
                    name: &name,
                    key,
                    record: &record,
                })?;
            }
            Record::StreamMeta(name, record) => {
                codec::decode_stream_meta(&record)?;
                counts.stream_metadata += 1;
                visit(Checked::StreamMeta {
                    name: &name,
                    record: &record,
                })?;
            }
            Record::FirstPosition(position) => counts.first_position = position,
            Record::Dictionary(bytes) => {
                if counts.events > 0 || counts.dictionary != 0 {
                    return Err(invalid("a dictionary record after events or another one"));
                }
                counts.dictionary = crate::dictionary::register(&bytes);
            }
            Record::Access(record) => {
                crate::access::decode_state(&record)?;
                if counts.access {
                    return Err(invalid("a second access record"));
                }
                counts.access = true;
                visit(Checked::Access { record: &record })?;
            }
            Record::ConsumerSkips(name, record) => {
                codec::decode_consumer_skips(&record)?;
                counts.consumer_skips += 1;
                visit(Checked::ConsumerSkips {
                    name: &name,
                    record: &record,
                })?;
            }
            Record::End => break,
        }
    }
    if last_position != header.head_position {
        return Err(invalid(format!(
            "last event {last_position} but head position {}",
            header.head_position
        )));
    }
    Ok(counts)
}

/// Removes what an earlier run left in the snapshot directory: received files not installed,
/// and snapshot files of versions that wrote them to disk.
pub(crate) fn clear_dir(dir: &Path) -> io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.is_file() {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// A path for receiving a snapshot from the leader.
pub fn incoming_path(dir: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("incoming-{}-{n}.tmp", std::process::id()))
}
