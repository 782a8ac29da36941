//! One append's failure inside an `AppendMany` answer, to and from the `tonic::Status` a unary
//! `Append` would have failed with: the same code, message and `evlog-*` metadata, so a client
//! handles both alike.

use tonic::Code;
use tonic::Status;
use tonic::metadata::KeyAndValueRef;
use tonic::metadata::MetadataKey;
use tonic::metadata::MetadataMap;

use crate::v1::AppendError;

/// Metadata keys an append's error carries (the others are the transport's).
const PREFIX: &str = "evlog-";

impl AppendError {
    /// The error a unary `Append` failing with `status` would report.
    pub fn from_status(status: &Status) -> Self {
        let metadata = status
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                KeyAndValueRef::Ascii(key, value) if key.as_str().starts_with(PREFIX) => {
                    Some((key.as_str().to_string(), value.to_str().ok()?.to_string()))
                }
                _ => None,
            })
            .collect();
        Self {
            code: status.code() as i32,
            message: status.message().to_string(),
            metadata,
        }
    }

    /// The status a unary `Append` would have failed with.
    pub fn to_status(&self) -> Status {
        let mut metadata = MetadataMap::new();
        for (key, value) in &self.metadata {
            if !key.starts_with(PREFIX) {
                continue;
            }
            if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
                metadata.insert(key, value);
            }
        }
        Status::with_metadata(Code::from_i32(self.code), self.message.clone(), metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_survives_the_round_trip_without_transport_metadata() {
        let mut status = Status::failed_precondition("expected version 3, the stream is at 5");
        status
            .metadata_mut()
            .insert(crate::metadata::ACTUAL_VERSION, 5.into());
        status
            .metadata_mut()
            .insert("grpc-internal", "x".parse().expect("ascii"));
        let error = AppendError::from_status(&status);
        assert_eq!(error.code, Code::FailedPrecondition as i32);
        assert_eq!(error.metadata.len(), 1);
        let back = error.to_status();
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), status.message());
        assert_eq!(
            back.metadata()
                .get(crate::metadata::ACTUAL_VERSION)
                .and_then(|value| value.to_str().ok()),
            Some("5")
        );
        assert!(back.metadata().get("grpc-internal").is_none());
    }
}
