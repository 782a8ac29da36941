//! gRPC metadata keys of the evlog API: what a status carries beside its code and message,
//! and how a node marks a request it forwards. Clients and servers share these names.

/// On `FAILED_PRECONDITION` for a wrong `expected_version`: the stream's actual version.
pub const ACTUAL_VERSION: &str = "evlog-actual-version";
/// On `UNAVAILABLE` from a node that is not the leader: the leader's node id, when known.
pub const LEADER_ID: &str = "evlog-leader-id";
/// On `UNAVAILABLE` from a node that is not the leader: the leader's address, when known.
pub const LEADER_ADDRESS: &str = "evlog-leader-address";
/// Set by a follower on an append it forwards to the leader (so it is never forwarded again),
/// and by the leader on an error it answers a forwarded append with (so the follower passes it
/// on as it is).
pub const FORWARDED: &str = "evlog-forwarded";
/// On `RESOURCE_EXHAUSTED` when the node refused for load (too much in flight, its
/// subscription slots taken), not because the request is too large: nothing was done, and
/// the same request may succeed later or on another node.
pub const BUSY: &str = "evlog-busy";
/// On `OUT_OF_RANGE` for a read or subscription that starts below what retention or a deletion
/// left: the first retained version (stream) or position (all) to start from instead.
pub const FIRST_RETAINED: &str = "evlog-first-retained";
