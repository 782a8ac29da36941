//! The token a client sends with every call, for a cluster with access control on
//! (`evlog serve --auth`): `authorization: Bearer <token>` on each request.

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel to one endpoint that adds the client's token to every request.
pub type Transport = InterceptedService<Channel, Credentials>;

/// The `authorization` value every request carries, if any. Its `Debug` hides the token.
#[derive(Clone, Default)]
pub struct Credentials(Option<AsciiMetadataValue>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Credentials(<token>)"),
            None => f.write_str("Credentials(none)"),
        }
    }
}

impl Credentials {
    /// `token` as a bearer token; an error (never repeating it) when it cannot be sent.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) else {
            return Ok(Self(None));
        };
        let mut value: AsciiMetadataValue = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token has characters a gRPC header cannot carry".to_string())?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
