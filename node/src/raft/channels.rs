//! One pooled gRPC channel per peer address, shared by Raft replication, write forwarding and
//! read-index requests. A tonic `Channel` multiplexes concurrent calls over one HTTP/2
//! connection and reconnects by itself, so a channel is made once and never per RPC.

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
}

impl PeerChannels {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            channels: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
        }
    }

    /// The channel to `address`, made on first use (lazily connected).
    pub fn get(&self, address: &str) -> Result<Channel, NodeError> {
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
