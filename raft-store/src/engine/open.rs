//! Opening a data directory: create it, or check that it is this cluster's and this node's,
//! in a format this evlog reads, undamaged where a crash could have left damage (the log's
//! tail), and load what the engine keeps in memory. A damaged or foreign directory is refused
//! with a message naming it; it is never recreated.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use redb::Database;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::ReadableTableMetadata;
use tokio::sync::watch;

use super::Shared;
use super::StoreBackend;
use super::StoreConfig;
use super::journal;
use super::journal::Journal;
use super::journal::JournalFile;
use crate::codec;
use crate::error::CorruptRecord;
use crate::error::OpenError;
use crate::log_store::LogMeta;
use crate::log_store::Tail;
use crate::log_store::txn;
use crate::schema::CONSUMER_PENDING;
use crate::schema::CONSUMER_SKIPS;
use crate::schema::CONSUMERS;
use crate::schema::DEAD_LETTERS;
use crate::schema::EVENTS;
use crate::schema::FORMAT_2_STREAMS;
use crate::schema::FORMAT_3;
use crate::schema::FORMAT_4;
use crate::schema::FORMAT_5;
use crate::schema::FORMAT_6;
use crate::schema::FORMAT_7;
use crate::schema::FORMAT_8;
use crate::schema::FORMAT_VERSION;
use crate::schema::IDEMPOTENCY;
use crate::schema::IDEMPOTENCY_ORDER;
use crate::schema::LOG;
use crate::schema::META;
use crate::schema::RECLAIM_STREAMS;
use crate::schema::SM_META;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::schema::UPGRADABLE_FORMAT_VERSION;
use crate::schema::meta_key;
use crate::schema::sm_key;
use crate::snapshot;
use crate::state_machine::MachineMeta;
use crate::type_config::LogId;
use crate::type_config::StoredMembership;
use crate::types::AppliedState;

/// How many log entries at the tail are checked (checksums) when a store opens.
const TAIL_ENTRIES_VERIFIED_AT_OPEN: usize = 1024;

