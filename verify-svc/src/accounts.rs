//! The other services the verify service calls, as itself: the identity service (accounts,
//! the verified flag, deleting expired accounts) and the messaging service (their messages).

use clawx_common::{InternalAuth, Principal, ServiceError, ServiceResult, grpc::service_channel};
use clawx_proto::{
    identity::{
        DeleteUnverifiedAccountRequest, ListUnverifiedAccountsRequest, Profile, ResolveAccountsRequest, SetVerificationRequest,
        identity_service_client::IdentityServiceClient,
    },
    messaging::{PurgeAccountRequest, messaging_service_client::MessagingServiceClient},
};
use tonic::transport::Channel;

use crate::SERVICE;

/// Clients of the identity and messaging services, calling as the verify service.
#[derive(Clone)]
pub struct Accounts {
    identity: IdentityServiceClient<Channel>,
    messaging: MessagingServiceClient<Channel>,
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
        let mut request = tonic::Request::new(message);
        self.auth.authorize(&mut request, audience, &Principal::from_service(SERVICE));
        request
    }

    /// The account's profile, or `None` if it does not exist (any more).
    pub async fn profile(&self, account_id: i64) -> ServiceResult<Option<Profile>> {
        let request = self.request("identity", ResolveAccountsRequest { ids: vec![account_id], ..Default::default() });
        let reply = self.identity.clone().resolve_accounts(request).await.map_err(|status| upstream("identity", &status))?;
        Ok(reply.into_inner().accounts.into_iter().find(|profile| profile.id == account_id))
    }

    /// Marks the account verified by `twitter_username`.
    pub async fn set_verified(&self, account_id: i64, twitter_username: &str) -> ServiceResult<()> {
        let message = SetVerificationRequest { account_id, verified: true, twitter_username: Some(twitter_username.to_string()) };
        self.identity.clone().set_verification(self.request("identity", message)).await.map_err(|status| upstream("identity", &status))?;
        Ok(())
    }

    /// Unverified accounts created before `created_before_ms`, with ids above `after_id`.
    pub async fn unverified(&self, created_before_ms: i64, after_id: i64, limit: u32) -> ServiceResult<Vec<Profile>> {
        let message = ListUnverifiedAccountsRequest { created_before_ms, after_id, limit };
        let reply = self
            .identity
            .clone()
            .list_unverified_accounts(self.request("identity", message))
            .await
            .map_err(|status| upstream("identity", &status))?;
        Ok(reply.into_inner().accounts)
    }

    /// Deletes the account if it is unverified and created before `created_before_ms`.
    pub async fn delete_unverified(&self, account_id: i64, created_before_ms: i64) -> ServiceResult<bool> {
        let message = DeleteUnverifiedAccountRequest { account_id, created_before_ms };
        let reply = self
            .identity
            .clone()
            .delete_unverified_account(self.request("identity", message))
            .await
            .map_err(|status| upstream("identity", &status))?;
        Ok(reply.into_inner().deleted)
    }

    /// Deletes the account's direct messages.
    pub async fn purge_messages(&self, account_id: i64) -> ServiceResult<u64> {
        let request = self.request("messaging", PurgeAccountRequest { account_id });
        let reply = self.messaging.clone().purge_account(request).await.map_err(|status| upstream("messaging", &status))?;
        Ok(reply.into_inner().messages_deleted)
    }
}

/// An error of another service, as this one reports it.
fn upstream(service: &str, status: &tonic::Status) -> ServiceError {
    let error = ServiceError::from_status(status);
    tracing::warn!(service, grpc.code = ?status.code(), error = %error, "call to another service failed");
    error
}
