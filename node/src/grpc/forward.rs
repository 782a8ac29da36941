//! Hands requests to the leader's client services over the pooled channels to client
//! addresses: the [`Forward`] the service
//! uses. A forwarded append is marked, so the leader never forwards it again; the leader's
//! refusal comes back as it was given (see `status::from_leader_status`).

use std::time::Duration;

use evlog_proto::metadata;
use evlog_proto::v1 as pb;
use evlog_proto::v1::cluster_client::ClusterClient;
use evlog_proto::v1::event_log_client::EventLogClient;
use futures::FutureExt;
use futures::future::BoxFuture;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::grpc::convert;
use crate::grpc::status::from_leader_status;
use crate::raft::handle::LeaderTransferred;
use crate::raft::transport::channels::ChannelPool;
use crate::service::ServiceError;
use crate::service::append::AppendRequest;
use crate::service::append::Appended;
use crate::service::event_log::StreamChange;
use crate::service::event_log::StreamChanged;
use crate::service::forward::Forward;
use crate::service::forward::Leader;
use crate::service::forward::MembershipChanged;

/// Forwards over gRPC.
pub struct GrpcForward {
    channels: ChannelPool,
    /// Leaders (by address) known to serve `AppendMany`; a leader of an older version answers
    /// it `UNIMPLEMENTED`, and its appends are then forwarded one by one.
    append_many_served: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The largest message a forwarded call sends or takes (an append passed this node's own
    /// limit already; the answers are small).
    max_message_bytes: usize,
}

impl GrpcForward {
    pub fn new(channels: ChannelPool, max_message_bytes: usize) -> Self {
        Self {
            channels,
            append_many_served: Default::default(),
            max_message_bytes,
        }
    }

    fn channel(&self, leader: &Leader) -> Result<Channel, ServiceError> {
        self.channels
            .get(&leader.address)
            .map_err(|error| ServiceError::LeaderUnreachable {
                leader_id: leader.id,
                detail: error.to_string(),
            })
    }
}

/// Runs a forwarded call with `timeout` as its gRPC deadline and as a bound of its own.
async fn call<T>(
    leader: &Leader,
    timeout: Duration,
    what: &str,
    send: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ServiceError> {
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(from_leader_status(&status, leader.id)),
        Err(_) => Err(ServiceError::Timeout(format!(
            "{what} forwarded to leader {} did not finish within {} ms; its outcome is unknown",
            leader.id,
            timeout.as_millis()
        ))),
    }
}

/// One append's result as the leader answered it; its error as the leader gave it.
fn append_result_from_wire(
    result: pb::AppendResult,
    leader_id: u64,
) -> Result<Appended, ServiceError> {
    match result.result {
        Some(pb::append_result::Result::Appended(response)) => {
            Ok(convert::append_response_from_wire(response))
        }
        Some(pb::append_result::Result::Error(error)) => {
            Err(from_leader_status(&error.to_status(), leader_id))
        }
        None => Err(ServiceError::Internal(
            "the leader answered an append with neither a result nor an error".to_string(),
        )),
    }
}

/// A call to the leader with the caller's token (the leader checks the caller again).
fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    crate::grpc::auth::forward_credentials(request.metadata_mut());
    request
}

/// `request` marked as forwarded, so the leader never hands it on again.
fn marked<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
    request
        .metadata_mut()
        .insert(metadata::FORWARDED, MetadataValue::from_static("1"));
    request
}

impl Forward for GrpcForward {
    fn append(
        &self,
        leader: Leader,
        append: AppendRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Appended, ServiceError>> {
        async move {
            let mut client = EventLogClient::new(self.channel(&leader)?)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes);
            let forwarded = marked(request(convert::append_request_to_wire(append), timeout));
            let response = call(&leader, timeout, "an append", client.append(forwarded)).await?;
            Ok(convert::append_response_from_wire(response))
        }
        .boxed()
    }

