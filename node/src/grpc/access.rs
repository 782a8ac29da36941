//! `evlog.v1.Access` over gRPC: converts, checks the caller (ADMIN for all but `WhoAmI`),
//! calls the service, maps its errors. A follower hands changes to the leader, with the
//! caller's token, marked so they never go round.

use std::sync::Arc;
use std::time::Duration;

use evlog_proto::v1 as pb;
use evlog_proto::v1::access_client::AccessClient;
use evlog_proto::v1::access_server::Access;
use evlog_raft_store::access::Grant;
use evlog_raft_store::access::Permission;
use evlog_raft_store::access::Role;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;

use crate::grpc::auth;
use crate::grpc::consumers::deadline;
use crate::grpc::consumers::forwarded;
use crate::grpc::consumers::leader_channel;
use crate::grpc::status::to_status;
use crate::raft::handle::RaftHandle;
use crate::raft::transport::channels::ChannelPool;
use crate::service::ServiceError;
use crate::service::access::AccessControl;
use crate::service::access::Authenticated;
use crate::service::access::Need;
use crate::service::access::TokenInfo;

pub struct AccessGrpc {
    access: Arc<AccessControl>,
    handle: RaftHandle,
    channels: ChannelPool,
    request_timeout: Duration,
}

impl AccessGrpc {
    pub fn new(
        access: Arc<AccessControl>,
        handle: RaftHandle,
        channels: ChannelPool,
        request_timeout: Duration,
    ) -> Self {
        Self {
            access,
            handle,
            channels,
            request_timeout,
        }
    }

    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.access
            .check(&auth::principal(request), Need::Admin)
            .map_err(status)
    }

    /// The leader's client when this node does not lead (`None` when it does).
    async fn leader<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<AccessClient<Channel>>, Status> {
        let channel =
            leader_channel(&self.handle, &self.channels, request, self.request_timeout).await?;
        Ok(channel.map(AccessClient::new))
    }
}

fn status(error: ServiceError) -> Status {
    to_status(error, false)
}

fn permission_from_wire(value: i32) -> Result<Permission, Status> {
    match pb::Permission::try_from(value) {
        Ok(pb::Permission::Read) => Ok(Permission::Read),
        Ok(pb::Permission::Append) => Ok(Permission::Append),
        Ok(pb::Permission::Delete) => Ok(Permission::Delete),
        Ok(pb::Permission::Metadata) => Ok(Permission::Metadata),
        Ok(pb::Permission::Consume) => Ok(Permission::Consume),
        Ok(pb::Permission::Admin) => Ok(Permission::Admin),
        Ok(pb::Permission::Unspecified) | Err(_) => Err(status(ServiceError::InvalidArgument(
            format!("unknown permission {value}: READ, APPEND, DELETE, METADATA, CONSUME or ADMIN"),
        ))),
    }
}

fn permission_to_wire(permission: Permission) -> pb::Permission {
    match permission {
        Permission::Read => pb::Permission::Read,
        Permission::Append => pb::Permission::Append,
        Permission::Delete => pb::Permission::Delete,
        Permission::Metadata => pb::Permission::Metadata,
        Permission::Consume => pb::Permission::Consume,
        Permission::Admin => pb::Permission::Admin,
    }
}

fn grant_to_wire(grant: Grant) -> pb::Grant {
    pb::Grant {
        permission: permission_to_wire(grant.permission) as i32,
        prefix: grant.prefix,
    }
}

fn token_to_wire(info: TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo {
        id: info.id,
        principal: info.principal,
        roles: info.roles,
        created_at_ms: info.created_at_ms,
        expires_at_ms: info.expires_at_ms,
    }
}

#[tonic::async_trait]
impl Access for AccessGrpc {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.check_admin(&request)?;
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .create_token(forwarded(request.into_inner(), timeout))
                .await;
        }
        let request = request.into_inner();
        let ttl = (request.ttl_seconds > 0).then(|| Duration::from_secs(request.ttl_seconds));
        let (token, info) = self
            .access
            .create_token(request.principal, request.roles, ttl)
            .await
            .map_err(status)?;
        tracing::info!(token_id = %info.id, principal = %info.principal, roles = ?info.roles, "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(token_to_wire(info)),
            token,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.check_admin(&request)?;
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .revoke_token(forwarded(request.into_inner(), timeout))
                .await;
        }
        let id = request.into_inner().id;
        self.access.revoke_token(id.clone()).await.map_err(status)?;
        tracing::info!(token_id = %id, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.check_admin(&request)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: self
                .access
                .tokens()
                .into_iter()
                .map(token_to_wire)
                .collect(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let principal = auth::principal(&request);
        let (roles, grants) = self.access.describe(&principal).map_err(status)?;
        let (authenticated_by, token_id) = match &principal.by {
            Authenticated::Token(id) => ("token", id.clone()),
            Authenticated::Certificate => ("certificate", String::new()),
            Authenticated::Bootstrap => ("bootstrap", String::new()),
            Authenticated::Anonymous => ("anonymous", String::new()),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            principal: principal.name,
            authenticated_by: authenticated_by.to_string(),
            token_id,
            roles,
            grants: grants.into_iter().map(grant_to_wire).collect(),
        }))
    }

    async fn put_role(
        &self,
        request: Request<pb::PutRoleRequest>,
    ) -> Result<Response<pb::PutRoleResponse>, Status> {
        self.check_admin(&request)?;
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .put_role(forwarded(request.into_inner(), timeout))
                .await;
        }
        let role = request
            .into_inner()
            .role
            .ok_or_else(|| status(ServiceError::InvalidArgument("role is missing".to_string())))?;
        let grants = role
            .grants
            .into_iter()
            .map(|grant| {
                Ok(Grant {
                    permission: permission_from_wire(grant.permission)?,
                    prefix: grant.prefix,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let name = role.name;
        self.access
            .put_role(
                name.clone(),
                Role {
                    grants,
                    principals: role.principals,
                },
            )
            .await
            .map_err(status)?;
        tracing::info!(role = %name, "role put");
        Ok(Response::new(pb::PutRoleResponse {}))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        self.check_admin(&request)?;
        if let Some(mut leader) = self.leader(&request).await? {
            let timeout = deadline(&request);
            return leader
                .delete_role(forwarded(request.into_inner(), timeout))
                .await;
        }
        let name = request.into_inner().name;
        self.access
            .delete_role(name.clone())
            .await
            .map_err(status)?;
        tracing::info!(role = %name, "role deleted");
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        self.check_admin(&request)?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: self
                .access
                .roles()
                .into_iter()
                .map(|(name, role)| pb::Role {
                    name,
                    grants: role.grants.into_iter().map(grant_to_wire).collect(),
                    principals: role.principals,
                })
                .collect(),
        }))
    }
}
