//! `evlog.v1.Maintenance` over gRPC: converts, calls the service, maps its errors.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use evlog_proto::v1 as pb;
use evlog_proto::v1::maintenance_server::Maintenance;
use evlog_raft_store::types::CheckRange;
use futures::Stream;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::grpc::auth;
use crate::grpc::status::to_status;
use crate::service::access::AccessControl;
use crate::service::access::Need;
use crate::service::maintenance::Backup;
use crate::service::maintenance::MaintenanceService;

pub struct MaintenanceGrpc {
    service: Arc<MaintenanceService>,
    access: Arc<AccessControl>,
}

impl MaintenanceGrpc {
    pub fn new(service: Arc<MaintenanceService>, access: Arc<AccessControl>) -> Self {
        Self { service, access }
    }

    /// Backups and replica checks need ADMIN (a backup holds every event).
    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.access
            .check(&auth::principal(request), Need::Admin)
            .map_err(|error| to_status(error, false))
    }
}

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

/// Where a backup stream is.
enum Step {
    Started(Backup, u64),
    Data(Backup, u64),
    Done,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceGrpc {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.check_admin(&request)?;
        let request = request.into_inner();
        let backup = self
            .service
            .backup(request.at_least_position)
            .await
            .map_err(|error| to_status(error, false))?;
        let served_by = self.service.node_id();
        // Pulled one chunk at a time as HTTP/2 flow control lets the response go on; the
        // serializing waits for it (and gives up when the client stalls, see
        // `snapshot::CHUNK_STALL_TIMEOUT`).
        let chunks = futures::stream::unfold(Step::Started(backup, served_by), |step| async move {
            use pb::backup_chunk::Item;
            match step {
                Step::Started(backup, served_by) => {
                    let header = &backup.header;
                    let started = pb::BackupStarted {
                        served_by,
                        applied_term: header.last_log_id.map_or(0, |id| id.leader_id.term),
                        applied_index: header.last_log_id.map_or(0, |id| id.index),
                        head_position: header.head_position,
                        epoch: header.epoch,
                        estimated_bytes: backup.estimated_bytes,
                    };
                    let item = pb::BackupChunk {
                        item: Some(Item::Started(started)),
                    };
                    Some((Ok(item), Step::Data(backup, 0)))
                }
                Step::Data(mut backup, sent) => match backup.chunks.recv().await {
                    Some(Ok(data)) => {
                        let sent = sent + data.len() as u64;
                        let item = pb::BackupChunk {
                            item: Some(Item::Data(data)),
                        };
                        Some((Ok(item), Step::Data(backup, sent)))
                    }
                    Some(Err(error)) => Some((
                        Err(Status::internal(format!("backup failed: {error}"))),
                        Step::Done,
                    )),
                    None => {
                        let item = pb::BackupChunk {
                            item: Some(Item::Finished(pb::BackupFinished { bytes: sent })),
                        };
                        Some((Ok(item), Step::Done))
                    }
                },
                Step::Done => None,
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn start_checksum(
        &self,
        request: Request<pb::ChecksumRequest>,
    ) -> Result<Response<pb::ChecksumStarted>, Status> {
        self.check_admin(&request)?;
        let request = request.into_inner();
        let check_index = self
            .service
            .start_checksum(CheckRange {
                from: request.from_position,
                to: request.to_position,
                step: request.step,
            })
            .await
            .map_err(|error| to_status(error, false))?;
        Ok(Response::new(pb::ChecksumStarted {
            check_index,
            served_by: self.service.node_id(),
        }))
    }

    async fn checksum(
        &self,
        request: Request<pb::GetChecksumRequest>,
    ) -> Result<Response<pb::ChecksumResponse>, Status> {
        self.check_admin(&request)?;
        let request = request.into_inner();
        let outcome = self
            .service
            .checksum(
                request.check_index,
                Duration::from_millis(u64::from(request.wait_ms)),
            )
            .await
            .map_err(|error| to_status(error, false))?;
        let mut response = pb::ChecksumResponse {
            served_by: self.service.node_id(),
            ..Default::default()
        };
        match outcome {
            None => {}
            Some(Ok(checksum)) => {
                response.done = true;
                response.events = checksum.events;
                response.hash = checksum.hash;
                response.checkpoints = checksum.checkpoints;
                response.from_position = checksum.from;
                response.to_position = checksum.to;
            }
            Some(Err(error)) => {
                response.done = true;
                response.error = error;
            }
        }
        Ok(Response::new(response))
    }
}
