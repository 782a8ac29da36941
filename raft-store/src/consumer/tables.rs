//! Consumer groups in the store: the three tables, their reads (for decisions in the writer's
//! transaction and for readers alike) and the execution of [`ConsumerMutation`]s.

use redb::ReadableTable;
use redb::Table;
use redb::WriteTransaction;

use super::ConsumerMutation;
use super::ConsumerRecord;
use super::ConsumerView;
use super::DeadLetterRecord;
use super::PendingRecord;
use super::decode;
use super::encode;
use crate::error::StoreError;
use crate::schema::CONSUMER_PENDING;
use crate::schema::CONSUMERS;
use crate::schema::DEAD_LETTERS;

/// A group's record from the `consumers` table.
pub(crate) fn consumer(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<ConsumerRecord>, StoreError> {
    match table.get(name).map_err(StoreError::db)? {
        None => Ok(None),
        Some(value) => Ok(Some(decode("consumer group", value.value())?)),
    }
}

/// Up to `limit` rows of a per-group table (pending or dead letters) from key `from` on.
pub(crate) fn group_rows<T: for<'de> serde::Deserialize<'de>>(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    what: &'static str,
    name: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, T)>, StoreError> {
    let mut rows = Vec::new();
    if limit == 0 {
        return Ok(rows);
    }
    for item in table
        .range((name, from)..=(name, u64::MAX))
        .map_err(StoreError::db)?
    {
        let (key, value) = item.map_err(StoreError::db)?;
        rows.push((key.value().1, decode(what, value.value())?));
        if rows.len() == limit {
            break;
        }
    }
    Ok(rows)
}

fn group_row<T: for<'de> serde::Deserialize<'de>>(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    what: &'static str,
    name: &str,
    key: u64,
) -> Result<Option<T>, StoreError> {
    match table.get((name, key)).map_err(StoreError::db)? {
        None => Ok(None),
        Some(value) => Ok(Some(decode(what, value.value())?)),
    }
}

/// The consumer tables open in the writer's transaction.
pub(crate) struct ConsumerTables<'txn> {
    consumers: Table<'txn, &'static str, &'static [u8]>,
    pending: Table<'txn, (&'static str, u64), &'static [u8]>,
    dead_letters: Table<'txn, (&'static str, u64), &'static [u8]>,
}

impl<'txn> ConsumerTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            consumers: txn.open_table(CONSUMERS).map_err(StoreError::db)?,
            pending: txn.open_table(CONSUMER_PENDING).map_err(StoreError::db)?,
            dead_letters: txn.open_table(DEAD_LETTERS).map_err(StoreError::db)?,
        })
    }

    pub(crate) fn execute(&mut self, mutation: ConsumerMutation) -> Result<(), StoreError> {
        match mutation {
            ConsumerMutation::PutConsumer(record) => {
                self.consumers
                    .insert(record.name.as_str(), encode(&record).as_slice())
                    .map_err(StoreError::db)?;
            }
            ConsumerMutation::DeleteConsumer(name) => {
                self.consumers
                    .remove(name.as_str())
                    .map_err(StoreError::db)?;
                let range = (name.as_str(), 0)..=(name.as_str(), u64::MAX);
                self.pending
                    .retain_in(range.clone(), |_, _| false)
                    .map_err(StoreError::db)?;
                self.dead_letters
                    .retain_in(range, |_, _| false)
                    .map_err(StoreError::db)?;
            }
            ConsumerMutation::PutPending { name, key, record } => {
                self.pending
                    .insert((name.as_str(), key), encode(&record).as_slice())
                    .map_err(StoreError::db)?;
            }
            ConsumerMutation::RemovePending { name, key } => {
                self.pending
                    .remove((name.as_str(), key))
                    .map_err(StoreError::db)?;
            }
            ConsumerMutation::PutDeadLetter { name, key, record } => {
                self.dead_letters
                    .insert((name.as_str(), key), encode(&record).as_slice())
                    .map_err(StoreError::db)?;
            }
            ConsumerMutation::RemoveDeadLetter { name, key } => {
                self.dead_letters
                    .remove((name.as_str(), key))
                    .map_err(StoreError::db)?;
            }
        }
        Ok(())
    }
}

impl ConsumerView for ConsumerTables<'_> {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        consumer(&self.consumers, name)
    }

    fn pending(&self, name: &str, key: u64) -> Result<Option<PendingRecord>, StoreError> {
        group_row(&self.pending, "consumer pending event", name, key)
    }

    fn dead_letter(&self, name: &str, key: u64) -> Result<Option<DeadLetterRecord>, StoreError> {
        group_row(&self.dead_letters, "dead letter", name, key)
    }

    fn dead_letters(
        &self,
        name: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, StoreError> {
        group_rows(&self.dead_letters, "dead letter", name, from, limit)
    }
}
