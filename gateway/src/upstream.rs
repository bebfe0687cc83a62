//! Connections to the services behind the gateway, and typed clients that carry the internal
//! JWT of the principal a request acts for.

use std::time::Duration;

use clawx_common::{InternalAuth, Principal};
use clawx_proto::{
    groups::groups_service_client::GroupsServiceClient, identity::identity_service_client::IdentityServiceClient,
    messaging::messaging_service_client::MessagingServiceClient, verify::verify_service_client::VerifyServiceClient,
};
use tonic::transport::{Channel, Endpoint};

/// Where the services listen, e.g. `http://identity:50051`.
#[derive(Clone, Debug)]
pub struct UpstreamUrls {
    pub identity: String,
    pub messaging: String,
    pub groups: String,
    pub verify: String,
}

/// A service behind the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Identity,
    Messaging,
    Groups,
    Verify,
}

impl Upstream {
    pub const ALL: [Upstream; 4] = [Upstream::Identity, Upstream::Messaging, Upstream::Groups, Upstream::Verify];

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

    pub fn channel(&self, upstream: Upstream) -> Channel {
        match upstream {
            Upstream::Identity => self.identity.clone(),
            Upstream::Messaging => self.messaging.clone(),
            Upstream::Groups => self.groups.clone(),
            Upstream::Verify => self.verify.clone(),
        }
    }

    pub fn auth(&self) -> &InternalAuth {
        &self.auth
    }

    /// A request to `upstream` on behalf of `principal`, with the upstream call timeout and the
    /// id of the request being served.
    pub fn request<T>(&self, upstream: Upstream, principal: &Principal, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        self.auth.authorize(&mut request, upstream.name(), principal);
        if let Some(id) = crate::observe::current_request_id()
            && let Ok(value) = tonic::metadata::MetadataValue::try_from(id)
        {
            request.metadata_mut().insert(clawx_common::grpc::REQUEST_ID_HEADER, value);
        }
        request
    }

    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.identity.clone())
    }

    pub fn messaging(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::new(self.messaging.clone())
    }

    pub fn groups(&self) -> GroupsServiceClient<Channel> {
        GroupsServiceClient::new(self.groups.clone())
    }

    pub fn verify(&self) -> VerifyServiceClient<Channel> {
        VerifyServiceClient::new(self.verify.clone())
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
