//! Wire (protobuf) types to the service's domain types and back. What a client may send wrong
//! in the wire form alone (an unknown enum value, no target, two starts) is refused here;
//! everything else the service validates.

use evlog_proto::v1 as pb;
use evlog_raft_store::ReadStart;
use evlog_raft_store::ReadTarget;
use evlog_raft_store::reader::SubscribeStart;
use evlog_raft_store::types::AppendOutcome;
use evlog_raft_store::types::RecordedEvent;
use evlog_raft_store::types::StreamInfo;
use evlog_raft_store::types::StreamMeta;
use evlog_raft_store::types::StreamRetention;

use crate::raft::handle::LeaderTransferred;
use crate::raft::handle::MemberStatus;
use crate::raft::handle::NodeStatus;
use crate::raft::receipt::Receipt;
use crate::service::ServiceError;
use crate::service::append::AppendRequest;
use crate::service::append::Appended;
use crate::service::append::EventData;
use crate::service::event_log::Consistency;
use crate::service::event_log::ReadRequest;
use crate::service::event_log::StreamChange;
use crate::service::event_log::StreamChanged;
use crate::service::forward::MembershipChanged;
use crate::service::subscribe::SubscribeRequest;
use crate::service::subscribe::SubscriptionItem;

/// An append request from the wire (metadata sorted by key).
pub fn append_request(request: pb::AppendRequest) -> AppendRequest {
    AppendRequest {
        stream: request.stream,
        events: request
            .events
            .into_iter()
            .map(|event| {
                let mut metadata: Vec<(String, String)> = event.metadata.into_iter().collect();
                metadata.sort();
                EventData {
                    id: event.id,
                    event_type: event.r#type,
                    content_type: event.content_type,
                    data: event.data,
                    metadata,
                }
            })
            .collect(),
        expected_version: request.expected_version,
        idempotency_key: request.idempotency_key,
    }
}

/// An append request back on the wire, as the client sent it (to forward it to the leader).
pub fn append_request_to_wire(request: AppendRequest) -> pb::AppendRequest {
    pb::AppendRequest {
        stream: request.stream,
        events: request
            .events
            .into_iter()
            .map(|event| pb::EventData {
                id: event.id,
                r#type: event.event_type,
                content_type: event.content_type,
                data: event.data,
                metadata: event.metadata.into_iter().collect(),
            })
            .collect(),
        expected_version: request.expected_version,
        idempotency_key: request.idempotency_key,
    }
}

pub fn append_response(appended: Appended) -> pb::AppendResponse {
    pb::AppendResponse {
        first_position: appended.outcome.first_position,
        last_position: appended.outcome.last_position,
        stream_version: appended.outcome.stream_version,
        deduplicated: appended.outcome.deduplicated,
        receipt: Some(pb::DurabilityReceipt {
            term: appended.receipt.term,
            log_index: appended.receipt.log_index,
            leader_id: appended.receipt.leader_id,
        }),
    }
}

/// The leader's answer to a forwarded append.
pub fn append_response_from_wire(response: pb::AppendResponse) -> Appended {
    let receipt = response.receipt.unwrap_or_default();
    Appended {
        outcome: AppendOutcome {
            first_position: response.first_position,
            last_position: response.last_position,
            stream_version: response.stream_version,
            deduplicated: response.deduplicated,
        },
        receipt: Receipt {
            term: receipt.term,
            log_index: receipt.log_index,
            leader_id: receipt.leader_id,
        },
    }
}

