//! One pooled gRPC channel per peer address, shared by Raft replication, write forwarding and
//! read-index requests. A tonic `Channel` multiplexes concurrent calls over one HTTP/2
//! connection and reconnects by itself, so a channel is made once and never per RPC.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::error::NodeError;

/// Most distinct addresses kept (members come and go; the pool must stay bounded).
const MAX_CHANNELS: usize = 256;

#[derive(Clone)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    /// Advertised address -> the address to dial instead (`--route`).
    routes: Arc<BTreeMap<String, String>>,
}

impl PeerChannels {
    pub fn new(connect_timeout: Duration, routes: BTreeMap<String, String>) -> Self {
        Self {
            channels: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
            routes: Arc::new(routes),
        }
    }

    /// The channel to the peer advertised at `address` (dialed through its route, if it has
    /// one), made on first use (lazily connected).
    pub fn get(&self, address: &str) -> Result<Channel, NodeError> {
        let address = self
            .routes
            .get(address)
            .map(String::as_str)
            .unwrap_or(address);
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| NodeError::Internal(format!("bad peer address {address:?}: {error}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}
