//! The replicated state machine: events, streams and the stream index.
//!
//! `apply` holds the pure decisions; `store` is openraft's `RaftStateMachine` on the engine.

pub mod apply;
pub mod store;
