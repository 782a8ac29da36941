//! The links between the nodes of a proxied cluster: per directed pair, one [`LinkProxy`] to
//! the target's peer port and one to its client port, always in the same mode.
//!
//! Node `i` is started with `--routes peer_j=<peer proxy i->j>,client_j=<client proxy
//! i->j>,...`, so everything it sends to node `j` crosses the link `i -> j`: Raft traffic
//! (replication, votes, snapshots, read-index calls) on the peer proxy, forwarded client
//! requests and status calls on the client proxy; the answers come back through the same
//! connections. A partition cuts both, as a real one would. Faults are link modes: a node is
//! isolated by blackholing every link to and from it, a one-way fault touches one directed
//! link, a bridge cuts one pair both ways. Clients talk to the nodes directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::proxy::{LinkMode, LinkProxy, LinkStats};

/// A node's two listening addresses.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub client: SocketAddr,
    pub peer: SocketAddr,
}

/// One directed link: its proxies to the target's peer and client ports.
#[derive(Debug)]
struct Link {
    peer: LinkProxy,
    client: LinkProxy,
}

impl Link {
    fn set_mode(&self, mode: LinkMode) {
        self.peer.set_mode(mode);
        self.client.set_mode(mode);
    }

    fn mode(&self) -> LinkMode {
        self.peer.mode()
    }

    fn stats(&self) -> LinkStats {
        let (peer, client) = (self.peer.stats(), self.client.stats());
        LinkStats {
            connections: peer.connections + client.connections,
            refused: peer.refused + client.refused,
            cut: peer.cut + client.cut,
            bytes: peer.bytes + client.bytes,
        }
    }
}

/// Every directed link between a set of nodes.
#[derive(Debug)]
pub struct Network {
    links: BTreeMap<(u64, u64), Link>,
}

impl Network {
    /// Starts the proxies of every ordered pair of distinct nodes in `nodes` (id -> the
    /// addresses the node listens on), all passing traffic. `seed` seeds the proxies' jitter
    /// and loss.
    ///
    /// # Panics
    ///
    /// When a proxy cannot bind a loopback port.
    pub async fn start(nodes: &BTreeMap<u64, NodePorts>, seed: u64) -> Network {
        let mut links = BTreeMap::new();
        for &from in nodes.keys() {
            for (&to, target) in nodes {
                if from == to {
                    continue;
                }
                let link_seed = seed ^ (from << 32) ^ to;
                let start = async |target: SocketAddr, seed: u64, port: &str| {
                    LinkProxy::start(target, seed)
                        .await
                        .unwrap_or_else(|error| {
                            panic!("starting the {port} proxy of link {from}->{to} failed: {error}")
                        })
                };
                let link = Link {
                    peer: start(target.peer, link_seed, "peer").await,
                    client: start(target.client, link_seed ^ 1, "client").await,
                };
                links.insert((from, to), link);
            }
        }
        Network { links }
    }

    fn link(&self, from: u64, to: u64) -> &Link {
        self.links
            .get(&(from, to))
            .unwrap_or_else(|| panic!("the network has no link {from}->{to}"))
    }

    /// The address node `from` dials to reach node `to`'s peer port.
    pub fn proxy_address(&self, from: u64, to: u64) -> SocketAddr {
        self.link(from, to).peer.address()
    }

    /// The `--routes` value of node `from`: every other node's peer and client addresses
    /// through their proxies.
    pub fn routes_of(&self, from: u64) -> String {
        self.links
            .iter()
            .filter(|((source, _), _)| *source == from)
            .flat_map(|(_, link)| [&link.peer, &link.client])
            .map(|proxy| format!("{}={}", proxy.target(), proxy.address()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Sets the mode of the directed link `from -> to`.
    pub fn set_link(&self, from: u64, to: u64, mode: LinkMode) {
        self.link(from, to).set_mode(mode);
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_between(&self, a: u64, b: u64, mode: LinkMode) {
        self.set_link(a, b, mode);
        self.set_link(b, a, mode);
    }

    /// Sets every link to and from `node`: with [`LinkMode::Blackhole`], the node is isolated.
    pub fn set_node(&self, node: u64, mode: LinkMode) {
        for ((from, to), link) in &self.links {
            if *from == node || *to == node {
                link.set_mode(mode);
            }
        }
    }

    /// Sets every link.
    pub fn set_all(&self, mode: LinkMode) {
        for link in self.links.values() {
            link.set_mode(mode);
        }
    }

    /// Every link back to [`LinkMode::Pass`].
    pub fn heal(&self) {
        self.set_all(LinkMode::Pass);
    }

    /// The links not passing traffic, e.g. `1->2 blackhole`; empty when all pass.
    pub fn faults(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|(_, link)| link.mode() != LinkMode::Pass)
            .map(|((from, to), link)| format!("{from}->{to} {}", link.mode().describe()))
            .collect()
    }

    /// What every link did so far (its peer and client proxies together).
    pub fn stats(&self) -> BTreeMap<(u64, u64), LinkStats> {
        self.links
            .iter()
            .map(|(key, link)| (*key, link.stats()))
            .collect()
    }

    /// What every link's peer proxy (Raft traffic) did so far.
    pub fn peer_stats(&self) -> BTreeMap<(u64, u64), LinkStats> {
        self.links
            .iter()
            .map(|(key, link)| (*key, link.peer.stats()))
            .collect()
    }
}
