//! The state machine's doing half, inside the writer's transaction: [`apply`] decides each
//! entry ([`super::apply::decide`]) against a view of the tables as they are and executes the
//! mutations ([`ApplyTables::execute`]), in the same transaction as whatever else the writer
//! carries; last applied, membership and head position are written once per batch.
//! [`install`] replaces the state machine with a received snapshot. Nothing here knows the
//! engine's handle: the writer calls in.

use std::cell::OnceCell;
use std::cell::RefCell;
use std::path::Path;

use openraft::storage::ApplyResponder;
use redb::ReadableTable;
use redb::ReadableTableMetadata;
use redb::Table;
use redb::WriteTransaction;

use super::MachineMeta;
use super::apply;
use super::cache::WriterCache;
use super::mutation::Mutation;
use super::view::StateView;
use crate::codec;
use crate::consumer::ConsumerRecord;
use crate::consumer::ConsumerView;
use crate::consumer::DeadLetterRecord;
use crate::consumer::PendingRecord;
use crate::consumer::tables::ConsumerTables;
use crate::error::StoreError;
use crate::reader::streams::stream_summary;
use crate::schema::CONSUMER_SKIPS;
use crate::schema::EVENTS;
use crate::schema::IDEMPOTENCY;
use crate::schema::IDEMPOTENCY_ORDER;
use crate::schema::RECLAIM_STREAMS;
use crate::schema::SM_META;
use crate::schema::STREAM_INDEX;
use crate::schema::STREAM_META;
use crate::schema::sm_key;
use crate::snapshot;
use crate::type_config::Entry;
use crate::type_config::SnapshotMeta;
use crate::type_config::TypeConfig;
use crate::types::CommandResponse;
use crate::types::ConsumerSkips;
use crate::types::IdempotentRecord;
use crate::types::StreamInfo;
use crate::types::StreamMeta;

/// The state machine's tables, opened once for a batch of applies in the writer's
/// transaction: read as a [`StateView`] by the decisions, written by [`Self::execute`]. The
/// idempotency tables are opened only when an entry uses a key (most appends carry none, and
/// an open costs a lookup).
pub(crate) struct ApplyTables<'txn, 'h> {
    txn: &'txn WriteTransaction,
    events: Table<'txn, u64, &'static [u8]>,
    index: Table<'txn, (&'static str, u64), u64>,
    key_tables: OnceCell<KeyTables<'txn>>,
    /// Opened when an entry concerns consumer groups.
    consumer_tables: OnceCell<ConsumerTables<'txn>>,
    /// Stream metadata, opened at the first append or retention command of the batch.
    meta_tables: OnceCell<MetaTables<'txn>>,
    /// The writer's memory of the state machine (view methods fill it on a miss, so it sits
    /// in a cell).
    cache: RefCell<&'h mut WriterCache>,
}

/// The idempotency keys and their expiry order.
struct KeyTables<'txn> {
    keys: Table<'txn, &'static str, &'static [u8]>,
    order: Table<'txn, u64, &'static str>,
}

/// Stream metadata and the streams whose removed rows are to be deleted.
struct MetaTables<'txn> {
    meta: Table<'txn, &'static str, &'static [u8]>,
    reclaim: Table<'txn, &'static str, u64>,
    /// Whether any stream has a metadata row (when none has, no append looks one up).
    any: bool,
}

impl<'txn> MetaTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(STREAM_META).map_err(StoreError::db)?;
        let any = !meta.is_empty().map_err(StoreError::db)?;
        Ok(Self {
            meta,
            reclaim: txn.open_table(RECLAIM_STREAMS).map_err(StoreError::db)?,
            any,
        })
    }
}

impl<'txn> KeyTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            keys: txn.open_table(IDEMPOTENCY).map_err(StoreError::db)?,
            order: txn.open_table(IDEMPOTENCY_ORDER).map_err(StoreError::db)?,
        })
    }
}

impl<'txn, 'h> ApplyTables<'txn, 'h> {
    fn open(txn: &'txn WriteTransaction, cache: &'h mut WriterCache) -> Result<Self, StoreError> {
        Ok(Self {
            txn,
            events: txn.open_table(EVENTS).map_err(StoreError::db)?,
            index: txn.open_table(STREAM_INDEX).map_err(StoreError::db)?,
            key_tables: OnceCell::new(),
            consumer_tables: OnceCell::new(),
            meta_tables: OnceCell::new(),
            cache: RefCell::new(cache),
        })
    }

