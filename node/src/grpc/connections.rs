//! Client connections, bounded in number: past the limit, a new connection is closed at once
//! (the client sees it refused and may retry elsewhere or later), so idle or abandoned
//! connections cannot pile up without end. Each connection holds a permit until it closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;

use futures::Stream;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tonic::transport::server::Connected;
use tonic::transport::server::TcpConnectInfo;

/// File descriptors kept aside for the store, peers and the rest of the process.
const RESERVED_FILES: usize = 256;

/// `max` connections, or fewer when the process may not open that many files (the soft
/// `RLIMIT_NOFILE`, read from `/proc/self/limits`): past it, accepting would fail and spin.
pub fn within_open_file_limit(max: usize) -> usize {
    let Some(limit) = open_file_limit() else {
        return max;
    };
    let room = limit.saturating_sub(RESERVED_FILES).max(1);
    if room < max {
        tracing::warn!(
            "the process may open {limit} files: connections limited to {room}, not {max} \
             (raise `ulimit -n` for more)"
        );
        return room;
    }
    max
}

/// The soft limit of open files, when the system says.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// An accepted connection and its permit.
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// The accepted connections of `incoming`, at most `max` open at once; the rest are closed as
/// they come, and counted in `refused`.
pub fn limited(
    incoming: impl Stream<Item = io::Result<TcpStream>>,
    max: usize,
    refused: Arc<AtomicU64>,
) -> impl Stream<Item = io::Result<Counted>> {
    let permits = Arc::new(Semaphore::new(max));
    incoming.filter_map(move |accepted| {
        let permits = Arc::clone(&permits);
        let refused = Arc::clone(&refused);
        async move {
            match accepted {
                Ok(stream) => match permits.try_acquire_owned() {
                    Ok(permit) => Some(Ok(Counted {
                        stream,
                        _permit: permit,
                    })),
                    Err(_) => {
                        let count = refused.fetch_add(1, Ordering::Relaxed) + 1;
                        if count.is_power_of_two() {
                            tracing::warn!(
                                "{max} connections are open (--max-connections); refused a new \
                                 one ({count} refused so far)"
                            );
                        }
                        None
                    }
                },
                Err(error) => Some(Err(error)),
            }
        }
    })
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
