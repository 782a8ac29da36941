//! `evlog.v1.Consumers` over gRPC: converts, calls the service, maps its errors. A follower
//! hands every call to the leader over the pooled peer channels (a `Consume` stream is piped
//! both ways), marked, so the leader never hands it on again.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use evlog_proto::metadata;
use evlog_proto::v1 as pb;
use evlog_proto::v1::consumers_client::ConsumersClient;
use evlog_proto::v1::consumers_server::Consumers;
use evlog_raft_store::consumer::ConsumerFilter;
use evlog_raft_store::consumer::ConsumerSettings;
use evlog_raft_store::consumer::ConsumerTarget;
use evlog_raft_store::consumer::DispatchMode;
use evlog_raft_store::consumer::Outcome;
use evlog_raft_store::consumer::RedriveSelection;
use futures::Stream;
use futures::StreamExt;
use tokio::sync::oneshot;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use evlog_raft_store::access::Permission;

use crate::grpc::auth;
use crate::grpc::convert::recorded_event;
use crate::grpc::status::to_status;
use crate::raft::transport::channels::ChannelPool;
use crate::service::ServiceError;
use crate::service::access::AccessControl;
use crate::service::access::Need;
use crate::service::access::Principal;
use crate::service::consumers::ConsumerInfo;
use crate::service::consumers::ConsumerService;
use crate::service::consumers::CreateConsumer;
use crate::service::consumers::CreateStart;
use crate::service::consumers::DeadLetter;
use crate::service::consumers::MAX_SETTLEMENTS;
use crate::service::consumers::Member;
use crate::service::consumers::MemberOutput;
use crate::service::consumers::MemberSettlement;
use crate::service::consumers::group::SETTLED_WEIGHT;
use crate::service::consumers::group::event_weight;
use crate::service::consumers::validate_reason;
use crate::service::event_log::leader_to_forward_to;

pub struct ConsumersGrpc {
    service: Arc<ConsumerService>,
    channels: ChannelPool,
    max_message_bytes: usize,
    access: Arc<AccessControl>,
}

/// What reading a group's events needs: READ on its stream, or on every prefix of its filter.
fn read_need<'a>(target: &'a ConsumerTarget, filter: &'a ConsumerFilter) -> Need<'a> {
    match target {
        ConsumerTarget::Stream(stream) => Need::On(Permission::Read, stream),
        ConsumerTarget::All => Need::ReadAll(&filter.stream_prefixes),
    }
}

impl ConsumersGrpc {
    pub fn new(
        service: Arc<ConsumerService>,
        channels: ChannelPool,
        max_message_bytes: usize,
        access: Arc<AccessControl>,
    ) -> Self {
        Self {
            service,
            channels,
            max_message_bytes,
            access,
        }
    }

    fn check(&self, principal: &Principal, need: Need<'_>) -> Result<(), Status> {
        self.access.check(principal, need).map_err(status)
    }

    /// Checks that `principal` may use group `name` and read its events; answers the group's
    /// target and filter.
    async fn check_group(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<(ConsumerTarget, ConsumerFilter), Status> {
        self.check(principal, Need::On(Permission::Consume, name))?;
        if !self.access.enabled() {
            return Ok((ConsumerTarget::All, ConsumerFilter::default()));
        }
        let info = self.service.get(name.to_string()).await.map_err(status)?;
        let (target, filter) = (info.record.target, info.record.filter);
        self.check(principal, read_need(&target, &filter))?;
        Ok((target, filter))
    }

    /// The leader's client when this node does not lead (`None` when it does).
    async fn leader<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<ConsumersClient<Channel>>, Status> {
        let channel = leader_channel(
            self.service.handle(),
            &self.channels,
            request,
            self.service.request_timeout(),
        )
        .await?;
        Ok(channel.map(|channel| {
            ConsumersClient::new(channel)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes)
        }))
    }
}