    fn keys(&self) -> Result<&KeyTables<'txn>, StoreError> {
        if let Some(tables) = self.key_tables.get() {
            return Ok(tables);
        }
        let tables = KeyTables::open(self.txn)?;
        Ok(self.key_tables.get_or_init(|| tables))
    }

    fn keys_mut(&mut self) -> Result<&mut KeyTables<'txn>, StoreError> {
        if self.key_tables.get().is_none() {
            let tables = KeyTables::open(self.txn)?;
            // Empty, checked just above: the cell takes it.
            let _ = self.key_tables.set(tables);
        }
        self.key_tables
            .get_mut()
            .ok_or_else(|| StoreError::Invariant("the idempotency tables did not open".into()))
    }

    fn metas(&self) -> Result<&MetaTables<'txn>, StoreError> {
        if let Some(tables) = self.meta_tables.get() {
            return Ok(tables);
        }
        let tables = MetaTables::open(self.txn)?;
        Ok(self.meta_tables.get_or_init(|| tables))
    }

    fn metas_mut(&mut self) -> Result<&mut MetaTables<'txn>, StoreError> {
        if self.meta_tables.get().is_none() {
            let tables = MetaTables::open(self.txn)?;
            // Empty, checked just above: the cell takes it.
            let _ = self.meta_tables.set(tables);
        }
        self.meta_tables
            .get_mut()
            .ok_or_else(|| StoreError::Invariant("the stream metadata tables did not open".into()))
    }

    fn consumers(&self) -> Result<&ConsumerTables<'txn>, StoreError> {
        if let Some(tables) = self.consumer_tables.get() {
            return Ok(tables);
        }
        let tables = ConsumerTables::open(self.txn)?;
        Ok(self.consumer_tables.get_or_init(|| tables))
    }

    fn consumers_mut(&mut self) -> Result<&mut ConsumerTables<'txn>, StoreError> {
        if self.consumer_tables.get().is_none() {
            let tables = ConsumerTables::open(self.txn)?;
            // Empty, checked just above: the cell takes it.
            let _ = self.consumer_tables.set(tables);
        }
        self.consumer_tables
            .get_mut()
            .ok_or_else(|| StoreError::Invariant("the consumer tables did not open".into()))
    }

    /// Carries one mutation out: into the tables, or into `machine`.
    fn execute(&mut self, mutation: Mutation, machine: &mut MachineMeta) -> Result<(), StoreError> {
        match mutation {
            Mutation::SetLastApplied(log_id) => machine.last_applied = Some(log_id),
            Mutation::SetMembership(membership) => machine.membership = membership,
            Mutation::PutEvent(mut event, mut encoding) => {
                if crate::failpoint::armed("store::apply-divergent-event") {
                    event.data = bytes::Bytes::from_static(b"divergent replica");
                    encoding = crate::types::DataEncoding::Raw;
                }
                self.events
                    .insert(
                        event.position,
                        codec::encode_event(&event, encoding).as_slice(),
                    )
                    .map_err(StoreError::db)?;
                self.index
                    .insert(
                        (event.stream.as_str(), event.stream_version),
                        event.position,
                    )
                    .map_err(StoreError::db)?;
                self.cache.get_mut().streams.put(&event);
            }
            Mutation::AdvanceHead {
                head_position,
                last_timestamp_ms,
            } => {
                machine.head_position = head_position;
                machine.last_timestamp_ms = last_timestamp_ms;
            }
            Mutation::PutIdempotencyKey {
                key,
                record,
                replaces_order,
            } => {
                let tables = self.keys_mut()?;
                let replaced = tables
                    .keys
                    .insert(
                        key.as_str(),
                        codec::encode_idempotent_record(&record).as_slice(),
                    )
                    .map_err(StoreError::db)?
                    .map(|old| codec::decode_idempotent_record(old.value()))
                    .transpose()?
                    .map(|old| old.order);
                // Pair assertion with the decision: it knew what the key held.
                if replaced != replaces_order {
                    return Err(StoreError::Invariant(format!(
                        "idempotency key {key:?} held a record first used at {replaced:?}, the \
                         decision expected {replaces_order:?}"
                    )));
                }
                if let Some(order) = replaces_order {
                    tables.order.remove(order).map_err(StoreError::db)?;
                }
                tables
                    .order
                    .insert(record.order, key.as_str())
                    .map_err(StoreError::db)?;
                self.cache
                    .get_mut()
                    .oldest_key
                    .put(record.order, replaces_order);
            }
            Mutation::ExpireIdempotencyKey { key, order } => {
                let tables = self.keys_mut()?;
                tables.keys.remove(key.as_str()).map_err(StoreError::db)?;
                tables.order.remove(order).map_err(StoreError::db)?;
                self.cache.get_mut().oldest_key.expire(order);
            }
            Mutation::Consumer(mutation) => self.consumers_mut()?.execute(mutation)?,
            Mutation::PutStreamMeta {
                stream,
                meta,
                reclaim,
            } => {
                let tables = self.metas_mut()?;
                tables
                    .meta
                    .insert(stream.as_str(), codec::encode_stream_meta(&meta).as_slice())
                    .map_err(StoreError::db)?;
                tables.any = true;
                if reclaim {
                    tables
                        .reclaim
                        .insert(stream.as_str(), meta.first_version)
                        .map_err(StoreError::db)?;
                    self.cache.get_mut().reclaim.pending = true;
                }
            }
            Mutation::PutConsumerSkips { name, skips } => {
                self.txn
                    .open_table(CONSUMER_SKIPS)
                    .map_err(StoreError::db)?
                    .insert(
                        name.as_str(),
                        codec::encode_consumer_skips(&skips).as_slice(),
                    )
                    .map_err(StoreError::db)?;
            }
            Mutation::ForgetConsumerSkips { name } => {
                self.txn
                    .open_table(CONSUMER_SKIPS)
                    .map_err(StoreError::db)?
                    .remove(name.as_str())
                    .map_err(StoreError::db)?;
            }
            Mutation::SetDictionary(bytes) => {
                self.txn
                    .open_table(SM_META)
                    .map_err(StoreError::db)?
                    .insert(sm_key::DICTIONARY, bytes.as_ref())
                    .map_err(StoreError::db)?;
                machine.dictionary = crate::dictionary::register(&bytes);
            }
            Mutation::SetAccess(state) => {
                self.txn
                    .open_table(SM_META)
                    .map_err(StoreError::db)?
                    .insert(
                        sm_key::ACCESS,
                        crate::access::encode_state(&state).as_slice(),
                    )
                    .map_err(StoreError::db)?;
                machine.access = state;
            }
            Mutation::SetFirstPosition(first_position) => {
                machine.first_position = first_position;
                self.cache.get_mut().reclaim.pending = true;
            }
        }
        Ok(())
    }
}

