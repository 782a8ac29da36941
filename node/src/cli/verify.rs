//! `evlog verify`: compares every member's copy of the log. The leader proposes a check entry
//! through the Raft log, and each member, as it applies it, hashes its events at positions
//! 1..=P as the log stands at that entry (P the leader's head when the command began), with
//! checkpoints: every member hashes the same state, whatever retention removes meanwhile. A
//! member that differs from the majority is checked again over the first differing step,
//! position by position, to name the first position where it differs.

use std::time::Duration;

use clap::Args;
use evlog_client::EvlogClient;
use evlog_proto::v1 as pb;
use serde::Serialize;

use super::ClientArgs;
use super::status_error;

/// Checkpoints asked for in the first round.
const FIRST_ROUND_CHECKPOINTS: u64 = 1_000;
/// How long one `Checksum` call waits on the node for its result before asking again.
const CHECKSUM_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Compare positions 1..=N [default: the log's head when the command begins].
    #[arg(long)]
    pub up_to: Option<u64>,
    /// How long to wait for the members' hashes (about 8 s per million events here).
    #[arg(long, default_value_t = 600)]
    pub wait_s: u64,
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
        leader: addresses
            .iter()
            .position(|(node_id, _)| *node_id == view.leader_id)
            .unwrap_or(0),
        wait: Duration::from_secs(args.wait_s),
    };
    let up_to = args.up_to.unwrap_or(view.head_position);
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
        let sums = members.checksums(1, up_to, step).await?;
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

/// The members to compare, and how long to wait for them.
struct Members {
    client: EvlogClient,
    /// Of one call.
    timeout: Duration,
    /// The member that led when the command began.
    leader: usize,
    /// For the members' hashes of one check.
    wait: Duration,
}

impl Members {
    /// Starts a check of `from..=to` and gathers every member's result (an error as text).
    async fn checksums(
        &self,
        from: u64,
        to: u64,
        step: u64,
    ) -> anyhow::Result<Vec<Result<pb::ChecksumResponse, String>>> {
        let check_index = self.start(from, to, step).await?;
        let asked = (0..self.client.endpoints().len()).map(|index| self.result(index, check_index));
        Ok(futures::future::join_all(asked).await)
    }

    /// Has the leader propose the check (the leader first, then the others: leadership may
    /// have moved); returns the check entry's log index.
    async fn start(&self, from: u64, to: u64, step: u64) -> anyhow::Result<u64> {
        let members = self.client.endpoints().len();
        let order =
            std::iter::once(self.leader).chain((0..members).filter(|index| *index != self.leader));
        let mut refusals = Vec::new();
        for index in order {
            let mut request = tonic::Request::new(pb::ChecksumRequest {
                from_position: from,
                to_position: to,
                step,
            });
            request.set_timeout(self.timeout);
            match self.client.maintenance(index).start_checksum(request).await {
                Ok(started) => return Ok(started.into_inner().check_index),
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(status_error(status));
                }
                Err(status) => refusals.push(status_error(status).to_string()),
            }
        }
        anyhow::bail!("no member started the check: {}", refusals.join("; "))
    }

    /// Member `index`'s result of the check at `check_index`, once it has hashed it.
    async fn result(&self, index: usize, check_index: u64) -> Result<pb::ChecksumResponse, String> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let mut request = tonic::Request::new(pb::GetChecksumRequest {
                check_index,
                wait_ms: CHECKSUM_POLL.as_millis() as u32,
            });
            request.set_timeout(CHECKSUM_POLL + self.timeout);
            let response = self
                .client
                .maintenance(index)
                .checksum(request)
                .await
                .map_err(|status| status_error(status).to_string())?
                .into_inner();
            if response.done {
                return if response.error.is_empty() {
                    Ok(response)
                } else {
                    Err(response.error)
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no hash within {} s (--wait-s)",
                    self.wait.as_secs()
                ));
            }
        }
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
        // A new check: both members hash the range as the log stands at its entry.
        let sums = self.checksums(from, to, 1).await?;
        let (expected, found) = match (&sums[reference], &sums[index]) {
            (Ok(expected), Ok(found)) => (expected, found),
            (Err(error), _) | (_, Err(error)) => anyhow::bail!("{error}"),
        };
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
