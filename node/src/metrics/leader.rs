//! Leader changes and elections as this node sees them, counted and kept for the status page.

use std::sync::Arc;

use super::LeaderChange;
use super::Metrics;
use crate::raft::RaftHandle;
use crate::raft::handle::Leadership;
use crate::raft::handle::Role;

/// Watches who leads until the Raft core stops. A leader change is counted when a leader
/// becomes known that is not the last one known (as etcd counts
/// `leader_changes_seen_total`: losing the leader is not a change, a new one is); every
/// change, to none included, goes to the history. Each time this node becomes a candidate
/// counts as an election started.
pub async fn watch(handle: RaftHandle, metrics: Arc<Metrics>) {
    let mut last: Option<Leadership> = None;
    let mut last_known_leader = None;
    handle
        .watch_leadership(|now| {
            if now.role == Role::Candidate && last.is_none_or(|last| last.role != Role::Candidate) {
                metrics.elections_started.inc();
                tracing::info!(
                    term = now.term,
                    "election started: this node is a candidate"
                );
            }
            if let Some(leader) = now.leader_id {
                if last_known_leader.is_some_and(|known| known != leader) {
                    metrics.leader_changes.inc();
                }
                last_known_leader = Some(leader);
            }
            if last.is_none_or(|last| last.leader_id != now.leader_id) {
                match now.leader_id {
                    Some(leader) => tracing::info!(term = now.term, leader, "leader known"),
                    None => tracing::info!(term = now.term, "no leader known"),
                }
                metrics.leader_changed(LeaderChange {
                    at_ms: crate::metrics::state::unix_ms(),
                    term: now.term,
                    leader_id: now.leader_id,
                });
            }
            last = Some(now);
        })
        .await;
}
