//! The Raft network over gRPC: `client.rs` sends openraft's messages (and streams snapshots)
//! to peers, `server.rs` receives them, `channels.rs` pools one channel per peer address
//! (with `--routes`), `wire.rs` encodes the messages (postcard).

pub mod channels;
pub mod client;
pub mod server;
pub mod wire;
