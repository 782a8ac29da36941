//! A sequential writer that records its appends in a [`History`], for tests that write a known
//! amount of data and then check it.
//!
//! Each append carries an idempotency key, so the writer can retry an append whose outcome is
//! unknown (no leader for a moment, a timeout) without risking a duplicate: the retry returns
//! the original result. The recorded invoke time is that of the first attempt.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use evlog_proto::v1::{AppendRequest, AppendResponse, EventData};

use crate::cluster::{Cluster, is_retryable};
use crate::history::{History, Operation, Outcome};
use crate::wait::{Probe, poll};

/// How long one append may be retried.
const APPEND_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Appends one request at a time and records each.
#[derive(Debug)]
pub struct RecordingWriter {
    /// Prefixes event ids and idempotency keys, so that several writers in one test never
    /// collide.
    name: String,
    next_operation: u64,
    retries: u64,
    history: History,
}

impl RecordingWriter {
    pub fn new(name: &str) -> RecordingWriter {
        RecordingWriter {
            name: name.to_owned(),
            next_operation: 0,
            retries: 0,
            history: History::new(),
        }
    }

    /// Appends `count` new events to `stream` through node `node`, retrying errors that may go
    /// away (with the same idempotency key) for up to a minute, and records the operation.
    ///
    /// # Panics
    ///
    /// When the append is not acknowledged: a non-retryable error, or retries ran out.
    pub async fn append(
        &mut self,
        cluster: &Cluster,
        node: u64,
        stream: &str,
        count: usize,
    ) -> AppendResponse {
        assert!(count >= 1, "an append carries at least one event");
        let operation = self.next_operation;
        let events: Vec<EventData> = (0..count)
            .map(|position_in_batch| {
                let id = format!("{}-o{operation}-e{position_in_batch}", self.name);
                EventData {
                    data: format!("payload of {id} for {stream}").into_bytes().into(),
                    id,
                    r#type: "Recorded".to_owned(),
                    content_type: "text/plain".to_owned(),
                    metadata: HashMap::from([("writer".to_owned(), self.name.clone())]),
                }
            })
            .collect();
        let append = AppendRequest {
            stream: stream.to_owned(),
            events,
            expected_version: None,
            idempotency_key: None,
        };
        self.append_request(cluster, node, append).await
    }

    /// Sends `append` through node `node` as the next operation (with this writer's
    /// idempotency key for it, whatever key it had), retrying errors that may go away for up
    /// to a minute, and records it. Its event ids must be unique in the test.
    ///
    /// # Panics
    ///
    /// When the append is not acknowledged: a non-retryable error, or retries ran out.
    pub async fn append_request(
        &mut self,
        cluster: &Cluster,
        node: u64,
        mut append: AppendRequest,
    ) -> AppendResponse {
        let operation = self.next_operation;
        self.next_operation += 1;
        append.idempotency_key = Some(format!("{}-o{operation}", self.name));
        let stream = append.stream.clone();
        let count = append.events.len();
        let events = append.events.clone();
        let invoked = Instant::now();
        let mut attempts: u64 = 0;
        let mut last_error: Option<tonic::Status> = None;
        let result = poll(APPEND_RETRY_TIMEOUT, async || {
            attempts += 1;
            match cluster.append_request(node, append.clone()).await {
                Ok(response) => Probe::Ready(response),
                Err(status) => {
                    let retryable = is_retryable(&status);
                    let reason = format!("attempt {attempts}: {status}");
                    last_error = Some(status);
                    if retryable {
                        Probe::NotYet(reason)
                    } else {
                        Probe::Failed(reason)
                    }
                }
            }
        })
        .await;
        self.retries += attempts.saturating_sub(1);
        let outcome = match (&result, last_error) {
            (Ok(response), _) => Outcome::from_result(&Ok(*response)),
            (Err(_), Some(status)) => Outcome::from_result(&Err(status)),
            (Err(_), None) => Outcome::in_flight(),
        };
        self.history.push(Operation {
            client: self.name.clone(),
            node,
            stream: stream.clone(),
            events,
            expected_version: append.expected_version,
            idempotency_key: append.idempotency_key.clone(),
            invoked,
            completed: Some(Instant::now()),
            outcome,
        });
        result.unwrap_or_else(|failure| {
            panic!(
                "appending {count} events to {stream} through node {node} ({}): {failure} \
                 (cluster in {})",
                self.name,
                cluster.path().display()
            )
        })
    }

    /// The request of recorded operation `operation` (0-based), exactly as it was sent (same
    /// idempotency key, same events): sending it again must append nothing.
    ///
    /// # Panics
    ///
    /// If no such operation was recorded.
    pub fn request_of(&self, operation: usize) -> AppendRequest {
        let recorded = self
            .history
            .operations()
            .get(operation)
            .unwrap_or_else(|| panic!("{} recorded no operation {operation}", self.name));
        AppendRequest {
            stream: recorded.stream.clone(),
            events: recorded.events.clone(),
            expected_version: None,
            idempotency_key: Some(format!("{}-o{operation}", self.name)),
        }
    }

    /// How many attempts were retries, over all appends.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// The appends recorded so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn into_history(self) -> History {
        self.history
    }
}
