//! Access control: who a caller is (authentication) and what it may do (authorization), on
//! when the node runs with `--auth`.
//!
//! - A token is `evl_<id>_<secret>`: 16 hex digits of id, 64 of secret (256 random bits). The
//!   replicated state keeps the SHA-256 of the secret; checking a token is a map lookup, one
//!   SHA-256 of 32 bytes and a constant-time comparison (about a microsecond: no password
//!   hashing on the request path, the lesson of etcd's bcrypt).
//! - With `--client-ca`, a client certificate authenticates too: its principal is the name a
//!   role lists (`Role.principals`) that the certificate is valid for (a DNS subject
//!   alternative name, checked as a TLS client checks a server's name).
//! - `--bootstrap-token-file`: a token every node accepts as the principal `bootstrap` with
//!   ADMIN, kept out of the replicated state, to create the first roles and tokens.
//!
//! A grant covers the names that start with its prefix; ADMIN covers everything. Reading
//! `all` needs READ on every stream prefix of the filter (READ on "" when unfiltered): a read
//! is refused, never narrowed. The caller's grants are looked up again on every check, so a
//! revocation holds from its entry on; live subscriptions and consumer streams wait on
//! [`AccessControl::denied`] and end with its error.

use std::sync::Arc;
use std::time::Duration;

use evlog_raft_store::access::AccessCommand;
use evlog_raft_store::access::AccessResponse;
use evlog_raft_store::access::AccessState;
use evlog_raft_store::access::Grant;
use evlog_raft_store::access::MAX_NAME_BYTES;
use evlog_raft_store::access::MAX_ROLES_PER_TOKEN;
use evlog_raft_store::access::Permission;
use evlog_raft_store::access::Role;
use evlog_raft_store::access::Token;
use evlog_raft_store::types::Command;
use evlog_raft_store::types::CommandResponse;
use ring::rand::SecureRandom;
use tokio::sync::watch;

use crate::raft::handle::RaftHandle;
use crate::service::ServiceError;
use crate::service::event_log::propose_error;

/// Every token begins with this.
pub const TOKEN_PREFIX: &str = "evl_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// The bootstrap token's principal.
pub const BOOTSTRAP_PRINCIPAL: &str = "bootstrap";

/// A token's parts, parsed from `evl_<id>_<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken {
    pub id: String,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for ParsedToken {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedToken {{ id: {:?}, secret: <hidden> }}", self.id)
    }
}

impl ParsedToken {
    fn secret_sha256(&self) -> [u8; 32] {
        sha256(&self.secret)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Equal, in time that does not depend on where the bytes differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What a malformed token is told (never echoing the token).
const TOKEN_FORMAT: &str = "expected evl_<16 hex digits>_<64 hex digits>";

/// Parses `evl_<id>_<secret>`; the error says what is wrong without repeating the token.
pub fn parse_token(text: &str) -> Result<ParsedToken, String> {
    let rest = text
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| format!("the token does not begin with {TOKEN_PREFIX}; {TOKEN_FORMAT}"))?;
    let (id, secret) = rest
        .split_once('_')
        .ok_or_else(|| format!("the token has no secret part; {TOKEN_FORMAT}"))?;
    let mut id_bytes = [0; ID_BYTES];
    decode_hex(id, &mut id_bytes)
        .map_err(|what| format!("the token's id {what}; {TOKEN_FORMAT}"))?;
    let mut secret_bytes = [0; SECRET_BYTES];
    decode_hex(secret, &mut secret_bytes)
        .map_err(|what| format!("the token's secret {what}; {TOKEN_FORMAT}"))?;
    Ok(ParsedToken {
        id: id.to_string(),
        secret: secret_bytes,
    })
}

/// Lowercase hex of exactly `out.len()` bytes.
fn decode_hex(text: &str, out: &mut [u8]) -> Result<(), &'static str> {
    if text.len() != out.len() * 2 {
        return Err("has the wrong length");
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err("is not lowercase hex"),
    };
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How a caller was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticated {
    /// By this token (its id).
    Token(String),
    /// By a client certificate valid for the principal's name.
    Certificate,
    /// By the bootstrap token.
    Bootstrap,
    /// Access control is off: everyone may do everything.
    Anonymous,
}

/// Who a caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub by: Authenticated,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".to_string(),
            by: Authenticated::Anonymous,
        }
    }
}

