//! Tokens and roles are replicated state: what an access entry decided is what a member has
//! after a restart and what a snapshot carries to a member that installs it; a refused change
//! changes nothing.

use evlog_raft_store::EventReader;
use evlog_raft_store::StateMachine;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::access::AccessCommand;
use evlog_raft_store::access::AccessState;
use evlog_raft_store::access::Grant;
use evlog_raft_store::access::Permission;
use evlog_raft_store::access::Role;
use evlog_raft_store::access::Token;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::types::Command;
use openraft::entry::RaftEntry;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use tempfile::TempDir;

mod common;

fn open_in(dir: &TempDir, node_id: u64) -> (StateMachine, EventReader) {
    let config = StoreConfig::new(dir.path(), node_id, "access");
    let (_engine, _log, machine, reader) =
        evlog_raft_store::open(&config).expect("the store opens");
    (machine, reader)
}

async fn apply(machine: &mut StateMachine, index: u64, command: AccessCommand) {
    let entry = Entry::new_normal(common::log_id(index), Command::Access(command));
    common::apply(machine, vec![entry])
        .await
        .expect("the entry applies");
}

fn token(roles: &[&str]) -> Token {
    Token {
        principal: "alice".to_string(),
        roles: roles.iter().map(|role| role.to_string()).collect(),
        secret_sha256: [3; 32],
        created_at_ms: 1_000,
        expires_at_ms: 0,
    }
}

#[tokio::test]
async fn tokens_and_roles_survive_a_reopen_and_travel_in_a_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut machine, reader) = open_in(&dir, 1);
    assert_eq!(*reader.access(), AccessState::default());
    let reader_role = Role {
        grants: vec![Grant {
            permission: Permission::Read,
            prefix: "orders-".to_string(),
        }],
        principals: vec!["svc.example".to_string()],
    };
    apply(
        &mut machine,
        1,
        AccessCommand::PutRole {
            name: "reader".to_string(),
            role: reader_role.clone(),
        },
    )
    .await;
    apply(
        &mut machine,
        2,
        AccessCommand::CreateToken {
            id: "t1".to_string(),
            token: token(&["reader"]),
        },
    )
    .await;
    // Refused (the role does not exist): nothing changes, the revision included.
    apply(
        &mut machine,
        3,
        AccessCommand::CreateToken {
            id: "t2".to_string(),
            token: token(&["writer"]),
        },
    )
    .await;
    apply(
        &mut machine,
        4,
        AccessCommand::CreateToken {
            id: "t3".to_string(),
            token: token(&[]),
        },
    )
    .await;
    apply(
        &mut machine,
        5,
        AccessCommand::RevokeToken {
            id: "t3".to_string(),
        },
    )
    .await;
    let state = reader.access();
    assert_eq!(state.revision, 5);
    assert_eq!(state.tokens.keys().collect::<Vec<_>>(), ["t1"]);
    assert_eq!(state.roles.get("reader"), Some(&reader_role));
    assert_eq!(reader.applied().access_revision, 5);

    let built = machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("the snapshot builds");
    let other = tempfile::tempdir().expect("temp dir");
    let (mut follower, follower_reader) = open_in(&other, 2);
    follower
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .expect("the snapshot installs");
    assert_eq!(follower_reader.access(), state);
    assert_eq!(follower_reader.applied().access_revision, 5);

    drop((machine, reader));
    let (_machine, reader) = open_in(&dir, 1);
    assert_eq!(reader.access(), state);
    assert_eq!(reader.applied().access_revision, 5);
}
