//! Snapshots: a file holding the whole state machine at one applied log id.
//!
//! A snapshot is built from a redb read transaction (a consistent view that does not stop the
//! writer) and streamed to a file record by record, so it is never held whole in memory. It is
//! sent to a lagging follower in chunks, and installed there inside ONE write transaction that
//! replaces every state-machine table: a crash during install leaves the old state whole.
//!
//! File layout (all integers little-endian):
//! ```text
//! magic "EVLSNAP1" | u32 format version
//! record*          | u8 tag | u32 length | length bytes
//!   tag 1 header   : codec record: optional last-applied log id, membership, head position
//!   tag 2 event    : u64 position | codec event record
//!   tag 3 stream   : u32 name length | name | codec stream-info record
//!   tag 4 key      : u32 key length | idempotency key | codec idempotency record
//! trailer          | u8 255 | u64 record count | u32 CRC-32 of every byte before the trailer's CRC
//! ```
//! The stream index and the idempotency expiry order are not shipped: install rebuilds them.

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use redb::ReadableTable;
use redb::WriteTransaction;

use crate::codec;
use crate::error::io_error;
use crate::schema::EVENTS;
use crate::schema::FORMAT_VERSION;
use crate::schema::IDEMPOTENCY;
use crate::schema::IDEMPOTENCY_ORDER;
use crate::schema::SM_META;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAMS;
use crate::schema::sm_key;
use crate::types::LogId;
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"EVLSNAP1";
const TAG_HEADER: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_STREAM: u8 = 3;
const TAG_KEY: u8 = 4;
const TAG_END: u8 = 255;
/// Largest record a snapshot may hold (an event is limited far below this).
const MAX_RECORD_BYTES: usize = 64 << 20;

/// A snapshot's data: the file it lives in. This is openraft's `SnapshotData` for evlog.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// Writes records and keeps the running checksum.
struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: crc32fast::Hasher,
    records: u64,
}

impl SnapshotWriter {
    fn create(path: &Path) -> io::Result<Self> {
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            hasher: crc32fast::Hasher::new(),
            records: 0,
        };
        writer.raw(MAGIC)?;
        writer.raw(&FORMAT_VERSION.to_le_bytes())?;
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
        let file = self.out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()
    }
}

/// Reads records, checking the checksum when the trailer is reached.
struct SnapshotReader {
    input: BufReader<File>,
    hasher: crc32fast::Hasher,
    records: u64,
}

enum Record {
    Header(Vec<u8>),
    Event(u64, Vec<u8>),
    Stream(String, Vec<u8>),
    Key(String, Vec<u8>),
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
        };
        let mut magic = [0u8; 8];
        reader.raw(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not an evlog snapshot file"));
        }
        let mut version = [0u8; 4];
        reader.raw(&mut version)?;
        let version = u32::from_le_bytes(version);
        if version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {version}, this evlog reads {FORMAT_VERSION}"
            )));
        }
        Ok(reader)
    }

    fn raw(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buffer)?;
        self.hasher.update(buffer);
        Ok(())
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
            if u32::from_le_bytes(stored) != expected {
                return Err(invalid("checksum mismatch"));
            }
            if u64::from_le_bytes(count) != self.records {
                return Err(invalid("record count mismatch"));
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
            TAG_STREAM | TAG_KEY => {
                if body.len() < 4 {
                    return Err(invalid("short named record"));
                }
                let name_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
                if body.len() < 4 + name_len {
                    return Err(invalid("truncated record name"));
                }
                let name = String::from_utf8(body[4..4 + name_len].to_vec())
                    .map_err(|_| invalid("record name is not UTF-8"))?;
                let value = body[4 + name_len..].to_vec();
                Ok(if tag[0] == TAG_STREAM {
                    Record::Stream(name, value)
                } else {
                    Record::Key(name, value)
                })
            }
            other => Err(invalid(format!("unknown record tag {other}"))),
        }
    }
}

