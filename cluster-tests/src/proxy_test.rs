//! The proxy on its own, in front of an echo server on loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Long enough for loopback on a loaded machine; a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on `127.0.0.1:0`; it lives as long as the test's runtime.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("binding a loopback port should succeed");
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0_u8; 4096];
                while let Ok(count) = stream.read(&mut buffer).await {
                    if count == 0 || stream.write_all(&buffer[..count]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

async fn proxy() -> LinkProxy {
    LinkProxy::start(echo_server().await, 7)
        .await
        .expect("the proxy should start")
}

async fn connect(proxy: &LinkProxy) -> TcpStream {
    TcpStream::connect(proxy.address())
        .await
        .expect("the proxy accepts connections")
}

/// Sends `message` and reads back as many bytes.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut echoed = vec![0_u8; message.len()];
    stream.read_exact(&mut echoed).await?;
    Ok(echoed)
}

/// Whether the connection is closed or reset: a read returns end-of-file or an error.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0_u8; 16];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection neither closed nor answered within {PATIENCE:?}"),
    }
}

#[tokio::test]
async fn pass_forwards_both_ways() {
    let proxy = proxy().await;
    let mut stream = connect(&proxy).await;
    for message in [&b"hello"[..], &[7_u8; 100_000][..]] {
        let echoed = tokio::time::timeout(PATIENCE, round_trip(&mut stream, message))
            .await
            .expect("the echo should come back")
            .expect("the connection should stay up");
        assert_eq!(echoed, message);
    }
    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(
        stats.bytes,
        2 * 100_005,
        "each byte crossed the proxy twice"
    );
}

#[tokio::test]
async fn delay_holds_each_direction() {
    let proxy = proxy().await;
    let base = Duration::from_millis(100);
    proxy.set_mode(LinkMode::Delay {
        base,
        jitter: Duration::from_millis(20),
    });
    let mut stream = connect(&proxy).await;
    let started = Instant::now();
    let echoed = tokio::time::timeout(PATIENCE, round_trip(&mut stream, b"slow"))
        .await
        .expect("a delayed echo still comes back")
        .expect("the connection should stay up");
    assert_eq!(echoed, b"slow");
    assert!(
        started.elapsed() >= 2 * base,
        "the request and the answer are each delayed by at least {base:?}, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn blackhole_holds_bytes_until_healed() {
    let proxy = proxy().await;
    let mut stream = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut stream, b"before").await.expect("passes"),
        b"before"
    );
    proxy.set_mode(LinkMode::Blackhole);
    stream.write_all(b"held").await.expect("the socket accepts");
    let mut echoed = [0_u8; 4];
    let quiet = tokio::time::timeout(QUIET, stream.read_exact(&mut echoed)).await;
    assert!(quiet.is_err(), "nothing crosses a blackhole");
    // A new connection is accepted, and held too.
    let mut other = connect(&proxy).await;
    other.write_all(b"late").await.expect("the socket accepts");

    proxy.set_mode(LinkMode::Pass);
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut echoed))
        .await
        .expect("held bytes arrive once healed")
        .expect("the connection stayed open");
    assert_eq!(&echoed, b"held");
    tokio::time::timeout(PATIENCE, other.read_exact(&mut echoed))
        .await
        .expect("held bytes arrive once healed")
        .expect("the connection stayed open");
    assert_eq!(&echoed, b"late");
}

#[tokio::test]
async fn drop_resets_open_and_new_connections() {
    let proxy = proxy().await;
    let mut stream = connect(&proxy).await;
    assert_eq!(round_trip(&mut stream, b"up").await.expect("passes"), b"up");
    proxy.set_mode(LinkMode::Drop);
    assert!(is_closed(&mut stream).await, "an open connection is reset");
    let mut refused = connect(&proxy).await;
    assert!(is_closed(&mut refused).await, "a new connection is reset");

    proxy.set_mode(LinkMode::Pass);
    let mut healed = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut healed, b"again").await.expect("passes"),
        b"again"
    );
    let stats = proxy.stats();
    assert_eq!((stats.cut, stats.refused), (1, 1));
}

#[tokio::test]
async fn lossy_resets_with_its_probability() {
    let proxy = proxy().await;
    proxy.set_mode(LinkMode::Lossy { probability: 1.0 });
    let mut refused = connect(&proxy).await;
    assert!(is_closed(&mut refused).await, "certain loss resets at once");

    proxy.set_mode(LinkMode::Lossy { probability: 0.0 });
    let mut stream = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut stream, b"fine").await.expect("passes"),
        b"fine"
    );

    // Certain loss on an open connection: the next chunk cuts it.
    proxy.set_mode(LinkMode::Lossy { probability: 1.0 });
    let _ = stream.write_all(b"lost").await;
    assert!(is_closed(&mut stream).await, "the chunk cut the connection");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_reset() {
    let proxy = proxy().await;
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut stream = connect(&proxy).await;
        assert_eq!(round_trip(&mut stream, b"x").await.expect("passes"), b"x");
        open.push(stream);
    }
    let mut extra = connect(&proxy).await;
    assert!(is_closed(&mut extra).await, "the link is at its cap");
    drop(open);
    // Slots come back as the closed connections' tasks end.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut stream = connect(&proxy).await;
        if let Ok(Ok(echoed)) =
            tokio::time::timeout(Duration::from_secs(1), round_trip(&mut stream, b"y")).await
        {
            assert_eq!(echoed, b"y");
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
