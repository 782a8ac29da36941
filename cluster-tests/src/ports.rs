//! Free loopback ports for the nodes of a test cluster.
//!
//! The port is found by binding `127.0.0.1:0` and reading back what the kernel chose; the
//! listener is then dropped so the child process can bind it. Another process could take the
//! port in between; [`crate::Cluster::start`] detects that (a node exits complaining that the
//! address is in use) and starts over with fresh ports.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// Returns `count` distinct ports that were free on 127.0.0.1 a moment ago.
///
/// # Panics
///
/// When the kernel refuses to bind an ephemeral loopback port.
pub(crate) fn free_loopback_ports(count: usize) -> Vec<u16> {
    // Hold every listener until all ports are chosen, so the kernel cannot hand out the same
    // port twice.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
                .expect("binding an ephemeral port on 127.0.0.1 should succeed")
        })
        .collect();
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener should have a local address")
                .port()
        })
        .collect()
}