fn encode_header(meta: &SnapshotMeta, head_position: u64) -> Vec<u8> {
    let mut writer = codec::Writer::new();
    match meta.last_log_id {
        None => writer.u8(0),
        Some(log_id) => {
            writer.u8(1);
            writer.bytes(&codec::encode_log_id(&log_id));
        }
    }
    writer.bytes(&codec::encode_stored_membership(&meta.last_membership));
    writer.u64(head_position);
    writer.finish()
}

fn decode_header(record: &[u8]) -> io::Result<(SnapshotMeta, u64)> {
    let mut reader = codec::Reader::new("snapshot header", record)?;
    let last_log_id = match reader.u8()? {
        0 => None,
        1 => Some(codec::decode_log_id(reader.bytes()?)?),
        tag => return Err(reader.invalid(format!("bad option tag {tag}")).into()),
    };
    let last_membership = codec::decode_stored_membership(reader.bytes()?)?;
    let head_position = reader.u64()?;
    reader.end()?;
    Ok((
        SnapshotMeta {
            last_log_id,
            last_membership,
        },
        head_position,
    ))
}

fn file_name(last_log_id: Option<&LogId>) -> String {
    match last_log_id {
        Some(id) => format!(
            "snapshot-{:020}-{}-{}.snap",
            id.index, id.leader_id.term, id.leader_id.node_id
        ),
        None => "snapshot-00000000000000000000-0-0.snap".to_string(),
    }
}

/// Builds a snapshot of the state machine as of `txn` into `dir`, returning its meta and file.
pub(crate) fn build(db: &redb::Database, dir: &Path) -> io::Result<(SnapshotMeta, SnapshotFile)> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(io_error)?;
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
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };
    let temp = dir.join(format!("building-{}.tmp", std::process::id()));
    let mut writer = SnapshotWriter::create(&temp)?;
    writer.record(TAG_HEADER, &[&encode_header(&meta, head_position)])?;
    let events = txn.open_table(EVENTS).map_err(io_error)?;
    for item in events.iter().map_err(io_error)? {
        let (position, value) = item.map_err(io_error)?;
        writer.record(TAG_EVENT, &[&position.value().to_le_bytes(), value.value()])?;
    }
    let streams = txn.open_table(STREAMS).map_err(io_error)?;
    for item in streams.iter().map_err(io_error)? {
        let (name, value) = item.map_err(io_error)?;
        let name = name.value();
        let name_len = u32::try_from(name.len()).map_err(|_| invalid("stream name too long"))?;
        writer.record(
            TAG_STREAM,
            &[&name_len.to_le_bytes(), name.as_bytes(), value.value()],
        )?;
    }
    crate::failpoint::crash_point("store::snapshot-build");
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
    writer.finish()?;
    let path = dir.join(file_name(meta.last_log_id.as_ref()));
    std::fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    remove_older(dir, &path);
    Ok((meta, SnapshotFile { path }))
}

/// Reads the meta of a snapshot file (checking its header only).
pub(crate) fn read_meta(path: &Path) -> io::Result<SnapshotMeta> {
    let mut reader = SnapshotReader::open(path)?;
    match reader.next()? {
        Record::Header(header) => Ok(decode_header(&header)?.0),
        _ => Err(invalid("first record is not the header")),
    }
}

/// What an install wrote.
pub(crate) struct Installed {
    pub head_position: u64,
}