    fn append_many(
        &self,
        leader: Leader,
        appends: Vec<AppendRequest>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Result<Appended, ServiceError>>, ServiceError>> {
        async move {
            let mut client = EventLogClient::new(self.channel(&leader)?)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes);
            let sent = appends.len();
            let served = self
                .append_many_served
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&leader.address);
            // Until this leader is known to serve AppendMany, keep the appends to forward them
            // one by one if it does not.
            let kept = (!served).then(|| appends.clone());
            let message = pb::AppendManyRequest {
                appends: appends
                    .into_iter()
                    .map(convert::append_request_to_wire)
                    .collect(),
            };
            let forwarded = marked(request(message, timeout));
            let answer = match tokio::time::timeout(timeout, client.append_many(forwarded)).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(ServiceError::Timeout(format!(
                        "appends forwarded to leader {} did not finish within {} ms; their \
                         outcome is unknown",
                        leader.id,
                        timeout.as_millis()
                    )));
                }
            };
            if let (Err(status), Some(kept)) = (&answer, kept)
                && status.code() == tonic::Code::Unimplemented
            {
                tracing::info!(
                    leader = leader.id,
                    "the leader does not serve AppendMany (an older version): forwarding its \
                     appends one by one"
                );
                let one_by_one = kept
                    .into_iter()
                    .map(|append| self.append(leader.clone(), append, timeout));
                return Ok(futures::future::join_all(one_by_one).await);
            }
            let response = answer
                .map(tonic::Response::into_inner)
                .map_err(|status| from_leader_status(&status, leader.id))?;
            self.append_many_served
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(leader.address.clone());
            if response.results.len() != sent {
                return Err(ServiceError::Internal(format!(
                    "the leader answered {} results for {sent} appends",
                    response.results.len()
                )));
            }
            Ok(response
                .results
                .into_iter()
                .map(|result| append_result_from_wire(result, leader.id))
                .collect())
        }
        .boxed()
    }

    fn change_stream(
        &self,
        leader: Leader,
        change: StreamChange,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<StreamChanged, ServiceError>> {
        async move {
            let mut client = EventLogClient::new(self.channel(&leader)?);
            match convert::stream_change_to_wire(change) {
                convert::StreamChangeRequest::SetMetadata(set) => {
                    let forwarded = marked(request(set, timeout));
                    let response = call(
                        &leader,
                        timeout,
                        "a stream metadata change",
                        client.set_stream_metadata(forwarded),
                    )
                    .await?;
                    Ok(StreamChanged::Metadata(convert::stream_metadata_from_wire(
                        response,
                    )))
                }
                convert::StreamChangeRequest::Delete(delete) => {
                    let forwarded = marked(request(delete, timeout));
                    let response = call(
                        &leader,
                        timeout,
                        "a stream deletion",
                        client.delete_stream(forwarded),
                    )
                    .await?;
                    Ok(convert::deleted_from_wire(response))
                }
            }
        }
        .boxed()
    }

    fn add_learner(
        &self,
        leader: Leader,
        node_id: u64,
        node: evlog_raft_store::type_config::MemberNode,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<MembershipChanged, ServiceError>> {
        async move {
            let mut client = ClusterClient::new(self.channel(&leader)?);
            let learner = pb::AddLearnerRequest {
                node_id,
                address: node.client_address,
                peer_address: node.peer_address,
            };
            let call_request = request(learner, timeout);
            let response = call(
                &leader,
                timeout,
                "adding a learner",
                client.add_learner(call_request),
            )
            .await?;
            Ok(convert::membership_from_wire(response))
        }
        .boxed()
    }

    fn change_membership(
        &self,
        leader: Leader,
        voters: Vec<u64>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<MembershipChanged, ServiceError>> {
        async move {
            let mut client = ClusterClient::new(self.channel(&leader)?);
            let call_request = request(pb::ChangeMembershipRequest { voters }, timeout);
            let response = call(
                &leader,
                timeout,
                "a membership change",
                client.change_membership(call_request),
            )
            .await?;
            Ok(convert::membership_from_wire(response))
        }
        .boxed()
    }

    fn transfer_leader(
        &self,
        leader: Leader,
        to: Option<u64>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<LeaderTransferred, ServiceError>> {
        async move {
            let mut client = ClusterClient::new(self.channel(&leader)?);
            let call_request = request(pb::TransferLeaderRequest { to }, timeout);
            let response = call(
                &leader,
                timeout,
                "a leadership transfer",
                client.transfer_leader(call_request),
            )
            .await?;
            Ok(convert::leader_transferred_from_wire(response))
        }
        .boxed()
    }
}
