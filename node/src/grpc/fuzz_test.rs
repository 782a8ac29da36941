//! Hostile input against what a node decodes from the network before anything else looks at
//! it: the peer messages (postcard-encoded Raft messages inside the peer service) and the
//! public requests (protobuf, then converted and validated). Arbitrary bytes, and valid
//! messages with bytes changed, inserted or cut, give an error or a value, never a panic.
//! Property tests: `PROPTEST_CASES` sets how many cases each runs (CI: the default, 256).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use evlog_proto::v1 as pb;
use evlog_raft_store::fuzzing::damage;
use evlog_raft_store::fuzzing::edit;
use evlog_raft_store::type_config::Entry;
use evlog_raft_store::type_config::LeaderId;
use evlog_raft_store::type_config::LogId;
use evlog_raft_store::type_config::Membership;
use evlog_raft_store::type_config::SnapshotMeta;
use evlog_raft_store::type_config::StoredMembership;
use evlog_raft_store::type_config::TypeConfig;
use evlog_raft_store::type_config::Vote;
use evlog_raft_store::types::AppendCommand;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::NewEvent;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use proptest::prelude::*;
use prost::Message;

use crate::config::Limits;
use crate::grpc::convert;
use crate::raft::transport::wire;
use crate::service::append;
use crate::service::event_log::validate_stream_change;

fn log_id(index: u64) -> LogId {
    LogId {
        leader_id: LeaderId {
            term: 2,
            node_id: 1,
        },
        index,
    }
}

/// One valid peer message of each kind, encoded, by its kind's index in [`decode_peer`].
fn peer_messages() -> Vec<(usize, Vec<u8>)> {
    let vote = Vote::new_committed(2, 1);
    let entry = Entry {
        log_id: log_id(7),
        payload: openraft::EntryPayload::Normal(Command::Append(AppendCommand {
            stream: "orders".to_string(),
            events: vec![NewEvent {
                id: "e".to_string(),
                event_type: "T".to_string(),
                content_type: String::new(),
                data: bytes::Bytes::from_static(b"{\"n\":1}"),
                metadata: vec![("k".to_string(), "v".to_string())],
                encoding: Default::default(),
            }],
            expected_version: Some(3),
            idempotency_key: Some("key".to_string()),
            timestamp_ms: 5,
            request_fingerprint: 9,
            idempotency: Default::default(),
        })),
    };
    let membership = Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (
                1,
                evlog_raft_store::type_config::MemberNode::new("127.0.0.1:1", "127.0.0.1:1"),
            ),
            (
                2,
                evlog_raft_store::type_config::MemberNode::new("127.0.0.1:2", "127.0.0.1:2"),
            ),
            (
                3,
                evlog_raft_store::type_config::MemberNode::new("127.0.0.1:3", "127.0.0.1:3"),
            ),
        ]),
    )
    .expect("a membership");
    let encode = |kind: usize, bytes: Result<bytes::Bytes, tonic::Status>| {
        (kind, bytes.expect("encodes").to_vec())
    };
    vec![
        encode(
            0,
            wire::encode(&AppendEntriesRequest::<TypeConfig> {
                vote,
                prev_log_id: Some(log_id(6)),
                entries: vec![entry],
                leader_commit: Some(log_id(6)),
            }),
        ),
        encode(
            1,
            wire::encode(&AppendEntriesResponse::<TypeConfig>::Conflict),
        ),
        encode(
            2,
            wire::encode(&VoteRequest::<TypeConfig>::new(vote, Some(log_id(6)))),
        ),
        encode(
            3,
            wire::encode(&VoteResponse::<TypeConfig>::new(
                vote,
                Some(log_id(6)),
                true,
            )),
        ),
        encode(
            4,
            wire::encode(&TransferLeaderRequest::<TypeConfig>::new(
                vote,
                2,
                Some(log_id(6)),
            )),
        ),
        encode(
            5,
            wire::encode(&(
                vote,
                SnapshotMeta {
                    last_log_id: Some(log_id(6)),
                    last_membership: StoredMembership::new(Some(log_id(1)), membership),
                },
            )),
        ),
    ]
}

