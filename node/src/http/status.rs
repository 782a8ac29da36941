//! `/status.json`: this node's view of the cluster, each member's own answer to
//! `Cluster.Status` (asked concurrently, [`PEER_TIMEOUT`] each), the last leader changes, the
//! last 15 minutes of samples, consumer groups, and the alarms the page shows in red.

use std::time::Duration;

use evlog_proto::v1 as pb;
use evlog_proto::v1::cluster_client::ClusterClient;
use serde_json::Value;
use serde_json::json;

use super::HttpState;
use crate::raft::handle::MemberStatus;

/// How long a member may take to answer the status page's question.
const PEER_TIMEOUT: Duration = Duration::from_millis(500);
/// Members asked; a larger membership is shown without the rest's own answers.
const MAX_MEMBERS_ASKED: usize = 16;

async fn member_status(state: &HttpState, address: &str) -> Option<pb::StatusResponse> {
    let channel = state.members.get(address).ok()?;
    let mut request = tonic::Request::new(pb::StatusRequest {});
    request.set_timeout(PEER_TIMEOUT);
    match tokio::time::timeout(PEER_TIMEOUT, ClusterClient::new(channel).status(request)).await {
        Ok(Ok(response)) => Some(response.into_inner()),
        _ => None,
    }
}

fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

pub async fn json(state: &HttpState) -> Value {
    let node = state.source.gather().await;
    let status = &node.status;
    let own_http = state.http_address.clone();
    let asked =
        futures::future::join_all(
            status
                .members
                .iter()
                .take(MAX_MEMBERS_ASKED)
                .filter(|member| member.node_id != status.node_id)
                .map(|member| async move {
                    (member.node_id, member_status(state, &member.address).await)
                }),
        )
        .await;
    let answers: std::collections::BTreeMap<u64, pb::StatusResponse> = asked
        .into_iter()
        .filter_map(|(id, answer)| Some((id, answer?)))
        .collect();
    // Last contact and replication lag are the leader's to know: from its answer, or ours.
    let leader_view: Vec<pb::Member> = match status.leader_id {
        Some(leader) if leader == status.node_id => {
            crate::grpc::convert::members(&status.members, status.last_log_index)
        }
        Some(leader) => answers
            .get(&leader)
            .map(|answer| answer.members.clone())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut badges = Vec::new();
    if status.leader_id.is_none() {
        badges.push(json!({"level": "red", "text": "no leader"}));
    }
    let members: Vec<Value> = status
        .members
        .iter()
        .map(|member: &MemberStatus| {
            let seen = leader_view
                .iter()
                .find(|seen| seen.node_id == member.node_id);
            let own = member.node_id == status.node_id;
            let answer = answers.get(&member.node_id);
            let reachable = own || answer.is_some();
            if !reachable {
                badges.push(json!({
                    "level": "red",
                    "text": format!("node {} unreachable", member.node_id),
                }));
            }
            let (role, term, serving, head, http) = if own {
                (
                    status.role.as_str().to_string(),
                    status.term,
                    status.not_serving_reason().is_none(),
                    status.head_position,
                    own_http.clone(),
                )
            } else if let Some(answer) = answer {
                (
                    answer.role.clone(),
                    answer.term,
                    answer.serving,
                    answer.head_position,
                    answer.http_address.clone(),
                )
            } else {
                ("unreachable".to_string(), 0, false, 0, String::new())
            };
            json!({
                "id": member.node_id,
                "address": member.address,
                "http_address": http,
                "voter": member.voter,
                "reachable": reachable,
                "role": role,
                "term": term,
                "serving": serving,
                "head_position": head,
                "last_contact_ms": seen.and_then(|seen| seen.last_contact_ms),
                "replication_lag": seen.and_then(|seen| seen.replication_lag),
            })
        })
        .collect();
    let growing = state.history.growing_groups();
    let groups: Vec<Value> = node
        .groups
        .iter()
        .map(|group| {
            let is_growing = growing.contains(&group.name);
            if is_growing {
                badges.push(json!({
                    "level": "red",
                    "text": format!("group {} is falling behind", group.name),
                }));
            }
            if group.dead_letters > 0 {
                badges.push(json!({
                    "level": "red",
                    "text": format!("group {} has {} dead letters", group.name, group.dead_letters),
                }));
            }
            json!({
                "name": group.name,
                "lag_events": group.lag_events,
                "lag_exact": group.lag_exact,
                "lag_seconds": group.lag_seconds,
                "in_flight": group.in_flight,
                "dead_letters": group.dead_letters,
                "growing": is_growing,
            })
        })
        .collect();
    let leader_changes: Vec<Value> = state
        .metrics
        .leader_history()
        .iter()
        .rev()
        .map(|change| json!({"at_ms": change.at_ms, "term": change.term, "leader_id": change.leader_id}))
        .collect();
    let series: Vec<Value> = state
        .history
        .samples()
        .iter()
        .map(|sample| {
            json!({
                "at_ms": sample.at_ms,
                "appends_per_second": sample.appends_per_second,
                "append_p99_ms": sample.append_p99_ms,
                "fsync_p99_ms": sample.fsync_p99_ms,
            })
        })
        .collect();
    json!({
        "node_id": status.node_id,
        "role": status.role.as_str(),
        "term": status.term,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "serving": status.not_serving_reason().is_none(),
        "not_serving_reason": status.not_serving_reason(),
        "head_position": status.head_position,
        "last_log_index": status.last_log_index,
        "committed_index": status.committed_index,
        "applied_index": status.applied_index,
        "millis_since_quorum_ack": millis(status.since_quorum_ack),
        "database_bytes": node.database_bytes,
        "subscriptions": node.subscriptions,
        "members": members,
        "leader_changes": leader_changes,
        "series": series,
        "groups": groups,
        "group_count": node.group_count,
        "badges": badges,
    })
}
