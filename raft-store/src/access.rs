//! Access control's replicated state: tokens and roles. Changes are Raft entries
//! ([`AccessCommand`]), decided here as a pure function of the state and the command, so every
//! member holds the same state at the same log index; the whole state is one small record
//! (`sm_meta` `access`, snapshot tag 12), rewritten by each change (changes are rare and the
//! state is bounded by the limits below).
//!
//! A token is kept as the SHA-256 of its secret, never the secret: neither the log, a
//! snapshot, a backup nor the data directory holds anything that authenticates. What a
//! principal may do is evaluated by the node (`node/src/service/access.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::error::CorruptRecord;

/// At most this many tokens (expired ones are dropped as new ones are created).
pub const MAX_TOKENS: usize = 10_000;
/// At most this many roles.
pub const MAX_ROLES: usize = 256;
/// At most this many grants in a role.
pub const MAX_GRANTS_PER_ROLE: usize = 64;
/// At most this many certificate principals bound to a role.
pub const MAX_PRINCIPALS_PER_ROLE: usize = 256;
/// At most this many roles on a token.
pub const MAX_ROLES_PER_TOKEN: usize = 16;
/// Names (principals, roles, token ids) and grant prefixes are at most this long, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// What a grant allows on the names it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read, subscribe to and describe streams (and read `all` filtered to covered prefixes).
    Read,
    /// Append to streams.
    Append,
    /// Delete streams.
    Delete,
    /// Change stream metadata (retention).
    Metadata,
    /// Create, use and manage consumer groups whose names it covers.
    Consume,
    /// Everything: the cluster, membership, backups, access control, `$` streams.
    Admin,
}

/// A permission on the stream names (for [`Permission::Consume`], group names) that start with
/// `prefix` ("" covers every name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub permission: Permission,
    pub prefix: String,
}

/// A named set of grants, held by the tokens that name it and by the certificate principals
/// listed in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub grants: Vec<Grant>,
    /// Client-certificate names that hold this role.
    pub principals: Vec<String>,
}

/// A token, as the state machine keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Who the token speaks for (shown by `WhoAmI`, in audit logs).
    pub principal: String,
    pub roles: Vec<String>,
    /// SHA-256 of the secret (the 32 random bytes after the id).
    pub secret_sha256: [u8; 32],
    /// The leader's clock when it was created.
    pub created_at_ms: u64,
    /// After this time the token authenticates no one (0: never expires).
    pub expires_at_ms: u64,
}

impl Token {
    /// Whether the token has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && now_ms >= self.expires_at_ms
    }
}

/// Every token and role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessState {
    /// The log index of the last change applied (0: none): a change of it is a change of the
    /// state, which is what live subscriptions watch to check their caller again.
    pub revision: u64,
    /// By token id.
    pub tokens: BTreeMap<String, Token>,
    /// By role name.
    pub roles: BTreeMap<String, Role>,
}

/// A change to access control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessCommand {
    /// Creates a token (an id not in use; every role named must exist). Drops the tokens that
    /// expired by its `created_at_ms`.
    CreateToken { id: String, token: Token },
    /// Removes a token: from its entry on, it authenticates no one.
    RevokeToken { id: String },
    /// Creates or replaces a role.
    PutRole { name: String, role: Role },
    /// Removes a role; the tokens naming it keep their other roles.
    DeleteRole { name: String },
}

/// What an access command decided when it changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AccessRefusal {
    #[error("a token with id {0} exists already")]
    TokenExists(String),
    #[error("no token has id {0}")]
    NoSuchToken(String),
    #[error("no role is named {0:?}")]
    NoSuchRole(String),
    #[error("there are {0} tokens already, the most there may be")]
    TooManyTokens(usize),
    #[error("there are {0} roles already, the most there may be")]
    TooManyRoles(usize),
}

/// What applying an [`AccessCommand`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessResponse {
    Done,
    Refused(AccessRefusal),
}