/// A consistency level and its position (used with `AT_LEAST` only).
pub fn consistency(value: i32, at_least_position: u64) -> Result<Consistency, ServiceError> {
    match pb::Consistency::try_from(value) {
        Ok(pb::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(pb::Consistency::AtLeast) => Ok(Consistency::AtLeast(at_least_position)),
        Ok(pb::Consistency::Local) => Ok(Consistency::Local),
        Err(_) => Err(ServiceError::InvalidArgument(format!(
            "unknown consistency {value}"
        ))),
    }
}

pub fn read_request(request: pb::ReadRequest) -> Result<ReadRequest, ServiceError> {
    let target = match request.target {
        Some(pb::read_request::Target::Stream(stream)) => ReadTarget::Stream(stream),
        Some(pb::read_request::Target::All(_)) => ReadTarget::All,
        None => {
            return Err(ServiceError::InvalidArgument(
                "a read needs a target: a stream or all".to_string(),
            ));
        }
    };
    let start = match (request.from, request.from_timestamp_ms) {
        (Some(_), Some(_)) => {
            return Err(ServiceError::InvalidArgument(
                "a read starts at `from` or at `from_timestamp_ms`, not both".to_string(),
            ));
        }
        (Some(from), None) => ReadStart::From(from),
        (None, Some(time_ms)) => ReadStart::Time(time_ms),
        (None, None) => ReadStart::Edge,
    };
    let backward = match pb::Direction::try_from(request.direction) {
        Ok(pb::Direction::Forward) => false,
        Ok(pb::Direction::Backward) => true,
        Err(_) => {
            return Err(ServiceError::InvalidArgument(format!(
                "unknown direction {}",
                request.direction
            )));
        }
    };
    let filter = request.filter.unwrap_or_default();
    Ok(ReadRequest {
        target,
        start,
        max_count: request.max_count,
        backward,
        consistency: consistency(request.consistency, request.at_least_position)?,
        stream_prefixes: filter.stream_prefixes,
        event_types: filter.event_types,
    })
}

pub fn subscribe_request(request: pb::SubscribeRequest) -> Result<SubscribeRequest, ServiceError> {
    let target = match request.target {
        Some(pb::subscribe_request::Target::Stream(stream)) => ReadTarget::Stream(stream),
        Some(pb::subscribe_request::Target::All(_)) => ReadTarget::All,
        None => {
            return Err(ServiceError::InvalidArgument(
                "a subscription needs a target: a stream or all".to_string(),
            ));
        }
    };
    let start = match request.start {
        None => SubscribeStart::Beginning,
        Some(pb::subscribe_request::Start::From(from)) => SubscribeStart::From(from),
        Some(pb::subscribe_request::Start::FromTimestampMs(time_ms)) => {
            SubscribeStart::Time(time_ms)
        }
        Some(pb::subscribe_request::Start::Head(_)) => SubscribeStart::Head,
    };
    let filter = request.filter.unwrap_or_default();
    Ok(SubscribeRequest {
        target,
        start,
        stream_prefixes: filter.stream_prefixes,
        event_types: filter.event_types,
        max_batch_events: request.max_batch_events,
        at_least_position: request.at_least_position,
    })
}

pub fn subscription_item(item: SubscriptionItem) -> pb::SubscribeResponse {
    use pb::subscribe_response::Item;
    let item = match item {
        SubscriptionItem::Subscribed {
            served_by,
            head_position,
            next_from,
            epoch,
        } => Item::Subscribed(pb::Subscribed {
            served_by,
            head_position,
            next_from,
            epoch,
        }),
        SubscriptionItem::Events { events, next_from } => Item::Events(pb::EventBatch {
            events: events.into_iter().map(recorded_event).collect(),
            next_from,
        }),
        SubscriptionItem::CaughtUp {
            head_position,
            next_from,
        } => Item::CaughtUp(pb::CaughtUp {
            head_position,
            next_from,
        }),
        SubscriptionItem::Checkpoint {
            next_from,
            head_position,
        } => Item::Checkpoint(pb::Checkpoint {
            next_from,
            head_position,
        }),
        SubscriptionItem::FellBehind {
            lag_events,
            head_position,
            next_from,
        } => Item::FellBehind(pb::FellBehind {
            lag_events,
            head_position,
            next_from,
        }),
    };
    pb::SubscribeResponse { item: Some(item) }
}

pub fn stream_summary(stream: String, info: StreamInfo) -> pb::StreamSummary {
    pb::StreamSummary {
        stream,
        version: info.version,
        first_position: info.first_position,
        last_position: info.last_position,
        first_version: info.first_version,
    }
}

pub fn receipt(receipt: Receipt) -> pb::DurabilityReceipt {
    pb::DurabilityReceipt {
        term: receipt.term,
        log_index: receipt.log_index,
        leader_id: receipt.leader_id,
    }
}

fn receipt_from_wire(receipt: Option<pb::DurabilityReceipt>) -> Receipt {
    let receipt = receipt.unwrap_or_default();
    Receipt {
        term: receipt.term,
        log_index: receipt.log_index,
        leader_id: receipt.leader_id,
    }
}

fn retention_from_wire(retention: Option<pb::StreamRetention>) -> StreamRetention {
    let retention = retention.unwrap_or_default();
    StreamRetention {
        max_age_s: retention.max_age_s,
        max_count: retention.max_count,
        truncate_before: retention.truncate_before,
    }
}

fn retention_to_wire(retention: StreamRetention) -> pb::StreamRetention {
    pb::StreamRetention {
        max_age_s: retention.max_age_s,
        max_count: retention.max_count,
        truncate_before: retention.truncate_before,
    }
}

pub fn set_stream_metadata_request(request: pb::SetStreamMetadataRequest) -> StreamChange {
    StreamChange::SetMetadata {
        stream: request.stream,
        expected_metadata_version: request.expected_metadata_version,
        retention: retention_from_wire(request.retention),
    }
}

pub fn delete_stream_request(request: pb::DeleteStreamRequest) -> StreamChange {
    StreamChange::Delete {
        stream: request.stream,
        expected_version: request.expected_version,
        tombstone: request.tombstone,
    }
}

/// A stream change as a forwarded request.
pub enum StreamChangeRequest {
    SetMetadata(pb::SetStreamMetadataRequest),
    Delete(pb::DeleteStreamRequest),
}

pub fn stream_change_to_wire(change: StreamChange) -> StreamChangeRequest {
    match change {
        StreamChange::SetMetadata {
            stream,
            expected_metadata_version,
            retention,
        } => StreamChangeRequest::SetMetadata(pb::SetStreamMetadataRequest {
            stream,
            expected_metadata_version,
            retention: Some(retention_to_wire(retention)),
        }),
        StreamChange::Delete {
            stream,
            expected_version,
            tombstone,
        } => StreamChangeRequest::Delete(pb::DeleteStreamRequest {
            stream,
            expected_version,
            tombstone,
        }),
    }
}

pub fn stream_metadata(stream: String, meta: StreamMeta) -> pb::StreamMetadata {
    pb::StreamMetadata {
        stream,
        metadata_version: meta.metadata_version,
        retention: Some(retention_to_wire(meta.retention)),
        first_version: meta.first_version,
        tombstoned: meta.tombstoned,
    }
}

pub fn stream_metadata_from_wire(meta: pb::StreamMetadata) -> StreamMeta {
    StreamMeta {
        metadata_version: meta.metadata_version,
        retention: retention_from_wire(meta.retention),
        first_version: meta.first_version.max(1),
        tombstoned: meta.tombstoned,
    }
}

pub fn deleted_from_wire(response: pb::DeleteStreamResponse) -> StreamChanged {
    StreamChanged::Deleted {
        version: response.version,
        position: response.position,
        receipt: receipt_from_wire(response.receipt),
    }
}

pub fn recorded_event(event: RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        position: event.position,
        stream: event.stream,
        stream_version: event.stream_version,
        id: event.id,
        r#type: event.event_type,
        content_type: event.content_type,
        data: event.data,
        metadata: event.metadata.into_iter().collect(),
        timestamp_ms: event.timestamp_ms,
    }
}

