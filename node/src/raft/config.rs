//! openraft's configuration, from the node's: the one place that builds it.

use crate::config::ConfigError;
use crate::config::NodeConfig;

/// The openraft configuration `config` implies (validated by openraft too).
pub fn raft_config(config: &NodeConfig) -> Result<openraft::Config, ConfigError> {
    let raft = openraft::Config {
        cluster_name: config.cluster_id.clone(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        install_snapshot_timeout: config.snapshot_transfer_timeout_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        // openraft's own purge is off: `log_purge` purges, keeping as many entries, and on a
        // leader also what a member needs after a snapshot it is being sent.
        max_in_snapshot_log_to_keep: u64::MAX,
        replication_lag_threshold: config
            .snapshot_threshold
            .saturating_add(config.log_keep_after_snapshot),
        enable_pre_vote: Some(true),
        // A restarted leader must win an election before it leads again: it sends entries
        // to its followers before its own fsync, so a crash can leave it without entries
        // they hold, and leading on in the same term would reuse their log ids.
        enable_leader_restore: Some(false),
        // A follower's log goes back only when it lost its data (a wiped or lost volume): it
        // never acknowledges an entry before its fsync. Such a node votes only once caught up
        // (see `RaftHandle::set_voting`), and the leader must then replicate to it from the
        // start; without this, openraft's leader keeps waiting for entries after the ones the
        // node had (it catches up only at the next write) and debug builds panic.
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    raft.validate()
        .map_err(|error| ConfigError(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_make_a_raft_config() {
        raft_config(&NodeConfig::default()).expect("defaults make a raft config");
    }
}
