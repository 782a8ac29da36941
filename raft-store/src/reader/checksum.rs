//! Replica verification: a running hash over a range of the log's events, with the hash after
//! every `step` positions, so that two replicas can be compared and the first position where
//! they differ found in two rounds. Events at applied positions never change (positions are
//! never reused), so replicas that have all applied a position hash the same prefix without any
//! coordination.

use super::retention::Retained;
use crate::error::StoreError;
use crate::schema::EVENTS;
use crate::schema::STREAM_META;

/// Most checkpoints one checksum returns.
pub const MAX_CHECKPOINTS: u64 = 100_000;

/// The hash of the events at positions `from..=to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub from: u64,
    pub to: u64,
    /// Events found in the range.
    pub events: u64,
    /// The running hash after the last position.
    pub hash: u64,
    /// The running hash after positions `from + step - 1`, `from + 2 * step - 1`, ... (each
    /// full step within the range).
    pub checkpoints: Vec<u64>,
}

impl Checksum {
    /// The hash of a range that holds no position (`to` < `from`).
    pub fn empty(from: u64, to: u64) -> Self {
        Self {
            from,
            to,
            events: 0,
            hash: Fnv::OFFSET,
            checkpoints: Vec::new(),
        }
    }
}

/// FNV-1a, 64 bits: simple, stable across versions and platforms (a replica of another evlog
/// version must hash the same), and fast enough next to reading the events.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// Hashes the events at `from..=to` as `txn` sees them, but for those removed by retention:
/// each event's position and its stored record (every byte of the event as stored: stream,
/// version, id, type, data, metadata, timestamp).
pub(crate) fn checksum(
    txn: &redb::ReadTransaction,
    from: u64,
    to: u64,
    step: u64,
) -> Result<Checksum, StoreError> {
    let events = txn.open_table(EVENTS).map_err(StoreError::db)?;
    // Events removed by retention are skipped: their rows go at each replica's own pace.
    let metas = txn.open_table(STREAM_META).map_err(StoreError::db)?;
    let mut retained = Retained::new(super::retention::first_position(txn)?, &metas);
    let mut hash = Fnv(Fnv::OFFSET);
    let mut count = 0;
    let mut checkpoints = Vec::new();
    let mut next_checkpoint = from.saturating_add(step - 1);
    let mut checkpoint_until = |position: u64, hash: Fnv, checkpoints: &mut Vec<u64>| {
        while next_checkpoint <= to && next_checkpoint < position {
            checkpoints.push(hash.0);
            next_checkpoint = next_checkpoint.saturating_add(step);
        }
    };
    for item in events.range(from..=to).map_err(StoreError::db)? {
        let (position, record) = item.map_err(StoreError::db)?;
        let position = position.value();
        if !retained.keeps_record(position, record.value())? {
            continue;
        }
        checkpoint_until(position, hash, &mut checkpoints);
        hash.update(&position.to_le_bytes());
        hash.update(record.value());
        count += 1;
    }
    checkpoint_until(to.saturating_add(1), hash, &mut checkpoints);
    Ok(Checksum {
        from,
        to,
        events: count,
        hash: hash.0,
        checkpoints,
    })
}
