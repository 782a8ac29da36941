//! `evlog.v1.EventLog` over gRPC: converts, calls the service, maps its errors.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

use evlog_proto::metadata;
use evlog_proto::v1 as pb;
use evlog_proto::v1::event_log_server::EventLog;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use evlog_raft_store::ReadTarget;
use evlog_raft_store::access::Permission;

use crate::grpc::auth;
use crate::grpc::convert;
use crate::grpc::status::to_status;
use crate::service::ServiceError;
use crate::service::access::AccessControl;
use crate::service::access::Need;
use crate::service::access::Principal;
use crate::service::event_log::EventLogService;
use crate::service::event_log::StreamChanged;

pub struct EventLogGrpc {
    service: Arc<EventLogService>,
    access: Arc<AccessControl>,
}

impl EventLogGrpc {
    pub fn new(service: Arc<EventLogService>, access: Arc<AccessControl>) -> Self {
        Self { service, access }
    }

    fn check(&self, principal: &Principal, need: Need<'_>) -> Result<(), Status> {
        self.access
            .check(principal, need)
            .map_err(|error| to_status(error, false))
    }
}

/// What reading `target` needs (`prefixes`: the filter of a subscription to `all`).
fn read_need<'a>(target: &'a ReadTarget, prefixes: &'a [String]) -> Need<'a> {
    match target {
        ReadTarget::Stream(stream) => Need::On(Permission::Read, stream),
        ReadTarget::All => Need::ReadAll(prefixes),
    }
}

