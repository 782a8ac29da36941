//! One pooled gRPC channel per address. A node keeps two pools: one to its peers' peer ports
//! (Raft replication, votes, snapshots, read-index requests) and one to other nodes' client
//! ports (forwarded client requests, status calls). A tonic `Channel` multiplexes concurrent
//! calls over one HTTP/2 connection and reconnects by itself, so a channel is made once and
//! never per RPC. This is the one place outgoing channels are built: with TLS on, both pools
//! dial TLS, trusting `--peer-ca` and presenting `--peer-cert` as last (re)loaded (see
//! `crate::tls`).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use crate::tls::OutgoingTls;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

/// Most distinct addresses kept (members come and go; the pool must stay bounded). Past it,
/// the channel used least recently is dropped.
const MAX_CHANNELS: usize = 256;

/// An address that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad address {address:?}: {detail}")]
pub struct BadAddress {
    pub address: String,
    pub detail: String,
}

/// A node's two pools: to peer addresses (the peer protocol) and to client addresses (other
/// nodes' client services: forwarded requests, status calls).
#[derive(Clone)]
pub struct NodeChannels {
    pub peers: ChannelPool,
    pub clients: ChannelPool,
}

impl NodeChannels {
    /// Both pools, dialing through `routes` (advertised -> dialed, peer and client addresses
    /// alike), over `tls` when given (both ports of every node serve TLS when this one does:
    /// the same CA is trusted and the same certificate presented on both).
    pub fn new(
        connect_timeout: Duration,
        routes: BTreeMap<String, String>,
        tls: Option<OutgoingTls>,
    ) -> Self {
        Self {
            peers: ChannelPool::new(connect_timeout, routes.clone(), tls.clone()),
            clients: ChannelPool::new(connect_timeout, routes, tls),
        }
    }
}

#[derive(Clone)]
pub struct ChannelPool {
    pool: Arc<Mutex<Pool>>,
    connect_timeout: Duration,
    /// Advertised address -> the address to dial instead (`--route`).
    routes: Arc<BTreeMap<String, String>>,
    /// TLS with this (replaceable) configuration, or plaintext.
    tls: Option<OutgoingTls>,
}

/// The channels, each with when it was last handed out.
#[derive(Default)]
struct Pool {
    channels: HashMap<String, (Channel, u64)>,
    uses: u64,
}

impl ChannelPool {
    pub fn new(
        connect_timeout: Duration,
        routes: BTreeMap<String, String>,
        tls: Option<OutgoingTls>,
    ) -> Self {
        Self {
            pool: Arc::new(Mutex::new(Pool::default())),
            connect_timeout,
            routes: Arc::new(routes),
            tls,
        }
    }

    /// The channel to the node advertised at `address` (dialed through its route, if it has
    /// one), made on first use (lazily connected).
    pub fn get(&self, address: &str) -> Result<Channel, BadAddress> {
        let address = self
            .routes
            .get(address)
            .map(String::as_str)
            .unwrap_or(address);
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pool.uses += 1;
        let now = pool.uses;
        if let Some((channel, last_used)) = pool.channels.get_mut(address) {
            *last_used = now;
            return Ok(channel.clone());
        }
        let bad_address = |detail: String| BadAddress {
            address: address.to_string(),
            detail,
        };
        // With TLS the connector does the handshake (tonic's own TLS cannot be reloaded), so
        // the URI tonic sees stays `http://`: tonic refuses `https://` with no TLS of its own.
        let uri = evlog_client::tls::endpoint_uri(address, false).map_err(bad_address)?;
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|error| bad_address(error.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
            None => endpoint.connect_lazy(),
        };
        if pool.channels.len() >= MAX_CHANNELS
            && let Some(oldest) = pool
                .channels
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(address, _)| address.clone())
        {
            pool.channels.remove(&oldest);
        }
        pool.channels
            .insert(address.to_string(), (channel.clone(), now));
        Ok(channel)
    }

    /// How many channels the pool holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .channels
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pool_is_bounded_and_drops_the_channel_used_least_recently() {
        let channels = ChannelPool::new(Duration::from_secs(1), BTreeMap::new(), None);
        channels.get("127.0.0.1:1").expect("a valid address");
        for port in 2..=(MAX_CHANNELS as u16 + 10) {
            // Address 1 stays in use: it is never the least recently used.
            channels.get("127.0.0.1:1").expect("a valid address");
            channels
                .get(&format!("127.0.0.1:{port}"))
                .expect("a valid address");
            assert!(channels.len() <= MAX_CHANNELS);
        }
        assert_eq!(channels.len(), MAX_CHANNELS);
        let pool = channels.pool.lock().expect("pool");
        assert!(pool.channels.contains_key("127.0.0.1:1"));
        assert!(!pool.channels.contains_key("127.0.0.1:2"));
    }

    #[test]
    fn a_bad_address_is_refused() {
        let channels = ChannelPool::new(Duration::from_secs(1), BTreeMap::new(), None);
        assert!(channels.get("not an address\n").is_err());
    }
}
