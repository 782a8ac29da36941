//! What is current on a node, gathered once per scrape (and per status page poll): Raft
//! indexes, replication, storage, subscriptions and consumer groups. Gathering reads the
//! store (consumer lag), so it is async; [`StateCollector`] then encodes the last gathering.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::raft::RaftHandle;
use crate::raft::handle::NodeStatus;
use crate::raft::handle::Role;
use crate::service::event_log::EventLogService;

/// Groups with labelled metrics; past it only the totals count them (label cardinality stays
/// bounded however many groups there are).
pub const MAX_LABELLED_GROUPS: usize = 64;

/// Events a filtered group's lag count looks at, per group and gathering: past it the count is
/// a lower bound (`lag_exact` false), so a scrape's cost stays bounded however far behind a
/// group is.
pub const METRICS_LAG_SCAN: u64 = 10_000;
/// Consumer groups are read at most this often: scrapes, page polls and the sampler within it
/// share one reading.
const GROUPS_FRESH_FOR: Duration = Duration::from_secs(2);

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One consumer group, as this node's store has it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupState {
    pub name: String,
    /// Matching events not yet settled.
    pub lag_events: u64,
    /// Whether `lag_events` is exact (a filtered group's count stops after a bound).
    pub lag_exact: bool,
    /// The age of the oldest unsettled event (0 when none).
    pub lag_seconds: f64,
    pub in_flight: u64,
    pub dead_letters: u64,
}

/// A node's state at one moment.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub status: NodeStatus,
    pub database_bytes: u64,
    pub subscriptions: usize,
    pub subscriptions_behind: crate::service::subscribe::SubscriptionsBehind,
    /// The first [`MAX_LABELLED_GROUPS`] groups by name.
    pub groups: Vec<GroupState>,
    /// Every group, those past the first [`MAX_LABELLED_GROUPS`] included.
    pub group_count: u64,
    pub dead_letters_total: u64,
}

/// Consumer groups as read at one moment.
#[derive(Clone, Debug, Default)]
struct Groups {
    labelled: Vec<GroupState>,
    count: u64,
    dead_letters: u64,
}

/// Gathers a node's state.
#[derive(Clone)]
pub struct StateSource {
    handle: RaftHandle,
    event_log: Arc<EventLogService>,
    database: PathBuf,
    /// The last reading of the groups, and when it was taken; one reading at a time.
    groups: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Groups)>>>,
}