/// Opens (or creates) the store in `config.data_dir`, refusing a damaged or foreign one.
pub(super) fn open(config: &StoreConfig) -> Result<(Shared, Journal), OpenError> {
    let data_dir = config.data_dir.clone();
    let dir_error = |source| OpenError::Directory {
        path: data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
    std::fs::create_dir_all(data_dir.join("snapshots")).map_err(dir_error)?;
    let db = open_database(config)?;
    let identity = check_identity(&db, config).map_err(|e| e.with_path(&data_dir))?;
    let journal_file = open_journal(config)?;
    let generation =
        replay_journal(&db, journal_file.as_ref()).map_err(|e| e.with_path(&data_dir))?;
    let log = load_log_meta(&db).map_err(|e| e.with_path(&data_dir))?;
    let machine = load_machine_meta(&db).map_err(|e| e.with_path(&data_dir))?;
    snapshot::clear_dir(&data_dir.join("snapshots")).map_err(|source| OpenError::Storage {
        path: data_dir.clone(),
        source,
    })?;
    let applied = AppliedState {
        log_index: machine.last_applied.map(|id| id.index).unwrap_or(0),
        head_position: machine.head_position,
        epoch: machine.epoch,
        dictionary: machine.dictionary,
        access_revision: machine.access.revision,
    };
    let tail = Tail {
        pending: BTreeMap::new(),
        last_log_id: log.last_log_id,
    };
    let shared = Shared {
        db,
        data_dir,
        quick_repair: config.quick_repair,
        hold_reclaim: Arc::clone(&config.hold_reclaim),
        tail: Mutex::new(tail),
        log: Mutex::new(log),
        machine: Mutex::new(machine),
        applied: watch::channel(applied).0,
        failure: watch::channel(None).0,
        needs_catch_up: AtomicBool::new(identity.needs_catch_up),
        created: identity.created,
        founding_member: identity.founding_member,
        observer: config.observer.clone(),
        checks: Default::default(),
    };
    let journal = Journal::new(journal_file, generation).map_err(|error| OpenError::Damaged {
        path: config.data_dir.clone(),
        detail: error.to_string(),
    })?;
    Ok((shared, journal))
}

/// The log's journal: its own file, or the one the backend came with.
fn open_journal(config: &StoreConfig) -> Result<Arc<dyn JournalFile>, OpenError> {
    let path = config.data_dir.join(journal::JOURNAL_FILE);
    match &config.backend {
        StoreBackend::Custom(_, Some(journal)) => Ok(Arc::clone(journal)),
        StoreBackend::File | StoreBackend::Custom(_, None) => journal::open_file(&path)
            .map(|file| Arc::new(file) as Arc<dyn JournalFile>)
            .map_err(|source| OpenError::Storage { path, source }),
    }
}

/// Brings the database's log up to what was acknowledged: the database is at its last durable
/// commit, and the journal's records of the generation that commit recorded are every log
/// append and truncation since, in order. They are replayed, and the next generation recorded,
/// in one durable commit; returns that generation, which the journal writes from now on. A
/// record the database already has (a crash after a durable commit, before the journal's next
/// generation wrote anything) is written again as it was.
fn replay_journal(db: &Database, file: &dyn JournalFile) -> Result<u64, OpenFailure> {
    let generation = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        match meta.get(meta_key::JOURNAL_GENERATION)? {
            Some(value) => {
                codec::decode_u64("journal generation", value.value()).map_err(corrupt)?
            }
            None => 0,
        }
    };
    let read = journal::read(file, generation).map_err(|error| {
        OpenFailure::Damaged(format!("the log journal cannot be read: {error}"))
    })?;
    if read.torn {
        tracing::warn!(
            "the log journal ends with an unfinished write (never acknowledged): dropped"
        );
    }
    let replayed = read.records.len();
    let mut log = load_log_meta(db)?;
    let next = generation.wrapping_add(1);
    let txn = db.begin_write()?;
    for record in read.records {
        match record {
            journal::Record::Append(entry) => {
                txn::replay_append(&txn, &entry, &mut log).map_err(|error| {
                    OpenFailure::Damaged(format!("the log journal does not fit the log: {error}"))
                })?
            }
            journal::Record::TruncateAfter(last) => {
                // Entries at or below the purge point are gone already (a purge since the
                // truncation): never cut there, which would leave a hole below the entries
                // replayed after it.
                let last = match (last, log.last_purged) {
                    (Some(last), Some(purged)) if purged.index > last.index => Some(purged),
                    (None, Some(purged)) => Some(purged),
                    (last, _) => last,
                };
                txn::truncate_after(&txn, last, &mut log)
                    .map_err(|error| OpenFailure::Damaged(error.to_string()))?
            }
        }
    }
    txn::write_journal_generation(&txn, next)
        .map_err(|error| OpenFailure::Damaged(error.to_string()))?;
    txn.commit()?;
    if replayed > 0 {
        tracing::info!(records = replayed, "replayed the log journal");
    }
    Ok(next)
}

/// What the store's identity says beside whose it is.
struct Identity {
    /// This open created the store.
    created: bool,
    /// The store must catch up with a leader (or, a founding member, confirm its cluster is
    /// new) before its node votes.
    needs_catch_up: bool,
    /// The store was created as one of a new cluster's founding members.
    founding_member: bool,
}

/// The database on the configured backend; one redb reports corrupted is refused as damaged.
fn open_database(config: &StoreConfig) -> Result<Database, OpenError> {
    let db_path: PathBuf = config.data_dir.join(crate::schema::DATABASE_FILE);
    let mut builder = Database::builder();
    builder.set_cache_size(config.cache_bytes);
    match &config.backend {
        StoreBackend::File => builder.create(&db_path),
        StoreBackend::Custom(backend, _) => builder.create_with_backend(backend.clone()),
    }
    .map_err(|source| match source {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => OpenError::Damaged {
            path: db_path.clone(),
            detail,
        },
        source => OpenError::Database {
            path: db_path.clone(),
            source,
        },
    })
}

/// Errors while opening, before the data directory path is attached.
enum OpenFailure {
    Foreign(Box<dyn FnOnce(PathBuf) -> OpenError>),
    Damaged(String),
}

impl OpenFailure {
    fn with_path(self, path: &Path) -> OpenError {
        match self {
            OpenFailure::Foreign(make) => make(path.to_path_buf()),
            OpenFailure::Damaged(detail) => OpenError::Damaged {
                path: path.to_path_buf(),
                detail,
            },
        }
    }
}

impl<E: Into<redb::Error>> From<E> for OpenFailure {
    fn from(error: E) -> Self {
        OpenFailure::Damaged(error.into().to_string())
    }
}

fn corrupt(error: CorruptRecord) -> OpenFailure {
    OpenFailure::Damaged(error.to_string())
}

