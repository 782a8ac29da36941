//! `evlog consumer …` (manage consumer groups and their dead letters) and `evlog consume`
//! (be a member: print each delivery and settle it).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use clap::Subcommand;
use clap::ValueEnum;
use evlog_client::ConsumeOptions;
use evlog_proto::v1 as pb;

use super::ClientArgs;
use super::output::event_json;
use super::output::write_event;
use super::status_error;

#[derive(Debug, Args)]
pub struct ConsumerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: ConsumerCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Keyed,
    Shared,
    Exclusive,
}

#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Create a group (the same settings again: nothing changes).
    Create {
        name: String,
        /// Consume this stream (default: the whole log).
        #[arg(long)]
        stream: Option<String>,
        /// Only events of streams starting with this (repeatable).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
        /// Only events of this type (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Start at this position (a version for --stream); default: the first event.
        #[arg(long, conflicts_with = "from_head")]
        from: Option<u64>,
        /// Start after the head: only events appended from now on.
        #[arg(long)]
        from_head: bool,
        #[arg(long, value_enum, default_value = "keyed")]
        mode: Mode,
        /// 0: 30,000.
        #[arg(long, default_value_t = 0)]
        ack_wait_ms: u32,
        /// 0: 5.
        #[arg(long, default_value_t = 0)]
        max_deliveries: u32,
        /// Delay before each redelivery, comma-separated ms (default 1000,5000,30000,120000).
        #[arg(long, value_delimiter = ',')]
        backoff_ms: Vec<u32>,
        /// 0: 1,000.
        #[arg(long, default_value_t = 0)]
        max_in_flight: u32,
    },
    /// List groups.
    Ls,
    /// Show one group: settings, lag, counters, members.
    Show { name: String },
    /// Delete a group with its dead letters.
    Rm { name: String },
    /// Dead letters: list them, or give them back to the group.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a group's dead letters with each attempt.
    Ls {
        name: String,
        #[arg(long, default_value_t = 100)]
        max_count: u32,
    },
    /// Give dead letters back to the group with fresh delivery counts.
    Redrive {
        name: String,
        /// Only these keys (comma-separated); default: all.
        #[arg(long, value_delimiter = ',')]
        keys: Vec<u64>,
        /// Only those whose reason contains this.
        #[arg(long, conflicts_with = "keys")]
        reason: Option<String>,
        /// Dead letters per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
    },
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The group.
    pub name: String,
    /// Deliveries unsettled at once.
    #[arg(long, default_value_t = evlog_client::ConsumeOptions::default().credit)]
    pub credit: u32,
    /// Retry (nack) every event of this type instead of acking it.
    #[arg(long)]
    pub nack_type: Option<String>,
    /// Stop after this many deliveries (default: run until interrupted).
    #[arg(long)]
    pub max: Option<u64>,
    /// A name for this member.
    #[arg(long, default_value = "")]
    pub member_name: String,
}

fn info_json(info: &pb::ConsumerInfo) -> serde_json::Value {
    let settings = info.settings.clone().unwrap_or_default();
    serde_json::json!({
        "name": info.name,
        "target": match &info.target {
            Some(pb::consumer_info::Target::Stream(stream)) => stream.clone(),
            _ => "$all".to_string(),
        },
        "mode": pb::DispatchMode::try_from(settings.mode).map_or("?", |mode| mode.as_str_name()),
        "ack_wait_ms": settings.ack_wait_ms,
        "max_deliveries": settings.max_deliveries,
        "backoff_ms": settings.backoff_ms,
        "max_in_flight": settings.max_in_flight,
        "ack_floor": info.ack_floor,
        "frontier": info.frontier,
        "lag_events": info.lag_events,
        "lag_seconds": info.lag_seconds,
        "lag_exact": info.lag_exact,
        "in_flight": info.in_flight,
        "tracked": info.tracked,
        "delivered_total": info.delivered_total,
        "acked_total": info.acked_total,
        "redelivered_total": info.redelivered_total,
        "dead_lettered_total": info.dead_lettered_total,
        "dead_letters": info.dead_letters,
        "redriven_total": info.redriven_total,
        "members": info.members.iter().map(|member| serde_json::json!({
            "member_id": member.member_id,
            "name": member.name,
            "credit": member.credit,
            "in_flight": member.in_flight,
            "active": member.active,
        })).collect::<Vec<_>>(),
    })
}

