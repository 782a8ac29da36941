//! evlog's versioned binary encoding of what it keeps on disk: Raft log entries, the vote,
//! log ids, membership, recorded events and idempotency records.
//!
//! Every record starts with a one-byte codec version and ends with a CRC-32 (IEEE, as computed
//! by `crc32fast`) of everything before it, so a flipped bit or a torn record is detected when
//! read, never silently used. Integers are
//! little-endian fixed width; strings and byte strings are a `u32` length then the bytes.
//! The exact layout of each record is in `raft-store/DESIGN.md`.
//!
//! Decoding never trusts lengths read from disk: every read is bounds-checked and a bad record
//! becomes a [`CorruptRecord`] error.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;

use crate::error::CorruptRecord;
use crate::type_config::Entry;
use crate::type_config::EntryPayload;
use crate::type_config::LeaderId;
use crate::type_config::LogId;
use crate::type_config::MemberNode;
use crate::type_config::Membership;
use crate::type_config::StoredMembership;
use crate::type_config::Vote;
use crate::types::AppendCommand;
use crate::types::AppendOutcome;
use crate::types::Command;
use crate::types::ConsumerSkips;
use crate::types::DataEncoding;
use crate::types::IdempotencyPolicy;
use crate::types::IdempotentRecord;
use crate::types::NewEvent;
use crate::types::RecordedEvent;
use crate::types::RetentionCommand;
use crate::types::StreamMeta;
use crate::types::StreamRetention;

/// The codec version written in the first byte of every record.
pub const CODEC_VERSION: u8 = 1;
/// The version of records that may hold compressed event data: in a log entry, every event
/// of an append, and an event record, have an encoding byte before the data
/// ([`DataEncoding`]: 0 raw, 1 zstd, 2 zstd with a dictionary, its id next as a u64). Written only for records that hold compressed data, so
/// a store that never compressed is byte-for-byte what version 1 wrote.
pub const CODEC_VERSION_ENCODED_DATA: u8 = 2;
/// The version of records that hold a membership whose members have two addresses (client,
/// then peer): membership log entries and stored memberships. Version 1 memberships (written
/// before evlog had a peer port) have the client address only, and decode with an empty peer
/// address. No other record is written with it.
pub const CODEC_VERSION_PEER_ADDRESSES: u8 = 3;
/// Largest event data a compressed event may decompress to (events are limited far below).
const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;
const COMMAND_APPEND: u8 = 1;
const COMMAND_APPENDS: u8 = 2;
const COMMAND_CONSUMER: u8 = 3;
const COMMAND_RETENTION: u8 = 4;
const COMMAND_CHECK: u8 = 5;
const COMMAND_DICTIONARY: u8 = 6;
const COMMAND_ACCESS: u8 = 7;
const RETENTION_SET_METADATA: u8 = 1;
const RETENTION_DELETE: u8 = 2;
const RETENTION_EXPIRE_STREAM: u8 = 3;
const RETENTION_EXPIRE_LOG: u8 = 4;