/// A channel to the leader when this node does not lead (`None` when it does); refused when
/// `request` was handed on to this node already (it never goes round).
pub(crate) async fn leader_channel<T>(
    handle: &crate::raft::handle::RaftHandle,
    channels: &ChannelPool,
    request: &Request<T>,
    timeout: std::time::Duration,
) -> Result<Option<Channel>, Status> {
    if handle.is_leader() {
        return Ok(None);
    }
    if request.metadata().contains_key(metadata::FORWARDED) {
        return Err(to_status(
            ServiceError::NotLeader(handle.leader_hint()),
            true,
        ));
    }
    let leader = leader_to_forward_to(handle, timeout)
        .await
        .map_err(|error| to_status(error, false))?;
    let channel = channels.get(&leader.address).map_err(|error| {
        to_status(
            ServiceError::LeaderUnreachable {
                leader_id: leader.id,
                detail: error.to_string(),
            },
            false,
        )
    })?;
    Ok(Some(channel))
}

/// `message` marked as handed on by a follower, with the caller's deadline.
pub(crate) fn forwarded<T>(message: T, timeout: Option<std::time::Duration>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
        .metadata_mut()
        .insert(metadata::FORWARDED, MetadataValue::from_static("1"));
    crate::grpc::auth::forward_credentials(request.metadata_mut());
    request
}

pub(crate) fn deadline<T>(request: &Request<T>) -> Option<std::time::Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// A `grpc-timeout` header value (digits and a unit).
fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(amount * 3600),
        "M" => std::time::Duration::from_secs(amount * 60),
        "S" => std::time::Duration::from_secs(amount),
        "m" => std::time::Duration::from_millis(amount),
        "u" => std::time::Duration::from_micros(amount),
        "n" => std::time::Duration::from_nanos(amount),
        _ => return None,
    })
}

fn status(error: ServiceError) -> Status {
    to_status(error, false)
}

pub(crate) fn settings_from_wire(
    settings: Option<pb::ConsumerSettings>,
) -> Result<ConsumerSettings, Status> {
    let settings = settings.unwrap_or_default();
    let mode = match pb::DispatchMode::try_from(settings.mode) {
        Ok(pb::DispatchMode::Keyed) => DispatchMode::Keyed,
        Ok(pb::DispatchMode::Shared) => DispatchMode::Shared,
        Ok(pb::DispatchMode::Exclusive) => DispatchMode::Exclusive,
        Err(_) => {
            return Err(status(ServiceError::InvalidArgument(format!(
                "unknown dispatch mode {}",
                settings.mode
            ))));
        }
    };
    Ok(ConsumerSettings {
        mode,
        ack_wait_ms: settings.ack_wait_ms,
        max_deliveries: settings.max_deliveries,
        backoff_ms: settings.backoff_ms,
        max_in_flight: settings.max_in_flight,
    })
}

fn settings_to_wire(settings: &ConsumerSettings) -> pb::ConsumerSettings {
    pb::ConsumerSettings {
        mode: match settings.mode {
            DispatchMode::Keyed => pb::DispatchMode::Keyed,
            DispatchMode::Shared => pb::DispatchMode::Shared,
            DispatchMode::Exclusive => pb::DispatchMode::Exclusive,
        } as i32,
        ack_wait_ms: settings.ack_wait_ms,
        max_deliveries: settings.max_deliveries,
        backoff_ms: settings.backoff_ms.clone(),
        max_in_flight: settings.max_in_flight,
    }
}