impl StateView for ApplyTables<'_, '_> {
    fn stream(&self, stream: &str) -> Result<Option<StreamInfo>, StoreError> {
        if let Some(info) = self.cache.borrow().streams.get(stream) {
            return Ok(Some(info));
        }
        let info = stream_summary(&self.index, stream)?;
        if let Some(info) = info {
            self.cache.borrow_mut().streams.remember(stream, info);
        }
        Ok(info)
    }

    fn stream_meta(&self, stream: &str) -> Result<Option<StreamMeta>, StoreError> {
        let tables = self.metas()?;
        if !tables.any {
            return Ok(None);
        }
        match tables.meta.get(stream).map_err(StoreError::db)? {
            None => Ok(None),
            Some(value) => Ok(Some(codec::decode_stream_meta(value.value())?)),
        }
    }

    fn consumer_skips(&self, name: &str) -> Result<Option<ConsumerSkips>, StoreError> {
        let table = self
            .txn
            .open_table(CONSUMER_SKIPS)
            .map_err(StoreError::db)?;
        let skips = match table.get(name).map_err(StoreError::db)? {
            None => None,
            Some(value) => Some(codec::decode_consumer_skips(value.value())?),
        };
        Ok(skips)
    }

    fn idempotency_key(&self, key: &str) -> Result<Option<IdempotentRecord>, StoreError> {
        match self.keys()?.keys.get(key).map_err(StoreError::db)? {
            None => Ok(None),
            Some(value) => Ok(Some(codec::decode_idempotent_record(value.value())?)),
        }
    }

    fn idempotency_key_count(&self) -> Result<u64, StoreError> {
        self.keys()?.keys.len().map_err(StoreError::db)
    }

    fn next_idempotency_key(
        &self,
        after: Option<u64>,
    ) -> Result<Option<(u64, String, IdempotentRecord)>, StoreError> {
        if after.is_none() {
            if let Some(oldest) = self.cache.borrow().oldest_key.get() {
                return Ok(oldest.clone());
            }
            let oldest = self.first_idempotency_key(0)?;
            self.cache.borrow_mut().oldest_key.set(oldest.clone());
            return Ok(oldest);
        }
        self.first_idempotency_key(after.map_or(0, |after| after.saturating_add(1)))
    }
}