/// Builds one record: version byte, fields, checksum.
pub struct Writer {
    buffer: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_version(capacity, CODEC_VERSION)
    }

    fn with_version(capacity: usize, version: u8) -> Self {
        let mut buffer = Vec::with_capacity(capacity + 5);
        buffer.push(version);
        Self { buffer }
    }

    /// Whether this record has encoding bytes before event data (version 2).
    fn encodes_data(&self) -> bool {
        self.buffer.first() == Some(&CODEC_VERSION_ENCODED_DATA)
    }

    pub fn u8(&mut self, value: u8) {
        self.buffer.push(value);
    }

    pub fn u32(&mut self, value: u32) {
        self.buffer.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.buffer.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bytes(&mut self, value: &[u8]) {
        let len = u32::try_from(value.len()).expect("records are limited far below 4 GiB");
        self.u32(len);
        self.buffer.extend_from_slice(value);
    }

    pub fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    /// Appends the checksum and returns the record.
    pub fn finish(mut self) -> Vec<u8> {
        let checksum = crc32fast::hash(&self.buffer);
        self.u32(checksum);
        self.buffer
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads one record written by [`Writer`], after checking its version and checksum.
pub struct Reader<'a> {
    what: &'static str,
    body: &'a [u8],
    version: u8,
}

impl<'a> Reader<'a> {
    /// Checks version and checksum; `what` names the record in errors.
    pub fn new(what: &'static str, record: &'a [u8]) -> Result<Self, CorruptRecord> {
        let corrupt = |detail: String| CorruptRecord { what, detail };
        if record.len() < 5 {
            return Err(corrupt(format!(
                "record of {} bytes is too short",
                record.len()
            )));
        }
        let (content, checksum) = record.split_at(record.len() - 4);
        let stored = u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
        let computed = crc32fast::hash(content);
        if stored != computed {
            return Err(corrupt(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            )));
        }
        if !(CODEC_VERSION..=CODEC_VERSION_PEER_ADDRESSES).contains(&content[0]) {
            return Err(corrupt(format!(
                "unknown codec version {} (this evlog reads {CODEC_VERSION} to \
                 {CODEC_VERSION_PEER_ADDRESSES})",
                content[0]
            )));
        }
        Ok(Self {
            what,
            body: &content[1..],
            version: content[0],
        })
    }

    /// Event data, with its encoding byte in a version 2 record.
    fn event_data(&mut self) -> Result<(&'a [u8], DataEncoding), CorruptRecord> {
        let encoding = if self.version == CODEC_VERSION_ENCODED_DATA {
            match self.u8()? {
                0 => DataEncoding::Raw,
                1 => DataEncoding::Zstd,
                2 => DataEncoding::ZstdDictionary(self.u64()?),
                other => return Err(self.invalid(format!("unknown data encoding {other}"))),
            }
        } else {
            DataEncoding::Raw
        };
        Ok((self.bytes()?, encoding))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.body.len() < len {
            return Err(CorruptRecord {
                what: self.what,
                detail: format!(
                    "truncated: wanted {len} more bytes, {} left",
                    self.body.len()
                ),
            });
        }
        let (head, tail) = self.body.split_at(len);
        self.body = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, CorruptRecord> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, CorruptRecord> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(array))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub fn string(&mut self) -> Result<String, CorruptRecord> {
        self.str().map(str::to_string)
    }

    /// A string borrowed from the record.
    pub fn str(&mut self) -> Result<&'a str, CorruptRecord> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| CorruptRecord {
            what: self.what,
            detail: "string is not UTF-8".to_string(),
        })
    }

    /// A collection length, checked against the bytes left so a corrupt count cannot make the
    /// decoder allocate without bound (each element takes at least `min_element_bytes`).
    pub fn count(&mut self, min_element_bytes: usize) -> Result<usize, CorruptRecord> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_element_bytes.max(1)) > self.body.len() {
            return Err(CorruptRecord {
                what: self.what,
                detail: format!("count {count} exceeds the record"),
            });
        }
        Ok(count)
    }

    pub fn invalid(&self, detail: impl Into<String>) -> CorruptRecord {
        CorruptRecord {
            what: self.what,
            detail: detail.into(),
        }
    }

    /// Fails if bytes are left over: a record is read whole or not at all.
    pub fn end(self) -> Result<(), CorruptRecord> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(CorruptRecord {
                what: self.what,
                detail: format!("{} unexpected trailing bytes", self.body.len()),
            })
        }
    }
}

// ------------------------------------------------------------------ log ids and votes

fn put_log_id(writer: &mut Writer, log_id: &LogId) {
    writer.u64(log_id.leader_id.term);
    writer.u64(log_id.leader_id.node_id);
    writer.u64(log_id.index);
}

fn get_log_id(reader: &mut Reader<'_>) -> Result<LogId, CorruptRecord> {
    let term = reader.u64()?;
    let node_id = reader.u64()?;
    let index = reader.u64()?;
    Ok(LogId {
        leader_id: LeaderId { term, node_id },
        index,
    })
}

fn put_optional_log_id(writer: &mut Writer, log_id: Option<&LogId>) {
    match log_id {
        None => writer.u8(0),
        Some(log_id) => {
            writer.u8(1);
            put_log_id(writer, log_id);
        }
    }
}

fn get_optional_log_id(reader: &mut Reader<'_>) -> Result<Option<LogId>, CorruptRecord> {
    match reader.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_log_id(reader)?)),
        tag => Err(reader.invalid(format!("bad option tag {tag}"))),
    }
}

pub fn encode_log_id(log_id: &LogId) -> Vec<u8> {
    let mut writer = Writer::new();
    put_log_id(&mut writer, log_id);
    writer.finish()
}

pub fn decode_log_id(record: &[u8]) -> Result<LogId, CorruptRecord> {
    let mut reader = Reader::new("log id", record)?;
    let log_id = get_log_id(&mut reader)?;
    reader.end()?;
    Ok(log_id)
}

pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u64(vote.leader_id.term);
    writer.u64(vote.leader_id.node_id);
    writer.u8(u8::from(vote.committed));
    writer.finish()
}

pub fn decode_vote(record: &[u8]) -> Result<Vote, CorruptRecord> {
    let mut reader = Reader::new("vote", record)?;
    let term = reader.u64()?;
    let node_id = reader.u64()?;
    let committed = match reader.u8()? {
        0 => false,
        1 => true,
        other => return Err(reader.invalid(format!("bad committed flag {other}"))),
    };
    reader.end()?;
    Ok(Vote {
        leader_id: LeaderId { term, node_id },
        committed,
    })
}

// ------------------------------------------------------------------ membership