/// What a permission's refusal calls the action.
fn verb(permission: Permission) -> &'static str {
    match permission {
        Permission::Read => "read",
        Permission::Append => "append to",
        Permission::Delete => "delete",
        Permission::Metadata => "change the metadata of",
        Permission::Consume => "use",
        Permission::Admin => "administer",
    }
}

pub fn permission_name(permission: Permission) -> &'static str {
    match permission {
        Permission::Read => "READ",
        Permission::Append => "APPEND",
        Permission::Delete => "DELETE",
        Permission::Metadata => "METADATA",
        Permission::Consume => "CONSUME",
        Permission::Admin => "ADMIN",
    }
}

/// The grants `principal` holds in `state`. A revoked or expired token holds none (refused).
pub fn grants_of(
    state: &AccessState,
    principal: &Principal,
    now_ms: u64,
) -> Result<Vec<Grant>, ServiceError> {
    let admin = || {
        vec![Grant {
            permission: Permission::Admin,
            prefix: String::new(),
        }]
    };
    match &principal.by {
        Authenticated::Anonymous | Authenticated::Bootstrap => Ok(admin()),
        Authenticated::Token(id) => {
            let token = state
                .tokens
                .get(id)
                .ok_or_else(|| ServiceError::PermissionDenied(format!("token {id} was revoked")))?;
            if token.expired(now_ms) {
                return Err(ServiceError::PermissionDenied(format!(
                    "token {id} expired at {} ms since the epoch",
                    token.expires_at_ms
                )));
            }
            Ok(token
                .roles
                .iter()
                .filter_map(|role| state.roles.get(role))
                .flat_map(|role| role.grants.iter().cloned())
                .collect())
        }
        Authenticated::Certificate => Ok(state
            .roles
            .values()
            .filter(|role| role.principals.contains(&principal.name))
            .flat_map(|role| role.grants.iter().cloned())
            .collect()),
    }
}

/// Whether `grants` allow `permission` on `name` (a stream or group name; `$` streams are
/// covered like any other: by a prefix they start with).
pub fn allows(grants: &[Grant], permission: Permission, name: &str) -> bool {
    grants.iter().any(|grant| {
        grant.permission == Permission::Admin
            || (grant.permission == permission && name.starts_with(&grant.prefix))
    })
}

