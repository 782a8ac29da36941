//! Deciding retention, as pure functions: a stream's metadata (compare-and-set on its metadata
//! version), a stream's deletion (soft, or a tombstone), the expiry the leader proposed, and
//! what an append to a stream with limits removes. The rule every replica follows: events are
//! removed by moving a boundary (a stream's first retained version, the log's first retained
//! position) when an entry applies; the boundary only rises, and reads never return what lies
//! below it. Deleting the rows is physical work done later (`reclaim.rs`); nothing here
//! depends on when it happens.

use bytes::Bytes;

use super::MachineMeta;
use super::append::decide_append;
use super::mutation::Mutation;
use super::view::StateView;
use crate::error::StoreError;
use crate::types::AppendCommand;
use crate::types::CommandResponse;
use crate::types::DELETIONS_STREAM;
use crate::types::NewEvent;
use crate::types::RetentionCommand;
use crate::types::RetentionResponse;
use crate::types::STREAM_DELETED_TYPE;
use crate::types::StreamMeta;

/// Decides a retention command against the state `view` and `machine` describe; pushes the
/// mutations and returns the response.
pub fn decide_retention(
    view: &impl StateView,
    machine: &MachineMeta,
    command: &RetentionCommand,
    mutations: &mut Vec<Mutation>,
) -> Result<CommandResponse, StoreError> {
    let response = match command {
        RetentionCommand::SetMetadata {
            stream,
            expected_metadata_version,
            retention,
        } => {
            let meta = view.stream_meta(stream)?.unwrap_or_default();
            if meta.tombstoned {
                return Ok(CommandResponse::Retention(RetentionResponse::Tombstoned));
            }
            if let Some(expected) = *expected_metadata_version
                && expected != meta.metadata_version
            {
                return Ok(CommandResponse::Retention(
                    RetentionResponse::WrongMetadataVersion {
                        expected,
                        actual: meta.metadata_version,
                    },
                ));
            }
            let version = stream_version(view, stream)?;
            let mut updated = StreamMeta {
                metadata_version: meta.metadata_version + 1,
                retention: *retention,
                ..meta
            };
            updated.first_version = updated.first_version_at(version);
            put_meta(stream, &meta, updated, mutations);
            RetentionResponse::Metadata(updated)
        }
        RetentionCommand::Delete {
            stream,
            expected_version,
            tombstone,
            timestamp_ms,
        } => {
            let meta = view.stream_meta(stream)?.unwrap_or_default();
            if meta.tombstoned {
                return Ok(CommandResponse::Retention(RetentionResponse::Tombstoned));
            }
            let version = stream_version(view, stream)?;
            if let Some(expected) = *expected_version
                && expected != version
            {
                return Ok(CommandResponse::Retention(
                    RetentionResponse::WrongExpectedVersion {
                        expected,
                        actual: version,
                    },
                ));
            }
            let updated = StreamMeta {
                first_version: version + 1,
                tombstoned: *tombstone,
                ..meta
            };
            put_meta(stream, &meta, updated, mutations);
            let position = announce_deletion(
                view,
                machine,
                stream,
                version,
                *tombstone,
                *timestamp_ms,
                mutations,
            )?;
            RetentionResponse::Deleted { version, position }
        }
        RetentionCommand::ExpireStream {
            stream,
            before_version,
        } => {
            let meta = view.stream_meta(stream)?.unwrap_or_default();
            let version = stream_version(view, stream)?;
            let updated = StreamMeta {
                first_version: meta
                    .first_version_at(version)
                    .max((*before_version).min(version + 1)),
                ..meta
            };
            put_meta(stream, &meta, updated, mutations);
            RetentionResponse::Metadata(updated)
        }
        RetentionCommand::ExpireLog { before_position } => {
            let first_position = machine
                .first_position
                .max((*before_position).min(machine.head_position + 1));
            if first_position != machine.first_position {
                mutations.push(Mutation::SetFirstPosition(first_position));
            }
            RetentionResponse::LogExpired { first_position }
        }
    };
    Ok(CommandResponse::Retention(response))
}