impl StateSource {
    pub fn new(handle: RaftHandle, event_log: Arc<EventLogService>, data_dir: PathBuf) -> Self {
        Self {
            handle,
            event_log,
            database: data_dir.join(evlog_raft_store::schema::DATABASE_FILE),
            groups: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    pub fn handle(&self) -> &RaftHandle {
        &self.handle
    }

    /// The state now: this node's own view (no read index: a page or a scrape must answer on
    /// a node that has lost its leader too).
    pub async fn gather(&self) -> NodeState {
        let status = self.handle.status();
        let head = status.head_position;
        let database_bytes = std::fs::metadata(&self.database)
            .map(|meta| meta.len())
            .unwrap_or(0);
        let groups = self.groups().await;
        NodeState {
            status,
            database_bytes,
            subscriptions: self.event_log.active_subscriptions(),
            subscriptions_behind: self.event_log.subscriptions_behind(head),
            groups: groups.labelled,
            group_count: groups.count,
            dead_letters_total: groups.dead_letters,
        }
    }

    /// The groups, read again when the last reading is older than [`GROUPS_FRESH_FOR`].
    async fn groups(&self) -> Groups {
        let mut last = self.groups.lock().await;
        if let Some((at, groups)) = last.as_ref()
            && at.elapsed() < GROUPS_FRESH_FOR
        {
            return groups.clone();
        }
        let groups = self.read_groups().await;
        *last = Some((std::time::Instant::now(), groups.clone()));
        groups
    }

    async fn read_groups(&self) -> Groups {
        const PAGE: usize = 1_000;
        let reader = self.handle.reader();
        let now_ms = unix_ms();
        let mut labelled = Vec::new();
        let mut count = 0u64;
        let mut dead_letters = 0u64;
        let mut after = None;
        loop {
            let Ok(records) = reader.list_consumers(after.clone(), PAGE).await else {
                break;
            };
            let last = records.len() < PAGE;
            after = records.last().map(|record| record.name.clone());
            for record in records {
                count += 1;
                dead_letters += record.stats.dead_letters;
                if labelled.len() == MAX_LABELLED_GROUPS {
                    continue;
                }
                let name = record.name.clone();
                let in_flight = record.stats.in_flight;
                let group_dead_letters = record.stats.dead_letters;
                let Ok(lag) = reader.consumer_lag(record, METRICS_LAG_SCAN).await else {
                    continue;
                };
                labelled.push(GroupState {
                    name,
                    lag_events: lag.events,
                    lag_exact: lag.exact,
                    lag_seconds: lag
                        .oldest_unsettled_ms
                        .map_or(0.0, |oldest| now_ms.saturating_sub(oldest) as f64 / 1e3),
                    in_flight,
                    dead_letters: group_dead_letters,
                });
            }
            if last {
                break;
            }
        }
        Groups {
            labelled,
            count,
            dead_letters,
        }
    }
}

/// Encodes the state gathered last ([`StateCollector::set`]) at each scrape.
#[derive(Clone, Debug, Default)]
pub struct StateCollector {
    latest: Arc<Mutex<Option<NodeState>>>,
}

impl StateCollector {
    pub fn set(&self, state: NodeState) {
        *self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(state);
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        unit.as_ref(),
        MetricType::Gauge,
    )?)
}

/// A gauge with one sample per label set.
fn labelled_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: &[(Vec<(&'static str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn bool_value(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let status = &state.status;
        let e = &mut encoder;
        gauge(
            e,
            "evlog_raft_term",
            "The current Raft term",
            None,
            status.term as f64,
        )?;
        gauge(
            e,
            "evlog_raft_is_leader",
            "1 if this node is the leader",
            None,
            bool_value(status.role == Role::Leader),
        )?;
        gauge(
            e,
            "evlog_raft_has_leader",
            "1 if this node knows a leader",
            None,
            bool_value(status.leader_id.is_some()),
        )?;
        gauge(
            e,
            "evlog_raft_last_log_index",
            "The last index in this node's Raft log",
            None,
            status.last_log_index as f64,
        )?;
        gauge(
            e,
            "evlog_raft_committed_index",
            "The last Raft index this node knows committed",
            None,
            status.committed_index as f64,
        )?;
        gauge(
            e,
            "evlog_raft_applied_index",
            "The last Raft index applied on this node",
            None,
            status.applied_index as f64,
        )?;
        gauge(
            e,
            "evlog_raft_apply_lag_entries",
            "Committed entries not yet applied on this node",
            None,
            status.committed_index.saturating_sub(status.applied_index) as f64,
        )?;
        gauge(
            e,
            "evlog_node_serving",
            "1 if this node serves reads (it has caught up with the leader since it started)",
            None,
            bool_value(status.not_serving_reason().is_none()),
        )?;
        let peers: Vec<_> = status
            .members
            .iter()
            .filter(|member| member.node_id != status.node_id)
            .collect();
        if status.role == Role::Leader {
            let lag: Vec<_> = peers
                .iter()
                .map(|member| {
                    (
                        vec![("peer", member.node_id.to_string())],
                        status
                            .last_log_index
                            .saturating_sub(member.matched_index.unwrap_or(0))
                            as f64,
                    )
                })
                .collect();
            labelled_gauge(
                e,
                "evlog_raft_replication_lag_entries",
                "Entries the leader has that each peer has not acknowledged (leader)",
                None,
                &lag,
            )?;
            let contact: Vec<_> = peers
                .iter()
                .filter_map(|member| {
                    Some((
                        vec![("peer", member.node_id.to_string())],
                        seconds(member.last_contact?),
                    ))
                })
                .collect();
            labelled_gauge(
                e,
                "evlog_raft_peer_last_contact",
                "Time since each peer last acknowledged the leader (leader)",
                Some(Unit::Seconds),
                &contact,
            )?;
        }
        gauge(
            e,
            "evlog_store_file_size",
            "Size of the store's database file",
            Some(Unit::Bytes),
            state.database_bytes as f64,
        )?;
        gauge(
            e,
            "evlog_log_head_position",
            "The global position of the last event applied on this node",
            None,
            status.head_position as f64,
        )?;
        gauge(
            e,
            "evlog_log_events",
            "Events stored on this node (every position up to the head: nothing is removed yet)",
            None,
            status.head_position as f64,
        )?;
        gauge(
            e,
            "evlog_subscriptions_active",
            "Subscriptions this node serves now",
            None,
            state.subscriptions as f64,
        )?;
        gauge(
            e,
            "evlog_subscriptions_behind",
            "Subscriptions on this node not at the head (catching up, or fallen behind)",
            None,
            state.subscriptions_behind.behind as f64,
        )?;
        gauge(
            e,
            "evlog_subscriptions_max_lag_events",
            "The most events a subscription to all on this node has to read to reach the head",
            None,
            state.subscriptions_behind.max_all_lag_events as f64,
        )?;
        gauge(
            e,
            "evlog_consumer_groups",
            "Consumer groups",
            None,
            state.group_count as f64,
        )?;
        gauge(
            e,
            "evlog_consumer_dead_letters_all",
            "Dead letters kept, in every group",
            None,
            state.dead_letters_total as f64,
        )?;
        let per_group = |value: fn(&GroupState) -> f64| -> Vec<_> {
            state
                .groups
                .iter()
                .map(|group| (vec![("group", group.name.clone())], value(group)))
                .collect()
        };
        labelled_gauge(
            e,
            "evlog_consumer_lag_events",
            "Matching events a group has not settled (first 64 groups by name)",
            None,
            &per_group(|group| group.lag_events as f64),
        )?;
        labelled_gauge(
            e,
            "evlog_consumer_lag",
            "Age of the oldest event a group has not settled (first 64 groups by name)",
            Some(Unit::Seconds),
            &per_group(|group| group.lag_seconds),
        )?;
        labelled_gauge(
            e,
            "evlog_consumer_in_flight",
            "Deliveries a group has sent and not had settled (first 64 groups by name)",
            None,
            &per_group(|group| group.in_flight as f64),
        )?;
        labelled_gauge(
            e,
            "evlog_consumer_dead_letters",
            "Dead letters a group keeps (first 64 groups by name)",
            None,
            &per_group(|group| group.dead_letters as f64),
        )?;
        Ok(())
    }
}
