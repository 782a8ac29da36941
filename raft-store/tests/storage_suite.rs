//! openraft's storage conformance suite against evlog's redb store: on the file, and on the
//! power-loss backend the durability tests use (so those test the store as it really is).

use evlog_raft_store::LogStore;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::testing::CrashBackend;
use evlog_raft_store::type_config::TypeConfig;
use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use tempfile::TempDir;

struct Builder {
    crash_backend: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = StoreConfig::new(dir.path(), 0, "suite");
        if self.crash_backend {
            let (backend, _switch) =
                CrashBackend::for_data_dir(dir.path()).expect("the crash backend opens");
            config.backend = backend;
        }
        let (_engine, log_store, state_machine, _reader) =
            evlog_raft_store::open(&config).expect("a fresh store opens");
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder {
        crash_backend: false,
    })
    .await
    .expect("the store passes openraft's storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_the_power_loss_backend() {
    Suite::test_all(Builder {
        crash_backend: true,
    })
    .await
    .expect("the store on the crash backend passes openraft's storage suite");
}