/// After an append took `stream` to `version`: what its limits remove now (`meta` is the
/// stream's metadata before the append).
pub fn after_append(
    stream: &str,
    meta: Option<StreamMeta>,
    version: u64,
    mutations: &mut Vec<Mutation>,
) {
    let Some(meta) = meta else {
        return;
    };
    let updated = StreamMeta {
        first_version: meta.first_version_at(version),
        ..meta
    };
    put_meta(stream, &meta, updated, mutations);
}

/// A stream's version (its event count, removed events included).
fn stream_version(view: &impl StateView, stream: &str) -> Result<u64, StoreError> {
    Ok(view.stream(stream)?.map_or(0, |info| info.version))
}

/// Writes `updated` when it differs from `meta` (a stream without a row has the default),
/// asking the writer to delete the rows it removed when its boundary rose.
fn put_meta(stream: &str, meta: &StreamMeta, updated: StreamMeta, mutations: &mut Vec<Mutation>) {
    if updated == *meta {
        return;
    }
    mutations.push(Mutation::PutStreamMeta {
        stream: stream.to_string(),
        meta: updated,
        reclaim: updated.first_version > meta.first_version,
    });
}

/// Appends the `$stream-deleted` event announcing that `stream` was deleted at `version`;
/// returns its position.
fn announce_deletion(
    view: &impl StateView,
    machine: &MachineMeta,
    stream: &str,
    version: u64,
    tombstone: bool,
    timestamp_ms: u64,
    mutations: &mut Vec<Mutation>,
) -> Result<u64, StoreError> {
    let timestamp_ms = timestamp_ms.max(machine.last_timestamp_ms);
    let data = format!(
        "{{\"stream\":{},\"version\":{version},\"tombstone\":{tombstone}}}",
        json_string(stream)
    );
    let command = AppendCommand {
        stream: DELETIONS_STREAM.to_string(),
        events: vec![NewEvent {
            // Deterministic: every replica records the same id.
            id: format!("{stream}@{version}"),
            event_type: STREAM_DELETED_TYPE.to_string(),
            content_type: "application/json".to_string(),
            data: Bytes::from(data),
            metadata: Vec::new(),
            encoding: Default::default(),
        }],
        expected_version: None,
        idempotency_key: None,
        timestamp_ms,
        request_fingerprint: 0,
        idempotency: Default::default(),
    };
    let current = view.stream(DELETIONS_STREAM)?;
    let decision = decide_append(machine.head_position, current, &command, timestamp_ms);
    let writes = decision.writes.ok_or_else(|| {
        StoreError::Invariant("the deletion announcement was not appended".to_string())
    })?;
    let position = writes.info.last_position;
    mutations.extend(
        writes
            .events
            .into_iter()
            .map(|(event, encoding)| Mutation::PutEvent(event, encoding)),
    );
    mutations.push(Mutation::AdvanceHead {
        head_position: position,
        last_timestamp_ms: timestamp_ms,
    });
    Ok(position)
}

/// `value` as a JSON string (stream names hold no character that needs escaping but these).
fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use crate::types::StreamRetention;

    use super::*;

    #[test]
    fn the_first_version_follows_max_count_and_truncate_before_and_never_falls() {
        let mut meta = StreamMeta {
            retention: StreamRetention {
                max_count: Some(10),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(meta.first_version_at(5), 1);
        assert_eq!(meta.first_version_at(1000), 991);
        meta.first_version = 991;
        meta.retention.max_count = Some(100);
        assert_eq!(
            meta.first_version_at(1000),
            991,
            "a larger limit brings nothing back"
        );
        meta.retention.truncate_before = Some(5000);
        assert_eq!(
            meta.first_version_at(1000),
            1001,
            "capped at everything removed"
        );
        assert_eq!(meta.first_version_at(6000), 5901);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