fn print_info(out: &mut impl Write, info: &pb::ConsumerInfo, json: bool) -> anyhow::Result<()> {
    let value = info_json(info);
    if json {
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "{} on {} ({}): lag {} events / {:.1} s, in flight {}, acked {}, redelivered {}, dead letters {}, members {}",
            info.name,
            value["target"].as_str().unwrap_or("?"),
            value["mode"].as_str().unwrap_or("?"),
            info.lag_events,
            info.lag_seconds,
            info.in_flight,
            info.acked_total,
            info.redelivered_total,
            info.dead_letters,
            info.members.len()
        )?;
    }
    Ok(())
}

pub async fn consumer(args: ConsumerArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let json = args.client.json;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.command {
        ConsumerCommand::Create {
            name,
            stream,
            prefixes,
            types,
            from,
            from_head,
            mode,
            ack_wait_ms,
            max_deliveries,
            backoff_ms,
            max_in_flight,
        } => {
            let request = pb::CreateConsumerRequest {
                name,
                target: Some(match stream {
                    Some(stream) => pb::create_consumer_request::Target::Stream(stream),
                    None => pb::create_consumer_request::Target::All(pb::AllStreams {}),
                }),
                filter: Some(pb::SubscribeFilter {
                    stream_prefixes: prefixes,
                    event_types: types,
                }),
                start: if from_head {
                    Some(pb::create_consumer_request::Start::Head(pb::StartAtHead {}))
                } else {
                    from.map(pb::create_consumer_request::Start::From)
                },
                settings: Some(pb::ConsumerSettings {
                    mode: match mode {
                        Mode::Keyed => pb::DispatchMode::Keyed,
                        Mode::Shared => pb::DispatchMode::Shared,
                        Mode::Exclusive => pb::DispatchMode::Exclusive,
                    } as i32,
                    ack_wait_ms,
                    max_deliveries,
                    backoff_ms,
                    max_in_flight,
                }),
            };
            let info = client
                .consumers_call(request, |mut grpc, request| async move {
                    grpc.create(request).await
                })
                .await
                .map_err(status_error)?;
            print_info(&mut out, &info, json)?;
        }
        ConsumerCommand::Ls => {
            let mut after = String::new();
            // Bounded: pages of 1,000 until one comes back short.
            loop {
                let page = client
                    .consumers_call(
                        pb::ListConsumersRequest {
                            after: after.clone(),
                            max_count: 1_000,
                        },
                        |mut grpc, request| async move { grpc.list(request).await },
                    )
                    .await
                    .map_err(status_error)?;
                for info in &page.consumers {
                    print_info(&mut out, info, json)?;
                }
                match page.consumers.last() {
                    Some(last) if page.consumers.len() == 1_000 => after = last.name.clone(),
                    _ => break,
                }
            }
        }
        ConsumerCommand::Show { name } => {
            let info = client
                .consumers_call(
                    pb::GetConsumerRequest { name },
                    |mut grpc, request| async move { grpc.get(request).await },
                )
                .await
                .map_err(status_error)?;
            if json {
                writeln!(out, "{}", info_json(&info))?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&info_json(&info))?)?;
            }
        }
        ConsumerCommand::Rm { name } => {
            client
                .consumers_call(
                    pb::DeleteConsumerRequest { name: name.clone() },
                    |mut grpc, request| async move { grpc.delete(request).await },
                )
                .await
                .map_err(status_error)?;
            writeln!(out, "deleted {name}")?;
        }
        ConsumerCommand::Dlq {
            command: DlqCommand::Ls { name, max_count },
        } => {
            let mut from = 0;
            let mut left = max_count;
            while left > 0 {
                let page = client
                    .consumers_call(
                        pb::ListDeadLettersRequest {
                            consumer: name.clone(),
                            from,
                            max_count: left.min(1_000),
                        },
                        |mut grpc, request| async move { grpc.list_dead_letters(request).await },
                    )
                    .await
                    .map_err(status_error)?;
                for dead in &page.dead_letters {
                    left = left.saturating_sub(1);
                    let attempts: Vec<_> = dead
                        .attempts
                        .iter()
                        .map(|attempt| {
                            serde_json::json!({
                                "member": attempt.member,
                                "delivered_at_ms": attempt.delivered_at_ms,
                                "outcome": attempt.outcome,
                                "settled_at_ms": attempt.settled_at_ms,
                                "reason": attempt.reason,
                            })
                        })
                        .collect();
                    if json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({
                                "key": dead.key,
                                "reason": dead.reason,
                                "dead_lettered_at_ms": dead.dead_lettered_at_ms,
                                "attempts": attempts,
                                "event": dead.event.as_ref().map(event_json),
                            })
                        )?;
                    } else {
                        writeln!(
                            out,
                            "key {} ({} attempts): {}",
                            dead.key,
                            dead.attempts.len(),
                            dead.reason
                        )?;
                        if let Some(event) = &dead.event {
                            write!(out, "  ")?;
                            write_event(&mut out, event, false)?;
                        }
                    }
                }
                if page.next_from == 0 {
                    break;
                }
                from = page.next_from;
            }
        }
        ConsumerCommand::Dlq {
            command:
                DlqCommand::Redrive {
                    name,
                    keys,
                    reason,
                    rate,
                },
        } => {
            // In batches of at most a tenth of a second's worth, paced to `rate`; each batch
            // has its own redrive id, so a batch retried after a lost answer runs once.
            let batch = (rate / 10).clamp(1, 10_000);
            let mut total = 0u64;
            let mut keys = keys.into_iter().peekable();
            let by_keys = keys.peek().is_some();
            let started = tokio::time::Instant::now();
            loop {
                let selection = if by_keys {
                    let chunk: Vec<u64> = keys.by_ref().take(batch as usize).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    pb::redrive_request::Selection::Keys(pb::RedriveKeys { keys: chunk })
                } else if let Some(reason) = &reason {
                    pb::redrive_request::Selection::ReasonContains(reason.clone())
                } else {
                    pb::redrive_request::Selection::All(batch)
                };
                let response = client
                    .consumers_call(
                        pb::RedriveRequest {
                            consumer: name.clone(),
                            redrive_id: uuid::Uuid::now_v7().to_string(),
                            selection: Some(selection),
                        },
                        |mut grpc, request| async move { grpc.redrive(request).await },
                    )
                    .await
                    .map_err(status_error)?;
                total += response.redriven;
                if response.redriven == 0 && !by_keys {
                    break;
                }
                if reason.is_some() {
                    // One call takes every match it has room for.
                    break;
                }
                let due = started + Duration::from_secs_f64(total as f64 / f64::from(rate.max(1)));
                tokio::time::sleep_until(due).await;
            }
            if json {
                writeln!(out, "{}", serde_json::json!({ "redriven": total }))?;
            } else {
                writeln!(out, "redrove {total} dead letters of {name}")?;
            }
        }
    }
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let mut consumer = client.consume(
        &args.name,
        ConsumeOptions {
            credit: args.credit,
            member_name: args.member_name.clone(),
            ..ConsumeOptions::default()
        },
    );
    let mut seen = 0u64;
    while args.max.is_none_or(|max| seen < max) {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(delivery) = delivery else { break };
        let delivery = delivery.map_err(status_error)?;
        seen += 1;
        {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if args.client.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "delivery_id": delivery.delivery_id,
                        "attempt": delivery.attempt,
                        "event": event_json(&delivery.event),
                    })
                )?;
            } else {
                write!(
                    out,
                    "[{} attempt {}] ",
                    delivery.delivery_id, delivery.attempt
                )?;
                write_event(&mut out, &delivery.event, false)?;
            }
        }
        let nack = args
            .nack_type
            .as_deref()
            .is_some_and(|nack| nack == delivery.event.r#type);
        if nack {
            delivery.retry(None).await.map_err(status_error)?;
        } else {
            delivery.ack().await.map_err(status_error)?;
        }
    }
    Ok(())
}
