//! `evlog access …`: tokens and roles of a cluster with access control on (`evlog serve
//! --auth`). Every command but `whoami` and `new-bootstrap-token` needs ADMIN; changes go to
//! the leader (a follower hands them on).

use clap::Args;
use clap::Subcommand;
use evlog_proto::v1 as pb;
use ring::rand::SecureRandom;

use super::ClientArgs;
use super::status_error;

#[derive(Debug, Args)]
pub struct AccessArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: AccessCommand,
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Who the token (or certificate) speaks for, and its roles and grants.
    Whoami,
    /// Create a token for PRINCIPAL holding --role (repeatable); prints it once: the cluster
    /// keeps only its hash.
    CreateToken {
        principal: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Expire it this many seconds after now [default: never].
        #[arg(long)]
        ttl_s: Option<u64>,
    },
    /// Revoke token ID: from its commit on it authenticates no one, and its live
    /// subscriptions and consumer streams end within a second.
    RevokeToken { id: String },
    /// List the tokens (ids, principals, roles, expiry; never secrets).
    Tokens,
    /// Create or replace role NAME: each --grant is PERMISSION:PREFIX (READ, APPEND, DELETE,
    /// METADATA, CONSUME; ADMIN with no prefix), e.g. --grant READ:orders- --grant
    /// CONSUME:billing-; each --principal a client-certificate name holding it.
    PutRole {
        name: String,
        #[arg(long = "grant")]
        grants: Vec<String>,
        #[arg(long = "principal")]
        principals: Vec<String>,
    },
    /// Delete role NAME (tokens keep their other roles).
    DeleteRole { name: String },
    /// List the roles and their grants.
    Roles,
    /// Print a new random token (no cluster is asked), for `evlog serve
    /// --bootstrap-token-file`.
    NewBootstrapToken,
}

pub async fn access(args: AccessArgs) -> anyhow::Result<()> {
    let json = args.client.json;
    if let AccessCommand::NewBootstrapToken = args.command {
        println!("{}", new_token()?);
        return Ok(());
    }
    let client = args.client.client()?;
    match args.command {
        AccessCommand::Whoami => {
            let me = client
                .access_call(pb::WhoAmIRequest {}, |mut c, r| async move {
                    c.who_am_i(r).await
                })
                .await
                .map_err(status_error)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "principal": me.principal,
                        "authenticated_by": me.authenticated_by,
                        "token_id": me.token_id,
                        "roles": me.roles,
                        "grants": me.grants.iter().map(grant_text).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!("{} (by {})", me.principal, me.authenticated_by);
                if !me.token_id.is_empty() {
                    println!("token:  {}", me.token_id);
                }
                let list = |items: Vec<String>| {
                    if items.is_empty() {
                        "(none)".to_string()
                    } else {
                        items.join(", ")
                    }
                };
                println!("roles:  {}", list(me.roles));
                println!(
                    "grants: {}",
                    list(me.grants.iter().map(grant_text).collect())
                );
            }
        }
        AccessCommand::CreateToken {
            principal,
            roles,
            ttl_s,
        } => {
            let request = pb::CreateTokenRequest {
                principal,
                roles,
                ttl_seconds: ttl_s.unwrap_or(0),
            };
            // Not retried: a retry after an unknown outcome would make a second token.
            let created = client
                .access(0)
                .create_token(request)
                .await
                .map_err(status_error)?
                .into_inner();
            let info = created.info.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": created.token, "id": info.id, "principal": info.principal, "roles": info.roles, "expires_at_ms": info.expires_at_ms})
                );
            } else {
                println!("{}", created.token);
                eprintln!(
                    "token {} for {} (roles: {}): shown once, keep it secret",
                    info.id,
                    info.principal,
                    info.roles.join(", ")
                );
            }
        }
        AccessCommand::RevokeToken { id } => {
            client
                .access_call(
                    pb::RevokeTokenRequest { id: id.clone() },
                    |mut c, r| async move { c.revoke_token(r).await },
                )
                .await
                .map_err(status_error)?;
            println!("token {id} revoked");
        }
        AccessCommand::Tokens => {
            let tokens = client
                .access_call(pb::ListTokensRequest {}, |mut c, r| async move {
                    c.list_tokens(r).await
                })
                .await
                .map_err(status_error)?
                .tokens;
            for token in tokens {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": token.id, "principal": token.principal, "roles": token.roles, "created_at_ms": token.created_at_ms, "expires_at_ms": token.expires_at_ms})
                    );
                } else {
                    let expires = match token.expires_at_ms {
                        0 => "never".to_string(),
                        at => format!("{at}"),
                    };
                    println!(
                        "{}  {}  roles: {}  expires: {expires}",
                        token.id,
                        token.principal,
                        token.roles.join(",")
                    );
                }
            }
        }
        AccessCommand::PutRole {
            name,
            grants,
            principals,
        } => {
            let grants = grants
                .iter()
                .map(|grant| parse_grant(grant))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let role = pb::Role {
                name: name.clone(),
                grants,
                principals,
            };
            client
                .access_call(
                    pb::PutRoleRequest { role: Some(role) },
                    |mut c, r| async move { c.put_role(r).await },
                )
                .await
                .map_err(status_error)?;
            println!("role {name} put");
        }
        AccessCommand::DeleteRole { name } => {
            client
                .access_call(
                    pb::DeleteRoleRequest { name: name.clone() },
                    |mut c, r| async move { c.delete_role(r).await },
                )
                .await
                .map_err(status_error)?;
            println!("role {name} deleted");
        }
        AccessCommand::Roles => {
            let roles = client
                .access_call(pb::ListRolesRequest {}, |mut c, r| async move {
                    c.list_roles(r).await
                })
                .await
                .map_err(status_error)?
                .roles;
            for role in roles {
                let grants: Vec<String> = role.grants.iter().map(grant_text).collect();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"name": role.name, "grants": grants, "principals": role.principals})
                    );
                } else {
                    println!(
                        "{}  grants: {}  principals: {}",
                        role.name,
                        grants.join(", "),
                        role.principals.join(", ")
                    );
                }
            }
        }
        AccessCommand::NewBootstrapToken => unreachable!("answered above"),
    }
    Ok(())
}