/// First open: stamps format version, cluster id and node id, and whether the store must
/// catch up before it votes (durably, before anything else is written). Later opens: checks
/// them.
fn check_identity(db: &Database, config: &StoreConfig) -> Result<Identity, OpenFailure> {
    let txn = db.begin_write()?;
    let identity;
    {
        let mut meta = txn.open_table(META)?;
        let format = meta
            .get(meta_key::FORMAT_VERSION)?
            .map(|v| v.value().to_vec());
        match format {
            None => {
                let log_len = txn.open_table(LOG)?.len()?;
                let events_len = txn.open_table(EVENTS)?.len()?;
                if log_len != 0 || events_len != 0 {
                    return Err(OpenFailure::Damaged(
                        "log or events present but no format version".to_string(),
                    ));
                }
                meta.insert(
                    meta_key::FORMAT_VERSION,
                    codec::encode_u64(u64::from(FORMAT_VERSION)).as_slice(),
                )?;
                meta.insert(
                    meta_key::CLUSTER_ID,
                    codec::encode_str(&config.cluster_id).as_slice(),
                )?;
                meta.insert(
                    meta_key::NODE_ID,
                    codec::encode_u64(config.node_id).as_slice(),
                )?;
                // Every new store starts without a vote: a founding member too, until its node
                // has confirmed that no peer has committed anything (a directory that lost its
                // data looks new, and its flags may still say --bootstrap).
                meta.insert(meta_key::CATCH_UP_REQUIRED, codec::encode_u64(1).as_slice())?;
                if config.founding {
                    meta.insert(meta_key::FOUNDING_MEMBER, codec::encode_u64(1).as_slice())?;
                }
                identity = Identity {
                    created: true,
                    needs_catch_up: true,
                    founding_member: config.founding,
                };
            }
            Some(format) => {
                let mut found = codec::decode_u64("format version", &format).map_err(corrupt)?;
                if found == u64::from(UPGRADABLE_FORMAT_VERSION)
                    || found == u64::from(FORMAT_3)
                    || found == u64::from(FORMAT_4)
                    || found == u64::from(FORMAT_5)
                    || found == u64::from(FORMAT_6)
                    || found == u64::from(FORMAT_7)
                    || found == u64::from(FORMAT_8)
                {
                    // Format 2 differs from 3 only by a table that repeated the stream index:
                    // drop it. Formats 3 to 7 read as 8 does; the new stamp keeps an older
                    // evlog from opening the store once it holds what only 8 has. The upgrade
                    // commits with the open's other checks, or not at all.
                    if found == u64::from(UPGRADABLE_FORMAT_VERSION) {
                        txn.delete_table(FORMAT_2_STREAMS)?;
                    }
                    meta.insert(
                        meta_key::FORMAT_VERSION,
                        codec::encode_u64(u64::from(FORMAT_VERSION)).as_slice(),
                    )?;
                    tracing::info!(
                        from = found,
                        to = FORMAT_VERSION,
                        "upgraded the store's format"
                    );
                    found = u64::from(FORMAT_VERSION);
                }
                if found != u64::from(FORMAT_VERSION) {
                    let found = u32::try_from(found).unwrap_or(u32::MAX);
                    return Err(OpenFailure::Foreign(Box::new(move |path| {
                        OpenError::UnknownFormat {
                            path,
                            found,
                            supported: FORMAT_VERSION,
                        }
                    })));
                }
                let cluster = meta
                    .get(meta_key::CLUSTER_ID)?
                    .ok_or_else(|| OpenFailure::Damaged("cluster id missing".to_string()))?;
                let found = codec::decode_string("cluster id", cluster.value()).map_err(corrupt)?;
                if found != config.cluster_id {
                    let expected = config.cluster_id.clone();
                    return Err(OpenFailure::Foreign(Box::new(move |path| {
                        OpenError::ForeignCluster {
                            path,
                            expected,
                            found,
                        }
                    })));
                }
                let node = meta
                    .get(meta_key::NODE_ID)?
                    .ok_or_else(|| OpenFailure::Damaged("node id missing".to_string()))?;
                let found = codec::decode_u64("node id", node.value()).map_err(corrupt)?;
                if found != config.node_id {
                    let expected = config.node_id;
                    return Err(OpenFailure::Foreign(Box::new(move |path| {
                        OpenError::ForeignNode {
                            path,
                            expected,
                            found,
                        }
                    })));
                }
                identity = Identity {
                    created: false,
                    needs_catch_up: meta.get(meta_key::CATCH_UP_REQUIRED)?.is_some(),
                    founding_member: meta.get(meta_key::FOUNDING_MEMBER)?.is_some(),
                };
            }
        }
        // Create every table, so readers never meet a missing one.
        txn.open_table(LOG)?;
        txn.open_table(SM_META)?;
        txn.open_table(EVENTS)?;
        txn.open_table(STREAM_INDEX)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(IDEMPOTENCY_ORDER)?;
        txn.open_table(CONSUMERS)?;
        txn.open_table(CONSUMER_PENDING)?;
        txn.open_table(DEAD_LETTERS)?;
        txn.open_table(STREAM_META)?;
        txn.open_table(RECLAIM_STREAMS)?;
        txn.open_table(CONSUMER_SKIPS)?;
    }
    txn.commit()?;
    Ok(identity)
}

