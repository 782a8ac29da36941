//! Backups: a backup file holds the state machine at one applied log id; every single flipped
//! bit anywhere in it is refused by verify and by restore; a restore creates a store that opens
//! as a member of the new cluster at a new epoch, with the backup's events and idempotency
//! keys, and refuses a directory that holds anything.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::apply;
use common::entry;
use common::log_id;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::RestoreError;
use evlog_raft_store::StoreConfig;
use evlog_raft_store::type_config::EntryPayload;
use evlog_raft_store::type_config::MemberNode;
use evlog_raft_store::types::Command;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;

const EVENTS: u64 = 12;

fn config(dir: &Path, node_id: u64) -> StoreConfig {
    StoreConfig::new(dir, node_id, "backup-test")
}

/// A store with `EVENTS` applied entries, every third with an idempotency key, backed up to
/// `file`.
async fn backup_to(file: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_engine, _log, mut machine, reader) =
        evlog_raft_store::open(&config(dir.path(), 1)).expect("a fresh store opens");
    let entries = (1..=EVENTS)
        .map(|index| {
            let mut entry = entry(index);
            if index % 3 == 0
                && let EntryPayload::Normal(Command::Append(append)) = &mut entry.payload
            {
                append.idempotency_key = Some(format!("key-{index}"));
            }
            entry
        })
        .collect();
    apply(&mut machine, entries).await.expect("apply");
    let (header, data) = reader.backup().await.expect("a backup view");
    assert_eq!(header.last_log_id, Some(log_id(EVENTS)));
    assert_eq!(header.head_position, EVENTS);
    assert_eq!(header.epoch, 0);
    let path = file.to_path_buf();
    tokio::task::spawn_blocking(move || evlog_raft_store::snapshot::write_file(&data, &path))
        .await
        .expect("join")
        .expect("the backup is written");
}

fn members() -> BTreeMap<u64, MemberNode> {
    (1..=3)
        .map(|id| {
            let node = MemberNode::new(
                format!("127.0.0.1:{}", 7000 + id),
                format!("127.0.0.1:{}", 9000 + id),
            );
            (id, node)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_bit_of_a_backup_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup");
    backup_to(&file).await;
    let summary = evlog_raft_store::snapshot::verify_file(&file).expect("the backup verifies");
    assert_eq!(summary.events, EVENTS);
    assert_eq!(summary.idempotency_keys, EVENTS / 3);
    assert_eq!(summary.head_position, EVENTS);
    let bytes = std::fs::read(&file).expect("read");
    assert_eq!(summary.bytes, bytes.len() as u64);
    let damaged = dir.path().join("damaged");
    for offset in 0..bytes.len() {
        for bit in [0u8, 3, 7] {
            let mut copy = bytes.clone();
            copy[offset] ^= 1 << bit;
            std::fs::write(&damaged, &copy).expect("write");
            assert!(
                evlog_raft_store::snapshot::verify_file(&damaged).is_err(),
                "bit {bit} of byte {offset} of {} flipped: verify accepted it",
                bytes.len()
            );
        }
    }
    // A truncated file too.
    std::fs::write(&damaged, &bytes[..bytes.len() - 1]).expect("write");
    assert!(evlog_raft_store::snapshot::verify_file(&damaged).is_err());
    // And restore refuses a damaged file, leaving nothing behind.
    let mut copy = bytes.clone();
    copy[bytes.len() / 2] ^= 0x10;
    std::fs::write(&damaged, &copy).expect("write");
    let target = dir.path().join("restored");
    let refused =
        evlog_raft_store::engine::restore(&config(&target, 1), &damaged, &members(), None)
            .expect_err("a damaged backup is refused");
    assert!(matches!(refused, RestoreError::Backup(_)), "{refused}");
    assert!(
        !target.exists(),
        "a failed restore left {}",
        target.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_opens_as_a_member_of_the_new_cluster_at_a_new_epoch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup");
    backup_to(&file).await;
    let target = dir.path().join("node-2");
    let summary = evlog_raft_store::engine::restore(&config(&target, 2), &file, &members(), None)
        .expect("the restore succeeds");
    assert_eq!(summary.epoch, 1);
    let client_addresses: BTreeMap<u64, String> = members()
        .into_iter()
        .map(|(id, node)| (id, node.client_address))
        .collect();
    assert_eq!(summary.members, client_addresses);

    let (engine, mut log, mut machine, reader) =
        evlog_raft_store::open(&config(&target, 2)).expect("the restored store opens");
    assert!(
        !engine.needs_catch_up(),
        "a restored member may vote at once"
    );
    assert_eq!(reader.applied().epoch, 1);
    assert_eq!(reader.applied().head_position, EVENTS);
    let (applied, membership) = machine.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(EVENTS)));
    let voters: Vec<u64> = membership.membership().voter_ids().collect();
    assert_eq!(voters, vec![1, 2, 3]);
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(EVENTS)));
    assert_eq!(state.last_log_id, Some(log_id(EVENTS)));
    let vote = log.read_vote().await.expect("vote").expect("a vote");
    assert_eq!(
        vote.leader_id.term, 1,
        "the vote is at the backup's last term"
    );
    assert!(!vote.committed);
    let page = reader
        .read(
            ReadTarget::All,
            ReadStart::Edge,
            evlog_raft_store::PageLimit::count(100),
            false,
        )
        .await
        .expect("read");
    let ids: Vec<String> = page.events.iter().map(|event| event.id.clone()).collect();
    let expected: Vec<String> = (1..=EVENTS)
        .map(|index| common::event_id(1, index))
        .collect();
    assert_eq!(ids, expected);
    drop((engine, log, machine, reader));

    // An epoch at or below the backup's is refused; so is a node not among the members.
    let other = dir.path().join("node-3");
    let refused = evlog_raft_store::engine::restore(&config(&other, 3), &file, &members(), Some(0))
        .expect_err("epoch 0 is not above the backup's");
    assert!(refused.to_string().contains("epoch"), "{refused}");
    let refused = evlog_raft_store::engine::restore(&config(&other, 9), &file, &members(), None)
        .expect_err("node 9 is not a member");
    assert!(matches!(refused, RestoreError::NotAMember(9)), "{refused}");

    // A directory holding anything is refused and left alone (the restored one included).
    let refused = evlog_raft_store::engine::restore(&config(&target, 2), &file, &members(), None)
        .expect_err("a restore into a store is refused");
    assert!(matches!(refused, RestoreError::NotEmpty(_)), "{refused}");
    let (_engine, _log, _machine, reader) =
        evlog_raft_store::open(&config(&target, 2)).expect("the store is still whole");
    assert_eq!(reader.applied().head_position, EVENTS);
}