/// Members on the wire; the replication lag is measured against `last_log_index` (the
/// leader's, where the matched indexes are known).
pub fn members(members: &[MemberStatus], last_log_index: u64) -> Vec<pb::Member> {
    members
        .iter()
        .map(|member| pb::Member {
            node_id: member.node_id,
            address: member.address.clone(),
            peer_address: member.peer_address.clone(),
            role: if member.voter { "voter" } else { "learner" }.to_string(),
            matched_index: member.matched_index,
            replication_lag: member
                .matched_index
                .map(|matched| last_log_index.saturating_sub(matched)),
            last_contact_ms: member
                .last_contact
                .map(|contact| u64::try_from(contact.as_millis()).unwrap_or(u64::MAX)),
        })
        .collect()
}

/// `peer_address` and `http_address` are this node's own (it reports them before it is a
/// member too).
pub fn status_response(
    status: &NodeStatus,
    peer_address: &str,
    http_address: &str,
) -> pb::StatusResponse {
    let address = status
        .members
        .iter()
        .find(|member| member.node_id == status.node_id)
        .map(|member| member.address.clone())
        .unwrap_or_default();
    pb::StatusResponse {
        node_id: status.node_id,
        role: status.role.as_str().to_string(),
        term: status.term,
        leader_id: status.leader_id.unwrap_or(0),
        leader_address: status.leader_address.clone().unwrap_or_default(),
        last_log_index: status.last_log_index,
        committed_index: status.committed_index,
        applied_index: status.applied_index,
        head_position: status.head_position,
        members: members(&status.members, status.last_log_index),
        address,
        snapshot_index: status.snapshot_index,
        purged_index: status.purged_index,
        millis_since_quorum_ack: status.since_quorum_ack.map(|age| age.as_millis() as u64),
        serving: status.not_serving_reason().is_none(),
        not_serving_reason: status.not_serving_reason().unwrap_or_default(),
        voting: status.voting,
        http_address: http_address.to_string(),
        epoch: status.epoch,
        compression_dictionary: status.compression_dictionary,
        peer_address: peer_address.to_string(),
    }
}