fn load_log_meta(db: &Database) -> Result<LogMeta, OpenFailure> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let read_log_id = |key: &str| -> Result<Option<LogId>, OpenFailure> {
        match meta.get(key)? {
            None => Ok(None),
            Some(value) => Ok(Some(codec::decode_log_id(value.value()).map_err(corrupt)?)),
        }
    };
    let vote = match meta.get(meta_key::VOTE)? {
        None => None,
        Some(value) => Some(codec::decode_vote(value.value()).map_err(corrupt)?),
    };
    let committed = read_log_id(meta_key::COMMITTED)?;
    let last_purged = read_log_id(meta_key::LAST_PURGED)?;
    let log = txn.open_table(LOG)?;
    // Verify the tail: indexes contiguous, checksums good, each entry at its own index.
    let mut last_log_id = None;
    let mut expected_index: Option<u64> = None;
    for item in log.iter()?.rev().take(TAIL_ENTRIES_VERIFIED_AT_OPEN) {
        let (index, value) = item?;
        let entry = codec::decode_entry(value.value()).map_err(corrupt)?;
        if entry.log_id.index != index.value() {
            return Err(OpenFailure::Damaged(format!(
                "log entry stored at index {} says index {}",
                index.value(),
                entry.log_id.index
            )));
        }
        if let Some(expected) = expected_index
            && index.value() != expected
        {
            return Err(OpenFailure::Damaged(format!(
                "log has a hole: index {} follows {}",
                index.value(),
                expected + 1
            )));
        }
        expected_index = index.value().checked_sub(1);
        if last_log_id.is_none() {
            last_log_id = Some(entry.log_id);
        }
    }
    let first = log.first()?.map(|(index, _)| index.value());
    // Entries at or below the purge point may still be stored (they are deleted a run at a
    // time); a first entry above the one after it is a hole.
    if let (Some(first), Some(purged)) = (first, last_purged)
        && first > purged.index + 1
    {
        return Err(OpenFailure::Damaged(format!(
            "log starts at index {first} but was purged up to {}",
            purged.index
        )));
    }
    Ok(LogMeta {
        vote,
        committed,
        committed_unwritten: false,
        last_purged,
        purged_stored_from: first.unwrap_or(0),
        last_log_id: last_log_id.or(last_purged),
    })
}

fn load_machine_meta(db: &Database) -> Result<MachineMeta, OpenFailure> {
    let txn = db.begin_read()?;
    let sm = txn.open_table(SM_META)?;
    let last_applied = match sm.get(sm_key::LAST_APPLIED)? {
        None => None,
        Some(value) => Some(codec::decode_log_id(value.value()).map_err(corrupt)?),
    };
    let membership = match sm.get(sm_key::MEMBERSHIP)? {
        None => StoredMembership::default(),
        Some(value) => codec::decode_stored_membership(value.value()).map_err(corrupt)?,
    };
    let head_position = match sm.get(sm_key::HEAD_POSITION)? {
        None => 0,
        Some(value) => codec::decode_u64("head position", value.value()).map_err(corrupt)?,
    };
    let epoch = match sm.get(sm_key::EPOCH)? {
        None => 0,
        Some(value) => codec::decode_u64("epoch", value.value()).map_err(corrupt)?,
    };
    let first_position = match sm.get(sm_key::FIRST_POSITION)? {
        None => 1,
        Some(value) => codec::decode_u64("first position", value.value()).map_err(corrupt)?,
    };
    // Registered before any event is decoded (the last one, just below).
    let dictionary = match sm.get(sm_key::DICTIONARY)? {
        None => 0,
        Some(value) => crate::dictionary::register(value.value()),
    };
    let access = match sm.get(sm_key::ACCESS)? {
        None => Default::default(),
        Some(value) => {
            std::sync::Arc::new(crate::access::decode_state(value.value()).map_err(corrupt)?)
        }
    };
    let events = txn.open_table(EVENTS)?;
    let (last_event, last_timestamp_ms) = match events.last()? {
        None => (0, 0),
        Some((position, value)) => {
            let event = codec::decode_event(position.value(), value.value()).map_err(corrupt)?;
            (event.position, event.timestamp_ms)
        }
    };
    if last_event != head_position {
        return Err(OpenFailure::Damaged(format!(
            "head position is {head_position} but the last event is at {last_event}"
        )));
    }
    Ok(MachineMeta {
        last_applied,
        membership,
        head_position,
        last_timestamp_ms,
        epoch,
        first_position,
        dictionary,
        access,
    })
}

