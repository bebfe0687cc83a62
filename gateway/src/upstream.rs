//! Connections to the services behind the gateway, and typed clients that carry the internal
//! JWT of the principal a request acts for: `upstreams.identity(&principal)` is a client of the
//! identity service whose calls carry a token for the `identity` audience, the request's id and
//! the upstream deadline.

use std::time::Duration;

use clawx_common::{InternalAuth, Principal, auth::INTERNAL_TOKEN_METADATA, grpc::REQUEST_ID_HEADER};
use clawx_proto::{
    groups::{badges_service_client::BadgesServiceClient, groups_service_client::GroupsServiceClient},
    identity::identity_service_client::IdentityServiceClient,
    messaging::messaging_service_client::MessagingServiceClient,
    verify::verify_service_client::VerifyServiceClient,
};
use tonic::{
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{config::UpstreamUrls, context::current_request_id};

/// A service behind the gateway, for the pass-through, which picks one by gRPC path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Identity,
    Messaging,
    Groups,
    Verify,
}

impl Upstream {
    /// The service name, which is also its JWT audience.
    pub fn name(self) -> &'static str {
        match self {
            Upstream::Identity => "identity",
            Upstream::Messaging => "messaging",
            Upstream::Groups => "groups",
            Upstream::Verify => "verify",
        }
    }

    /// The service that owns a gRPC path, by package prefix. XMTP node paths belong to
    /// messaging.
    pub fn of_grpc_path(path: &str) -> Option<Upstream> {
        let package = path.strip_prefix('/')?.split('/').next()?;
        if package.starts_with("clawx.identity.") {
            Some(Upstream::Identity)
        } else if package.starts_with("clawx.messaging.") || package.starts_with("xmtp.") {
            Some(Upstream::Messaging)
        } else if package.starts_with("clawx.groups.") {
            Some(Upstream::Groups)
        } else if package.starts_with("clawx.verify.") {
            Some(Upstream::Verify)
        } else {
            None
        }
    }
}

/// A lazily connected channel. `timeout` bounds the wait for a response's headers: whole unary
/// calls, but only the start of a stream, so long-lived subscriptions are not cut.
fn endpoint(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|error| anyhow::anyhow!("invalid upstream URL {url:?}: {error}"))?
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .http2_adaptive_window(true);
    Ok(endpoint.connect_lazy())
}

/// Puts on every call of a typed client the internal token it was made with, the id of the
/// request being served and the upstream deadline.
#[derive(Clone, Debug)]
pub struct Authorize {
    token: AsciiMetadataValue,
    request_id: Option<AsciiMetadataValue>,
    timeout: Duration,
}

impl Interceptor for Authorize {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.set_timeout(self.timeout);
        request.metadata_mut().insert(INTERNAL_TOKEN_METADATA, self.token.clone());
        if let Some(id) = &self.request_id {
            request.metadata_mut().insert(REQUEST_ID_HEADER, id.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry an internal token.
pub type Authorized = InterceptedService<Channel, Authorize>;
pub type IdentityClient = IdentityServiceClient<Authorized>;
pub type MessagingClient = MessagingServiceClient<Authorized>;
pub type GroupsClient = GroupsServiceClient<Authorized>;
pub type VerifyClient = VerifyServiceClient<Authorized>;
pub type BadgesClient = BadgesServiceClient<Authorized>;

/// One lazily connected HTTP/2 channel per service.
#[derive(Clone, Debug)]
pub struct Upstreams {
    identity: Channel,
    messaging: Channel,
    groups: Channel,
    verify: Channel,
    auth: InternalAuth,
    timeout: Duration,
}

impl Upstreams {
    pub fn new(urls: &UpstreamUrls, auth: InternalAuth, timeout: Duration) -> anyhow::Result<Upstreams> {
        Ok(Upstreams {
            identity: endpoint(&urls.identity, timeout)?,
            messaging: endpoint(&urls.messaging, timeout)?,
            groups: endpoint(&urls.groups, timeout)?,
            verify: endpoint(&urls.verify, timeout)?,
            auth,
            timeout,
        })
    }

    /// The channel to `upstream`, for the pass-through.
    pub fn channel(&self, upstream: Upstream) -> Channel {
        match upstream {
            Upstream::Identity => self.identity.clone(),
            Upstream::Messaging => self.messaging.clone(),
            Upstream::Groups => self.groups.clone(),
            Upstream::Verify => self.verify.clone(),
        }
    }

    /// An internal token for `upstream` acting for `principal`, for the pass-through.
    pub fn token(&self, upstream: Upstream, principal: &Principal) -> String {
        self.auth.issue(upstream.name(), principal)
    }

    fn authorize(&self, upstream: Upstream, principal: &Principal) -> Authorize {
        let request_id = current_request_id().and_then(|id| MetadataValue::try_from(id).ok());
        let token = MetadataValue::try_from(self.token(upstream, principal)).expect("a JWT is valid ASCII metadata");
        Authorize { token, request_id, timeout: self.timeout }
    }

    /// The identity service, acting for `principal`.
    pub fn identity(&self, principal: &Principal) -> IdentityClient {
        IdentityServiceClient::with_interceptor(self.identity.clone(), self.authorize(Upstream::Identity, principal))
    }

    /// The messaging service, acting for `principal`.
    pub fn messaging(&self, principal: &Principal) -> MessagingClient {
        MessagingServiceClient::with_interceptor(self.messaging.clone(), self.authorize(Upstream::Messaging, principal))
    }

    /// The groups service, acting for `principal`.
    pub fn groups(&self, principal: &Principal) -> GroupsClient {
        GroupsServiceClient::with_interceptor(self.groups.clone(), self.authorize(Upstream::Groups, principal))
    }

    /// The verify service, acting for `principal`.
    pub fn verify(&self, principal: &Principal) -> VerifyClient {
        VerifyServiceClient::with_interceptor(self.verify.clone(), self.authorize(Upstream::Verify, principal))
    }

    /// The groups service's badges (`BadgesService`), acting for `principal`.
    pub fn badges(&self, principal: &Principal) -> BadgesClient {
        BadgesServiceClient::with_interceptor(self.groups.clone(), self.authorize(Upstream::Groups, principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_route_by_package() {
        assert_eq!(Upstream::of_grpc_path("/clawx.identity.v1.IdentityService/GetStatus"), Some(Upstream::Identity));
        assert_eq!(Upstream::of_grpc_path("/xmtp.mls.api.v1.MlsApi/SendGroupMessages"), Some(Upstream::Messaging));
        assert_eq!(Upstream::of_grpc_path("/xmtp.identity.api.v1.IdentityApi/GetInboxIds"), Some(Upstream::Messaging));
        assert_eq!(Upstream::of_grpc_path("/clawx.verify.v1.VerifyService/Start"), Some(Upstream::Verify));
        assert_eq!(Upstream::of_grpc_path("/clawx.identityx/Foo"), None);
        assert_eq!(Upstream::of_grpc_path("/other.Service/Foo"), None);
    }
}
