//! Subscriptions as the tests use them: requests, a collector that reads a subscription's
//! items until a condition holds, with a deadline (a subscription never ends by itself), and
//! the record a chaos subscriber keeps for the checker.

use std::time::Duration;

use crate::proto::subscribe_request::{Start, Target};
use crate::proto::subscribe_response::Item;
use crate::proto::{
    AllStreams, RecordedEvent, StartAtHead, SubscribeFilter, SubscribeRequest, SubscribeResponse,
};

/// A subscription to the whole log from `start` (`None`: the first event).
pub fn subscribe_all(start: Option<Start>) -> SubscribeRequest {
    SubscribeRequest {
        target: Some(Target::All(AllStreams {})),
        start,
        filter: None,
        max_batch_events: 0,
        at_least_position: 0,
    }
}

/// A subscription to one stream from `start`.
pub fn subscribe_stream(stream: &str, start: Option<Start>) -> SubscribeRequest {
    SubscribeRequest {
        target: Some(Target::Stream(stream.to_owned())),
        ..subscribe_all(start)
    }
}

/// A filtered subscription to the whole log.
pub fn subscribe_filtered(
    start: Option<Start>,
    stream_prefixes: &[&str],
    event_types: &[&str],
) -> SubscribeRequest {
    SubscribeRequest {
        filter: Some(SubscribeFilter {
            stream_prefixes: stream_prefixes.iter().map(|p| (*p).to_owned()).collect(),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        }),
        ..subscribe_all(start)
    }
}

/// Start just after the head.
pub fn at_head() -> Option<Start> {
    Some(Start::Head(StartAtHead {}))
}

/// Where an item says the subscription got (`next_from`).
pub fn next_from(item: &Item) -> u64 {
    match item {
        Item::Subscribed(subscribed) => subscribed.next_from,
        Item::Events(batch) => batch.next_from,
        Item::CaughtUp(caught_up) => caught_up.next_from,
        Item::Checkpoint(checkpoint) => checkpoint.next_from,
        Item::FellBehind(fell_behind) => fell_behind.next_from,
    }
}

/// What a subscription delivered so far.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    pub items: Vec<Item>,
    pub events: Vec<RecordedEvent>,
}

impl Collected {
    /// The `caught_up` items received.
    pub fn caught_ups(&self) -> Vec<(u64, u64)> {
        self.items
            .iter()
            .filter_map(|item| match item {
                Item::CaughtUp(caught_up) => Some((caught_up.head_position, caught_up.next_from)),
                _ => None,
            })
            .collect()
    }

    /// The `next_from` of the last item.
    pub fn next_from(&self) -> Option<u64> {
        self.items.last().map(next_from)
    }

    fn push(&mut self, item: Item) {
        if let Item::Events(batch) = &item {
            self.events.extend(batch.events.iter().cloned());
        }
        // Events are kept once, in `events`; the item keeps its `next_from`.
        let item = match item {
            Item::Events(mut batch) => {
                batch.events.clear();
                Item::Events(batch)
            }
            other => other,
        };
        self.items.push(item);
    }
}

/// What one subscriber saw.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    pub name: String,
    /// The request as first sent.
    pub request: SubscribeRequest,
    /// When the client was asked to subscribe.
    pub began: std::time::Instant,
    /// Every event delivered, in order of delivery.
    pub events: Vec<RecordedEvent>,
    /// The `head_position` of every `subscribed` and `caught_up` item, with its kind.
    pub heads: Vec<(&'static str, u64)>,
    /// The `next_from` of the first `subscribed` item: where the subscription starts.
    pub start: Option<u64>,
    /// The `next_from` of the last item.
    pub next_from: Option<u64>,
    /// `subscribed` items after the first: how often the client resumed.
    pub resumes: usize,
    /// The error the subscription ended with, if it ended.
    pub error: Option<String>,
}

/// Reads `stream` into `collected` until `until` holds.
///
/// # Errors
///
/// The status the subscription ended with, or `DEADLINE_EXCEEDED` when `timeout` passed
/// first (the collected items stay in `collected`).
pub async fn collect_until(
    stream: &mut tonic::Streaming<SubscribeResponse>,
    collected: &mut Collected,
    timeout: Duration,
    mut until: impl FnMut(&Collected) -> bool,
) -> Result<(), tonic::Status> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(collected) {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded(format!(
                    "the condition did not hold within {timeout:?}; last item: {:?}",
                    collected.items.last()
                ))
            })??;
        match message {
            Some(SubscribeResponse { item: Some(item) }) => collected.push(item),
            Some(SubscribeResponse { item: None }) => {
                return Err(tonic::Status::internal("an empty subscription item"));
            }
            None => {
                return Err(tonic::Status::unknown(
                    "the subscription ended without an error",
                ));
            }
        }
    }
    Ok(())
}