/// In a record of version [`CODEC_VERSION_PEER_ADDRESSES`].
fn put_membership(writer: &mut Writer, membership: &Membership) {
    debug_assert_eq!(writer.buffer.first(), Some(&CODEC_VERSION_PEER_ADDRESSES));
    let configs = membership.get_joint_config();
    writer.u32(u32::try_from(configs.len()).expect("few joint configs"));
    for config in configs {
        writer.u32(u32::try_from(config.len()).expect("few voters"));
        for node_id in config {
            writer.u64(*node_id);
        }
    }
    let nodes: Vec<(&u64, &MemberNode)> = membership.nodes().collect();
    writer.u32(u32::try_from(nodes.len()).expect("few nodes"));
    for (node_id, node) in nodes {
        writer.u64(*node_id);
        writer.str(&node.client_address);
        writer.str(&node.peer_address);
    }
}

fn get_membership(reader: &mut Reader<'_>) -> Result<Membership, CorruptRecord> {
    let config_count = reader.count(4)?;
    let mut configs = Vec::with_capacity(config_count);
    for _ in 0..config_count {
        let voter_count = reader.count(8)?;
        let mut voters = BTreeSet::new();
        for _ in 0..voter_count {
            voters.insert(reader.u64()?);
        }
        configs.push(voters);
    }
    let node_count = reader.count(12)?;
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let node_id = reader.u64()?;
        let client_address = reader.string()?;
        let peer_address = if reader.version == CODEC_VERSION_PEER_ADDRESSES {
            reader.string()?
        } else {
            String::new()
        };
        nodes.insert(
            node_id,
            MemberNode {
                client_address,
                peer_address,
            },
        );
    }
    Membership::new(configs, nodes).map_err(|error| reader.invalid(format!("membership: {error}")))
}

pub fn encode_stored_membership(membership: &StoredMembership) -> Vec<u8> {
    let mut writer = Writer::with_version(64, CODEC_VERSION_PEER_ADDRESSES);
    put_optional_log_id(&mut writer, membership.log_id().as_ref());
    put_membership(&mut writer, membership.membership());
    writer.finish()
}

pub fn decode_stored_membership(record: &[u8]) -> Result<StoredMembership, CorruptRecord> {
    let mut reader = Reader::new("membership", record)?;
    let log_id = get_optional_log_id(&mut reader)?;
    let membership = get_membership(&mut reader)?;
    reader.end()?;
    Ok(StoredMembership::new(log_id, membership))
}

// ------------------------------------------------------------------ log entries

fn put_new_event(writer: &mut Writer, event: &NewEvent) {
    writer.str(&event.id);
    writer.str(&event.event_type);
    writer.str(&event.content_type);
    put_metadata(writer, &event.metadata);
    put_event_data(writer, &event.data, event.encoding);
}

/// Event data, after its encoding byte in a version 2 record.
fn put_event_data(writer: &mut Writer, data: &[u8], encoding: DataEncoding) {
    if writer.encodes_data() {
        match encoding {
            DataEncoding::Raw => writer.u8(0),
            DataEncoding::Zstd => writer.u8(1),
            DataEncoding::ZstdDictionary(id) => {
                writer.u8(2);
                writer.u64(id);
            }
        }
    }
    writer.bytes(data);
}

/// Compresses event data (zstd, level 3) when that is worth it: `None` when the frame would
/// not save at least an eighth (random or already compressed data).
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    let frame = zstd::bulk::compress(data, crate::dictionary::LEVEL).ok()?;
    crate::dictionary::worth_it(data, frame)
}

/// The data of an event stored with `encoding`.
fn decoded_data(
    reader: &Reader<'_>,
    data: &[u8],
    encoding: DataEncoding,
) -> Result<Bytes, CorruptRecord> {
    match encoding {
        DataEncoding::Raw => Ok(Bytes::copy_from_slice(data)),
        DataEncoding::Zstd => zstd::bulk::decompress(data, MAX_DECOMPRESSED_BYTES)
            .map(Bytes::from)
            .map_err(|error| reader.invalid(format!("compressed data does not decode: {error}"))),
        DataEncoding::ZstdDictionary(id) => {
            let dictionary = crate::dictionary::decoder(id).ok_or_else(|| {
                reader.invalid(format!(
                    "the data needs compression dictionary {id:016x}, which this store does not hold"
                ))
            })?;
            zstd::bulk::Decompressor::with_prepared_dictionary(&dictionary)
                .and_then(|mut decompressor| decompressor.decompress(data, MAX_DECOMPRESSED_BYTES))
                .map(Bytes::from)
                .map_err(|error| {
                    reader.invalid(format!("compressed data does not decode: {error}"))
                })
        }
    }
}

fn get_new_event(reader: &mut Reader<'_>) -> Result<NewEvent, CorruptRecord> {
    let id = reader.string()?;
    let event_type = reader.string()?;
    let content_type = reader.string()?;
    let metadata = get_metadata(reader)?;
    let (data, encoding) = reader.event_data()?;
    Ok(NewEvent {
        id,
        event_type,
        content_type,
        data: Bytes::copy_from_slice(data),
        metadata,
        encoding,
    })
}

