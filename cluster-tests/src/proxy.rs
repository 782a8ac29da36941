//! A fault-injecting TCP proxy for one directed peer link.
//!
//! The chaos harness starts every node with `--routes`, so that node `i` reaches node `j`
//! through a [`LinkProxy`] of its own: whatever the proxy does to its connections is what the
//! link `i -> j` does, with no root, no kernel tools, and nothing shared with other links.
//! The proxy's [`LinkMode`] can be changed at any moment, and every connection follows it:
//!
//! - [`LinkMode::Pass`] forwards bytes as they come;
//! - [`LinkMode::Delay`] holds each chunk for `base + jitter` before forwarding it, in both
//!   directions of a connection, keeping the order (a chunk never overtakes the one before);
//! - [`LinkMode::Blackhole`] accepts connections and keeps them open but forwards nothing: the
//!   proxy stops reading, so TCP back-pressure holds the bytes, as a cable cut would; what was
//!   held is delivered (late) when the mode changes back;
//! - [`LinkMode::Drop`] resets every open connection and every new one;
//! - [`LinkMode::Lossy`] resets a new connection, or an open one at each chunk, with a given
//!   probability: TCP cannot lose bytes silently, so loss on a TCP link is a reset.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections per link (more are reset at once), chunks of
//! at most [`CHUNK_BYTES`], and at most [`QUEUE_CHUNKS`] chunks in flight per direction.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most connections one link holds open; more are reset at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The most bytes forwarded in one chunk.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// The most chunks in flight (read, not yet written) per direction of a connection.
pub const QUEUE_CHUNKS: usize = 64;
/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after a failed `accept` (too many open files, say), so the loop cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// What a link does to its traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkMode {
    /// Forward everything at once.
    Pass,
    /// Hold each chunk for `base` plus a uniform random part of `jitter`.
    Delay { base: Duration, jitter: Duration },
    /// Keep connections open, forward nothing.
    Blackhole,
    /// Reset open connections and refuse new ones.
    Drop,
    /// Reset a new connection, or an open one at each chunk, with this probability (0..=1).
    Lossy { probability: f64 },
}

impl LinkMode {
    /// A short name for logs and reports, e.g. `delay 50ms+100ms`.
    pub fn describe(&self) -> String {
        match self {
            LinkMode::Pass => "pass".to_owned(),
            LinkMode::Delay { base, jitter } => format!("delay {base:?}+{jitter:?}"),
            LinkMode::Blackhole => "blackhole".to_owned(),
            LinkMode::Drop => "drop".to_owned(),
            LinkMode::Lossy { probability } => format!("lossy {probability}"),
        }
    }
}

/// What a link did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections accepted and forwarded.
    pub connections: u64,
    /// Connections reset on arrival (drop mode, loss, or over the connection cap).
    pub refused: u64,
    /// Open connections reset by drop mode or loss.
    pub cut: u64,
    /// Bytes written to either side.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    bytes: AtomicU64,
}

/// A proxy listening on a loopback port of its own and forwarding to one target.
///
/// Dropping it stops the accept loop and, through the closed mode channel, every connection.
#[derive(Debug)]
pub struct LinkProxy {
    address: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<LinkMode>,
    counters: Arc<Counters>,
    accept_loop: JoinHandle<()>,
}

