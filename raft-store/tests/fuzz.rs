//! Hostile bytes against every decoder of the store: each record decoder, and the snapshot (and
//! backup) file reader, given arbitrary bytes or a valid record or file with bytes changed,
//! inserted or cut, returns an error or a value, and never panics, hangs or allocates without
//! bound. Every store record ends with a CRC-32 of its content, which catches damage before a
//! decoder sees it; so the records here get a CRC that matches what they hold (as a record
//! written wrong, or forged, would), and the decoders behind the check are what is tested. Property tests (proptest): `PROPTEST_CASES` sets how many cases each runs (CI runs the
//! default, 256; a long run sets it high).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use bytes::Bytes;
use evlog_raft_store::access;
use evlog_raft_store::codec;
use evlog_raft_store::consumer::ConsumerCommand;
use evlog_raft_store::consumer::ConsumerRecord;
use evlog_raft_store::consumer::DeadLetterRecord;
use evlog_raft_store::consumer::PendingRecord;
use evlog_raft_store::fuzzing::damage;
use evlog_raft_store::fuzzing::edit;
use evlog_raft_store::fuzzing::resealed;
use evlog_raft_store::fuzzing::sealed;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::type_config::Membership;
use evlog_raft_store::type_config::StoredMembership;
use evlog_raft_store::type_config::Vote;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::CheckRange;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::ConsumerSkips;
use evlog_raft_store::types::DataEncoding;
use evlog_raft_store::types::IdempotentRecord;
use evlog_raft_store::types::NewEvent;
use evlog_raft_store::types::RecordedEvent;
use evlog_raft_store::types::RetentionCommand;
use evlog_raft_store::types::StreamMeta;
use openraft::EntryPayload;
use proptest::prelude::*;

fn log_id(index: u64) -> LogId {
    LogId {
        leader_id: LeaderId {
            term: 3,
            node_id: 2,
        },
        index,
    }
}

fn new_event(data: &[u8], encoding: DataEncoding) -> NewEvent {
    NewEvent {
        id: "0196f1c2-1111-7000-8000-000000000001".to_string(),
        event_type: "OrderPlaced".to_string(),
        content_type: "application/json".to_string(),
        data: Bytes::copy_from_slice(data),
        metadata: vec![("trace".to_string(), "abc".to_string())],
        encoding,
    }
}

fn append(encoding: DataEncoding, data: &[u8]) -> AppendCommand {
    AppendCommand {
        stream: "orders-1".to_string(),
        events: vec![
            new_event(data, encoding),
            new_event(b"{}", DataEncoding::Raw),
        ],
        expected_version: Some(4),
        idempotency_key: Some("k-1".to_string()),
        timestamp_ms: 1_700_000_000_000,
        request_fingerprint: 0xdead_beef,
        idempotency: Default::default(),
    }
}