pub fn info_to_wire(info: ConsumerInfo) -> pb::ConsumerInfo {
    let record = info.record;
    let stats = record.stats;
    pb::ConsumerInfo {
        name: record.name,
        target: Some(match record.target {
            ConsumerTarget::All => pb::consumer_info::Target::All(pb::AllStreams {}),
            ConsumerTarget::Stream(stream) => pb::consumer_info::Target::Stream(stream),
        }),
        filter: Some(pb::SubscribeFilter {
            stream_prefixes: record.filter.stream_prefixes,
            event_types: record.filter.event_types,
        }),
        settings: Some(settings_to_wire(&record.settings)),
        ack_floor: info.ack_floor,
        lag_events: info.lag.events,
        lag_seconds: info.lag.oldest_unsettled_ms.map_or(0.0, |oldest| {
            info.now_ms.saturating_sub(oldest) as f64 / 1000.0
        }),
        lag_exact: info.lag.exact,
        in_flight: stats.in_flight,
        delivered_total: stats.delivered_total,
        acked_total: stats.acked_total,
        redelivered_total: stats.redelivered_total,
        dead_lettered_total: stats.dead_lettered_total,
        dead_letters: stats.dead_letters,
        redriven_total: stats.redriven_total,
        tracked: stats.tracked,
        frontier: record.frontier,
        epoch: info.epoch,
        members: info
            .members
            .into_iter()
            .map(|member| pb::ConsumerMember {
                member_id: member.member_id,
                name: member.name,
                credit: member.credit,
                in_flight: member.in_flight,
                active: member.active,
            })
            .collect(),
        created_at_ms: record.created_ms,
        skipped_by_retention: info.skips.skipped_total,
        last_skipped_from: info.skips.last_from,
        last_skipped_to: info.skips.last_to,
    }
}

fn dead_letter_to_wire(dead: DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        event: dead.event.map(recorded_event),
        reason: dead.record.reason,
        dead_lettered_at_ms: dead.record.dead_lettered_ms,
        attempts: dead
            .record
            .history
            .into_iter()
            .map(|attempt| pb::DeadLetterAttempt {
                member: attempt.member,
                delivered_at_ms: attempt.delivered_ms,
                outcome: attempt.outcome.map_or("none", Outcome::as_str).to_string(),
                settled_at_ms: attempt.settled_ms,
                reason: attempt.reason,
            })
            .collect(),
        key: dead.key,
    }
}

/// A delivery id: the event's key in the group and the attempt.
pub fn delivery_id(key: u64, attempt: u32) -> String {
    format!("{key}.{attempt}")
}

pub(crate) fn parse_delivery_id(id: &str) -> Result<(u64, u32), ServiceError> {
    id.split_once('.')
        .and_then(|(key, attempt)| Some((key.parse().ok()?, attempt.parse().ok()?)))
        .ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "delivery_id {id:?} is not one this group gave (KEY.ATTEMPT)"
            ))
        })
}

