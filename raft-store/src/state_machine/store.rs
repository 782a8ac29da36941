//! openraft's `RaftStateMachine` on the engine: applies and snapshot installs go to the
//! writer thread (which carries them out with `execute.rs`); snapshots are built as read
//! transactions on blocking threads.

use std::io;
use std::sync::Arc;

use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use redb::ReadableDatabase;

use crate::engine::Engine;
use crate::engine::WriteOp;
use crate::engine::blocking;
use crate::snapshot;
use crate::snapshot::SnapshotData;
use crate::type_config::LogId;
use crate::type_config::Snapshot;
use crate::type_config::SnapshotMeta;
use crate::type_config::StoredMembership;
use crate::type_config::TypeConfig;
use crate::types::CheckRange;
use crate::types::Command;

/// The range of a check entry.
fn check_of(entry: &crate::type_config::Entry) -> Option<CheckRange> {
    match &entry.payload {
        openraft::EntryPayload::Normal(Command::Check(range)) => Some(*range),
        _ => None,
    }
}

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

/// Builds snapshots: a read transaction and the meta it sees (see [`crate::snapshot`]).
pub struct SnapshotBuilder {
    engine: Engine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = Arc::clone(&self.engine.shared);
        let (meta, data) = blocking(move || {
            let built = snapshot::live(&shared.db)?;
            crate::failpoint::crash_point("store::snapshot-build");
            Ok(built)
        })
        .await?;
        tracing::debug!("built snapshot {meta}");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let machine = self.engine.shared.machine();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        // Up to and including each check entry, then the check's read transaction (the state
        // at that entry: nothing after it is handed to the writer before), then the rest.
        while !entries.is_empty() {
            let cut = entries
                .iter()
                .position(|(entry, _)| check_of(entry).is_some())
                .map_or(entries.len(), |at| at + 1);
            let rest = entries.split_off(cut);
            // Registered first: whoever sees the entry applied finds the check.
            let check = entries.last().and_then(|(entry, _)| {
                check_of(entry)
                    .map(|range| (self.engine.shared.checks.expect(entry.log_id.index), range))
            });
            self.engine
                .write(|done| WriteOp::Apply { entries, done })
                .await?;
            if let Some((expected, range)) = check {
                let shared = &self.engine.shared;
                let txn = shared.db.begin_read().map_err(|error| error.to_string());
                let head = shared.machine().head_position;
                shared.checks.start(expected, range, head, txn);
            }
            entries = rest;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            engine: self.engine.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let meta = meta.clone();
        tracing::info!("installing snapshot {meta}");
        let path = match snapshot {
            SnapshotData::File(path) => path,
            live @ SnapshotData::Live(_) => {
                // Another store's live snapshot (tests hand one over directly): to a file first.
                let path = snapshot::incoming_path(&self.engine.shared.snapshot_dir());
                let target = path.clone();
                blocking(move || Ok(snapshot::write_file(&live, &target)?)).await?;
                path
            }
        };
        let installed = self
            .engine
            .write(|done| WriteOp::InstallSnapshot {
                meta,
                path: path.clone(),
                done,
            })
            .await
            .map_err(io::Error::from);
        // Installed or refused, the received file has served.
        if let Err(error) = tokio::fs::remove_file(&path).await {
            tracing::warn!("removing snapshot file {} failed: {error}", path.display());
        }
        installed
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let shared = Arc::clone(&self.engine.shared);
        let (meta, data) = blocking(move || Ok(snapshot::live(&shared.db)?)).await?;
        Ok(meta.last_log_id.is_some().then_some(Snapshot {
            meta,
            snapshot: data,
        }))
    }
}
