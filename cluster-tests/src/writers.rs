//! Concurrent single-event appends through one node: load for tests in which something else
//! happens meanwhile (a link held, a member catching up). Failures are not retried (a retry
//! without a key could append twice; such tests do not read the events back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Cluster, event};

/// The longest writers go on, whatever they were asked.
pub const MAX_WRITING: Duration = Duration::from_secs(120);

/// What [`append_from_writers`] does.
#[derive(Clone, Debug)]
pub struct Writers {
    /// Concurrent tasks, each appending to a stream of its own.
    pub tasks: usize,
    /// Appends in all (`None`: until stopped).
    pub count: Option<usize>,
    /// When to stop (at most [`MAX_WRITING`] from the start in any case).
    pub until: Option<Instant>,
    /// Set to stop them.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Appends single events through node `node` as `writers` says; returns how many were
/// acknowledged.
pub async fn append_from_writers(cluster: &Arc<Cluster>, node: u64, writers: Writers) -> usize {
    let deadline = writers
        .until
        .unwrap_or_else(|| Instant::now() + MAX_WRITING)
        .min(Instant::now() + MAX_WRITING);
    let next = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(writers.tasks);
    for task in 0..writers.tasks {
        let (cluster, next, acknowledged, stop) = (
            Arc::clone(cluster),
            Arc::clone(&next),
            Arc::clone(&acknowledged),
            writers.stop.clone(),
        );
        let count = writers.count;
        tasks.push(tokio::spawn(async move {
            while count.is_none_or(|count| next.fetch_add(1, Ordering::Relaxed) < count)
                && stop
                    .as_ref()
                    .is_none_or(|stop| !stop.load(Ordering::Relaxed))
                && Instant::now() < deadline
            {
                let stream = format!("stream-{task}");
                if cluster
                    .append(node, &stream, vec![event("", "Written", "x")])
                    .await
                    .is_ok()
                {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer task does not panic");
    }
    acknowledged.load(Ordering::Relaxed)
}
