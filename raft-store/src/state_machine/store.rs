//! openraft's state machine on the engine. Apply goes to the writer thread, which carries the
//! decisions of [`super::apply`] out in the same transaction as whatever else is waiting:
//! events, stream summaries, last applied and membership commit together.

use std::io;
use std::sync::Arc;

use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

use crate::engine::Engine;
use crate::engine::WriteOp;
use crate::log_store::blocking;
use crate::snapshot;
use crate::snapshot::SnapshotFile;
use crate::types::LogId;
use crate::types::Snapshot;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// The state machine of one node.
#[derive(Clone)]
pub struct StateMachine {
    engine: Engine,
}

impl StateMachine {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// Builds snapshots from a read transaction, off the writer thread.
pub struct SnapshotBuilder {
    engine: Engine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = Arc::clone(&self.engine.shared);
        let (meta, file) = blocking(move || {
            let built = snapshot::build(&shared.db, &shared.snapshot_dir())?;
            shared.offer_snapshot(built.0.clone(), built.1.path.clone());
            Ok(built)
        })
        .await?;
        tracing::info!("built snapshot {meta}");
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let machine = self.engine.shared.machine();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        if entries.is_empty() {
            return Ok(());
        }
        self.engine
            .write(|done| WriteOp::Apply { entries, done })
            .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            engine: self.engine.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let meta = meta.clone();
        tracing::info!("installing snapshot {meta}");
        self.engine
            .write(|done| WriteOp::InstallSnapshot {
                meta,
                file: snapshot,
                done,
            })
            .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = self.engine.shared.current_snapshot();
        Ok(current.map(|(meta, path)| Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        }))
    }
}
