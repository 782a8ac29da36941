//! The links between the nodes of a proxied cluster: one [`LinkProxy`] per directed pair.
//!
//! Node `i` is started with `--routes addr_j=<proxy i->j>,...`, so everything it sends to node
//! `j` (replication, votes, snapshots, forwarded appends, read-index calls) crosses the proxy of
//! the link `i -> j`, and the answers come back through the same connection. Faults are link
//! modes: a node is isolated by blackholing every link to and from it, a one-way fault touches
//! one directed link, a bridge cuts one pair both ways. Clients talk to the nodes directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::proxy::{LinkMode, LinkProxy, LinkStats};

/// Every directed link between a set of nodes.
#[derive(Debug)]
pub struct Network {
    links: BTreeMap<(u64, u64), LinkProxy>,
}

impl Network {
    /// Starts a proxy for every ordered pair of distinct nodes in `nodes` (id -> address the
    /// node listens on), all passing traffic. `seed` seeds the proxies' jitter and loss.
    ///
    /// # Panics
    ///
    /// When a proxy cannot bind a loopback port.
    pub async fn start(nodes: &BTreeMap<u64, SocketAddr>, seed: u64) -> Network {
        let mut links = BTreeMap::new();
        for &from in nodes.keys() {
            for (&to, &target) in nodes {
                if from == to {
                    continue;
                }
                let link_seed = seed ^ (from << 32) ^ to;
                let proxy = LinkProxy::start(target, link_seed)
                    .await
                    .unwrap_or_else(|error| {
                        panic!("starting the proxy of link {from}->{to} failed: {error}")
                    });
                links.insert((from, to), proxy);
            }
        }
        Network { links }
    }

    fn link(&self, from: u64, to: u64) -> &LinkProxy {
        self.links
            .get(&(from, to))
            .unwrap_or_else(|| panic!("the network has no link {from}->{to}"))
    }

    /// The address node `from` dials to reach node `to`.
    pub fn proxy_address(&self, from: u64, to: u64) -> SocketAddr {
        self.link(from, to).address()
    }

    /// The `--routes` value of node `from`: every other node's address through its proxy.
    pub fn routes_of(&self, from: u64) -> String {
        self.links
            .iter()
            .filter(|((source, _), _)| *source == from)
            .map(|(_, proxy)| format!("{}={}", proxy.target(), proxy.address()))
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
        for ((from, to), proxy) in &self.links {
            if *from == node || *to == node {
                proxy.set_mode(mode);
            }
        }
    }

    /// Sets every link.
    pub fn set_all(&self, mode: LinkMode) {
        for proxy in self.links.values() {
            proxy.set_mode(mode);
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
            .filter(|(_, proxy)| proxy.mode() != LinkMode::Pass)
            .map(|((from, to), proxy)| format!("{from}->{to} {}", proxy.mode().describe()))
            .collect()
    }

    /// What every link did so far.
    pub fn stats(&self) -> BTreeMap<(u64, u64), LinkStats> {
        self.links
            .iter()
            .map(|(link, proxy)| (*link, proxy.stats()))
            .collect()
    }
}
