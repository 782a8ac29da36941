//! The one place where errors become `tonic::Status` (code, message and metadata).

use tonic::Code;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::error::NodeError;

/// Metadata key carrying a stream's actual version on `FAILED_PRECONDITION`.
pub const ACTUAL_VERSION_KEY: &str = "evlog-actual-version";
/// Metadata keys naming the leader on a not-leader `UNAVAILABLE`.
pub const LEADER_ID_KEY: &str = "evlog-leader-id";
pub const LEADER_ADDRESS_KEY: &str = "evlog-leader-address";

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Self {
        let message = error.to_string();
        match error {
            NodeError::InvalidArgument(_) => Status::invalid_argument(message),
            NodeError::TooLarge(_) => Status::resource_exhausted(message),
            NodeError::WrongExpectedVersion { actual, .. } => {
                let mut status = Status::failed_precondition(message);
                status
                    .metadata_mut()
                    .insert(ACTUAL_VERSION_KEY, MetadataValue::from(actual));
                status
            }
            NodeError::IdempotencyKeyReused { .. } => Status::already_exists(message),
            NodeError::NotFound(_) => Status::not_found(message),
            NodeError::NotLeader {
                leader_id,
                leader_address,
            } => {
                let mut status = Status::unavailable(message);
                if let Some(id) = leader_id {
                    status
                        .metadata_mut()
                        .insert(LEADER_ID_KEY, MetadataValue::from(id));
                }
                if let Some(value) = leader_address.and_then(|address| address.parse().ok()) {
                    status.metadata_mut().insert(LEADER_ADDRESS_KEY, value);
                }
                status
            }
            NodeError::Unavailable(_) => Status::unavailable(message),
            NodeError::Timeout(_) => Status::deadline_exceeded(message),
            NodeError::Storage(_) | NodeError::Internal(_) => {
                tracing::error!("request failed: {message}");
                Status::new(Code::Internal, message)
            }
        }
    }
}
