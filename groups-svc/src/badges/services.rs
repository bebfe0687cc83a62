//! The other services the badges part calls: the identity service (who owns a domain) and the
//! messaging service (partner notifications are direct messages from the partner's account).
//!
//! Calls for an account carry a principal naming that account and the groups service as the
//! caller (`Principal { account_id, method: Service, caller_service: "groups" }`): only this
//! service's own code builds such a token, for the partner of a notification the partner sent.

use std::time::Duration;

use clawx_common::{AuthMethod, InternalAuth, Principal, ServiceError, ServiceResult, time::now_ms};
use clawx_proto::{
    identity::{GetSignatureMessageRequest, ListDomainsRequest, ResolveAccountsRequest, identity_service_client::IdentityServiceClient},
    messaging::{SendDirectMessageRequest, messaging_service_client::MessagingServiceClient, send_direct_message_request::To},
};
use tonic::transport::{Channel, Endpoint};

use crate::SERVICE;

fn channel(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|error| anyhow::anyhow!("invalid service URL {url:?}: {error}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15));
    Ok(endpoint.connect_lazy())
}

/// Who owns a domain, from the point of view of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainOwner {
    /// The account itself (a claimed domain or its handle).
    Caller,
    /// Another account.
    Other,
    /// Nobody here.
    Unknown,
}

/// Clients of the identity and messaging services.
#[derive(Clone)]
pub struct Services {
    identity: IdentityServiceClient<Channel>,
    messaging: MessagingServiceClient<Channel>,
    auth: InternalAuth,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Clients of the services at these URLs; they connect on first use.
    pub fn connect_lazy(identity_url: &str, messaging_url: &str, auth: InternalAuth) -> anyhow::Result<Services> {
        Ok(Services {
            identity: IdentityServiceClient::new(channel(identity_url)?),
            messaging: MessagingServiceClient::new(channel(messaging_url)?),
            auth,
        })
    }

    fn request<T>(&self, audience: &str, principal: &Principal, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.auth.authorize(&mut request, audience, principal);
        request
    }

    fn for_account(account_id: i64) -> Principal {
        Principal { account_id: Some(account_id), method: AuthMethod::Service, client_ip: None, caller_service: Some(SERVICE.to_string()) }
    }

    /// Who owns `domain` (lowercase, no trailing dot), as seen by `account_id`.
    pub async fn domain_owner(&self, account_id: i64, domain: &str) -> ServiceResult<DomainOwner> {
        let principal = Services::for_account(account_id);
        let domains = self
            .identity
            .clone()
            .list_domains(self.request("identity", &principal, ListDomainsRequest {}))
            .await
            .map_err(|status| upstream("identity", &status))?
            .into_inner()
            .domains;
        if domains.iter().any(|claimed| claimed.name.eq_ignore_ascii_case(domain)) {
            return Ok(DomainOwner::Caller);
        }
        let resolve = ResolveAccountsRequest { ids: vec![account_id], ..Default::default() };
        let profiles = self
            .identity
            .clone()
            .resolve_accounts(self.request("identity", &Principal::from_service(SERVICE), resolve))
            .await
            .map_err(|status| upstream("identity", &status))?
            .into_inner()
            .accounts;
        if profiles
            .iter()
            .any(|profile| profile.id == account_id && profile.handle.as_deref().is_some_and(|handle| handle.eq_ignore_ascii_case(domain)))
        {
            return Ok(DomainOwner::Caller);
        }
        // Whether any account answers to it: the signed-request message exists only then.
        let probe = GetSignatureMessageRequest { domain: domain.to_string(), expiry: now_ms() + 60_000, device: false };
        match self.identity.clone().get_signature_message(self.request("identity", &Principal::from_service(SERVICE), probe)).await {
            Ok(_) => Ok(DomainOwner::Other),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(DomainOwner::Unknown),
            Err(status) => Err(upstream("identity", &status)),
        }
    }

    /// Sends `content` from `account_id` to `address` as a direct message with the idempotency
    /// key `key`: a repeated send answers the first message instead of sending another.
    pub async fn send_direct_message(&self, account_id: i64, address: &str, content: &str, key: &str) -> Result<(), tonic::Status> {
        let message = SendDirectMessageRequest {
            to: Some(To::WalletAddress(address.to_string())),
            content: content.to_string(),
            idempotency_key: key.to_string(),
        };
        self.messaging.clone().send_direct_message(self.request("messaging", &Services::for_account(account_id), message)).await?;
        Ok(())
    }
}

/// An error of another service, as this one reports it.
fn upstream(service: &str, status: &tonic::Status) -> ServiceError {
    let error = ServiceError::from_status(status);
    tracing::warn!(service, grpc.code = ?status.code(), error = %error, "call to another service failed");
    error
}
