//! `evlog status`: every endpoint's view of the cluster.

use std::time::Duration;

use clap::Args;

use super::ClientArgs;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let mut failures = 0;
    for (index, endpoint) in client.endpoints().iter().enumerate() {
        match client.status(index, Duration::from_secs(2)).await {
            Ok(status) => {
                if args.client.json {
                    let members: Vec<_> = status
                        .members
                        .iter()
                        .map(|m| serde_json::json!({"node_id": m.node_id, "address": m.address, "peer_address": m.peer_address, "role": m.role, "matched_index": m.matched_index, "replication_lag": m.replication_lag}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "endpoint": endpoint, "node_id": status.node_id, "role": status.role, "term": status.term,
                            "leader_id": status.leader_id, "leader_address": status.leader_address,
                            "last_log_index": status.last_log_index, "committed_index": status.committed_index,
                            "applied_index": status.applied_index, "head_position": status.head_position,
                            "snapshot_index": status.snapshot_index, "purged_index": status.purged_index,
                            "millis_since_quorum_ack": status.millis_since_quorum_ack, "members": members,
                            "serving": status.serving, "not_serving_reason": status.not_serving_reason,
                            "voting": status.voting, "epoch": status.epoch,
                            "peer_address": status.peer_address,
                            "compression_dictionary": status.compression_dictionary,
                        })
                    );
                } else {
                    let quorum_ack = status
                        .millis_since_quorum_ack
                        .map(|ms| format!(" quorum ack {ms} ms ago"))
                        .unwrap_or_default();
                    println!(
                        "{endpoint:<22} node {:<3} {:<9} term {:<4} leader {:<3} log {:<8} committed {:<8} applied {:<8} head position {}{quorum_ack}",
                        status.node_id,
                        status.role,
                        status.term,
                        status.leader_id,
                        status.last_log_index,
                        status.committed_index,
                        status.applied_index,
                        status.head_position
                    );
                }
            }
            Err(error) => {
                failures += 1;
                if args.client.json {
                    println!(
                        "{}",
                        serde_json::json!({"endpoint": endpoint, "error": error.message()})
                    );
                } else {
                    println!("{endpoint:<22} unreachable: {}", error.message());
                }
            }
        }
    }
    if failures == client.endpoints().len() {
        anyhow::bail!("no endpoint answered");
    }
    Ok(())
}
