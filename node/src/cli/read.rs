//! `evlog read`: a stream or the whole log, paged, at the consistency asked for.

use clap::Args;
use clap::ValueEnum;
use evlog_proto::v1 as pb;

use super::ClientArgs;
use super::output::write_event;
use super::status_error;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConsistencyArg {
    /// Sees every append acknowledged before the read began.
    Linearizable,
    /// Waits until the serving node has applied `--at-least-position`.
    AtLeast,
    /// The serving node's state, maybe stale.
    Local,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read this stream (from stream versions).
    #[arg(long, conflicts_with = "all")]
    pub stream: Option<String>,
    /// Read the whole log (from global positions).
    #[arg(long)]
    pub all: bool,
    /// First version (stream) or position (all) to read.
    #[arg(long, conflicts_with = "from_time")]
    pub from: Option<u64>,
    /// Start at a time (milliseconds since the Unix epoch): forward, at the first event
    /// recorded at or after it; backward, at the last one at or before it.
    #[arg(long)]
    pub from_time: Option<u64>,
    /// Most events to print in all (pages through the log).
    #[arg(long, default_value_t = 1_000)]
    pub max_count: u64,
    /// Newest first.
    #[arg(long)]
    pub backward: bool,
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
    /// With `--consistency at-least`: the global position the serving node must have applied.
    #[arg(long, default_value_t = 0)]
    pub at_least_position: u64,
    /// With `--all` (forward): only events of streams starting with this (repeatable).
    #[arg(long = "prefix", requires = "all")]
    pub prefixes: Vec<String>,
    /// With `--all` (forward): only events of this type (repeatable).
    #[arg(long = "type", requires = "all")]
    pub types: Vec<String>,
}

pub async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let target = match (&args.stream, args.all) {
        (Some(stream), false) => pb::read_request::Target::Stream(stream.clone()),
        (None, true) => pb::read_request::Target::All(pb::AllStreams {}),
        _ => anyhow::bail!("say what to read: --stream NAME or --all"),
    };
    let consistency = match args.consistency {
        ConsistencyArg::Linearizable => pb::Consistency::Linearizable,
        ConsistencyArg::AtLeast => pb::Consistency::AtLeast,
        ConsistencyArg::Local => pb::Consistency::Local,
    };
    let mut from = args.from;
    let mut from_timestamp_ms = args.from_time;
    let filtered = !args.prefixes.is_empty() || !args.types.is_empty();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Bounded: at most max_count events, in pages of at most 1,000.
    while printed < args.max_count {
        let page_size = (args.max_count - printed).min(1_000) as u32;
        let response = client
            .read(pb::ReadRequest {
                target: Some(target.clone()),
                from,
                from_timestamp_ms,
                max_count: page_size,
                direction: if args.backward {
                    pb::Direction::Backward
                } else {
                    pb::Direction::Forward
                } as i32,
                consistency: consistency as i32,
                at_least_position: args.at_least_position,
                filter: filtered.then(|| pb::SubscribeFilter {
                    stream_prefixes: args.prefixes.clone(),
                    event_types: args.types.clone(),
                }),
            })
            .await
            .map_err(status_error)?;
        for event in &response.events {
            write_event(&mut out, event, args.client.json)?;
        }
        printed += response.events.len() as u64;
        match response.next_from {
            // A filtered page may hold no events and still go on (it looked at its share).
            Some(next) if !response.events.is_empty() || filtered => {
                from = Some(next);
                from_timestamp_ms = None;
            }
            _ => break,
        }
    }
    Ok(())
}