pub type ConsumeStream =
    Pin<Box<dyn Stream<Item = Result<pb::ConsumeResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Consumers for ConsumersGrpc {
    type ConsumeStream = ConsumeStream;

    async fn create(
        &self,
        request: Request<pb::CreateConsumerRequest>,
    ) -> Result<Response<pb::ConsumerInfo>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .create(forwarded(request.into_inner(), timeout))
                .await;
        }
        let principal = auth::principal(&request);
        let request = request.into_inner();
        let target = match request.target {
            Some(pb::create_consumer_request::Target::Stream(stream)) => {
                ConsumerTarget::Stream(stream)
            }
            Some(pb::create_consumer_request::Target::All(_)) => ConsumerTarget::All,
            None => {
                return Err(status(ServiceError::InvalidArgument(
                    "target is missing: a stream or all".to_string(),
                )));
            }
        };
        let filter = request.filter.unwrap_or_default();
        let filter = ConsumerFilter {
            stream_prefixes: filter.stream_prefixes,
            event_types: filter.event_types,
        };
        // No wider than its creator's grants: a group reads nothing its creator may not.
        self.check(&principal, Need::On(Permission::Consume, &request.name))?;
        self.check(&principal, read_need(&target, &filter))?;
        let start = match request.start {
            None => CreateStart::Beginning,
            Some(pb::create_consumer_request::Start::From(from)) => CreateStart::From(from),
            Some(pb::create_consumer_request::Start::FromTimestampMs(time)) => {
                CreateStart::Time(time)
            }
            Some(pb::create_consumer_request::Start::Head(_)) => CreateStart::Head,
        };
        let info = self
            .service
            .create(CreateConsumer {
                name: request.name,
                target,
                filter,
                start,
                settings: settings_from_wire(request.settings)?,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(info_to_wire(info)))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateConsumerRequest>,
    ) -> Result<Response<pb::ConsumerInfo>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .update(forwarded(request.into_inner(), timeout))
                .await;
        }
        let principal = auth::principal(&request);
        let request = request.into_inner();
        self.check(&principal, Need::On(Permission::Consume, &request.name))?;
        let info = self
            .service
            .update(request.name, settings_from_wire(request.settings)?)
            .await
            .map_err(status)?;
        Ok(Response::new(info_to_wire(info)))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteConsumerRequest>,
    ) -> Result<Response<pb::DeleteConsumerResponse>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .delete(forwarded(request.into_inner(), timeout))
                .await;
        }
        let principal = auth::principal(&request);
        let name = request.into_inner().name;
        self.check(&principal, Need::On(Permission::Consume, &name))?;
        self.service.delete(name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteConsumerResponse {}))
    }

    async fn get(
        &self,
        request: Request<pb::GetConsumerRequest>,
    ) -> Result<Response<pb::ConsumerInfo>, Status> {
        // The leader knows the members.
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader.get(forwarded(request.into_inner(), timeout)).await;
        }
        let principal = auth::principal(&request);
        let name = request.into_inner().name;
        self.check(&principal, Need::On(Permission::Consume, &name))?;
        let info = self.service.get(name).await.map_err(status)?;
        Ok(Response::new(info_to_wire(info)))
    }

    async fn list(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader.list(forwarded(request.into_inner(), timeout)).await;
        }
        let principal = auth::principal(&request);
        let request = request.into_inner();
        let after = (!request.after.is_empty()).then_some(request.after);
        let infos = self
            .service
            .list(after, request.max_count as usize)
            .await
            .map_err(status)?;
        // Only the groups the caller may use are listed (a page may come back shorter).
        Ok(Response::new(pb::ListConsumersResponse {
            consumers: infos
                .into_iter()
                .filter(|info| {
                    self.access
                        .check(&principal, Need::On(Permission::Consume, &info.record.name))
                        .is_ok()
                })
                .map(info_to_wire)
                .collect(),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .list_dead_letters(forwarded(request.into_inner(), timeout))
                .await;
        }
        let principal = auth::principal(&request);
        let request = request.into_inner();
        // Dead letters hold copies of events: reading them needs READ as the group's events do.
        self.check_group(&principal, &request.consumer).await?;
        let (dead_letters, next_from) = self
            .service
            .dead_letters(request.consumer, request.from, request.max_count as usize)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: dead_letters.into_iter().map(dead_letter_to_wire).collect(),
            next_from,
        }))
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::RedriveResponse>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .redrive(forwarded(request.into_inner(), timeout))
                .await;
        }
        let principal = auth::principal(&request);
        let request = request.into_inner();
        self.check(&principal, Need::On(Permission::Consume, &request.consumer))?;
        let selection = match request.selection {
            Some(pb::redrive_request::Selection::All(limit)) => RedriveSelection::All { limit },
            Some(pb::redrive_request::Selection::Keys(keys)) => RedriveSelection::Keys(keys.keys),
            Some(pb::redrive_request::Selection::ReasonContains(text)) => {
                RedriveSelection::Reason {
                    text,
                    limit: crate::service::consumers::MAX_REDRIVE,
                }
            }
            None => {
                return Err(status(ServiceError::InvalidArgument(
                    "selection is missing: all, keys or reason_contains".to_string(),
                )));
            }
        };
        let (redriven, repeated) = self
            .service
            .redrive(request.consumer, request.redrive_id, selection)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RedriveResponse { redriven, repeated }))
    }

    async fn consume(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        if let Some(mut leader) = self.leader(&request).await? {
            // Piped both ways; the leader's answers, errors included, pass as they are.
            let inbound = request
                .into_inner()
                .take_while(|item| futures::future::ready(item.is_ok()))
                .filter_map(|item| futures::future::ready(item.ok()));
            let response = leader.consume(forwarded(inbound, None)).await?;
            return Ok(Response::new(Box::pin(response.into_inner())));
        }
        let principal = auth::principal(&request);
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.service.request_timeout(), inbound.next())
            .await
            .map_err(|_| {
                status(ServiceError::InvalidArgument(
                    "a consume stream starts with join; none came in time".to_string(),
                ))
            })?;
        let join = match first {
            Some(Ok(pb::ConsumeRequest {
                msg: Some(pb::consume_request::Msg::Join(join)),
            })) => join,
            Some(Err(error)) => return Err(error),
            _ => {
                return Err(status(ServiceError::InvalidArgument(
                    "a consume stream starts with join".to_string(),
                )));
            }
        };
        let (target, filter) = self.check_group(&principal, &join.consumer).await?;
        let access = Arc::clone(&self.access);
        let group = join.consumer.clone();
        // Checked again whenever access changes: a revoked caller's membership ends.
        let denied = async move {
            let needs = [
                Need::On(Permission::Consume, &group),
                read_need(&target, &filter),
            ];
            access.denied(&principal, &needs).await
        };
        let (member, output) = self
            .service
            .join(join.consumer.clone(), join.credit, join.member_name)
            .await
            .map_err(status)?;
        let info = self.service.get(join.consumer).await.map_err(status)?;
        let (member_id, bytes) = (member.member_id.clone(), Arc::clone(&member.bytes));
        let (bad_input, bad) = oneshot::channel::<Status>();
        tokio::spawn(read_requests(inbound, member, bad_input));
        let joined = pb::ConsumeResponse {
            msg: Some(pb::consume_response::Msg::Joined(pb::Joined {
                member_id,
                consumer: Some(info_to_wire(info)),
            })),
        };
        let state = OutputState {
            output,
            bad: Some(bad),
            bytes,
            ending: None,
            done: false,
        };
        let items = futures::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let item = state.next().await?;
            Some((item, state))
        });
        Ok(Response::new(Box::pin(auth::until_denied(
            futures::stream::once(futures::future::ready(Ok(joined))).chain(items),
            denied,
        ))))
    }
}

