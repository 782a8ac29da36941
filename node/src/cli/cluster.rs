//! `evlog cluster …`: see and change the membership, and move the leadership. Every change
//! goes to the leader (a follower hands it on); `members` shows the leader's view, with each
//! reachable node's own state beside it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use clap::Args;
use clap::Subcommand;
use evlog_client::EvlogClient;
use evlog_proto::v1 as pb;

use super::ClientArgs;
use super::status_error;

/// How long one node's status may take when the membership is gathered.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the members: id, address, voter or learner, who leads, replication lag.
    Members,
    /// Add node ID, serving clients at ADDR and peers at --peer-address, as a learner (it
    /// receives the log but does not vote); answers once it has caught up.
    AddLearner {
        id: u64,
        /// The node's client gRPC address (its --advertise), e.g. 127.0.0.1:50054.
        addr: String,
        /// The node's peer address (its --peer-advertise) [default: ADDR's host with its port
        /// + 2000, the default --peer-listen].
        #[arg(long)]
        peer_address: Option<String>,
    },
    /// Make the learner ID a voter (add it as a learner first).
    Promote { id: u64 },
    /// Remove voter ID from the cluster (it stops receiving the log).
    Remove { id: u64 },
    /// Hand the leadership to voter ID (default: the most caught-up voting follower); answers
    /// once it leads. A planned change: no election timeout.
    TransferLeader { id: Option<u64> },
}

pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let json = args.client.json;
    match args.command {
        ClusterCommand::Members => members(&client, json).await,
        ClusterCommand::AddLearner {
            id,
            addr,
            peer_address,
        } => {
            let response = client
                .add_learner(id, addr, peer_address.unwrap_or_default())
                .await
                .map_err(status_error)?;
            print_changed(&format!("node {id} added as a learner"), &response, json);
            Ok(())
        }
        ClusterCommand::Promote { id } => {
            let view = leader_view(&client).await?;
            let member = view.members.iter().find(|member| member.node_id == id);
            let Some(member) = member else {
                anyhow::bail!(
                    "node {id} is not a member: add it first with `evlog cluster add-learner \
                     {id} ADDR`"
                );
            };
            if member.role == "voter" {
                anyhow::bail!("node {id} is a voter already");
            }
            let mut voters = voters(&view);
            voters.insert(id);
            let response = client
                .change_membership(voters.into_iter().collect())
                .await
                .map_err(status_error)?;
            print_changed(&format!("node {id} is a voter"), &response, json);
            Ok(())
        }
        ClusterCommand::Remove { id } => {
            let view = leader_view(&client).await?;
            let mut voters = voters(&view);
            if !voters.remove(&id) {
                anyhow::bail!(
                    "node {id} is not a voter (the voters are {:?}); only voters can be removed",
                    voters
                );
            }
            if voters.is_empty() {
                anyhow::bail!("node {id} is the only voter: the cluster cannot lose it");
            }
            let response = client
                .change_membership(voters.into_iter().collect())
                .await
                .map_err(status_error)?;
            print_changed(&format!("node {id} removed"), &response, json);
            Ok(())
        }
        ClusterCommand::TransferLeader { id } => {
            let response = client.transfer_leader(id).await.map_err(status_error)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "leader_id": response.leader_id, "term": response.term,
                        "leader_address": response.leader_address,
                        "previous_leader_id": response.previous_leader_id,
                    })
                );
            } else if response.leader_id == response.previous_leader_id {
                println!(
                    "node {} leads already (term {})",
                    response.leader_id, response.term
                );
            } else {
                println!(
                    "node {} leads now (term {}, at {}), after node {}",
                    response.leader_id,
                    response.term,
                    response.leader_address,
                    response.previous_leader_id
                );
            }
            Ok(())
        }
    }
}

fn voters(view: &pb::StatusResponse) -> BTreeSet<u64> {
    view.members
        .iter()
        .filter(|member| member.role == "voter")
        .map(|member| member.node_id)
        .collect()
}