/// Creates a new store in `config.data_dir` (absent or empty) holding the backup at `file` as
/// the state of a new cluster of `members` (node id -> addresses), at `epoch` (default: the
/// backup's plus one). Nothing is left behind on failure; on success the store is durable and
/// its node starts from it with `evlog serve` like any restarted node.
pub(super) fn restore(
    config: &StoreConfig,
    file: &Path,
    members: &BTreeMap<u64, crate::type_config::MemberNode>,
    epoch: Option<u64>,
) -> Result<crate::snapshot::BackupSummary, RestoreError> {
    let data_dir = &config.data_dir;
    if let Ok(mut entries) = std::fs::read_dir(data_dir)
        && entries.next().is_some()
    {
        return Err(RestoreError::NotEmpty(data_dir.clone()));
    }
    if !members.contains_key(&config.node_id) {
        return Err(RestoreError::NotAMember(config.node_id));
    }
    let created_dir = !data_dir.exists();
    let restored = restore_into(config, file, members, epoch);
    if restored.is_err() {
        // Leave the directory as it was: absent, or empty.
        let db_path = data_dir.join(crate::schema::DATABASE_FILE);
        std::fs::remove_file(&db_path).ok();
        std::fs::remove_dir(data_dir.join("snapshots")).ok();
        if created_dir {
            std::fs::remove_dir(data_dir).ok();
        }
    }
    restored
}

