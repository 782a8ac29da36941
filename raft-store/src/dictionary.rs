//! The log's compression dictionary: zstd dictionary bytes trained by a leader from events it
//! compressed, proposed as a Raft entry ([`Command::Dictionary`](crate::types::Command)), kept
//! in the state machine (`sm_meta` `dictionary`) and in snapshots, never removed. An event
//! compressed with it names it by id ([`DataEncoding::ZstdDictionary`]), the FNV-1a hash of its
//! bytes: the same bytes have the same id in every process.
//!
//! Decoding an event record needs the dictionary, and event records are decoded in many
//! places that hold only the record; so every dictionary a process reads (from its store at
//! open, from an applied entry, from a snapshot or backup file) is registered here, process
//! wide, by id. A log has at most one, so the registry holds one per store a process opens.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::RwLock;

use bytes::Bytes;
use zstd::dict::DecoderDictionary;
use zstd::dict::EncoderDictionary;

#[cfg(doc)]
use crate::types::DataEncoding;

/// The size a leader trains a dictionary to.
pub const DICTIONARY_BYTES: usize = 16 << 10;
/// The largest dictionary an entry or a snapshot may carry.
pub const MAX_DICTIONARY_BYTES: usize = 128 << 10;
/// The zstd level events are compressed at, with or without a dictionary.
pub const LEVEL: i32 = 3;

/// A dictionary's id: FNV-1a (64 bits) of its bytes, never 0 (0 means "none").
pub fn id_of(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

struct Registered {
    bytes: Bytes,
    decoder: Arc<DecoderDictionary<'static>>,
}

fn registry() -> &'static RwLock<HashMap<u64, Registered>> {
    static REGISTRY: OnceLock<RwLock<HashMap<u64, Registered>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers `bytes` (once per id); returns its id.
pub fn register(bytes: &[u8]) -> u64 {
    let id = id_of(bytes);
    let known = registry()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .contains_key(&id);
    if !known {
        registry()
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(id)
            .or_insert_with(|| Registered {
                bytes: Bytes::copy_from_slice(bytes),
                decoder: Arc::new(DecoderDictionary::copy(bytes)),
            });
    }
    id
}

/// The decoder of dictionary `id`, if this process has read it.
pub fn decoder(id: u64) -> Option<Arc<DecoderDictionary<'static>>> {
    registry()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&id)
        .map(|registered| Arc::clone(&registered.decoder))
}

/// The bytes of dictionary `id`, if this process has read it.
pub fn bytes(id: u64) -> Option<Bytes> {
    registry()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&id)
        .map(|registered| registered.bytes.clone())
}

/// Forgets every dictionary this process read: for tests that check a dictionary travels with
/// the data (a fresh process knows none).
#[doc(hidden)]
pub fn forget_all() {
    registry()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clear();
}

/// A dictionary ready to compress with.
pub struct Encoder {
    pub id: u64,
    dictionary: EncoderDictionary<'static>,
}

impl Encoder {
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            id: register(bytes),
            dictionary: EncoderDictionary::copy(bytes, LEVEL),
        }
    }

    /// `data` compressed with the dictionary, when that saves at least an eighth.
    pub fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut compressor =
            zstd::bulk::Compressor::with_prepared_dictionary(&self.dictionary).ok()?;
        let frame = compressor.compress(data).ok()?;
        worth_it(data, frame)
    }
}

/// `frame` if it saves at least an eighth of `data`.
pub(crate) fn worth_it(data: &[u8], frame: Vec<u8>) -> Option<Vec<u8>> {
    (frame.len() <= data.len() - data.len() / 8).then_some(frame)
}

/// Trains a dictionary of at most [`DICTIONARY_BYTES`] on `samples`, and keeps it only if it
/// compresses them to at most four fifths of what compressing each alone gives.
pub fn train(samples: &[Bytes]) -> Result<Vec<u8>, String> {
    let dictionary = zstd::dict::from_samples(samples, DICTIONARY_BYTES)
        .map_err(|error| format!("training failed: {error}"))?;
    let encoder = EncoderDictionary::copy(&dictionary, LEVEL);
    let mut with = zstd::bulk::Compressor::with_prepared_dictionary(&encoder)
        .map_err(|error| error.to_string())?;
    let mut alone = zstd::bulk::Compressor::new(LEVEL).map_err(|error| error.to_string())?;
    let (mut with_bytes, mut alone_bytes) = (0usize, 0usize);
    for sample in samples {
        with_bytes += with.compress(sample).map_err(|e| e.to_string())?.len();
        alone_bytes += alone.compress(sample).map_err(|e| e.to_string())?.len();
    }
    if with_bytes * 5 > alone_bytes * 4 {
        return Err(format!(
            "the dictionary does not pay: {with_bytes} bytes with it, {alone_bytes} without"
        ));
    }
    Ok(dictionary)
}