impl ConsumerView for ApplyTables<'_, '_> {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        self.consumers()?.consumer(name)
    }

    fn pending(&self, name: &str, key: u64) -> Result<Option<PendingRecord>, StoreError> {
        self.consumers()?.pending(name, key)
    }

    fn dead_letter(&self, name: &str, key: u64) -> Result<Option<DeadLetterRecord>, StoreError> {
        self.consumers()?.dead_letter(name, key)
    }

    fn dead_letters(
        &self,
        name: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, StoreError> {
        self.consumers()?.dead_letters(name, from, limit)
    }
}

impl ApplyTables<'_, '_> {
    /// The first key of the expiry order at or after place `from`.
    fn first_idempotency_key(
        &self,
        from: u64,
    ) -> Result<Option<(u64, String, IdempotentRecord)>, StoreError> {
        let Some(item) = self
            .keys()?
            .order
            .range(from..)
            .map_err(StoreError::db)?
            .next()
        else {
            return Ok(None);
        };
        let (order, key) = item.map_err(StoreError::db)?;
        let (order, key) = (order.value(), key.value().to_string());
        let record = self.idempotency_key(&key)?.ok_or_else(|| {
            StoreError::Invariant(format!(
                "the idempotency expiry order names key {key:?}, which is not kept"
            ))
        })?;
        Ok(Some((order, key, record)))
    }
}

/// Applies committed entries inside the writer's transaction; returns the responses to send
/// (once the transaction committed) to the proposers waiting for them.
pub(crate) fn apply(
    txn: &WriteTransaction,
    entries: Vec<(Entry, Option<ApplyResponder<TypeConfig>>)>,
    machine: &mut MachineMeta,
    cache: &mut WriterCache,
) -> Result<Vec<(ApplyResponder<TypeConfig>, CommandResponse)>, StoreError> {
    let mut responses = Vec::with_capacity(entries.len());
    {
        let mut tables = ApplyTables::open(txn, cache)?;
        for (entry, responder) in entries {
            let parts = apply::parts(&entry);
            let mut answers = Vec::with_capacity(parts);
            for part in 0..parts {
                let decision = apply::decide(&tables, machine, &entry, part)?;
                for mutation in decision.mutations {
                    tables.execute(mutation, machine)?;
                }
                answers.push(decision.response);
            }
            if let Some(responder) = responder {
                responses.push((responder, apply::respond(&entry, answers)));
            }
        }
    }
    let mut sm = txn.open_table(SM_META).map_err(StoreError::db)?;
    if let Some(last_applied) = machine.last_applied {
        sm.insert(
            sm_key::LAST_APPLIED,
            codec::encode_log_id(&last_applied).as_slice(),
        )
        .map_err(StoreError::db)?;
    }
    sm.insert(
        sm_key::MEMBERSHIP,
        codec::encode_stored_membership(&machine.membership).as_slice(),
    )
    .map_err(StoreError::db)?;
    sm.insert(
        sm_key::HEAD_POSITION,
        codec::encode_u64(machine.head_position).as_slice(),
    )
    .map_err(StoreError::db)?;
    if machine.first_position > 1 {
        sm.insert(
            sm_key::FIRST_POSITION,
            codec::encode_u64(machine.first_position).as_slice(),
        )
        .map_err(StoreError::db)?;
    }
    Ok(responses)
}

/// Replaces the state machine with the snapshot in the file at `path`, inside the writer's
/// transaction (see [`snapshot::install`]).
pub(crate) fn install(
    txn: &WriteTransaction,
    meta: &SnapshotMeta,
    path: &Path,
    machine: &mut MachineMeta,
    cache: &mut WriterCache,
) -> Result<(), StoreError> {
    // Whatever happens next, what the writer remembers is not the snapshot's.
    cache.clear();
    let installed = snapshot::install(txn, meta, path)?;
    machine.last_applied = meta.last_log_id;
    machine.membership = meta.last_membership.clone();
    machine.head_position = installed.head_position;
    machine.epoch = installed.epoch;
    machine.first_position = installed.first_position;
    machine.dictionary = installed.dictionary;
    machine.access = installed.access;
    let events = txn.open_table(EVENTS).map_err(StoreError::db)?;
    machine.last_timestamp_ms = match events.last().map_err(StoreError::db)? {
        None => 0,
        Some((position, value)) => {
            codec::decode_event(position.value(), value.value())?.timestamp_ms
        }
    };
    Ok(())
}
