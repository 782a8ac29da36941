//! Backups: a snapshot file taken through a client (`Maintenance.Backup` streams a live
//! snapshot, the CLI writes it), checked whole by [`verify_file`] and installed into a new
//! store by [`restore`] with the new cluster's membership and a new epoch.
//!
//! A restored store starts where the backup's state machine was: applied, committed and
//! purged up to the backup's last applied log id, a vote at that log id's term (so the first
//! election of the restored cluster is at a higher term and every log id it writes sorts after
//! the restored ones), membership the new cluster's voters, and no catch-up requirement (the
//! store holds everything the backup holds; every member restores from the same file).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

use redb::WriteTransaction;
use serde::Serialize;

use super::Counts;
use super::Header;
use super::SnapshotReader;
use super::invalid;
use super::read_records;
use super::replace_state;
use crate::codec;
use crate::error::io_error;
use crate::schema::META;
use crate::schema::meta_key;
use crate::type_config::LeaderId;
use crate::type_config::LogId;
use crate::type_config::MemberNode;
use crate::type_config::Membership;
use crate::type_config::SnapshotMeta;
use crate::type_config::StoredMembership;
use crate::type_config::Vote;

/// What a backup starts with: the state it copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// The last log entry applied in the copied state (`None`: nothing applied yet).
    pub last_log_id: Option<LogId>,
    /// The last event's position.
    pub head_position: u64,
    pub epoch: u64,
    /// The membership of the copied state: node id -> client address.
    pub members: BTreeMap<u64, String>,
}

impl BackupHeader {
    pub(super) fn of(header: &Header) -> Self {
        Self {
            last_log_id: header.meta.last_log_id,
            head_position: header.head_position,
            epoch: header.epoch,
            members: header
                .meta
                .last_membership
                .nodes()
                .map(|(id, node)| (*id, node.client_address.clone()))
                .collect(),
        }
    }
}

/// What a backup file holds, checked record by record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// The file's format version.
    pub format: u32,
    /// Term and index of the last log entry applied in the copied state.
    pub applied_term: u64,
    pub applied_index: u64,
    /// The last event's position (events are first_position..=head_position, but for those
    /// removed by retention).
    pub head_position: u64,
    /// The copied log's epoch (a restore gives the restored log a higher one).
    pub epoch: u64,
    pub events: u64,
    pub idempotency_keys: u64,
    pub consumer_groups: u64,
    pub pending_events: u64,
    pub dead_letters: u64,
    /// Streams with metadata (retention settings, deletion).
    pub stream_metadata: u64,
    /// The first position retained log-wide (1: nothing removed log-wide).
    pub first_position: u64,
    /// The copied cluster's members: node id -> address.
    pub members: BTreeMap<u64, String>,
    pub bytes: u64,
    /// The CRC-32 of the file (its trailer), hex.
    pub checksum: String,
}

impl BackupSummary {
    fn new(reader: &SnapshotReader, header: &Header, counts: Counts) -> Self {
        let backup = BackupHeader::of(header);
        let applied = header.meta.last_log_id;
        Self {
            format: reader.version,
            applied_term: applied.map(|id| id.leader_id.term).unwrap_or(0),
            applied_index: applied.map(|id| id.index).unwrap_or(0),
            head_position: header.head_position,
            epoch: header.epoch,
            events: counts.events,
            idempotency_keys: counts.idempotency_keys,
            consumer_groups: counts.consumer_groups,
            pending_events: counts.pending,
            dead_letters: counts.dead_letters,
            stream_metadata: counts.stream_metadata,
            first_position: counts.first_position,
            members: backup.members,
            bytes: reader.bytes,
            checksum: format!("{:08x}", reader.checksum.unwrap_or(0)),
        }
    }
}

/// Reads the whole backup (or snapshot) file at `path` and checks it: format, every record
/// decodes, events in order up to the head, record count and checksum. Returns what it holds.
pub fn verify_file(path: &Path) -> std::io::Result<BackupSummary> {
    let mut reader = SnapshotReader::open(path)?;
    let header = reader.header()?;
    let counts = read_records(&mut reader, &header, |_| Ok(()))?;
    Ok(BackupSummary::new(&reader, &header, counts))
}

/// Installs the backup file at `path` into `txn` (a new, empty store's first write), as the
/// state of a new cluster of `members` (node id -> addresses) at epoch `epoch` (default: the
/// backup's plus one; it must be higher than the backup's). Fails, and `txn` must not commit,
/// on any damage the file has.
pub(crate) fn restore(
    txn: &WriteTransaction,
    path: &Path,
    members: &BTreeMap<u64, MemberNode>,
    epoch: Option<u64>,
) -> std::io::Result<BackupSummary> {
    let mut reader = SnapshotReader::open(path)?;
    let backup = reader.header()?;
    let Some(last_log_id) = backup.meta.last_log_id else {
        return Err(invalid(
            "the backup holds no applied log entry (it was taken of a cluster that had applied \
             nothing): start a new cluster instead",
        ));
    };
    let epoch = match epoch {
        None => backup
            .epoch
            .checked_add(1)
            .ok_or_else(|| invalid("epoch overflow"))?,
        Some(epoch) if epoch > backup.epoch => epoch,
        Some(epoch) => {
            return Err(invalid(format!(
                "epoch {epoch} is not above the backup's epoch {}",
                backup.epoch
            )));
        }
    };
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let membership = Membership::new(vec![voters], members.clone())
        .map_err(|error| invalid(format!("membership: {error}")))?;
    let header = Header {
        meta: SnapshotMeta {
            last_log_id: Some(last_log_id),
            last_membership: StoredMembership::new(Some(last_log_id), membership),
        },
        head_position: backup.head_position,
        epoch,
    };
    let counts = replace_state(txn, &mut reader, &header)?;
    let mut meta = txn.open_table(META).map_err(io_error)?;
    let log_id = codec::encode_log_id(&last_log_id);
    meta.insert(meta_key::LAST_PURGED, log_id.as_slice())
        .map_err(io_error)?;
    meta.insert(meta_key::COMMITTED, log_id.as_slice())
        .map_err(io_error)?;
    let vote = Vote {
        leader_id: LeaderId {
            term: last_log_id.leader_id.term,
            node_id: last_log_id.leader_id.node_id,
        },
        committed: false,
    };
    meta.insert(meta_key::VOTE, codec::encode_vote(&vote).as_slice())
        .map_err(io_error)?;
    meta.remove(meta_key::CATCH_UP_REQUIRED).map_err(io_error)?;
    meta.remove(meta_key::FOUNDING_MEMBER).map_err(io_error)?;
    Ok(BackupSummary::new(&reader, &header, counts))
}