fn restore_into(
    config: &StoreConfig,
    file: &Path,
    members: &BTreeMap<u64, crate::type_config::MemberNode>,
    epoch: Option<u64>,
) -> Result<crate::snapshot::BackupSummary, RestoreError> {
    let data_dir = config.data_dir.clone();
    let dir_error = |source| OpenError::Directory {
        path: data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
    std::fs::create_dir_all(data_dir.join("snapshots")).map_err(dir_error)?;
    let config = StoreConfig {
        founding: false,
        ..config.clone()
    };
    let db = open_database(&config)?;
    check_identity(&db, &config).map_err(|e| e.with_path(&data_dir))?;
    let txn = db.begin_write().map_err(crate::error::io_error)?;
    let summary = crate::snapshot::restore(&txn, file, members, epoch)?;
    txn.commit().map_err(crate::error::io_error)?;
    Ok(summary)
}

/// Why a restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "data directory {0} is not empty; a restore creates a new store (give an empty or new \
         directory)"
    )]
    NotEmpty(PathBuf),
    #[error("node {0} is not one of the restored cluster's members (--peers)")]
    NotAMember(u64),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot restore the backup: {0}")]
    Backup(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::ReadableDatabase;

    use super::*;
    use crate::engine::journal::Journal;
    use crate::type_config::Entry;
    use crate::type_config::EntryPayload;
    use crate::type_config::LeaderId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId {
                leader_id: LeaderId { term, node_id: 1 },
                index,
            },
            payload: EntryPayload::Blank,
        }
    }

    /// One generation of the journal: 1-5 appended in term 1, a truncation after 3, then 4-6
    /// in term 2.
    fn generation() -> Vec<journal::Record> {
        use journal::Record::Append;
        use journal::Record::TruncateAfter;
        vec![
            Append(entry(1, 1)),
            Append(entry(1, 2)),
            Append(entry(1, 3)),
            Append(entry(1, 4)),
            Append(entry(1, 5)),
            TruncateAfter(Some(entry(1, 3).log_id)),
            Append(entry(2, 4)),
            Append(entry(2, 5)),
            Append(entry(2, 6)),
        ]
    }

    fn expected_log() -> Vec<Entry> {
        vec![
            entry(1, 1),
            entry(1, 2),
            entry(1, 3),
            entry(2, 4),
            entry(2, 5),
            entry(2, 6),
        ]
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: Database,
        journal: Arc<std::fs::File>,
    }

    fn fixture(records: &[journal::Record]) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Database::create(dir.path().join("db")).expect("a database");
        let txn = db.begin_write().expect("write");
        txn.open_table(LOG).expect("log");
        txn.open_table(META).expect("meta");
        txn.commit().expect("commit");
        let journal = Arc::new(
            journal::open_file(&dir.path().join(journal::JOURNAL_FILE)).expect("a journal"),
        );
        let mut writer = Journal::new(journal.clone(), 0).expect("a journal");
        for record in records {
            match record {
                journal::Record::Append(entry) => {
                    writer.stage_append(&codec::encode_entry(entry));
                }
                journal::Record::TruncateAfter(last) => writer.stage_truncate(*last),
            }
        }
        writer.write_and_sync().expect("written");
        Fixture {
            _dir: dir,
            db,
            journal,
        }
    }

    fn stored_log(db: &Database) -> Vec<Entry> {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(LOG).expect("log");
        table
            .iter()
            .expect("iterate")
            .map(|item| codec::decode_entry(item.expect("item").1.value()).expect("an entry"))
            .collect()
    }

    fn replay(fixture: &Fixture) {
        match replay_journal(&fixture.db, fixture.journal.as_ref()) {
            Ok(next) => assert_eq!(next, 1, "the next generation"),
            Err(failure) => panic!("replay failed: {}", failure.with_path(Path::new("test"))),
        }
        // The generation replayed is over: a second open replays nothing.
        let before = stored_log(&fixture.db);
        match replay_journal(&fixture.db, fixture.journal.as_ref()) {
            Ok(next) => assert_eq!(next, 2, "the next generation"),
            Err(failure) => panic!("replay failed: {}", failure.with_path(Path::new("test"))),
        }
        assert_eq!(stored_log(&fixture.db), before);
    }

    /// Puts the log `entries` and the purge point in the database, durably (what a durable
    /// commit left before a crash).
    fn commit_log(db: &Database, entries: &[Entry], purged: Option<LogId>) {
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(LOG).expect("log");
            for entry in entries {
                table
                    .insert(entry.log_id.index, codec::encode_entry(entry).as_slice())
                    .expect("insert");
            }
            if let Some(purged) = purged {
                txn.open_table(META)
                    .expect("meta")
                    .insert(
                        meta_key::LAST_PURGED,
                        codec::encode_log_id(&purged).as_slice(),
                    )
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn replay_gives_back_the_log_the_journal_describes() {
        let fixture = fixture(&generation());
        replay(&fixture);
        assert_eq!(stored_log(&fixture.db), expected_log());
    }

    #[test]
    fn replay_over_a_database_that_has_the_generation_already_changes_nothing() {
        // A crash after a durable commit, before the journal was emptied.
        let fixture = fixture(&generation());
        commit_log(&fixture.db, &expected_log(), None);
        replay(&fixture);
        assert_eq!(stored_log(&fixture.db), expected_log());
    }

    #[test]
    fn replay_over_a_log_purged_since_keeps_what_is_past_the_purge_point() {
        // The same, with the log purged up to 5 by that durable commit (entries 1-5 may still
        // be stored; they are never read).
        let fixture = fixture(&generation());
        commit_log(&fixture.db, &expected_log(), Some(entry(2, 5).log_id));
        replay(&fixture);
        let log = stored_log(&fixture.db);
        assert_eq!(log.last(), Some(&entry(2, 6)), "{log:?}");
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_rest_replayed() {
        let fixture = fixture(&generation());
        let len = fixture.journal.metadata().expect("metadata").len() - journal::PREALLOCATE_BYTES;
        fixture.journal.set_len(len - 3).expect("cut");
        replay(&fixture);
        assert_eq!(stored_log(&fixture.db), expected_log()[..5].to_vec());
    }

    #[test]
    fn an_entry_past_the_logs_end_is_refused_as_damage() {
        let fixture = fixture(&[
            journal::Record::Append(entry(1, 1)),
            journal::Record::Append(entry(1, 3)),
        ]);
        match replay_journal(&fixture.db, fixture.journal.as_ref()) {
            Err(OpenFailure::Damaged(detail)) => {
                assert!(detail.contains("log index 3"), "{detail}")
            }
            Err(OpenFailure::Foreign(_)) => panic!("refused as foreign"),
            Ok(_) => panic!("a journal with a hole replayed"),
        }
    }
}
