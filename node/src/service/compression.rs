//! Compression on the leader: which event data to compress (`--compression`), and with what.
//! Until the log has a dictionary, events are compressed each alone, and the data of the
//! first [`TRAINING_SAMPLES`] compressed events (at most [`TRAINING_BYTES`]) is kept to
//! train one; the trained dictionary is proposed (a Raft entry) if it compresses those samples
//! to at most four fifths of what compressing each alone gives, and once applied, every event
//! is compressed with it. A log keeps its first dictionary for good (see
//! `evlog_raft_store::dictionary`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;

use bytes::Bytes;
use evlog_raft_store::dictionary;
use evlog_raft_store::dictionary::Encoder;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::DataEncoding;

use crate::config::AUTO_COMPRESSION_MIN_BYTES;
use crate::config::Compression;
use crate::raft::RaftHandle;

/// Events whose data trains the dictionary.
pub const TRAINING_SAMPLES: usize = 1_000;
/// Most bytes of samples kept for training (a sample is cut to [`MAX_SAMPLE_BYTES`]).
pub const TRAINING_BYTES: usize = 4 << 20;
/// The most of one event's data kept as a sample.
pub const MAX_SAMPLE_BYTES: usize = 16 << 10;

pub struct Compressor {
    mode: Compression,
    /// The log's dictionary as last seen applied, ready to compress with.
    encoder: RwLock<Option<Arc<Encoder>>>,
    training: Mutex<Training>,
}

enum Training {
    /// Keeping samples (until the log has a dictionary).
    Sampling { samples: Vec<Bytes>, bytes: usize },
    /// Training or proposing, or done for this process (the log has a dictionary, or the
    /// samples did not make one that pays).
    Over,
}

impl Compressor {
    pub fn new(mode: Compression) -> Self {
        Self {
            mode,
            encoder: RwLock::new(None),
            training: Mutex::new(Training::Sampling {
                samples: Vec::new(),
                bytes: 0,
            }),
        }
    }

    /// `data` as it is proposed: compressed when the mode says so and it pays, with the log's
    /// dictionary `dictionary` (its id; 0: none yet) when there is one.
    pub fn encode(&self, data: &Bytes, dictionary: u64) -> (Bytes, DataEncoding) {
        let worth_trying = match self.mode {
            Compression::Off => false,
            Compression::On => !data.is_empty(),
            Compression::Auto => data.len() >= AUTO_COMPRESSION_MIN_BYTES,
        };
        if !worth_trying {
            return (data.clone(), DataEncoding::Raw);
        }
        if let Some(encoder) = self.encoder(dictionary) {
            return match encoder.compress(data) {
                Some(frame) => (Bytes::from(frame), DataEncoding::ZstdDictionary(encoder.id)),
                None => (data.clone(), DataEncoding::Raw),
            };
        }
        self.sample(data);
        match evlog_raft_store::codec::compress(data) {
            Some(frame) => (Bytes::from(frame), DataEncoding::Zstd),
            None => (data.clone(), DataEncoding::Raw),
        }
    }

    /// The encoder of dictionary `id` (0: none).
    fn encoder(&self, id: u64) -> Option<Arc<Encoder>> {
        if id == 0 {
            return None;
        }
        if let Some(encoder) = self
            .encoder
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .filter(|encoder| encoder.id == id)
        {
            return Some(Arc::clone(encoder));
        }
        // Applied here, so registered by the store.
        let encoder = Arc::new(Encoder::new(&dictionary::bytes(id)?));
        *self
            .encoder
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::clone(&encoder));
        *self.training() = Training::Over;
        Some(encoder)
    }

    fn training(&self) -> std::sync::MutexGuard<'_, Training> {
        self.training
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sample(&self, data: &Bytes) {
        if let Training::Sampling { samples, bytes } = &mut *self.training()
            && samples.len() < TRAINING_SAMPLES
            && *bytes < TRAINING_BYTES
        {
            let sample = data.slice(..data.len().min(MAX_SAMPLE_BYTES));
            *bytes += sample.len();
            samples.push(sample);
        }
    }

    /// The samples, once there are enough to train on (taken once).
    fn take_samples(&self) -> Option<Vec<Bytes>> {
        let mut training = self.training();
        match &*training {
            Training::Sampling { samples, bytes }
                if samples.len() >= TRAINING_SAMPLES || *bytes >= TRAINING_BYTES =>
            {
                match std::mem::replace(&mut *training, Training::Over) {
                    Training::Sampling { samples, .. } => Some(samples),
                    Training::Over => None,
                }
            }
            _ => None,
        }
    }

    /// Once enough samples are in: trains a dictionary in the background and proposes it. A
    /// proposal that fails (leadership moved) starts the sampling over.
    pub fn train_when_ready(self: &Arc<Self>, handle: &RaftHandle) {
        let Some(samples) = self.take_samples() else {
            return;
        };
        let compressor = Arc::clone(self);
        let handle = handle.clone();
        tokio::spawn(async move {
            let trained = tokio::task::spawn_blocking(move || dictionary::train(&samples)).await;
            let bytes = match trained {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(why)) => {
                    tracing::info!("no compression dictionary: {why}");
                    return;
                }
                Err(error) => {
                    tracing::warn!("training a compression dictionary failed: {error}");
                    return;
                }
            };
            let size = bytes.len();
            match handle
                .propose(Command::Dictionary(Bytes::from(bytes)))
                .await
            {
                Ok(_) => tracing::info!(bytes = size, "proposed a compression dictionary"),
                Err(error) => {
                    tracing::info!("the compression dictionary was not proposed: {error}");
                    *compressor.training() = Training::Sampling {
                        samples: Vec::new(),
                        bytes: 0,
                    };
                }
            }
        });
    }
}
