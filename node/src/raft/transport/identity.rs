//! Whose peer messages these are. Every message of the peer protocol carries a
//! [`PeerHeader`]: the sender's cluster id and the Raft group it belongs to. A node refuses
//! (`FAILED_PRECONDITION`, and counts it in `evlog_peer_messages_refused_total`) a message of
//! another cluster, so a node pointed at the wrong cluster (a copied config, a reused address)
//! never takes part in its elections or replication; and a message of a group it does not run
//! (only group 0 exists until many Raft groups share a node).
//!
//! This is a check against mistakes, not against attackers: anyone who can reach the peer
//! port can claim any cluster id. Authentication (mTLS) is layered on the peer listener.

use std::sync::Arc;

use evlog_proto::internal::v1::PeerHeader;
use prometheus_client::metrics::counter::Counter;
use tonic::Status;

use crate::metrics::Metrics;

/// The only Raft group a node runs today.
pub const GROUP_ID: u64 = 0;

/// This node's cluster and group, as it stamps and checks them on peer messages.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    cluster_id: Arc<str>,
    group_id: u64,
    refused_cluster: Counter,
    refused_group: Counter,
    refused_missing: Counter,
}

impl PeerIdentity {
    pub fn new(cluster_id: &str, metrics: &Metrics) -> Self {
        let refused = |reason: &str| {
            metrics
                .peer_messages_refused
                .get_or_create_owned(&vec![("reason", reason.to_string())])
        };
        Self {
            cluster_id: Arc::from(cluster_id),
            group_id: GROUP_ID,
            refused_cluster: refused("cluster_id"),
            refused_group: refused("group_id"),
            refused_missing: refused("missing_header"),
        }
    }

    /// The header this node puts on every peer message it sends.
    pub fn header(&self) -> Option<PeerHeader> {
        Some(PeerHeader {
            cluster_id: self.cluster_id.to_string(),
            group_id: self.group_id,
        })
    }

    /// Accepts a message of this node's cluster and group; refuses (and counts) any other.
    pub fn check(&self, header: Option<&PeerHeader>) -> Result<(), Status> {
        let Some(header) = header else {
            self.refused_missing.inc();
            return Err(Status::failed_precondition(
                "peer message without a header (cluster id, group id): refused",
            ));
        };
        if header.cluster_id != *self.cluster_id {
            self.refused_cluster.inc();
            return Err(Status::failed_precondition(format!(
                "peer message of cluster {:?} refused: this node belongs to cluster {:?} (check \
                 --cluster-id and --peers on the sender)",
                header.cluster_id, self.cluster_id
            )));
        }
        if header.group_id != self.group_id {
            self.refused_group.inc();
            return Err(Status::failed_precondition(format!(
                "peer message of Raft group {} refused: this node runs group {} only",
                header.group_id, self.group_id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(metrics: &Metrics, reason: &str) -> u64 {
        metrics
            .peer_messages_refused
            .get_or_create(&vec![("reason", reason.to_string())])
            .get()
    }

    #[test]
    fn a_message_of_another_cluster_or_group_is_refused_and_counted() {
        let metrics = Metrics::new();
        let ours = PeerIdentity::new("blue", &metrics);
        let theirs = PeerIdentity::new("green", &metrics);
        assert!(ours.check(ours.header().as_ref()).is_ok());

        let status = ours
            .check(theirs.header().as_ref())
            .expect_err("another cluster is refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("\"green\""), "{status}");
        assert_eq!(refused(&metrics, "cluster_id"), 1);

        let other_group = PeerHeader {
            group_id: 7,
            ..ours.header().expect("a header")
        };
        let status = ours
            .check(Some(&other_group))
            .expect_err("another group is refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(refused(&metrics, "group_id"), 1);

        assert!(ours.check(None).is_err());
        assert_eq!(refused(&metrics, "missing_header"), 1);
    }
}