/// `PERMISSION:PREFIX` (the prefix may be empty, `READ:` or `READ`: every stream).
fn parse_grant(text: &str) -> anyhow::Result<pb::Grant> {
    let (permission, prefix) = text.split_once(':').unwrap_or((text, ""));
    let permission = match permission.to_ascii_uppercase().as_str() {
        "READ" => pb::Permission::Read,
        "APPEND" => pb::Permission::Append,
        "DELETE" => pb::Permission::Delete,
        "METADATA" => pb::Permission::Metadata,
        "CONSUME" => pb::Permission::Consume,
        "ADMIN" => pb::Permission::Admin,
        other => anyhow::bail!(
            "unknown permission {other:?} in --grant {text:?}: READ, APPEND, DELETE, METADATA, \
             CONSUME or ADMIN, then :PREFIX"
        ),
    };
    Ok(pb::Grant {
        permission: permission as i32,
        prefix: prefix.to_string(),
    })
}

fn grant_text(grant: &pb::Grant) -> String {
    let permission = pb::Permission::try_from(grant.permission)
        .map(|permission| {
            permission
                .as_str_name()
                .trim_start_matches("PERMISSION_")
                .to_string()
        })
        .unwrap_or_else(|_| grant.permission.to_string());
    format!("{permission}:{}", grant.prefix)
}

/// A fresh token in the format the nodes accept.
fn new_token() -> anyhow::Result<String> {
    let random = ring::rand::SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    random
        .fill(&mut id)
        .and_then(|()| random.fill(&mut secret))
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    Ok(format!(
        "{}{}_{}",
        crate::service::access::TOKEN_PREFIX,
        hex(&id),
        hex(&secret)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_a_new_token_is_one_the_nodes_accept() {
        let grant = parse_grant("read:orders-").expect("parses");
        assert_eq!(grant.permission, pb::Permission::Read as i32);
        assert_eq!(grant.prefix, "orders-");
        assert_eq!(parse_grant("ADMIN").expect("parses").prefix, "");
        assert!(parse_grant("WRITE:x").is_err());
        let token = new_token().expect("random");
        crate::service::access::parse_token(&token).expect("accepted");
    }
}