/// A subscription's items on the wire; it ends after the first error.
pub type SubscribeStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EventLog for EventLogGrpc {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = auth::principal(&request);
        let request = convert::subscribe_request(request.into_inner())
            .map_err(|error| to_status(error, false))?;
        self.check(
            &principal,
            read_need(&request.target, &request.stream_prefixes),
        )?;
        // Checked again whenever access changes: a revoked caller's subscription ends.
        let target = request.target.clone();
        let prefixes = request.stream_prefixes.clone();
        let access = Arc::clone(&self.access);
        let denied = async move {
            access
                .denied(&principal, &[read_need(&target, &prefixes)])
                .await
        };
        let subscription = self
            .service
            .subscribe(request)
            .await
            .map_err(|error| to_status(error, false))?;
        // Pulled one item at a time as HTTP/2 flow control lets the response go on: a client
        // that stops reading stops the subscription's reads.
        let items = futures::stream::unfold(subscription, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((
                item.map(convert::subscription_item)
                    .map_err(|error| to_status(error, false)),
                subscription,
            ))
        });
        Ok(Response::new(Box::pin(auth::until_denied(items, denied))))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let forwarded = request.metadata().contains_key(metadata::FORWARDED);
        let principal = auth::principal(&request);
        let append = convert::append_request(request.into_inner());
        self.check(&principal, Need::On(Permission::Append, &append.stream))?;
        match self.service.append(append, forwarded).await {
            Ok(appended) => Ok(Response::new(convert::append_response(appended))),
            Err(error) => Err(to_status(error, forwarded)),
        }
    }

    async fn append_many(
        &self,
        request: Request<pb::AppendManyRequest>,
    ) -> Result<Response<pb::AppendManyResponse>, Status> {
        let forwarded = request.metadata().contains_key(metadata::FORWARDED);
        let principal = auth::principal(&request);
        let appends: Vec<_> = request
            .into_inner()
            .appends
            .into_iter()
            .map(convert::append_request)
            .collect();
        // Each append is checked on its own: a refused one gets its error in its place, the
        // others go on (as any other refusal of one append of many). Without --auth nothing is
        // checked.
        let refusals: Vec<Option<ServiceError>> = appends
            .iter()
            .map(|append| {
                if !self.access.enabled() {
                    return None;
                }
                let need = Need::On(Permission::Append, &append.stream);
                self.access.check(&principal, need).err()
            })
            .collect();
        // A call of no appends goes on too (the service refuses it whole); one whose every
        // append was refused does not.
        let all_refused = !refusals.is_empty() && refusals.iter().all(Option::is_some);
        let allowed: Vec<_> = appends
            .into_iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(append, _)| append)
            .collect();
        let mut done = if all_refused {
            Vec::new()
        } else {
            self.service
                .append_many(allowed, forwarded)
                .await
                .map_err(|error| to_status(error, forwarded))?
        }
        .into_iter();
        let results: Vec<_> = refusals
            .into_iter()
            .map(|refusal| match refusal {
                Some(error) => Err(error),
                None => done.next().unwrap_or_else(|| {
                    Err(ServiceError::Internal(
                        "fewer results than appends".to_string(),
                    ))
                }),
            })
            .collect();
        let results = results
            .into_iter()
            .map(|result| pb::AppendResult {
                result: Some(match result {
                    Ok(appended) => {
                        pb::append_result::Result::Appended(convert::append_response(appended))
                    }
                    Err(error) => pb::append_result::Result::Error(pb::AppendError::from_status(
                        &to_status(error, forwarded),
                    )),
                }),
            })
            .collect();
        Ok(Response::new(pb::AppendManyResponse { results }))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let principal = auth::principal(&request);
        let read = convert::read_request(request.into_inner()).map_err(|e| to_status(e, false))?;
        self.check(&principal, read_need(&read.target, &read.stream_prefixes))?;
        let page = self
            .service
            .read(read)
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(pb::ReadResponse {
            events: page
                .events
                .into_iter()
                .map(convert::recorded_event)
                .collect(),
            head_position: page.applied.head_position,
            served_by: self.service.node_id(),
            next_from: page.next_from,
            epoch: page.applied.epoch,
        }))
    }

    async fn get_stream(
        &self,
        request: Request<pb::GetStreamRequest>,
    ) -> Result<Response<pb::GetStreamResponse>, Status> {
        let principal = auth::principal(&request);
        let request = request.into_inner();
        self.check(&principal, Need::On(Permission::Read, &request.stream))?;
        let consistency = convert::consistency(request.consistency, request.at_least_position)
            .map_err(|error| to_status(error, false))?;
        let stream = request.stream;
        let found = self
            .service
            .get_stream(stream.clone(), consistency)
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(pb::GetStreamResponse {
            stream: Some(convert::stream_summary(stream, found.info)),
            head_position: found.head_position,
            served_by: self.service.node_id(),
        }))
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let principal = auth::principal(&request);
        let request = request.into_inner();
        // The names it lists are what it reveals: READ on the prefix listed.
        self.check(&principal, Need::On(Permission::Read, &request.prefix))?;
        let consistency = convert::consistency(request.consistency, request.at_least_position)
            .map_err(|error| to_status(error, false))?;
        let found = self
            .service
            .list_streams(
                request.prefix,
                request.after,
                request.max_count,
                consistency,
            )
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(pb::ListStreamsResponse {
            streams: found
                .page
                .streams
                .into_iter()
                .map(|(name, info)| convert::stream_summary(name, info))
                .collect(),
            next_after: found.page.next_after,
            head_position: found.head_position,
            served_by: self.service.node_id(),
        }))
    }

    async fn set_stream_metadata(
        &self,
        request: Request<pb::SetStreamMetadataRequest>,
    ) -> Result<Response<pb::StreamMetadata>, Status> {
        let forwarded = request.metadata().contains_key(metadata::FORWARDED);
        let principal = auth::principal(&request);
        let change = convert::set_stream_metadata_request(request.into_inner());
        let stream = change.stream().to_string();
        self.check(&principal, Need::On(Permission::Metadata, &stream))?;
        match self.service.change_stream(change, forwarded).await {
            Ok(StreamChanged::Metadata(meta)) => {
                Ok(Response::new(convert::stream_metadata(stream, meta)))
            }
            Ok(other) => Err(to_status(
                ServiceError::Internal(format!("metadata set was answered {other:?}")),
                forwarded,
            )),
            Err(error) => Err(to_status(error, forwarded)),
        }
    }

    async fn get_stream_metadata(
        &self,
        request: Request<pb::GetStreamMetadataRequest>,
    ) -> Result<Response<pb::StreamMetadata>, Status> {
        let principal = auth::principal(&request);
        let request = request.into_inner();
        self.check(&principal, Need::On(Permission::Read, &request.stream))?;
        let consistency = convert::consistency(request.consistency, request.at_least_position)
            .map_err(|error| to_status(error, false))?;
        let meta = self
            .service
            .get_stream_metadata(request.stream.clone(), consistency)
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(convert::stream_metadata(
            request.stream,
            meta,
        )))
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        let forwarded = request.metadata().contains_key(metadata::FORWARDED);
        let principal = auth::principal(&request);
        let change = convert::delete_stream_request(request.into_inner());
        self.check(&principal, Need::On(Permission::Delete, change.stream()))?;
        match self.service.change_stream(change, forwarded).await {
            Ok(StreamChanged::Deleted {
                version,
                position,
                receipt,
            }) => Ok(Response::new(pb::DeleteStreamResponse {
                version,
                position,
                receipt: Some(convert::receipt(receipt)),
            })),
            Ok(other) => Err(to_status(
                ServiceError::Internal(format!("a delete was answered {other:?}")),
                forwarded,
            )),
            Err(error) => Err(to_status(error, forwarded)),
        }
    }
}