struct OutputState {
    output: tokio::sync::mpsc::UnboundedReceiver<MemberOutput>,
    bad: Option<oneshot::Receiver<Status>>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// The status that ends the stream after a `revoked` message.
    ending: Option<Status>,
    done: bool,
}

impl OutputState {
    /// `weight` bytes of the member's budget went out on its stream.
    fn taken(&self, weight: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                Some(bytes.saturating_sub(weight))
            });
    }

    async fn next(&mut self) -> Option<Result<pb::ConsumeResponse, Status>> {
        if let Some(ending) = self.ending.take() {
            self.done = true;
            return Some(Err(ending));
        }
        let output = match self.bad.as_mut() {
            Some(bad) => tokio::select! {
                output = self.output.recv() => output,
                error = bad => {
                    self.done = true;
                    return match error {
                        Ok(error) => Some(Err(error)),
                        // The request side ended cleanly: the member left.
                        Err(_) => None,
                    };
                }
            },
            None => self.output.recv().await,
        };
        let msg = match output? {
            MemberOutput::Delivery {
                key,
                attempt,
                event,
            } => {
                self.taken(event_weight(&event));
                pb::consume_response::Msg::Delivery(pb::Delivery {
                    delivery_id: delivery_id(key, attempt),
                    attempt,
                    event: Some(recorded_event(event)),
                })
            }
            MemberOutput::Settled(results) => {
                self.taken(results.len() * SETTLED_WEIGHT);
                pb::consume_response::Msg::Settled(pb::Settled {
                    results: results
                        .into_iter()
                        .map(|(delivery_id, ok)| pb::SettleResult {
                            delivery_id,
                            status: if ok {
                                pb::SettleStatus::Ok
                            } else {
                                pb::SettleStatus::Stale
                            } as i32,
                        })
                        .collect(),
                })
            }
            MemberOutput::Revoked(error) => {
                // Said as a message, then as the status that ends the stream (its code and
                // metadata: the leader to join, or that the group is gone).
                let ending = status(error);
                let reason = ending.message().to_string();
                self.ending = Some(ending);
                pb::consume_response::Msg::Revoked(pb::Revoked { reason })
            }
        };
        Some(Ok(pb::ConsumeResponse { msg: Some(msg) }))
    }
}