/// The state after `command`, applied at log `index`, or why it changes nothing. Pure.
pub fn decide(
    state: &AccessState,
    command: &AccessCommand,
    index: u64,
) -> Result<AccessState, AccessRefusal> {
    let mut next = state.clone();
    match command {
        AccessCommand::CreateToken { id, token } => {
            if next.tokens.contains_key(id) {
                return Err(AccessRefusal::TokenExists(id.clone()));
            }
            if let Some(missing) = token.roles.iter().find(|r| !next.roles.contains_key(*r)) {
                return Err(AccessRefusal::NoSuchRole(missing.clone()));
            }
            next.tokens
                .retain(|_, kept| !kept.expired(token.created_at_ms));
            if next.tokens.len() >= MAX_TOKENS {
                return Err(AccessRefusal::TooManyTokens(MAX_TOKENS));
            }
            next.tokens.insert(id.clone(), token.clone());
        }
        AccessCommand::RevokeToken { id } => {
            if next.tokens.remove(id).is_none() {
                return Err(AccessRefusal::NoSuchToken(id.clone()));
            }
        }
        AccessCommand::PutRole { name, role } => {
            if !next.roles.contains_key(name) && next.roles.len() >= MAX_ROLES {
                return Err(AccessRefusal::TooManyRoles(MAX_ROLES));
            }
            next.roles.insert(name.clone(), role.clone());
        }
        AccessCommand::DeleteRole { name } => {
            if next.roles.remove(name).is_none() {
                return Err(AccessRefusal::NoSuchRole(name.clone()));
            }
        }
    }
    next.revision = index;
    Ok(next)
}

/// The state as `sm_meta` and snapshots keep it (the versioned postcard record consumer groups
/// use too).
pub fn encode_state(state: &AccessState) -> Vec<u8> {
    crate::consumer::encode(state)
}

pub fn decode_state(record: &[u8]) -> Result<AccessState, CorruptRecord> {
    crate::consumer::decode("access state", record)
}

/// A command as a log entry carries it.
pub fn encode_command(command: &AccessCommand) -> Vec<u8> {
    crate::consumer::encode(command)
}

pub fn decode_command(record: &[u8]) -> Result<AccessCommand, CorruptRecord> {
    crate::consumer::decode("access command", record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(roles: &[&str], created_at_ms: u64, expires_at_ms: u64) -> Token {
        Token {
            principal: "alice".to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            secret_sha256: [7; 32],
            created_at_ms,
            expires_at_ms,
        }
    }

    fn reader_role() -> Role {
        Role {
            grants: vec![Grant {
                permission: Permission::Read,
                prefix: "orders-".to_string(),
            }],
            principals: vec![],
        }
    }

    #[test]
    fn tokens_need_their_roles_and_unique_ids_and_revocation_removes_them() {
        let state = AccessState::default();
        let create = AccessCommand::CreateToken {
            id: "a1".to_string(),
            token: token(&["reader"], 10, 0),
        };
        assert_eq!(
            decide(&state, &create, 1),
            Err(AccessRefusal::NoSuchRole("reader".to_string()))
        );
        let state = decide(
            &state,
            &AccessCommand::PutRole {
                name: "reader".to_string(),
                role: reader_role(),
            },
            2,
        )
        .expect("a role is put");
        let state = decide(&state, &create, 3).expect("a token is created");
        assert_eq!(state.revision, 3);
        assert_eq!(
            decide(&state, &create, 4),
            Err(AccessRefusal::TokenExists("a1".to_string()))
        );
        let revoke = AccessCommand::RevokeToken {
            id: "a1".to_string(),
        };
        let revoked = decide(&state, &revoke, 5).expect("revoked");
        assert!(revoked.tokens.is_empty());
        assert_eq!(
            decide(&revoked, &revoke, 6),
            Err(AccessRefusal::NoSuchToken("a1".to_string()))
        );
    }

    #[test]
    fn expired_tokens_are_dropped_when_a_token_is_created() {
        let mut state = AccessState::default();
        state.tokens.insert("old".to_string(), token(&[], 1, 50));
        state.tokens.insert("forever".to_string(), token(&[], 1, 0));
        let create = AccessCommand::CreateToken {
            id: "new".to_string(),
            token: token(&[], 60, 0),
        };
        let state = decide(&state, &create, 9).expect("created");
        let ids: Vec<&str> = state.tokens.keys().map(String::as_str).collect();
        assert_eq!(ids, ["forever", "new"]);
    }

    #[test]
    fn the_state_round_trips_and_garbage_is_an_error() {
        let mut state = AccessState {
            revision: 12,
            ..AccessState::default()
        };
        state.roles.insert("reader".to_string(), reader_role());
        state
            .tokens
            .insert("a1".to_string(), token(&["reader"], 1, 2));
        let bytes = encode_state(&state);
        assert_eq!(decode_state(&bytes).expect("decodes"), state);
        assert!(decode_state(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_state(&[9, 1, 2]).is_err());
        assert!(decode_state(&[]).is_err());
    }
}
