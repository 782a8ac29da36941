//! `evlog tail`: prints a stream's or the whole log's events as they arrive and follows until
//! interrupted (or until `--max-count` events, or the head with `--until-caught-up`). It
//! survives the loss of the node it reads from: the client resumes on another node from the
//! last `next_from`, without a gap or a repeat.

use std::io::Write;

use clap::Args;
use evlog_proto::v1 as pb;
use futures::StreamExt;

use super::ClientArgs;
use super::output::write_event;
use super::status_error;

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Follow this stream (`--from` is a stream version).
    #[arg(long, conflicts_with = "all")]
    pub stream: Option<String>,
    /// Follow the whole log (`--from` is a global position).
    #[arg(long)]
    pub all: bool,
    /// Start at this version (stream) or position (all), inclusive [default: the first event].
    #[arg(long, conflicts_with_all = ["from_time", "head"])]
    pub from: Option<u64>,
    /// Start at the first event recorded at or after this time (ms since the Unix epoch).
    #[arg(long, conflicts_with = "head")]
    pub from_time: Option<u64>,
    /// Only events appended from now on.
    #[arg(long)]
    pub head: bool,
    /// With --all: only streams whose names start with this (repeatable: any of them).
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// With --all: only events of this type (repeatable: any of them).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Stop after printing this many events.
    #[arg(long)]
    pub max_count: Option<u64>,
    /// Stop once everything up to the head has been printed, instead of following.
    #[arg(long)]
    pub until_caught_up: bool,
}

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let target = match (&args.stream, args.all) {
        (Some(stream), false) => pb::subscribe_request::Target::Stream(stream.clone()),
        (None, true) => pb::subscribe_request::Target::All(pb::AllStreams {}),
        _ => anyhow::bail!("say what to follow: --stream NAME or --all"),
    };
    let start = match (args.from, args.from_time, args.head) {
        (Some(from), _, _) => Some(pb::subscribe_request::Start::From(from)),
        (_, Some(time_ms), _) => Some(pb::subscribe_request::Start::FromTimestampMs(time_ms)),
        (_, _, true) => Some(pb::subscribe_request::Start::Head(pb::StartAtHead {})),
        _ => None,
    };
    let filter =
        (!args.prefixes.is_empty() || !args.types.is_empty()).then(|| pb::SubscribeFilter {
            stream_prefixes: args.prefixes.clone(),
            event_types: args.types.clone(),
        });
    let mut subscription = client.subscribe(pb::SubscribeRequest {
        target: Some(target),
        start,
        filter,
        max_batch_events: 0,
        at_least_position: 0,
    });
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    let mut subscribed_once = false;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            _ = &mut interrupted => return Ok(()),
        };
        let Some(item) = item else {
            return Ok(());
        };
        use pb::subscribe_response::Item;
        match item.map_err(status_error)? {
            Item::Subscribed(subscribed) => {
                let verb = if subscribed_once {
                    "resumed"
                } else {
                    "following"
                };
                subscribed_once = true;
                eprintln!(
                    "-- {verb} on node {} from {} (head {})",
                    subscribed.served_by, subscribed.next_from, subscribed.head_position
                );
            }
            Item::Events(batch) => {
                let mut out = stdout.lock();
                for event in &batch.events {
                    write_event(&mut out, event, args.client.json)?;
                    printed += 1;
                    if args.max_count.is_some_and(|max| printed >= max) {
                        out.flush()?;
                        return Ok(());
                    }
                }
                out.flush()?;
            }
            Item::CaughtUp(caught_up) => {
                eprintln!(
                    "-- caught up at head {} (next {})",
                    caught_up.head_position, caught_up.next_from
                );
                if args.until_caught_up {
                    return Ok(());
                }
            }
            Item::FellBehind(behind) => eprintln!(
                "-- fell {} events behind the head {}",
                behind.lag_events, behind.head_position
            ),
            Item::Checkpoint(_) => {}
        }
    }
}