/// Reads a member's requests until its stream ends; a bad one ends the member with
/// `INVALID_ARGUMENT` (sent on `bad_input`). The member leaves its group when this returns.
async fn read_requests(
    mut inbound: Streaming<pb::ConsumeRequest>,
    member: Member,
    bad_input: oneshot::Sender<Status>,
) {
    let result: Result<(), ServiceError> = async {
        while let Some(Ok(request)) = inbound.next().await {
            match request.msg {
                Some(pb::consume_request::Msg::Credit(credit)) => {
                    member.credit(credit.count).await?
                }
                Some(pb::consume_request::Msg::Settle(settle)) => {
                    if settle.settlements.len() > MAX_SETTLEMENTS {
                        return Err(ServiceError::InvalidArgument(format!(
                            "{} settlements in one message; at most {MAX_SETTLEMENTS}",
                            settle.settlements.len()
                        )));
                    }
                    let mut settlements = Vec::with_capacity(settle.settlements.len());
                    for settlement in settle.settlements {
                        let (key, attempt) = parse_delivery_id(&settlement.delivery_id)?;
                        validate_reason(&settlement.reason)?;
                        let outcome = match pb::SettleOutcome::try_from(settlement.outcome) {
                            Ok(pb::SettleOutcome::Ack) => Outcome::Ack,
                            Ok(pb::SettleOutcome::Retry) => Outcome::Retry {
                                delay_ms: (settlement.delay_ms > 0).then(|| {
                                    settlement.delay_ms.min(ConsumerSettings::MAX_BACKOFF_MS)
                                }),
                            },
                            Ok(pb::SettleOutcome::DeadLetter) => Outcome::DeadLetter,
                            Err(_) => {
                                return Err(ServiceError::InvalidArgument(format!(
                                    "unknown settle outcome {}",
                                    settlement.outcome
                                )));
                            }
                        };
                        settlements.push(MemberSettlement {
                            delivery_id: settlement.delivery_id,
                            key,
                            attempt,
                            outcome,
                            reason: settlement.reason,
                        });
                    }
                    member.settle(settlements).await?;
                }
                Some(pb::consume_request::Msg::Extend(extend)) => {
                    if extend.delivery_ids.len() > MAX_SETTLEMENTS {
                        return Err(ServiceError::InvalidArgument(format!(
                            "{} deliveries in one extend; at most {MAX_SETTLEMENTS}",
                            extend.delivery_ids.len()
                        )));
                    }
                    let deliveries = extend
                        .delivery_ids
                        .iter()
                        .map(|id| parse_delivery_id(id))
                        .collect::<Result<Vec<_>, _>>()?;
                    member.extend(deliveries).await?;
                }
                Some(pb::consume_request::Msg::Join(_)) => {
                    return Err(ServiceError::InvalidArgument(
                        "a consume stream joins once".to_string(),
                    ));
                }
                None => {
                    return Err(ServiceError::InvalidArgument(
                        "an empty consume request".to_string(),
                    ));
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        bad_input.send(status(error)).ok();
    }
    drop(member);
}
