//! Where an entry landed in the Raft log: the durability receipt of an append.

/// The term, log index and leader of the entry that carried a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub term: u64,
    pub log_index: u64,
    pub leader_id: u64,
}
