//! The other services the groups service calls: the identity service (who owns and belongs to
//! a group: handle, name, wallet; who owns a domain) and the messaging service (the live
//! streams new group messages go to; partner notifications). Calls are made as the groups
//! service; the badges part adds its own calls (`badges::services`).

use std::collections::HashMap;

use clawx_common::{InternalAuth, Principal, ServiceError, ServiceResult, grpc::service_channel};
use clawx_proto::{
    identity::{Profile, ResolveAccountsRequest, identity_service_client::IdentityServiceClient},
    messaging::{Message, PublishGroupMessageRequest, messaging_service_client::MessagingServiceClient},
};
use tonic::transport::Channel;

use crate::SERVICE;

/// Most accounts one `ResolveAccounts` call names (the identity service's bound).
pub const MAX_RESOLVE: usize = 500;

/// Clients of the identity and messaging services, calling as the groups service.
#[derive(Clone)]
pub struct Accounts {
    pub(crate) identity: IdentityServiceClient<Channel>,
    pub(crate) messaging: MessagingServiceClient<Channel>,
    auth: InternalAuth,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

impl Accounts {
    /// Clients of the services at these URLs; they connect on first use.
    pub fn connect_lazy(identity_url: &str, messaging_url: &str, auth: InternalAuth) -> anyhow::Result<Accounts> {
        Ok(Accounts {
            identity: IdentityServiceClient::new(service_channel(identity_url)?),
            messaging: MessagingServiceClient::new(service_channel(messaging_url)?),
            auth,
        })
    }

    fn request<T>(&self, audience: &str, message: T) -> tonic::Request<T> {
        self.request_as(audience, &Principal::from_service(SERVICE), message)
    }

    /// A request to `audience` carrying `principal`.
    pub(crate) fn request_as<T>(&self, audience: &str, principal: &Principal, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.auth.authorize(&mut request, audience, principal);
        request
    }

    /// The profiles of the accounts that exist among `ids` (at most [`MAX_RESOLVE`]), in one
    /// call; an account missing from the answer no longer exists.
    pub async fn profiles(&self, ids: &[i64]) -> ServiceResult<HashMap<i64, Profile>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        debug_assert!(ids.len() <= MAX_RESOLVE);
        let request = self.request("identity", ResolveAccountsRequest { ids, ..Default::default() });
        let reply = self.identity.clone().resolve_accounts(request).await.map_err(|status| upstream("identity", &status))?;
        Ok(reply.into_inner().accounts.into_iter().map(|profile| (profile.id, profile)).collect())
    }

    /// Puts a group message on the live streams of `member_ids`.
    pub async fn publish(&self, member_ids: Vec<i64>, message: Message) -> ServiceResult<u32> {
        let request = self.request("messaging", PublishGroupMessageRequest { member_ids, message: Some(message) });
        let reply = self.messaging.clone().publish_group_message(request).await.map_err(|status| upstream("messaging", &status))?;
        Ok(reply.into_inner().published)
    }
}

/// An error of another service, as this one reports it.
pub(crate) fn upstream(service: &str, status: &tonic::Status) -> ServiceError {
    let error = ServiceError::from_status(status);
    tracing::warn!(service, grpc.code = ?status.code(), error = %error, "call to another service failed");
    error
}