/// Every endpoint's status (those that answer).
async fn statuses(client: &EvlogClient) -> Vec<pb::StatusResponse> {
    let asked = (0..client.endpoints().len()).map(|index| client.status(index, STATUS_TIMEOUT));
    futures::future::join_all(asked)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

/// The leader's status when an endpoint is the leader (it knows each member's replication),
/// else the view of the node with the highest term.
pub(super) async fn leader_view(client: &EvlogClient) -> anyhow::Result<pb::StatusResponse> {
    best_view(statuses(client).await)
}

fn best_view(statuses: Vec<pb::StatusResponse>) -> anyhow::Result<pb::StatusResponse> {
    statuses
        .into_iter()
        .max_by_key(|status| (status.role == "leader", status.term, status.committed_index))
        .ok_or_else(|| anyhow::anyhow!("no endpoint answered"))
}

async fn members(client: &EvlogClient, json: bool) -> anyhow::Result<()> {
    let statuses = statuses(client).await;
    let own: BTreeMap<u64, pb::StatusResponse> = statuses
        .iter()
        .map(|status| (status.node_id, status.clone()))
        .collect();
    let view = best_view(statuses)?;
    if json {
        let members: Vec<_> = view
            .members
            .iter()
            .map(|member| {
                let state = own.get(&member.node_id);
                serde_json::json!({
                    "node_id": member.node_id, "address": member.address,
                    "peer_address": member.peer_address, "role": member.role,
                    "leader": member.node_id == view.leader_id,
                    "matched_index": member.matched_index,
                    "replication_lag": member.replication_lag,
                    "state": state.map(|state| state.role.clone()),
                    "term": state.map(|state| state.term),
                    "applied_index": state.map(|state| state.applied_index),
                    "serving": state.map(|state| state.serving),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "leader_id": view.leader_id, "leader_address": view.leader_address,
                "term": view.term, "seen_by": view.node_id, "members": members,
            })
        );
        return Ok(());
    }
    println!(
        "leader: {} (term {}), as node {} sees it",
        if view.leader_id == 0 {
            "none known".to_string()
        } else {
            format!("node {} at {}", view.leader_id, view.leader_address)
        },
        view.term,
        view.node_id
    );
    println!(
        "{:<4} {:<22} {:<8} {:<7} {:>10} {:>8}  {:<10} {:>10} {:<7}",
        "ID", "ADDRESS", "ROLE", "LEADER", "MATCHED", "LAG", "STATE", "APPLIED", "SERVING"
    );
    for member in &view.members {
        let state = own.get(&member.node_id);
        let dash = || "-".to_string();
        println!(
            "{:<4} {:<22} {:<8} {:<7} {:>10} {:>8}  {:<10} {:>10} {:<7}",
            member.node_id,
            member.address,
            member.role,
            if member.node_id == view.leader_id {
                "*"
            } else {
                ""
            },
            member
                .matched_index
                .map_or_else(dash, |index| index.to_string()),
            member
                .replication_lag
                .map_or_else(dash, |lag| lag.to_string()),
            state.map_or_else(|| "unreached".to_string(), |state| state.role.clone()),
            state.map_or_else(dash, |state| state.applied_index.to_string()),
            state.map_or_else(dash, |state| {
                if state.serving { "yes" } else { "no" }.to_string()
            }),
        );
    }
    Ok(())
}

fn print_changed(what: &str, response: &pb::MembershipResponse, json: bool) {
    if json {
        let members: Vec<_> = response
            .members
            .iter()
            .map(|member| {
                serde_json::json!({
                    "node_id": member.node_id, "address": member.address,
                    "peer_address": member.peer_address, "role": member.role,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"log_index": response.log_index, "members": members})
        );
        return;
    }
    let list: Vec<String> = response
        .members
        .iter()
        .map(|member| format!("{} ({})", member.node_id, member.role))
        .collect();
    println!(
        "{what} (log index {}); members: {}",
        response.log_index,
        list.join(", ")
    );
}