/// `Ok` when `grants` allow reading every stream a subscription to `all` filtered to
/// `prefixes` may deliver (none: every stream).
pub fn allows_all_filtered(grants: &[Grant], prefixes: &[String]) -> bool {
    if prefixes.is_empty() {
        return allows(grants, Permission::Read, "");
    }
    prefixes
        .iter()
        .all(|prefix| allows(grants, Permission::Read, prefix))
}

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    /// `permission` on a stream (or, for CONSUME, a group) name.
    On(Permission, &'a str),
    /// READ on every stream `all` filtered to these prefixes may deliver.
    ReadAll(&'a [String]),
    /// ADMIN.
    Admin,
}

/// The node's access control.
pub struct AccessControl {
    enabled: bool,
    /// The bootstrap token's id and the SHA-256 of its secret.
    bootstrap: Option<(String, [u8; 32])>,
    handle: RaftHandle,
    request_timeout: Duration,
    random: ring::rand::SystemRandom,
    /// The access revision, changed only when access changes (not at every apply, which the
    /// applied state's watch is): what live streams wait on.
    revisions: watch::Receiver<u64>,
}

impl AccessControl {
    /// `enabled`: `--auth`; `bootstrap`: the token of `--bootstrap-token-file`. With access
    /// control on, starts a task (on the current runtime) that follows the access revision.
    pub fn new(
        enabled: bool,
        bootstrap: Option<ParsedToken>,
        handle: RaftHandle,
        request_timeout: Duration,
    ) -> Self {
        let mut applied = handle.applied_watch();
        let (revision, revisions) = watch::channel(applied.borrow().access_revision);
        if enabled {
            // One task looks at every apply; the streams wake only when access changed. It ends
            // when the node's applied state closes or no stream is left to tell.
            tokio::spawn(async move {
                while applied.changed().await.is_ok() {
                    let now = applied.borrow_and_update().access_revision;
                    revision.send_if_modified(|seen| std::mem::replace(seen, now) != now);
                    if revision.is_closed() {
                        break;
                    }
                }
            });
        }
        Self {
            enabled,
            bootstrap: bootstrap.map(|token| (token.id.clone(), token.secret_sha256())),
            handle,
            request_timeout,
            random: ring::rand::SystemRandom::new(),
            revisions,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The names a node's certificate carries (`node-<id>`), one per member.
    pub fn node_names(&self) -> Vec<String> {
        self.handle
            .member_ids()
            .into_iter()
            .map(|id| format!("node-{id}"))
            .collect()
    }

    fn state(&self) -> Arc<AccessState> {
        self.handle.reader().access()
    }

    /// Who the caller is: from its bearer token (`authorization: Bearer …`), else from its
    /// client certificate (`certificate_for`: whether the certificate is valid for a name).
    /// Anonymous when access control is off.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        certificate_for: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<Principal, ServiceError> {
        if !self.enabled {
            return Ok(Principal::anonymous());
        }
        if let Some(bearer) = bearer {
            let token = parse_token(bearer).map_err(ServiceError::Unauthenticated)?;
            let hash = token.secret_sha256();
            if let Some((id, bootstrap)) = &self.bootstrap
                && *id == token.id
            {
                if constant_time_eq(bootstrap, &hash) {
                    return Ok(Principal {
                        name: BOOTSTRAP_PRINCIPAL.to_string(),
                        by: Authenticated::Bootstrap,
                    });
                }
                return Err(unknown_token());
            }
            let state = self.state();
            let stored = state.tokens.get(&token.id).ok_or_else(unknown_token)?;
            if !constant_time_eq(&stored.secret_sha256, &hash) {
                return Err(unknown_token());
            }
            if stored.expired(now_ms()) {
                return Err(ServiceError::Unauthenticated(format!(
                    "token {} expired at {} ms since the epoch",
                    token.id, stored.expires_at_ms
                )));
            }
            return Ok(Principal {
                name: stored.principal.clone(),
                by: Authenticated::Token(token.id),
            });
        }
        if let Some(valid_for) = certificate_for {
            let state = self.state();
            let name = state
                .roles
                .values()
                .flat_map(|role| role.principals.iter())
                .find(|name| valid_for(name));
            return match name {
                Some(name) => Ok(Principal {
                    name: name.clone(),
                    by: Authenticated::Certificate,
                }),
                None => Err(ServiceError::Unauthenticated(
                    "no role lists a name this client certificate is valid for; send a token \
                     (authorization: Bearer evl_…) or have an administrator add the \
                     certificate's name to a role's principals"
                        .to_string(),
                )),
            };
        }
        Err(ServiceError::Unauthenticated(
            "this node requires credentials: a token (gRPC metadata authorization: Bearer \
             evl_…; the CLI's --token or EVLOG_TOKEN) or a client certificate"
                .to_string(),
        ))
    }

    /// `Ok` when `principal` may do what `need` says now.
    pub fn check(&self, principal: &Principal, need: Need<'_>) -> Result<(), ServiceError> {
        if !self.enabled {
            return Ok(());
        }
        // With access control on, every caller was authenticated before its handler ran; an
        // anonymous one here would be a path that skipped the layer: refused, never ADMIN.
        if principal.by == Authenticated::Anonymous {
            return Err(ServiceError::Unauthenticated(
                "this call carried no credentials".to_string(),
            ));
        }
        let grants = grants_of(&self.state(), principal, now_ms())?;
        let allowed = match need {
            Need::On(permission, name) => allows(&grants, permission, name),
            Need::ReadAll(prefixes) => allows_all_filtered(&grants, prefixes),
            Need::Admin => allows(&grants, Permission::Admin, ""),
        };
        if allowed {
            return Ok(());
        }
        let who = &principal.name;
        Err(ServiceError::PermissionDenied(match need {
            Need::On(Permission::Consume, name) => {
                format!("{who} may not use consumer group {name:?}: no CONSUME grant covers it")
            }
            Need::On(permission, name) => format!(
                "{who} may not {} stream {name:?}: no {} grant covers it",
                verb(permission),
                permission_name(permission)
            ),
            Need::ReadAll([]) => format!(
                "{who} may not read all streams: that needs READ on \"\" (every stream); \
                 filter the subscription to stream prefixes its READ grants cover"
            ),
            Need::ReadAll(prefixes) => format!(
                "{who} may not read all streams filtered to {prefixes:?}: READ grants do not \
                 cover every one of these prefixes"
            ),
            Need::Admin => format!("{who} may not do this: it needs ADMIN"),
        }))
    }

    /// Waits until `principal` may no longer do what one of `needs` says (its token revoked
    /// or expired, a role changed), and answers why. Never, with access control off.
    pub async fn denied(&self, principal: &Principal, needs: &[Need<'_>]) -> ServiceError {
        if !self.enabled {
            return std::future::pending().await;
        }
        let mut revisions = self.revisions.clone();
        loop {
            revisions.borrow_and_update();
            if let Some(error) = needs
                .iter()
                .find_map(|need| self.check(principal, need.clone()).err())
            {
                return error;
            }
            let expiry = self.expiry_of(principal);
            let changed = wait_for_change(&mut revisions);
            match expiry {
                Some(deadline) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep(deadline) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// How long until `principal`'s token expires (`None`: it never does).
    fn expiry_of(&self, principal: &Principal) -> Option<Duration> {
        let Authenticated::Token(id) = &principal.by else {
            return None;
        };
        let expires_at_ms = self.state().tokens.get(id)?.expires_at_ms;
        (expires_at_ms != 0).then(|| Duration::from_millis(expires_at_ms.saturating_sub(now_ms())))
    }

    /// Creates a token for `principal` with `roles`, expiring `ttl` after now (`None`: never);
    /// answers its description and the token itself (only here).
    pub async fn create_token(
        &self,
        principal: String,
        roles: Vec<String>,
        ttl: Option<Duration>,
    ) -> Result<(String, TokenInfo), ServiceError> {
        validate_name("principal", &principal)?;
        if roles.len() > MAX_ROLES_PER_TOKEN {
            return Err(ServiceError::InvalidArgument(format!(
                "{} roles; a token holds at most {MAX_ROLES_PER_TOKEN}",
                roles.len()
            )));
        }
        for role in &roles {
            validate_name("role name", role)?;
        }
        let mut id = [0; ID_BYTES];
        let mut secret = [0; SECRET_BYTES];
        self.random
            .fill(&mut id)
            .and_then(|()| self.random.fill(&mut secret))
            .map_err(|_| ServiceError::Internal("the system's random source failed".to_string()))?;
        let id = encode_hex(&id);
        let created_at_ms = now_ms();
        let expires_at_ms = match ttl {
            None => 0,
            Some(ttl) => created_at_ms.saturating_add(ttl.as_millis() as u64),
        };
        let token = Token {
            principal,
            roles,
            secret_sha256: sha256(&secret),
            created_at_ms,
            expires_at_ms,
        };
        let info = TokenInfo::new(&id, &token);
        self.propose(AccessCommand::CreateToken {
            id: id.clone(),
            token,
        })
        .await?;
        Ok((format!("{TOKEN_PREFIX}{id}_{}", encode_hex(&secret)), info))
    }

    pub async fn revoke_token(&self, id: String) -> Result<(), ServiceError> {
        validate_name("token id", &id)?;
        self.propose(AccessCommand::RevokeToken { id }).await
    }

    pub async fn put_role(&self, name: String, role: Role) -> Result<(), ServiceError> {
        validate_role(&name, &role)?;
        self.propose(AccessCommand::PutRole { name, role }).await
    }

    pub async fn delete_role(&self, name: String) -> Result<(), ServiceError> {
        validate_name("role name", &name)?;
        self.propose(AccessCommand::DeleteRole { name }).await
    }

    /// Every token (as applied on this node), by id.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.state()
            .tokens
            .iter()
            .map(|(id, token)| TokenInfo::new(id, token))
            .collect()
    }

    /// Every role, by name.
    pub fn roles(&self) -> Vec<(String, Role)> {
        self.state()
            .roles
            .iter()
            .map(|(name, role)| (name.clone(), role.clone()))
            .collect()
    }

    /// The roles and grants `principal` holds now.
    pub fn describe(
        &self,
        principal: &Principal,
    ) -> Result<(Vec<String>, Vec<Grant>), ServiceError> {
        if self.enabled && principal.by == Authenticated::Anonymous {
            return Err(ServiceError::Unauthenticated(
                "this call carried no credentials".to_string(),
            ));
        }
        let state = self.state();
        let grants = grants_of(&state, principal, now_ms())?;
        let roles = match &principal.by {
            Authenticated::Token(id) => state
                .tokens
                .get(id)
                .map(|token| token.roles.clone())
                .unwrap_or_default(),
            Authenticated::Certificate => state
                .roles
                .iter()
                .filter(|(_, role)| role.principals.contains(&principal.name))
                .map(|(name, _)| name.clone())
                .collect(),
            Authenticated::Bootstrap | Authenticated::Anonymous => Vec::new(),
        };
        Ok((roles, grants))
    }

    async fn propose(&self, command: AccessCommand) -> Result<(), ServiceError> {
        let answer = tokio::time::timeout(
            self.request_timeout,
            self.handle.propose(Command::Access(command)),
        )
        .await
        .map_err(|_| {
            ServiceError::Timeout(
                "the access change did not commit in time; its outcome is unknown".to_string(),
            )
        })?
        .map_err(propose_error)?;
        match answer.0 {
            CommandResponse::Access(AccessResponse::Done) => Ok(()),
            CommandResponse::Access(AccessResponse::Refused(refusal)) => Err(match refusal {
                evlog_raft_store::access::AccessRefusal::NoSuchToken(_)
                | evlog_raft_store::access::AccessRefusal::NoSuchRole(_) => {
                    ServiceError::NotFound(refusal.to_string())
                }
                evlog_raft_store::access::AccessRefusal::TokenExists(_) => {
                    ServiceError::Internal(refusal.to_string())
                }
                evlog_raft_store::access::AccessRefusal::TooManyTokens(_)
                | evlog_raft_store::access::AccessRefusal::TooManyRoles(_) => {
                    ServiceError::TooLarge(refusal.to_string())
                }
            }),
            other => Err(ServiceError::Internal(format!(
                "an access change was answered {other}"
            ))),
        }
    }
}

fn unknown_token() -> ServiceError {
    ServiceError::Unauthenticated("unknown, revoked or wrong token".to_string())
}

async fn wait_for_change(revisions: &mut watch::Receiver<u64>) {
    if revisions.changed().await.is_err() {
        // The node is closing: nothing will change any more.
        std::future::pending::<()>().await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A token as listed (never its secret or hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl TokenInfo {
    fn new(id: &str, token: &Token) -> Self {
        Self {
            id: id.to_string(),
            principal: token.principal.clone(),
            roles: token.roles.clone(),
            created_at_ms: token.created_at_ms,
            expires_at_ms: token.expires_at_ms,
        }
    }
}

/// A principal, role name or token id: 1 to 256 bytes, no control characters.
fn validate_name(what: &str, name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "the {what} is {} bytes; it must be 1 to {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::InvalidArgument(format!(
            "the {what} {name:?} contains a control character"
        )));
    }
    Ok(())
}

fn validate_role(name: &str, role: &Role) -> Result<(), ServiceError> {
    use evlog_raft_store::access::MAX_GRANTS_PER_ROLE;
    use evlog_raft_store::access::MAX_PRINCIPALS_PER_ROLE;
    validate_name("role name", name)?;
    if role.grants.len() > MAX_GRANTS_PER_ROLE {
        return Err(ServiceError::InvalidArgument(format!(
            "role {name:?} has {} grants; at most {MAX_GRANTS_PER_ROLE}",
            role.grants.len()
        )));
    }
    if role.principals.len() > MAX_PRINCIPALS_PER_ROLE {
        return Err(ServiceError::InvalidArgument(format!(
            "role {name:?} lists {} principals; at most {MAX_PRINCIPALS_PER_ROLE}",
            role.principals.len()
        )));
    }
    for grant in &role.grants {
        if grant.prefix.len() > MAX_NAME_BYTES {
            return Err(ServiceError::InvalidArgument(format!(
                "a grant's prefix is {} bytes; at most {MAX_NAME_BYTES}",
                grant.prefix.len()
            )));
        }
        if grant.permission == Permission::Admin && !grant.prefix.is_empty() {
            return Err(ServiceError::InvalidArgument(format!(
                "ADMIN covers everything: its prefix must be empty, not {:?}",
                grant.prefix
            )));
        }
    }
    for principal in &role.principals {
        validate_name("principal", principal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(permission: Permission, prefix: &str) -> Grant {
        Grant {
            permission,
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn tokens_parse_strictly_and_never_print_their_secret() {
        let text = format!("evl_{}_{}", "0123456789abcdef", "ab".repeat(32));
        let token = parse_token(&text).expect("parses");
        assert_eq!(token.id, "0123456789abcdef");
        assert!(!format!("{token:?}").contains("abab"));
        for bad in [
            "",
            "evl_",
            "evx_0123456789abcdef_00",
            &format!("evl_0123456789abcdef{}", "ab".repeat(32)),
            &format!("evl_0123456789ABCDEF_{}", "ab".repeat(32)),
            &format!("evl_0123456789abcde_{}", "ab".repeat(32)),
            &format!("evl_0123456789abcdef_{}", "ab".repeat(31)),
            &format!("evl_0123456789abcdef_{}_", "ab".repeat(32)),
        ] {
            let error = parse_token(bad).expect_err(bad);
            assert!(!error.contains("abab"), "{error}");
        }
    }

    #[test]
    fn grants_cover_prefixes_and_all_needs_every_filter_prefix_covered() {
        let reader = [grant(Permission::Read, "orders-")];
        assert!(allows(&reader, Permission::Read, "orders-1"));
        assert!(!allows(&reader, Permission::Read, "payments-1"));
        assert!(!allows(&reader, Permission::Append, "orders-1"));
        assert!(allows_all_filtered(&reader, &["orders-".to_string()]));
        assert!(allows_all_filtered(&reader, &["orders-eu".to_string()]));
        assert!(!allows_all_filtered(&reader, &["order".to_string()]));
        assert!(!allows_all_filtered(
            &reader,
            &["orders-".to_string(), "payments-".to_string()]
        ));
        assert!(!allows_all_filtered(&reader, &[]));
        let everything = [grant(Permission::Read, "")];
        assert!(allows_all_filtered(&everything, &[]));
        assert!(allows(&everything, Permission::Read, "$deleted-streams"));
        let admin = [grant(Permission::Admin, "")];
        assert!(allows(&admin, Permission::Delete, "anything"));
        assert!(allows_all_filtered(&admin, &[]));
    }

    #[test]
    fn a_revoked_or_expired_token_holds_no_grants_and_certificates_hold_their_roles() {
        let mut state = AccessState::default();
        state.roles.insert(
            "reader".to_string(),
            Role {
                grants: vec![grant(Permission::Read, "orders-")],
                principals: vec!["svc.example".to_string()],
            },
        );
        state.tokens.insert(
            "t1".to_string(),
            Token {
                principal: "alice".to_string(),
                roles: vec!["reader".to_string(), "gone".to_string()],
                secret_sha256: [0; 32],
                created_at_ms: 1,
                expires_at_ms: 100,
            },
        );
        let alice = Principal {
            name: "alice".to_string(),
            by: Authenticated::Token("t1".to_string()),
        };
        assert_eq!(
            grants_of(&state, &alice, 99).expect("valid"),
            vec![grant(Permission::Read, "orders-")]
        );
        assert!(matches!(
            grants_of(&state, &alice, 100),
            Err(ServiceError::PermissionDenied(_))
        ));
        let bob = Principal {
            name: "bob".to_string(),
            by: Authenticated::Token("t2".to_string()),
        };
        assert!(matches!(
            grants_of(&state, &bob, 1),
            Err(ServiceError::PermissionDenied(_))
        ));
        let service = Principal {
            name: "svc.example".to_string(),
            by: Authenticated::Certificate,
        };
        assert_eq!(grants_of(&state, &service, 1).expect("held").len(), 1);
        let stranger = Principal {
            name: "other.example".to_string(),
            by: Authenticated::Certificate,
        };
        assert!(grants_of(&state, &stranger, 1).expect("none").is_empty());
    }
}

/// Hostile tokens: the parser gives an error or a token for any text, never a panic, and
/// never an error that repeats the text; every well-formed token parses back to its parts.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_echoing_it(text in ".{0,200}") {
            match parse_token(&text) {
                Ok(token) => prop_assert_eq!(format!("evl_{}_{}", token.id, encode_hex(&token.secret)), text),
                Err(error) => prop_assert!(text.len() < 8 || !error.contains(&text)),
            }
        }

        #[test]
        fn near_tokens_never_panic(
            id in proptest::collection::vec(any::<u8>(), 0..12),
            secret in proptest::collection::vec(any::<u8>(), 0..40),
            cut in 0usize..120,
        ) {
            let text = format!("evl_{}_{}", encode_hex(&id), encode_hex(&secret));
            let text: String = text.chars().take(cut).collect();
            // Well formed exactly when the id has its 8 bytes and what is left after the cut
            // is as long as a token (so its secret part is 64 hex digits).
            let whole = id.len() == ID_BYTES && text.len() == 4 + 16 + 1 + 64;
            prop_assert_eq!(parse_token(&text).is_ok(), whole);
        }

        #[test]
        fn well_formed_tokens_parse_to_their_parts(
            id in proptest::array::uniform8(any::<u8>()),
            secret in proptest::array::uniform32(any::<u8>()),
        ) {
            let token = parse_token(&format!("evl_{}_{}", encode_hex(&id), encode_hex(&secret)))
                .expect("well formed");
            prop_assert_eq!(token.id, encode_hex(&id));
            prop_assert_eq!(token.secret, secret);
        }
    }
}
