//! The Raft network over gRPC, on the peer port (package `evlog.internal.v1`): `client.rs`
//! sends openraft's messages (and streams snapshots) to peers, `server.rs` receives them and
//! builds the peer server, `channels.rs` pools one channel per address (with `--routes`),
//! `identity.rs` stamps and checks the cluster id and group id every message carries,
//! `wire.rs` encodes the messages (postcard).
//!
//! TLS goes in two places: the peer server is built only in [`server::serve`], and every
//! outgoing channel (to peers and to other nodes' client ports) only in
//! [`channels::ChannelPool`].

pub mod channels;
pub mod client;
pub mod identity;
pub mod server;
pub mod wire;
