//! openraft's storage conformance suite against evlog's redb store.

use evlog_raft_store::LogStore;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::types::TypeConfig;
use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: 0,
            cluster_id: "suite".to_string(),
            cache_bytes: evlog_raft_store::engine::DEFAULT_CACHE_BYTES,
            quick_repair: false,
        };
        let (_engine, log_store, state_machine, _reader) =
            evlog_raft_store::open(&config).expect("a fresh store opens");
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder)
        .await
        .expect("the store passes openraft's storage suite");
}
