//! `evlog verify`: compares every member's copy of the log. Each member hashes its events at
//! positions 1..=P, P the lowest head among them (events at applied positions never change,
//! so they all hash the same prefix), with checkpoints; a member that differs from the
//! majority is asked again over the first differing step, position by position, to name the
//! first position where it differs.

use std::time::Duration;

use clap::Args;
use evlog_client::EvlogClient;
use evlog_proto::v1 as pb;
use serde::Serialize;

use super::ClientArgs;
use super::status_error;

/// Checkpoints asked for in the first round.
const FIRST_ROUND_CHECKPOINTS: u64 = 1_000;
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Compare positions 1..=N [default: the lowest head among the members].
    #[arg(long)]
    pub up_to: Option<u64>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    node_id: u64,
    address: String,
    /// Absent when the node did not answer.
    hash: Option<String>,
    events: Option<u64>,
    agrees: bool,
    /// The first position where this node's events differ from the majority's.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_difference: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    agree: bool,
    up_to_position: u64,
    nodes: Vec<NodeReport>,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let timeout = Duration::from_millis(args.client.timeout_ms);
    let view = super::cluster::leader_view(&client).await?;
    let addresses: Vec<(u64, String)> = view
        .members
        .iter()
        .map(|member| (member.node_id, member.address.clone()))
        .collect();
    if addresses.is_empty() {
        anyhow::bail!("node {} knows no members", view.node_id);
    }
    let members = Members {
        client: args.client.client_of(
            &addresses
                .iter()
                .map(|(_, address)| address.clone())
                .collect::<Vec<_>>(),
        )?,
        timeout,
    };
    let up_to = match args.up_to {
        Some(up_to) => up_to,
        None => {
            let heads = futures::future::join_all(
                (0..addresses.len()).map(|index| members.client.status(index, STATUS_TIMEOUT)),
            )
            .await;
            heads
                .iter()
                .filter_map(|status| status.as_ref().ok())
                .map(|status| status.head_position)
                .min()
                .ok_or_else(|| anyhow::anyhow!("no member answered"))?
        }
    };
    let mut nodes: Vec<NodeReport> = addresses
        .iter()
        .map(|(node_id, address)| NodeReport {
            node_id: *node_id,
            address: address.clone(),
            hash: None,
            events: None,
            agrees: false,
            first_difference: None,
            error: None,
        })
        .collect();
    let mut agree = true;
    if up_to > 0 {
        let step = up_to.div_ceil(FIRST_ROUND_CHECKPOINTS).max(1);
        let sums = members.checksums(1, up_to, step).await;
        let majority = majority_hash(&sums);
        for (index, sum) in sums.iter().enumerate() {
            match sum {
                Ok(sum) => {
                    nodes[index].hash = Some(format!("{:016x}", sum.hash));
                    nodes[index].events = Some(sum.events);
                    nodes[index].agrees = Some(sum.hash) == majority;
                }
                Err(error) => nodes[index].error = Some(error.clone()),
            }
            agree &= nodes[index].agrees;
        }
        // Name the first differing position of each member that differs.
        if let Some(reference) = sums
            .iter()
            .position(|sum| matches!(sum, Ok(sum) if Some(sum.hash) == majority))
        {
            for index in 0..sums.len() {
                let Ok(sum) = &sums[index] else { continue };
                if nodes[index].agrees {
                    continue;
                }
                let Ok(expected) = &sums[reference] else {
                    continue;
                };
                nodes[index].first_difference = members
                    .first_difference((reference, expected), (index, sum), step, up_to)
                    .await?;
            }
        }
    }
    let report = Report {
        agree,
        up_to_position: up_to,
        nodes,
    };
    if args.client.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if !report.agree {
        anyhow::bail!("the members' logs do not agree up to position {up_to}");
    }
    Ok(())
}

/// The members to compare, and how long each call may take.
struct Members {
    client: EvlogClient,
    timeout: Duration,
}

impl Members {
    /// Each member's checksum of `from..=to` (an error as text).
    async fn checksums(
        &self,
        from: u64,
        to: u64,
        step: u64,
    ) -> Vec<Result<pb::ChecksumResponse, String>> {
        let asked =
            (0..self.client.endpoints().len()).map(|index| self.checksum(index, from, to, step));
        futures::future::join_all(asked).await
    }

    async fn checksum(
        &self,
        index: usize,
        from: u64,
        to: u64,
        step: u64,
    ) -> Result<pb::ChecksumResponse, String> {
        let mut request = tonic::Request::new(pb::ChecksumRequest {
            from_position: from,
            to_position: to,
            step,
        });
        request.set_timeout(self.timeout);
        self.client
            .maintenance(index)
            .checksum(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status_error(status).to_string())
    }

    /// The first position where member `index` differs from member `reference`, given their
    /// checksums of 1..=up_to in steps of `step`.
    async fn first_difference(
        &self,
        (reference, expected): (usize, &pb::ChecksumResponse),
        (index, found): (usize, &pb::ChecksumResponse),
        step: u64,
        up_to: u64,
    ) -> anyhow::Result<Option<u64>> {
        // The first step whose running hash differs; past the last full step, the tail.
        let differing_step = expected
            .checkpoints
            .iter()
            .zip(&found.checkpoints)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.checkpoints.len()) as u64;
        let from = differing_step * step + 1;
        let to = ((differing_step + 1) * step).min(up_to);
        if from > to {
            return Ok(None);
        }
        let ask = |member| async move {
            self.checksum(member, from, to, 1)
                .await
                .map_err(|error| anyhow::anyhow!(error))
        };
        let (expected, found) = tokio::try_join!(ask(reference), ask(index))?;
        let offset = expected
            .checkpoints
            .iter()
            .zip(&found.checkpoints)
            .position(|(a, b)| a != b);
        Ok(offset.map(|offset| from + offset as u64))
    }
}

/// The hash most members computed (ties: the first seen).
fn majority_hash(sums: &[Result<pb::ChecksumResponse, String>]) -> Option<u64> {
    let hashes: Vec<u64> = sums.iter().flatten().map(|sum| sum.hash).collect();
    hashes
        .iter()
        .max_by_key(|hash| {
            let count = hashes.iter().filter(|other| other == hash).count();
            // Prefer the earliest of equally common hashes.
            let first = hashes.iter().position(|other| other == *hash).unwrap_or(0);
            (count, usize::MAX - first)
        })
        .copied()
}

fn print_report(report: &Report) {
    if report.agree {
        println!(
            "all {} members agree on positions 1..={}",
            report.nodes.len(),
            report.up_to_position
        );
    } else {
        println!(
            "the members do NOT agree on positions 1..={}",
            report.up_to_position
        );
    }
    for node in &report.nodes {
        let state = match (&node.error, node.agrees, node.first_difference) {
            (Some(error), _, _) => format!("no answer: {error}"),
            (None, true, _) => "agrees".to_string(),
            (None, false, Some(position)) => format!("DIFFERS from position {position}"),
            (None, false, None) => "DIFFERS".to_string(),
        };
        println!(
            "  node {} at {}: {} events, hash {}: {state}",
            node.node_id,
            node.address,
            node.events
                .map_or("?".to_string(), |events| events.to_string()),
            node.hash.as_deref().unwrap_or("?"),
        );
    }
}