pub fn membership_response(
    changed: MembershipChanged,
    last_log_index: u64,
) -> pb::MembershipResponse {
    pb::MembershipResponse {
        log_index: changed.log_index,
        members: members(&changed.members, last_log_index),
    }
}

/// The leader's answer to a forwarded membership change.
pub fn membership_from_wire(response: pb::MembershipResponse) -> MembershipChanged {
    MembershipChanged {
        log_index: response.log_index,
        members: response
            .members
            .into_iter()
            .map(|member| MemberStatus {
                node_id: member.node_id,
                address: member.address,
                peer_address: member.peer_address,
                voter: member.role == "voter",
                matched_index: member.matched_index,
                last_contact: member.last_contact_ms.map(std::time::Duration::from_millis),
            })
            .collect(),
    }
}

pub fn leader_transferred(transferred: LeaderTransferred) -> pb::TransferLeaderResponse {
    pb::TransferLeaderResponse {
        leader_id: transferred.leader_id,
        term: transferred.term,
        leader_address: transferred.leader_address.unwrap_or_default(),
        previous_leader_id: transferred.previous_leader_id,
    }
}

/// The leader's answer to a forwarded leadership transfer.
pub fn leader_transferred_from_wire(response: pb::TransferLeaderResponse) -> LeaderTransferred {
    LeaderTransferred {
        leader_id: response.leader_id,
        term: response.term,
        leader_address: (!response.leader_address.is_empty()).then_some(response.leader_address),
        previous_leader_id: response.previous_leader_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_request_survives_the_trip_to_the_domain_and_back() {
        let wire = pb::AppendRequest {
            stream: "orders-1".to_string(),
            events: vec![pb::EventData {
                id: String::new(),
                r#type: "T".to_string(),
                content_type: "text/plain".to_string(),
                data: bytes::Bytes::from_static(b"x"),
                metadata: [("b", "2"), ("a", "1")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
            expected_version: Some(3),
            idempotency_key: Some("k".to_string()),
        };
        let domain = append_request(wire.clone());
        assert_eq!(
            domain.events[0].metadata,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ],
            "metadata sorted by key"
        );
        assert_eq!(append_request_to_wire(domain), wire);
    }

    #[test]
    fn wire_only_mistakes_are_refused() {
        let read = |target, from, from_timestamp_ms, direction, consistency| pb::ReadRequest {
            filter: None,
            target,
            from,
            max_count: 0,
            direction,
            consistency,
            at_least_position: 0,
            from_timestamp_ms,
        };
        let all = Some(pb::read_request::Target::All(pb::AllStreams {}));
        for request in [
            read(None, None, None, 0, 0),
            read(all.clone(), Some(1), Some(2), 0, 0),
            read(all.clone(), None, None, 7, 0),
            read(all.clone(), None, None, 0, 9),
        ] {
            assert!(matches!(
                read_request(request),
                Err(ServiceError::InvalidArgument(_))
            ));
        }
        let ok = read_request(read(all, None, Some(5), 1, 1)).expect("valid");
        assert_eq!(ok.start, ReadStart::Time(5));
        assert!(ok.backward);
        assert_eq!(ok.consistency, Consistency::AtLeast(0));
    }
}
