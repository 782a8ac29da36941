//! Whose peer messages these are. Every message of the peer protocol carries a
//! [`PeerHeader`]: the sender's cluster id, the Raft group it belongs to, and the sender's node
//! id. A node refuses (`FAILED_PRECONDITION`, and counts it in
//! `evlog_peer_messages_refused_total`) a message of another cluster, so a node pointed at the
//! wrong cluster (a copied config, a reused address) never takes part in its elections or
//! replication; and a message of a group it does not run (only group 0 exists until many Raft
//! groups share a node).
//!
//! Those two are checks against mistakes: anyone who can reach the peer port can claim any
//! cluster id. With TLS on, the peer port is mutual TLS (only holders of a `--peer-ca`
//! certificate reach it), and the sender is authenticated too: its certificate must name the
//! node id of the header (`node-<id>`, see [`crate::tls::names_node`]), and a Raft message must
//! speak for that node (the vote in it is the sender's), or it is refused with
//! `PERMISSION_DENIED` (reason `certificate_name`). So a node's certificate lets it speak as
//! that node only: it cannot campaign, lead or transfer leadership as another.

use std::sync::Arc;

use evlog_proto::internal::v1::PeerHeader;
use evlog_raft_store::type_config::NodeId;
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::CertificateDer;
use tonic::Status;

use crate::metrics::Metrics;

/// The only Raft group a node runs today.
pub const GROUP_ID: u64 = 0;

/// This node's cluster, group and id, as it stamps and checks them on peer messages.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    cluster_id: Arc<str>,
    group_id: u64,
    node_id: NodeId,
    /// TLS is on: senders' certificates must name them.
    certificates_named: bool,
    refused_cluster: Counter,
    refused_group: Counter,
    refused_missing: Counter,
    refused_certificate_name: Counter,
}

impl PeerIdentity {
    /// `tls`: the peer port is mutual TLS, so every sender presents a certificate, which
    /// must name it.
    pub fn new(cluster_id: &str, node_id: NodeId, tls: bool, metrics: &Metrics) -> Self {
        let refused = |reason: &str| {
            metrics
                .peer_messages_refused
                .get_or_create_owned(&vec![("reason", reason.to_string())])
        };
        Self {
            cluster_id: Arc::from(cluster_id),
            group_id: GROUP_ID,
            node_id,
            certificates_named: tls,
            refused_cluster: refused("cluster_id"),
            refused_group: refused("group_id"),
            refused_missing: refused("missing_header"),
            refused_certificate_name: refused("certificate_name"),
        }
    }

    /// The header this node puts on every peer message it sends.
    pub fn header(&self) -> Option<PeerHeader> {
        Some(PeerHeader {
            cluster_id: self.cluster_id.to_string(),
            group_id: self.group_id,
            sender_id: self.node_id,
        })
    }

    /// Accepts a message of this node's cluster and group and returns its sender's id;
    /// refuses (and counts) any other. For answers; requests go through [`Self::check_request`].
    pub fn check(&self, header: Option<&PeerHeader>) -> Result<NodeId, Status> {
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
        Ok(header.sender_id)
    }

    /// As [`Self::check`], for a request received on a connection whose peer presented
    /// `certificates` (`None` without TLS): with TLS on, the sender must be the node its
    /// certificate names.
    pub fn check_request(
        &self,
        header: Option<&PeerHeader>,
        certificates: Option<&[CertificateDer<'static>]>,
    ) -> Result<NodeId, Status> {
        let sender = self.check(header)?;
        if self.certificates_named {
            let named = certificates
                .and_then(<[_]>::first)
                .is_some_and(|certificate| crate::tls::names_node(certificate, sender));
            if !named {
                self.refused_certificate_name.inc();
                return Err(Status::permission_denied(format!(
                    "peer message from node {sender} refused: the sender's certificate does not \
                     name it (a DNS subject alternative name {:?} is required)",
                    crate::tls::peer_name(sender)
                )));
            }
        }
        Ok(sender)
    }

    /// Accepts a Raft message of `sender` that speaks for `speaker` (the node whose vote it
    /// carries: the leader that replicates, the candidate that asks for a vote) only if they
    /// are one node; with TLS off there is no authenticated sender to hold it to.
    pub fn check_speaker(&self, sender: NodeId, speaker: NodeId) -> Result<(), Status> {
        if !self.certificates_named || sender == speaker {
            return Ok(());
        }
        self.refused_certificate_name.inc();
        Err(Status::permission_denied(format!(
            "peer message from node {sender} speaking for node {speaker} refused: a node's \
             certificate lets it speak for itself only"
        )))
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
        let ours = PeerIdentity::new("blue", 1, false, &metrics);
        let theirs = PeerIdentity::new("green", 2, false, &metrics);
        assert_eq!(ours.check(ours.header().as_ref()).expect("ours"), 1);

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

    fn certificate_naming(name: &str) -> CertificateDer<'static> {
        let params = rcgen::CertificateParams::new(vec![name.to_string(), "localhost".to_string()])
            .expect("certificate parameters");
        let key = rcgen::KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .clone()
    }

    #[test]
    fn with_tls_a_sender_must_be_named_by_its_certificate_and_speak_for_itself() {
        let metrics = Metrics::new();
        let ours = PeerIdentity::new("blue", 1, true, &metrics);
        let header = |sender_id| PeerHeader {
            cluster_id: "blue".to_string(),
            group_id: GROUP_ID,
            sender_id,
        };
        let node_2 = [certificate_naming("node-2")];
        assert_eq!(
            ours.check_request(Some(&header(2)), Some(&node_2))
                .expect("named"),
            2
        );

        for (sender, certificates) in [(3, Some(&node_2[..])), (22, Some(&node_2[..])), (2, None)] {
            let status = ours
                .check_request(Some(&header(sender)), certificates)
                .expect_err("a sender its certificate does not name");
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        }
        assert_eq!(refused(&metrics, "certificate_name"), 3);

        assert!(ours.check_speaker(2, 2).is_ok());
        let status = ours
            .check_speaker(2, 3)
            .expect_err("speaking for another node");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused(&metrics, "certificate_name"), 4);

        // Without TLS there is nothing to hold a sender to.
        let plaintext = PeerIdentity::new("blue", 1, false, &metrics);
        assert_eq!(
            plaintext
                .check_request(Some(&header(2)), None)
                .expect("no TLS"),
            2
        );
        assert!(plaintext.check_speaker(2, 3).is_ok());
    }
}