/// Replaces the state machine with the snapshot in `file`, inside `txn`. The snapshot's meta
/// must match `meta`; the whole file is checked (checksum) before `txn` can commit.
pub(crate) fn install(
    txn: &WriteTransaction,
    meta: &SnapshotMeta,
    file: &SnapshotFile,
) -> io::Result<Installed> {
    let mut reader = SnapshotReader::open(&file.path)?;
    let head_position = match reader.next()? {
        Record::Header(header) => {
            let (file_meta, head_position) = decode_header(&header)?;
            if &file_meta != meta {
                return Err(invalid(format!("file holds {file_meta}, expected {meta}")));
            }
            head_position
        }
        _ => return Err(invalid("first record is not the header")),
    };
    txn.delete_table(EVENTS).map_err(io_error)?;
    txn.delete_table(STREAMS).map_err(io_error)?;
    txn.delete_table(STREAM_INDEX).map_err(io_error)?;
    txn.delete_table(IDEMPOTENCY).map_err(io_error)?;
    txn.delete_table(IDEMPOTENCY_ORDER).map_err(io_error)?;
    let mut events = txn.open_table(EVENTS).map_err(io_error)?;
    let mut streams = txn.open_table(STREAMS).map_err(io_error)?;
    let mut index = txn.open_table(STREAM_INDEX).map_err(io_error)?;
    let mut keys = txn.open_table(IDEMPOTENCY).map_err(io_error)?;
    let mut key_order = txn.open_table(IDEMPOTENCY_ORDER).map_err(io_error)?;
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
                events
                    .insert(position, record.as_slice())
                    .map_err(io_error)?;
                index
                    .insert((event.stream.as_str(), event.stream_version), position)
                    .map_err(io_error)?;
            }
            Record::Stream(name, record) => {
                codec::decode_stream_info(&record)?;
                streams
                    .insert(name.as_str(), record.as_slice())
                    .map_err(io_error)?;
            }
            Record::Key(key, record) => {
                let decoded = codec::decode_idempotent_record(&record)?;
                keys.insert(key.as_str(), record.as_slice())
                    .map_err(io_error)?;
                key_order
                    .insert(decoded.log_index, key.as_str())
                    .map_err(io_error)?;
            }
            Record::End => break,
        }
    }
    if last_position != head_position {
        return Err(invalid(format!(
            "last event {last_position} but head position {head_position}"
        )));
    }
    let mut sm = txn.open_table(SM_META).map_err(io_error)?;
    match meta.last_log_id {
        Some(log_id) => sm.insert(
            sm_key::LAST_APPLIED,
            codec::encode_log_id(&log_id).as_slice(),
        ),
        None => sm.remove(sm_key::LAST_APPLIED),
    }
    .map_err(io_error)?;
    sm.insert(
        sm_key::MEMBERSHIP,
        codec::encode_stored_membership(&meta.last_membership).as_slice(),
    )
    .map_err(io_error)?;
    sm.insert(
        sm_key::HEAD_POSITION,
        codec::encode_u64(head_position).as_slice(),
    )
    .map_err(io_error)?;
    Ok(Installed { head_position })
}

/// After an install committed: keeps the received file as this node's current snapshot.
pub(crate) fn keep_installed(
    dir: &Path,
    meta: &SnapshotMeta,
    file: &SnapshotFile,
) -> io::Result<PathBuf> {
    let path = dir.join(file_name(meta.last_log_id.as_ref()));
    if file.path != path {
        std::fs::rename(&file.path, &path)?;
        File::open(dir)?.sync_all()?;
    }
    remove_older(dir, &path);
    Ok(path)
}

/// Finds the newest complete snapshot in `dir`, removing leftovers of interrupted builds.
pub(crate) fn find_newest(dir: &Path) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
    let mut newest: Option<PathBuf> = None;
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
        } else if name.starts_with("snapshot-") && name.ends_with(".snap") {
            // Names sort by zero-padded index.
            if newest.as_ref().is_none_or(|current| path > *current) {
                newest = Some(path);
            }
        }
    }
    match newest {
        None => Ok(None),
        Some(path) => Ok(Some((read_meta(&path)?, path))),
    }
}

/// A path for receiving a snapshot from the leader.
pub fn incoming_path(dir: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("incoming-{}-{n}.tmp", std::process::id()))
}

/// Removes the snapshot files older than `keep` (names sort by zero-padded index), never a newer
/// one that a concurrent build or install just made.
fn remove_older(dir: &Path, keep: &Path) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let path = item.path();
        let is_snapshot = path.extension().is_some_and(|ext| ext == "snap");
        if is_snapshot
            && path.file_name() < keep.file_name()
            && let Err(error) = std::fs::remove_file(&path)
        {
            tracing::warn!("removing old snapshot {} failed: {error}", path.display());
        }
    }
}