/// One valid record of each kind a decoder reads, by the decoder's name.
fn valid_records() -> Vec<(&'static str, Vec<u8>)> {
    let json = br#"{"order":1,"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}"#.repeat(4);
    let frame = codec::compress(&json).expect("compresses");
    let entries = [
        EntryPayload::Blank,
        EntryPayload::Normal(Command::Append(append(DataEncoding::Raw, b"{\"n\":1}"))),
        EntryPayload::Normal(Command::Append(append(DataEncoding::Zstd, &frame))),
        EntryPayload::Normal(Command::Appends(
            vec![
                append(DataEncoding::Raw, b"x"),
                append(DataEncoding::ZstdDictionary(7), b"y"),
            ]
            .into(),
        )),
        EntryPayload::Normal(Command::Consumer(ConsumerCommand::Delete {
            name: "billing".to_string(),
        })),
        EntryPayload::Normal(Command::Retention(RetentionCommand::Delete {
            stream: "orders-1".to_string(),
            expected_version: Some(9),
            tombstone: true,
            timestamp_ms: 5,
        })),
        EntryPayload::Normal(Command::Retention(RetentionCommand::ExpireLog {
            before_position: 77,
        })),
        EntryPayload::Normal(Command::Access(access::AccessCommand::PutRole {
            name: "writer".to_string(),
            role: access::Role {
                grants: vec![access::Grant {
                    permission: access::Permission::Append,
                    prefix: "orders-".to_string(),
                }],
                principals: vec![],
            },
        })),
        EntryPayload::Normal(Command::Check(CheckRange {
            from: 1,
            to: 100,
            step: 10,
        })),
        EntryPayload::Normal(Command::Dictionary(Bytes::from_static(b"dictionary bytes"))),
        EntryPayload::Membership(
            Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                BTreeMap::from([
                    (
                        1,
                        evlog_raft_store::type_config::MemberNode::new(
                            "127.0.0.1:1",
                            "127.0.0.1:1",
                        ),
                    ),
                    (
                        2,
                        evlog_raft_store::type_config::MemberNode::new(
                            "127.0.0.1:2",
                            "127.0.0.1:2",
                        ),
                    ),
                    (
                        3,
                        evlog_raft_store::type_config::MemberNode::new(
                            "127.0.0.1:3",
                            "127.0.0.1:3",
                        ),
                    ),
                ]),
            )
            .expect("a membership"),
        ),
    ];
    let mut records: Vec<(&'static str, Vec<u8>)> = entries
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            (
                "entry",
                codec::encode_entry(&Entry {
                    log_id: log_id(i as u64 + 1),
                    payload,
                }),
            )
        })
        .collect();
    let event = RecordedEvent {
        position: 9,
        stream: "orders-1".to_string(),
        stream_version: 3,
        id: "id-1".to_string(),
        event_type: "OrderPlaced".to_string(),
        content_type: "application/json".to_string(),
        data: Bytes::from(frame),
        metadata: vec![("k".to_string(), "v".to_string())],
        timestamp_ms: 1_700_000_000_000,
    };
    records.push(("event", codec::encode_event(&event, DataEncoding::Zstd)));
    records.push(("event", codec::encode_event(&event, DataEncoding::Raw)));
    records.push((
        "event",
        codec::encode_event(&event, DataEncoding::ZstdDictionary(42)),
    ));
    records.push(("log id", codec::encode_log_id(&log_id(5))));
    records.push(("vote", codec::encode_vote(&Vote::new_committed(4, 2))));
    records.push((
        "membership",
        codec::encode_stored_membership(&StoredMembership::new(
            Some(log_id(3)),
            Membership::new(
                vec![BTreeSet::from([1, 2])],
                BTreeMap::from([
                    (
                        1,
                        evlog_raft_store::type_config::MemberNode::new("a:1", "a:1"),
                    ),
                    (
                        2,
                        evlog_raft_store::type_config::MemberNode::new("b:2", "b:2"),
                    ),
                ]),
            )
            .expect("a membership"),
        )),
    ));
    records.push((
        "stream meta",
        codec::encode_stream_meta(&StreamMeta {
            metadata_version: 2,
            first_version: 10,
            tombstoned: true,
            ..Default::default()
        }),
    ));
    records.push((
        "consumer skips",
        codec::encode_consumer_skips(&ConsumerSkips {
            skipped_total: 5,
            last_from: 1,
            last_to: 5,
        }),
    ));
    records.push((
        "idempotency record",
        codec::encode_idempotent_record(&IdempotentRecord {
            fingerprint: 1,
            outcome: evlog_raft_store::types::AppendOutcome {
                first_position: 1,
                last_position: 2,
                stream_version: 2,
                deduplicated: false,
            },
            order: 3 << 12,
            timestamp_ms: 9,
        }),
    ));
    records.push(("u64", codec::encode_u64(77)));
    records.push(("string", codec::encode_str("cluster-id")));
    let mut access = access::AccessState {
        revision: 4,
        ..Default::default()
    };
    access.roles.insert(
        "reader".to_string(),
        access::Role {
            grants: vec![access::Grant {
                permission: access::Permission::Read,
                prefix: "orders-".to_string(),
            }],
            principals: vec!["svc.example".to_string()],
        },
    );
    access.tokens.insert(
        "0123456789abcdef".to_string(),
        access::Token {
            principal: "alice".to_string(),
            roles: vec!["reader".to_string()],
            secret_sha256: [9; 32],
            created_at_ms: 1,
            expires_at_ms: 0,
        },
    );
    records.push(("access", access::encode_state(&access)));
    records.push((
        "access",
        access::encode_command(&access::AccessCommand::RevokeToken {
            id: "0123456789abcdef".to_string(),
        }),
    ));
    records
}