impl LinkProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`, in [`LinkMode::Pass`]. `seed`
    /// seeds its jitter and loss.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr, seed: u64) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let (mode, mode_receiver) = watch::channel(LinkMode::Pass);
        let counters = Arc::new(Counters::default());
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            target,
            mode_receiver,
            Arc::clone(&counters),
            seed,
        ));
        Ok(LinkProxy {
            address,
            target,
            mode,
            counters,
            accept_loop,
        })
    }

    /// Where the proxy listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }

    /// Changes the mode; open connections follow it from their next chunk (drop mode resets
    /// them at once).
    pub fn set_mode(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            cut: self.counters.cut.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// Closes a connection with a reset rather than a FIN, as a network fault would.
fn reset(stream: &TcpStream) {
    // Best effort: the socket is dropped right after, reset or not.
    let _ = stream.set_zero_linger();
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<LinkMode>,
    counters: Arc<Counters>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let inbound = match listener.accept().await {
            Ok((inbound, _)) => inbound,
            Err(_) => {
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let refuse = match *mode.borrow() {
            LinkMode::Drop => true,
            LinkMode::Lossy { probability } => rng.random_bool(probability.clamp(0.0, 1.0)),
            _ => false,
        };
        let slot = if refuse {
            None
        } else {
            Arc::clone(&slots).try_acquire_owned().ok()
        };
        let Some(slot) = slot else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            reset(&inbound);
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let connection_seed = rng.random::<u64>();
        let mode = mode.clone();
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            connection(inbound, target, mode, &counters, connection_seed).await;
            drop(slot);
        });
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed its side, or an I/O error: close the connection normally.
    Closed,
    /// The link reset it (drop mode, or loss).
    Cut,
}

async fn connection(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<LinkMode>,
    counters: &Counters,
    seed: u64,
) {
    let mut outbound = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(outbound)) => outbound,
        _ => {
            reset(&inbound);
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let mut rng_out = StdRng::seed_from_u64(seed);
    let mut rng_back = StdRng::seed_from_u64(seed.wrapping_add(1));
    let end = {
        let (inbound_read, inbound_write) = inbound.split();
        let (outbound_read, outbound_write) = outbound.split();
        tokio::select! {
            end = forward(inbound_read, outbound_write, mode.clone(), &mut rng_out, counters) => end,
            end = forward(outbound_read, inbound_write, mode.clone(), &mut rng_back, counters) => end,
            () = wait_for_drop(&mut mode) => End::Cut,
        }
    };
    if end == End::Cut {
        counters.cut.fetch_add(1, Ordering::Relaxed);
        reset(&inbound);
        reset(&outbound);
    }
}

/// Returns when the link switches to drop mode, or the proxy is gone.
async fn wait_for_drop(mode: &mut watch::Receiver<LinkMode>) {
    loop {
        if *mode.borrow_and_update() == LinkMode::Drop {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// Forwards one direction: a reader that applies the mode to each chunk and queues it with
/// its delivery time, and a writer that delivers queued chunks in order, each at its time.
async fn forward(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mut mode: watch::Receiver<LinkMode>,
    rng: &mut StdRng,
    counters: &Counters,
) -> End {
    let (queue, mut queued) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut buffer = vec![0_u8; CHUNK_BYTES];
        loop {
            let current = *mode.borrow_and_update();
            match current {
                LinkMode::Drop => return End::Cut,
                LinkMode::Blackhole => {
                    // Stop reading: the sender's bytes wait in TCP buffers until the mode
                    // changes.
                    if mode.changed().await.is_err() {
                        return End::Closed;
                    }
                    continue;
                }
                LinkMode::Pass | LinkMode::Delay { .. } | LinkMode::Lossy { .. } => {}
            }
            let read = tokio::select! {
                read = from.read(&mut buffer) => read,
                changed = mode.changed() => {
                    if changed.is_err() {
                        return End::Closed;
                    }
                    continue;
                }
            };
            let count = match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(count) => count,
            };
            let now = Instant::now();
            let deliver_at = match *mode.borrow() {
                LinkMode::Lossy { probability } if rng.random_bool(probability.clamp(0.0, 1.0)) => {
                    return End::Cut;
                }
                LinkMode::Delay { base, jitter } => {
                    let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
                    now + base + Duration::from_millis(rng.random_range(0..=jitter_ms))
                }
                _ => now,
            };
            let chunk = Bytes::copy_from_slice(&buffer[..count]);
            if queue.send((deliver_at, chunk)).await.is_err() {
                return End::Closed;
            }
        }
    };
    let writer = async move {
        let mut previous = Instant::now();
        while let Some((deliver_at, chunk)) = queued.recv().await {
            // Never before the chunk ahead of it: jitter must not reorder a byte stream.
            let deliver_at = deliver_at.max(previous);
            tokio::time::sleep_until(deliver_at).await;
            previous = deliver_at;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    };
    tokio::pin!(reader, writer);
    tokio::select! {
        end = &mut reader => {
            if end == End::Closed {
                // The sender is done: deliver what is still queued, then close.
                writer.await;
            }
            end
        }
        // Writing failed: the receiving side is gone.
        () = &mut writer => End::Closed,
    }
}

#[cfg(test)]
#[path = "proxy_test.rs"]
mod tests;