fn put_metadata(writer: &mut Writer, metadata: &[(String, String)]) {
    writer.u32(u32::try_from(metadata.len()).expect("metadata is size-limited"));
    for (key, value) in metadata {
        writer.str(key);
        writer.str(value);
    }
}

fn get_metadata(reader: &mut Reader<'_>) -> Result<Vec<(String, String)>, CorruptRecord> {
    let count = reader.count(8)?;
    let mut metadata = Vec::with_capacity(count);
    for _ in 0..count {
        let key = reader.string()?;
        let value = reader.string()?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

fn put_optional_u64(writer: &mut Writer, value: Option<u64>) {
    match value {
        None => writer.u8(0),
        Some(value) => {
            writer.u8(1);
            writer.u64(value);
        }
    }
}

fn get_optional_u64(reader: &mut Reader<'_>) -> Result<Option<u64>, CorruptRecord> {
    match reader.u8()? {
        0 => Ok(None),
        1 => Ok(Some(reader.u64()?)),
        tag => Err(reader.invalid(format!("bad option tag {tag}"))),
    }
}

fn put_command(writer: &mut Writer, command: &Command) {
    match command {
        Command::Append(append) => {
            writer.u8(COMMAND_APPEND);
            put_append(writer, append);
        }
        Command::Appends(appends) => {
            writer.u8(COMMAND_APPENDS);
            writer.u32(u32::try_from(appends.len()).expect("appends per entry are limited"));
            for append in appends.iter() {
                put_append(writer, append);
            }
        }
        Command::Consumer(command) => {
            writer.u8(COMMAND_CONSUMER);
            writer.bytes(&crate::consumer::encode(command));
        }
        Command::Retention(command) => {
            writer.u8(COMMAND_RETENTION);
            put_retention_command(writer, command);
        }
        Command::Dictionary(bytes) => {
            writer.u8(COMMAND_DICTIONARY);
            writer.bytes(bytes);
        }
        Command::Access(command) => {
            writer.u8(COMMAND_ACCESS);
            writer.bytes(&crate::access::encode_command(command));
        }
        Command::Check(range) => {
            writer.u8(COMMAND_CHECK);
            writer.u64(range.from);
            writer.u64(range.to);
            writer.u64(range.step);
        }
    }
}

fn put_retention_command(writer: &mut Writer, command: &RetentionCommand) {
    match command {
        RetentionCommand::SetMetadata {
            stream,
            expected_metadata_version,
            retention,
        } => {
            writer.u8(RETENTION_SET_METADATA);
            writer.str(stream);
            put_optional_u64(writer, *expected_metadata_version);
            put_stream_retention(writer, retention);
        }
        RetentionCommand::Delete {
            stream,
            expected_version,
            tombstone,
            timestamp_ms,
        } => {
            writer.u8(RETENTION_DELETE);
            writer.str(stream);
            put_optional_u64(writer, *expected_version);
            writer.u8(u8::from(*tombstone));
            writer.u64(*timestamp_ms);
        }
        RetentionCommand::ExpireStream {
            stream,
            before_version,
        } => {
            writer.u8(RETENTION_EXPIRE_STREAM);
            writer.str(stream);
            writer.u64(*before_version);
        }
        RetentionCommand::ExpireLog { before_position } => {
            writer.u8(RETENTION_EXPIRE_LOG);
            writer.u64(*before_position);
        }
    }
}

fn get_retention_command(reader: &mut Reader<'_>) -> Result<RetentionCommand, CorruptRecord> {
    Ok(match reader.u8()? {
        RETENTION_SET_METADATA => RetentionCommand::SetMetadata {
            stream: reader.string()?,
            expected_metadata_version: get_optional_u64(reader)?,
            retention: get_stream_retention(reader)?,
        },
        RETENTION_DELETE => RetentionCommand::Delete {
            stream: reader.string()?,
            expected_version: get_optional_u64(reader)?,
            tombstone: get_flag(reader)?,
            timestamp_ms: reader.u64()?,
        },
        RETENTION_EXPIRE_STREAM => RetentionCommand::ExpireStream {
            stream: reader.string()?,
            before_version: reader.u64()?,
        },
        RETENTION_EXPIRE_LOG => RetentionCommand::ExpireLog {
            before_position: reader.u64()?,
        },
        tag => return Err(reader.invalid(format!("unknown retention command tag {tag}"))),
    })
}

fn get_flag(reader: &mut Reader<'_>) -> Result<bool, CorruptRecord> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(reader.invalid(format!("bad flag {other}"))),
    }
}

fn put_stream_retention(writer: &mut Writer, retention: &StreamRetention) {
    put_optional_u64(writer, retention.max_age_s);
    put_optional_u64(writer, retention.max_count);
    put_optional_u64(writer, retention.truncate_before);
}

fn get_stream_retention(reader: &mut Reader<'_>) -> Result<StreamRetention, CorruptRecord> {
    Ok(StreamRetention {
        max_age_s: get_optional_u64(reader)?,
        max_count: get_optional_u64(reader)?,
        truncate_before: get_optional_u64(reader)?,
    })
}

/// What retention took from a consumer group (the `consumer_skips` table, snapshot tag 10).
pub fn encode_consumer_skips(skips: &ConsumerSkips) -> Vec<u8> {
    let mut writer = Writer::with_capacity(32);
    writer.u64(skips.skipped_total);
    writer.u64(skips.last_from);
    writer.u64(skips.last_to);
    writer.finish()
}

pub fn decode_consumer_skips(record: &[u8]) -> Result<ConsumerSkips, CorruptRecord> {
    let mut reader = Reader::new("consumer skips", record)?;
    let skips = ConsumerSkips {
        skipped_total: reader.u64()?,
        last_from: reader.u64()?,
        last_to: reader.u64()?,
    };
    reader.end()?;
    Ok(skips)
}

/// A stream's metadata record (the `stream_meta` table, snapshot tag 8).
pub fn encode_stream_meta(meta: &StreamMeta) -> Vec<u8> {
    let mut writer = Writer::with_capacity(48);
    writer.u64(meta.metadata_version);
    put_stream_retention(&mut writer, &meta.retention);
    writer.u64(meta.first_version);
    writer.u8(u8::from(meta.tombstoned));
    writer.finish()
}

pub fn decode_stream_meta(record: &[u8]) -> Result<StreamMeta, CorruptRecord> {
    let mut reader = Reader::new("stream metadata", record)?;
    let meta = StreamMeta {
        metadata_version: reader.u64()?,
        retention: get_stream_retention(&mut reader)?,
        first_version: reader.u64()?,
        tombstoned: get_flag(&mut reader)?,
    };
    reader.end()?;
    if meta.first_version == 0 {
        return Err(CorruptRecord {
            what: "stream metadata",
            detail: "first version 0".to_string(),
        });
    }
    Ok(meta)
}

fn put_append(writer: &mut Writer, append: &AppendCommand) {
    writer.str(&append.stream);
    put_optional_u64(writer, append.expected_version);
    match &append.idempotency_key {
        None => writer.u8(0),
        Some(key) => {
            writer.u8(1);
            writer.str(key);
        }
    }
    writer.u64(append.timestamp_ms);
    writer.u64(append.request_fingerprint);
    writer.u64(append.idempotency.window_ms);
    writer.u64(append.idempotency.max_keys);
    writer.u32(u32::try_from(append.events.len()).expect("events per append are limited"));
    for event in &append.events {
        put_new_event(writer, event);
    }
}

fn get_command(reader: &mut Reader<'_>) -> Result<Command, CorruptRecord> {
    match reader.u8()? {
        COMMAND_APPEND => Ok(Command::Append(get_append(reader)?)),
        COMMAND_APPENDS => {
            // An append takes at least 42 bytes (its fixed fields).
            let count = reader.count(42)?;
            if count > crate::types::MAX_APPENDS_PER_ENTRY {
                return Err(reader.invalid(format!("{count} appends in one entry")));
            }
            let mut appends = Vec::with_capacity(count);
            for _ in 0..count {
                appends.push(get_append(reader)?);
            }
            Ok(Command::Appends(std::sync::Arc::new(appends)))
        }
        COMMAND_CONSUMER => Ok(Command::Consumer(crate::consumer::decode(
            "consumer command",
            reader.bytes()?,
        )?)),
        COMMAND_RETENTION => Ok(Command::Retention(get_retention_command(reader)?)),
        COMMAND_DICTIONARY => Ok(Command::Dictionary(Bytes::copy_from_slice(reader.bytes()?))),
        COMMAND_ACCESS => Ok(Command::Access(crate::access::decode_command(
            reader.bytes()?,
        )?)),
        COMMAND_CHECK => Ok(Command::Check(crate::types::CheckRange {
            from: reader.u64()?,
            to: reader.u64()?,
            step: reader.u64()?,
        })),
        tag => Err(reader.invalid(format!("unknown command tag {tag}"))),
    }
}

fn get_append(reader: &mut Reader<'_>) -> Result<AppendCommand, CorruptRecord> {
    let stream = reader.string()?;
    let expected_version = get_optional_u64(reader)?;
    let idempotency_key = match reader.u8()? {
        0 => None,
        1 => Some(reader.string()?),
        tag => return Err(reader.invalid(format!("bad option tag {tag}"))),
    };
    let timestamp_ms = reader.u64()?;
    let request_fingerprint = reader.u64()?;
    let idempotency = IdempotencyPolicy {
        window_ms: reader.u64()?,
        max_keys: reader.u64()?,
    };
    let count = reader.count(20)?;
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(get_new_event(reader)?);
    }
    Ok(AppendCommand {
        stream,
        events,
        expected_version,
        idempotency_key,
        timestamp_ms,
        request_fingerprint,
        idempotency,
    })
}

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let compressed = |append: &AppendCommand| {
        append
            .events
            .iter()
            .any(|event| event.encoding != DataEncoding::Raw)
    };
    let version = match &entry.payload {
        EntryPayload::Normal(Command::Append(append)) if compressed(append) => {
            CODEC_VERSION_ENCODED_DATA
        }
        EntryPayload::Normal(Command::Appends(appends)) if appends.iter().any(compressed) => {
            CODEC_VERSION_ENCODED_DATA
        }
        EntryPayload::Membership(_) => CODEC_VERSION_PEER_ADDRESSES,
        _ => CODEC_VERSION,
    };
    let mut writer = Writer::with_version(64, version);
    put_log_id(&mut writer, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => writer.u8(PAYLOAD_BLANK),
        EntryPayload::Normal(command) => {
            writer.u8(PAYLOAD_NORMAL);
            put_command(&mut writer, command);
        }
        EntryPayload::Membership(membership) => {
            writer.u8(PAYLOAD_MEMBERSHIP);
            put_membership(&mut writer, membership);
        }
    }
    writer.finish()
}