/// Runs the decoder named `kind` on `bytes`; whatever it returns is fine, a panic is not.
fn decode(kind: &str, bytes: &[u8]) {
    match kind {
        "entry" => drop(codec::decode_entry(bytes)),
        "event" => {
            drop(codec::decode_event(1, bytes));
            drop(codec::peek_event(bytes));
        }
        "log id" => drop(codec::decode_log_id(bytes)),
        "vote" => drop(codec::decode_vote(bytes)),
        "membership" => drop(codec::decode_stored_membership(bytes)),
        "stream meta" => drop(codec::decode_stream_meta(bytes)),
        "consumer skips" => drop(codec::decode_consumer_skips(bytes)),
        "idempotency record" => drop(codec::decode_idempotent_record(bytes)),
        "u64" => drop(codec::decode_u64("u64", bytes)),
        "string" => drop(codec::decode_string("string", bytes)),
        "consumer records" => {
            drop(evlog_raft_store::consumer::decode::<ConsumerRecord>(
                "group", bytes,
            ));
            drop(evlog_raft_store::consumer::decode::<PendingRecord>(
                "pending", bytes,
            ));
            drop(evlog_raft_store::consumer::decode::<DeadLetterRecord>(
                "dead letter",
                bytes,
            ));
            drop(evlog_raft_store::consumer::decode::<ConsumerCommand>(
                "command", bytes,
            ));
        }
        "access" => {
            drop(access::decode_state(bytes));
            drop(access::decode_command(bytes));
        }
        other => panic!("no decoder {other}"),
    }
}

const KINDS: [&str; 12] = [
    "access",
    "entry",
    "event",
    "log id",
    "vote",
    "membership",
    "stream meta",
    "consumer skips",
    "idempotency record",
    "u64",
    "string",
    "consumer records",
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(
        kind in 0..KINDS.len(),
        version in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        seal in any::<bool>(),
    ) {
        let mut content = vec![version];
        content.extend_from_slice(&bytes);
        decode(KINDS[kind], &if seal { sealed(content) } else { content });
    }

    #[test]
    fn damaged_records_never_panic_a_decoder(
        record in 0..valid_records().len(),
        edits in proptest::collection::vec(edit(), 1..6),
        seal in prop_oneof![9 => Just(true), 1 => Just(false)],
    ) {
        let (kind, bytes) = valid_records().swap_remove(record);
        let damaged = if seal {
            resealed(&bytes, &edits)
        } else {
            let mut bytes = bytes;
            damage(&mut bytes, &edits);
            bytes
        };
        decode(kind, &damaged);
    }

    /// Length prefixes claim more than there is: the decoders must check before they allocate.
    #[test]
    fn huge_length_prefixes_are_refused(
        record in 0..valid_records().len(),
        at in any::<usize>(),
        big in prop_oneof![Just(u32::MAX), Just(u32::MAX / 2), 1u32 << 20..u32::MAX],
    ) {
        let (kind, bytes) = valid_records().swap_remove(record);
        let mut content = bytes[..bytes.len() - 4].to_vec();
        if content.len() >= 5 {
            let at = 1 + at % (content.len() - 4);
            content[at..at + 4].copy_from_slice(&big.to_le_bytes());
        }
        decode(kind, &sealed(content));
    }
}