/// Decodes `bytes` as the peer message of `kind`; a value or an error, never a panic.
fn decode_peer(kind: usize, bytes: &[u8]) {
    match kind {
        0 => drop(wire::decode::<AppendEntriesRequest<TypeConfig>>(bytes)),
        1 => drop(wire::decode::<AppendEntriesResponse<TypeConfig>>(bytes)),
        2 => drop(wire::decode::<VoteRequest<TypeConfig>>(bytes)),
        3 => drop(wire::decode::<VoteResponse<TypeConfig>>(bytes)),
        4 => drop(wire::decode::<TransferLeaderRequest<TypeConfig>>(bytes)),
        _ => drop(wire::decode::<(Vote, SnapshotMeta)>(bytes)),
    }
}

const PEER_KINDS: usize = 6;

/// One valid public request of each kind, encoded, by its kind's index in
/// [`decode_request`].
fn requests() -> Vec<(usize, Vec<u8>)> {
    let event = pb::EventData {
        id: "e-1".to_string(),
        r#type: "OrderPlaced".to_string(),
        content_type: "application/json".to_string(),
        data: b"{\"n\":1}".to_vec().into(),
        metadata: [("trace".to_string(), "t".to_string())].into(),
    };
    vec![
        (
            0,
            pb::AppendRequest {
                stream: "orders-1".to_string(),
                events: vec![event.clone(), event],
                expected_version: Some(3),
                idempotency_key: Some("k".to_string()),
            }
            .encode_to_vec(),
        ),
        (
            1,
            pb::ReadRequest {
                filter: None,
                target: Some(pb::read_request::Target::Stream("orders-1".to_string())),
                from: Some(4),
                max_count: 100,
                direction: pb::Direction::Backward as i32,
                consistency: pb::Consistency::AtLeast as i32,
                at_least_position: 9,
                from_timestamp_ms: None,
            }
            .encode_to_vec(),
        ),
        (
            2,
            pb::SubscribeRequest {
                target: Some(pb::subscribe_request::Target::All(Default::default())),
                start: Some(pb::subscribe_request::Start::FromTimestampMs(5)),
                filter: Some(pb::SubscribeFilter {
                    stream_prefixes: vec!["orders-".to_string()],
                    event_types: vec!["OrderPlaced".to_string()],
                }),
                max_batch_events: 100,
                at_least_position: 3,
            }
            .encode_to_vec(),
        ),
        (
            3,
            pb::SetStreamMetadataRequest {
                stream: "orders-1".to_string(),
                expected_metadata_version: Some(1),
                retention: Some(pb::StreamRetention {
                    max_count: Some(10),
                    max_age_s: Some(60),
                    truncate_before: Some(4),
                }),
            }
            .encode_to_vec(),
        ),
        (
            4,
            pb::DeleteStreamRequest {
                stream: "orders-1".to_string(),
                expected_version: Some(7),
                tombstone: true,
            }
            .encode_to_vec(),
        ),
        (
            5,
            pb::ConsumerSettings {
                mode: pb::DispatchMode::Shared as i32,
                ack_wait_ms: 1_000,
                max_deliveries: 3,
                backoff_ms: vec![10, 20],
                max_in_flight: 50,
            }
            .encode_to_vec(),
        ),
        (
            6,
            pb::Settlement {
                delivery_id: "17.2".to_string(),
                outcome: pb::SettleOutcome::DeadLetter as i32,
                delay_ms: 5,
                reason: "bad input".to_string(),
            }
            .encode_to_vec(),
        ),
    ]
}

const REQUEST_KINDS: usize = 7;