pub fn decode_entry(record: &[u8]) -> Result<Entry, CorruptRecord> {
    let mut reader = Reader::new("log entry", record)?;
    let log_id = get_log_id(&mut reader)?;
    let payload = match reader.u8()? {
        PAYLOAD_BLANK => EntryPayload::Blank,
        PAYLOAD_NORMAL => EntryPayload::Normal(get_command(&mut reader)?),
        PAYLOAD_MEMBERSHIP => EntryPayload::Membership(get_membership(&mut reader)?),
        tag => return Err(reader.invalid(format!("unknown payload tag {tag}"))),
    };
    reader.end()?;
    Ok(Entry { log_id, payload })
}

// ------------------------------------------------------------------ state machine records

/// An event record; its position is the table key, so it is not repeated here. `encoding` says
/// how `event.data` is encoded (as it came in the log entry).
pub fn encode_event(event: &RecordedEvent, encoding: DataEncoding) -> Vec<u8> {
    let version = match encoding {
        DataEncoding::Raw => CODEC_VERSION,
        DataEncoding::Zstd | DataEncoding::ZstdDictionary(_) => CODEC_VERSION_ENCODED_DATA,
    };
    let mut writer = Writer::with_version(64 + event.data.len(), version);
    writer.str(&event.stream);
    writer.u64(event.stream_version);
    writer.u64(event.timestamp_ms);
    writer.str(&event.id);
    writer.str(&event.event_type);
    writer.str(&event.content_type);
    put_metadata(&mut writer, &event.metadata);
    put_event_data(&mut writer, &event.data, encoding);
    writer.finish()
}