/// Every valid record decodes (the damaged ones start from something real).
#[test]
fn the_valid_records_decode() {
    for (kind, bytes) in valid_records() {
        let ok = match kind {
            "entry" => codec::decode_entry(&bytes).is_ok(),
            // The event that names dictionary 42 does not decode: no such dictionary.
            "event" => codec::peek_event(&bytes).is_ok(),
            "log id" => codec::decode_log_id(&bytes).is_ok(),
            "vote" => codec::decode_vote(&bytes).is_ok(),
            "membership" => codec::decode_stored_membership(&bytes).is_ok(),
            "stream meta" => codec::decode_stream_meta(&bytes).is_ok(),
            "consumer skips" => codec::decode_consumer_skips(&bytes).is_ok(),
            "idempotency record" => codec::decode_idempotent_record(&bytes).is_ok(),
            "u64" => codec::decode_u64("u64", &bytes).is_ok(),
            "string" => codec::decode_string("string", &bytes).is_ok(),
            "access" => {
                access::decode_state(&bytes).is_ok() || access::decode_command(&bytes).is_ok()
            }
            other => panic!("no decoder {other}"),
        };
        assert!(ok, "a valid {kind} record does not decode");
    }
}

/// A snapshot file of a small store: events (one compressed), an idempotency key, stream
/// metadata, the log's first position moved, a dictionary.
fn snapshot_file() -> &'static [u8] {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = evlog_raft_store::StoreConfig::new(dir.path(), 1, "fuzz");
            let (_engine, _log, mut machine, _reader) =
                evlog_raft_store::open(&config).expect("the store opens");
            let json = br#"{"order":1,"items":[{"sku":"a","qty":1}]}"#.repeat(8);
            let commands = vec![
                Command::Dictionary(Bytes::from_static(b"a dictionary of a fuzzed store")),
                Command::Append(AppendCommand {
                    expected_version: None,
                    ..append(DataEncoding::Raw, b"{\"n\":1}")
                }),
                Command::Append(AppendCommand {
                    idempotency_key: None,
                    expected_version: None,
                    ..append(
                        DataEncoding::Zstd,
                        &codec::compress(&json).expect("compresses"),
                    )
                }),
                Command::Retention(RetentionCommand::ExpireLog { before_position: 2 }),
            ];
            let entries: Vec<_> = commands
                .into_iter()
                .enumerate()
                .map(|(i, command)| Ok((Entry::new_normal(log_id(i as u64 + 1), command), None)))
                .collect();
            machine
                .apply(futures::stream::iter(entries))
                .await
                .expect("the entries apply");
            let built = machine
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("the snapshot builds");
            let path = dir.path().join("snapshot");
            evlog_raft_store::snapshot::write_file(&built.snapshot, &path).expect("written");
            std::fs::read(&path).expect("read")
        })
    })
}

proptest! {
    /// A damaged snapshot or backup file is refused (the CRC-32 over the file catches what the
    /// record decoders let through), and reading it never panics.
    #[test]
    fn a_damaged_snapshot_file_is_refused_and_never_panics(
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let mut bytes = snapshot_file().to_vec();
        damage(&mut bytes, &edits);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("damaged");
        std::fs::write(&path, &bytes).expect("written");
        let verified = evlog_raft_store::snapshot::verify_file(&path);
        prop_assert!(
            verified.is_err() || bytes == snapshot_file(),
            "a damaged file verified: {edits:?}"
        );
    }
}

#[test]
fn the_snapshot_file_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("snapshot");
    std::fs::write(&path, snapshot_file()).expect("written");
    let summary = evlog_raft_store::snapshot::verify_file(&path).expect("a valid file verifies");
    assert_eq!(summary.events, 3);
    // One byte more after the trailer: not the file that was written (found by the fuzzing).
    let mut longer = snapshot_file().to_vec();
    longer.push(0);
    std::fs::write(&path, &longer).expect("written");
    let refused = evlog_raft_store::snapshot::verify_file(&path).expect_err("refused");
    assert!(refused.to_string().contains("after the end"), "{refused}");
}