/// Decodes `bytes` as the public request of `kind`, converts and validates it as the service
/// does; a value or an error, never a panic.
fn decode_request(kind: usize, bytes: &[u8]) {
    let limits = Limits::default();
    match kind {
        0 => {
            if let Ok(request) = pb::AppendRequest::decode(bytes) {
                let request = convert::append_request(request);
                if append::validate(&request, &limits).is_ok() {
                    // What the leader builds from it, and its fingerprint.
                    drop(append::command(&request, &limits, 1, |data| {
                        (data.clone(), Default::default())
                    }));
                }
            }
        }
        1 => {
            if let Ok(request) = pb::ReadRequest::decode(bytes) {
                drop(convert::read_request(request));
            }
        }
        2 => {
            if let Ok(request) = pb::SubscribeRequest::decode(bytes) {
                drop(convert::subscribe_request(request));
            }
        }
        3 => {
            if let Ok(request) = pb::SetStreamMetadataRequest::decode(bytes) {
                drop(validate_stream_change(
                    &convert::set_stream_metadata_request(request),
                ));
            }
        }
        4 => {
            if let Ok(request) = pb::DeleteStreamRequest::decode(bytes) {
                drop(validate_stream_change(&convert::delete_stream_request(
                    request,
                )));
            }
        }
        5 => {
            if let Ok(settings) = pb::ConsumerSettings::decode(bytes) {
                drop(super::consumers::settings_from_wire(Some(settings)));
            }
        }
        _ => {
            if let Ok(settlement) = pb::Settlement::decode(bytes) {
                drop(super::consumers::parse_delivery_id(&settlement.delivery_id));
                drop(crate::service::consumers::validate_reason(
                    &settlement.reason,
                ));
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_peer_decoder(
        kind in 0..PEER_KINDS,
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        decode_peer(kind, &bytes);
    }

    #[test]
    fn damaged_peer_messages_never_panic_the_decoder(
        message in 0..PEER_KINDS,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let (kind, mut bytes) = peer_messages().swap_remove(message);
        damage(&mut bytes, &edits);
        decode_peer(kind, &bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_request_conversion(
        kind in 0..REQUEST_KINDS,
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        decode_request(kind, &bytes);
    }

    #[test]
    fn damaged_requests_never_panic_a_conversion(
        request in 0..REQUEST_KINDS,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let (kind, mut bytes) = requests().swap_remove(request);
        damage(&mut bytes, &edits);
        decode_request(kind, &bytes);
    }

    /// Any text as a stream name, event type, id, key or reason: refused or taken, no panic.
    #[test]
    fn any_text_in_a_request_never_panics(
        stream in ".{0,300}",
        text in ".{0,300}",
        data in proptest::collection::vec(any::<u8>(), 0..2_000),
    ) {
        let request = pb::AppendRequest {
            stream: stream.clone(),
            events: vec![pb::EventData {
                id: text.clone(),
                r#type: text.clone(),
                content_type: text.clone(),
                data: data.into(),
                metadata: [(text.clone(), stream.clone())].into(),
            }],
            expected_version: None,
            idempotency_key: Some(text.clone()),
        };
        decode_request(0, &request.encode_to_vec());
        drop(append::validate_stream_name(&stream));
        drop(append::validate_stream_name_to_read(&stream));
        drop(crate::service::consumers::validate_name(&text));
        drop(crate::service::consumers::validate_reason(&text));
        drop(super::consumers::parse_delivery_id(&text));
    }
}

/// The valid messages decode (the damaged ones start from something real).
#[test]
fn the_valid_messages_decode() {
    for (kind, bytes) in peer_messages() {
        let ok = match kind {
            0 => wire::decode::<AppendEntriesRequest<TypeConfig>>(&bytes).is_ok(),
            1 => wire::decode::<AppendEntriesResponse<TypeConfig>>(&bytes).is_ok(),
            2 => wire::decode::<VoteRequest<TypeConfig>>(&bytes).is_ok(),
            3 => wire::decode::<VoteResponse<TypeConfig>>(&bytes).is_ok(),
            4 => wire::decode::<TransferLeaderRequest<TypeConfig>>(&bytes).is_ok(),
            _ => wire::decode::<(Vote, SnapshotMeta)>(&bytes).is_ok(),
        };
        assert!(ok, "peer message {kind} does not decode");
    }
    let append = pb::AppendRequest::decode(requests()[0].1.as_slice()).expect("decodes");
    let append = convert::append_request(append);
    append::validate(&append, &Limits::default()).expect("a valid append");
}