pub fn decode_event(position: u64, record: &[u8]) -> Result<RecordedEvent, CorruptRecord> {
    let mut reader = Reader::new("event", record)?;
    let stream = reader.string()?;
    let stream_version = reader.u64()?;
    let timestamp_ms = reader.u64()?;
    let id = reader.string()?;
    let event_type = reader.string()?;
    let content_type = reader.string()?;
    let metadata = get_metadata(&mut reader)?;
    let (data, encoding) = reader.event_data()?;
    let data = decoded_data(&reader, data, encoding)?;
    reader.end()?;
    Ok(RecordedEvent {
        position,
        stream,
        stream_version,
        id,
        event_type,
        content_type,
        data,
        metadata,
        timestamp_ms,
    })
}

/// The fields of a stored event a subscription filter looks at, borrowed from the record
/// (checksum checked; the rest is not decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHead<'a> {
    pub stream: &'a str,
    pub stream_version: u64,
    pub timestamp_ms: u64,
    pub event_type: &'a str,
}

pub fn peek_event(record: &[u8]) -> Result<EventHead<'_>, CorruptRecord> {
    let mut reader = Reader::new("event", record)?;
    let stream = reader.str()?;
    let stream_version = reader.u64()?;
    let timestamp_ms = reader.u64()?;
    let _id = reader.bytes()?;
    let event_type = reader.str()?;
    Ok(EventHead {
        stream,
        stream_version,
        timestamp_ms,
        event_type,
    })
}

pub fn encode_u64(value: u64) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u64(value);
    writer.finish()
}

pub fn decode_u64(what: &'static str, record: &[u8]) -> Result<u64, CorruptRecord> {
    let mut reader = Reader::new(what, record)?;
    let value = reader.u64()?;
    reader.end()?;
    Ok(value)
}

pub fn encode_str(value: &str) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.str(value);
    writer.finish()
}

pub fn decode_string(what: &'static str, record: &[u8]) -> Result<String, CorruptRecord> {
    let mut reader = Reader::new(what, record)?;
    let value = reader.string()?;
    reader.end()?;
    Ok(value)
}

/// The outcome of an append kept under its idempotency key.
pub fn encode_idempotent_record(record: &IdempotentRecord) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u64(record.fingerprint);
    writer.u64(record.outcome.first_position);
    writer.u64(record.outcome.last_position);
    writer.u64(record.outcome.stream_version);
    writer.u64(record.order);
    writer.u64(record.timestamp_ms);
    writer.finish()
}

pub fn decode_idempotent_record(record: &[u8]) -> Result<IdempotentRecord, CorruptRecord> {
    let mut reader = Reader::new("idempotency record", record)?;
    let fingerprint = reader.u64()?;
    let outcome = AppendOutcome {
        first_position: reader.u64()?,
        last_position: reader.u64()?,
        stream_version: reader.u64()?,
        deduplicated: false,
    };
    let order = reader.u64()?;
    let timestamp_ms = reader.u64()?;
    reader.end()?;
    Ok(IdempotentRecord {
        fingerprint,
        outcome,
        order,
        timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_command() -> Command {
        Command::Append(AppendCommand {
            stream: "orders-1".to_string(),
            events: vec![NewEvent {
                id: "e1".to_string(),
                event_type: "OrderPlaced".to_string(),
                content_type: "application/json".to_string(),
                data: Bytes::from_static(b"{\"total\":3}"),
                metadata: vec![("trace".to_string(), "abc".to_string())],
                encoding: Default::default(),
            }],
            expected_version: Some(0),
            idempotency_key: Some("k1".to_string()),
            timestamp_ms: 1_700_000_000_000,
            request_fingerprint: 42,
            idempotency: IdempotencyPolicy {
                window_ms: 5_000,
                max_keys: 9,
            },
        })
    }

    /// Between nodes a command travels serialized with serde (postcard): sharing the appends
    /// of an entry (`Arc`) must not change those bytes, or nodes of the version before (which
    /// held a plain `Vec`) could not read them in a rolling upgrade. Postcard writes an enum's
    /// variant index (`Appends` is the second, 1) and then the content: here the list itself.
    #[test]
    fn shared_appends_travel_as_the_list_they_hold() {
        let Command::Append(append) = sample_command() else {
            unreachable!()
        };
        let appends = vec![append.clone(), append];
        let shared = postcard::to_stdvec(&Command::Appends(appends.clone().into()))
            .expect("a command serializes");
        let mut as_list = vec![1];
        as_list.extend(postcard::to_stdvec(&appends).expect("a list serializes"));
        assert_eq!(shared, as_list);
        assert_eq!(
            postcard::from_bytes::<Command>(&as_list).expect("the list's bytes deserialize"),
            Command::Appends(appends.into())
        );
    }

    #[test]
    fn entry_round_trips() {
        let log_id = LogId {
            leader_id: LeaderId {
                term: 3,
                node_id: 2,
            },
            index: 42,
        };
        let entries = [
            Entry {
                log_id,
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(sample_command()),
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::Appends(
                    vec![
                        match sample_command() {
                            Command::Append(append) => append,
                            _ => unreachable!(),
                        };
                        3
                    ]
                    .into(),
                )),
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::Consumer(
                    crate::consumer::ConsumerCommand::Step {
                        name: "g".to_string(),
                        created_index: 3,
                        revision: 9,
                        settlements: vec![crate::consumer::Settlement {
                            key: 4,
                            attempt: 2,
                            outcome: crate::consumer::Outcome::Retry { delay_ms: Some(7) },
                            reason: "busy".to_string(),
                            member: "m".to_string(),
                        }],
                        redeliveries: vec![],
                        advance: Some(crate::consumer::Advance {
                            from: 5,
                            to: 8,
                            taken: vec![crate::consumer::NewPending {
                                key: 6,
                                position: 6,
                                stream: "s".to_string(),
                                event_timestamp_ms: 11,
                                event_bytes: 3,
                                deliver_to: None,
                            }],
                        }),
                        timestamp_ms: 12,
                    },
                )),
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command::Check(crate::types::CheckRange {
                    from: 1,
                    to: 0,
                    step: 1_000,
                })),
            },
            Entry {
                log_id,
                payload: EntryPayload::Membership(
                    Membership::new(
                        vec![BTreeSet::from([1, 2])],
                        BTreeMap::from([
                            (1, MemberNode::new("127.0.0.1:1", "127.0.0.1:2001")),
                            (2, MemberNode::new("127.0.0.1:2", "127.0.0.1:2002")),
                            (3, MemberNode::new("127.0.0.1:3", "127.0.0.1:2003")),
                        ]),
                    )
                    .expect("valid membership"),
                ),
            },
        ];
        for entry in entries {
            let decoded = decode_entry(&encode_entry(&entry)).expect("decodes");
            assert_eq!(entry, decoded);
        }
    }

    #[test]
    fn a_membership_written_before_peer_addresses_decodes_with_empty_ones() {
        // Codec version 1: voters, then each node's id and client address only.
        let mut writer = Writer::new();
        put_optional_log_id(&mut writer, None);
        writer.u32(1);
        writer.u32(2);
        writer.u64(1);
        writer.u64(2);
        writer.u32(2);
        writer.u64(1);
        writer.str("127.0.0.1:1");
        writer.u64(2);
        writer.str("127.0.0.1:2");
        let decoded = decode_stored_membership(&writer.finish()).expect("decodes");
        let nodes: Vec<(u64, MemberNode)> = decoded
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        assert_eq!(
            nodes,
            vec![
                (1, MemberNode::new("127.0.0.1:1", "")),
                (2, MemberNode::new("127.0.0.1:2", "")),
            ]
        );
        // Written again, it has both addresses (version 3), and reads back the same.
        let again = encode_stored_membership(&decoded);
        assert_eq!(again[0], CODEC_VERSION_PEER_ADDRESSES);
        assert_eq!(decode_stored_membership(&again).expect("decodes"), decoded);
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let log_id = LogId {
            leader_id: LeaderId {
                term: 1,
                node_id: 1,
            },
            index: 1,
        };
        let mut record = encode_entry(&Entry {
            log_id,
            payload: EntryPayload::Normal(sample_command()),
        });
        record[20] ^= 0x04;
        let error = decode_entry(&record).expect_err("corruption must be detected");
        assert!(error.detail.contains("checksum"), "{error}");
    }

    #[test]
    fn truncated_and_unknown_version_records_are_refused() {
        let record = encode_vote(&Vote {
            leader_id: LeaderId {
                term: 5,
                node_id: 1,
            },
            committed: true,
        });
        assert!(decode_vote(&record[..record.len() - 1]).is_err());
        let mut future = record.clone();
        future[0] = CODEC_VERSION_PEER_ADDRESSES + 1;
        let checksum = crc32fast::hash(&future[..future.len() - 4]);
        let len = future.len();
        future[len - 4..].copy_from_slice(&checksum.to_le_bytes());
        let error = decode_vote(&future).expect_err("unknown version is refused");
        assert!(error.detail.contains("unknown codec version"), "{error}");
        assert_eq!(
            decode_vote(&record).expect("decodes"),
            Vote {
                leader_id: LeaderId {
                    term: 5,
                    node_id: 1
                },
                committed: true
            }
        );
    }

    #[test]
    fn event_round_trips() {
        let event = RecordedEvent {
            position: 9,
            stream: "s".to_string(),
            stream_version: 2,
            id: "id".to_string(),
            event_type: "T".to_string(),
            content_type: "text/plain".to_string(),
            data: Bytes::from_static(b"hello"),
            metadata: vec![],
            timestamp_ms: 7,
        };
        assert_eq!(
            event,
            decode_event(9, &encode_event(&event, DataEncoding::Raw)).expect("decodes")
        );
        assert_eq!(
            peek_event(&encode_event(&event, DataEncoding::Raw)).expect("peeks"),
            EventHead {
                stream: "s",
                stream_version: 2,
                timestamp_ms: 7,
                event_type: "T"
            }
        );
    }

    #[test]
    fn compressed_data_round_trips_and_raw_records_stay_version_1() {
        let json =
            br#"{"order":1,"items":[{"sku":"a","qty":1},{"sku":"a","qty":1},{"sku":"a","qty":1}]}"#
                .repeat(8);
        let frame = compress(&json).expect("repeated JSON compresses");
        assert!(
            frame.len() < json.len() / 2,
            "{} of {}",
            frame.len(),
            json.len()
        );
        // Random-looking data does not pay: not compressed.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..128)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        assert_eq!(compress(&noise), None);

        // A log entry with a compressed event: version 2, and it decodes as it was.
        let Command::Append(mut append) = sample_command() else {
            unreachable!("sample_command is an append")
        };
        append.events[0].data = Bytes::from(frame.clone());
        append.events[0].encoding = DataEncoding::Zstd;
        let entry = Entry {
            log_id: LogId {
                leader_id: LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index: 5,
            },
            payload: EntryPayload::Normal(Command::Append(append)),
        };
        let record = encode_entry(&entry);
        assert_eq!(record[0], CODEC_VERSION_ENCODED_DATA);
        assert_eq!(decode_entry(&record).expect("decodes"), entry);
        // Without compressed events, an entry is what version 1 wrote.
        let raw = Entry {
            payload: EntryPayload::Normal(sample_command()),
            ..entry.clone()
        };
        assert_eq!(encode_entry(&raw)[0], CODEC_VERSION);

        // An event record stored compressed reads back as the data the client gave.
        let event = RecordedEvent {
            position: 3,
            stream: "s".to_string(),
            stream_version: 1,
            id: "id".to_string(),
            event_type: "T".to_string(),
            content_type: "application/json".to_string(),
            data: Bytes::from(frame),
            metadata: vec![],
            timestamp_ms: 7,
        };
        let record = encode_event(&event, DataEncoding::Zstd);
        assert_eq!(record[0], CODEC_VERSION_ENCODED_DATA);
        let decoded = decode_event(3, &record).expect("decodes");
        assert_eq!(decoded.data, Bytes::from(json));
        assert_eq!(peek_event(&record).expect("peeks").event_type, "T");
        assert_eq!(encode_event(&event, DataEncoding::Raw)[0], CODEC_VERSION);
    }
}
