//! The other services the badges part calls: the identity service (who owns a domain) and the
//! messaging service (partner notifications are direct messages from the partner's account).
//!
//! Calls for an account carry a principal naming that account and the groups service as the
//! caller (`Principal { account_id, method: Service, caller_service: "groups" }`): only this
//! service's own code builds such a token, for the partner of a notification the partner sent.

use clawx_common::{AuthMethod, Principal, ServiceResult, time::now_ms};
use clawx_proto::{
    identity::{GetSignatureMessageRequest, ListDomainsRequest, ResolveAccountsRequest},
    messaging::{SendDirectMessageRequest, send_direct_message_request::To},
};

use crate::{SERVICE, accounts::upstream};

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

/// The groups service's clients of the identity and messaging services, with the badges
/// part's calls.
pub type Services = crate::accounts::Accounts;

impl crate::accounts::Accounts {
    fn for_account(account_id: i64) -> Principal {
        Principal { account_id: Some(account_id), method: AuthMethod::Service, client_ip: None, caller_service: Some(SERVICE.to_string()) }
    }

    /// Who owns `domain` (lowercase, no trailing dot), as seen by `account_id`.
    pub async fn domain_owner(&self, account_id: i64, domain: &str) -> ServiceResult<DomainOwner> {
        let principal = Self::for_account(account_id);
        let domains = self
            .identity
            .clone()
            .list_domains(self.request_as("identity", &principal, ListDomainsRequest {}))
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
            .resolve_accounts(self.request_as("identity", &Principal::from_service(SERVICE), resolve))
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
        match self.identity.clone().get_signature_message(self.request_as("identity", &Principal::from_service(SERVICE), probe)).await {
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
        self.messaging.clone().send_direct_message(self.request_as("messaging", &Self::for_account(account_id), message)).await?;
        Ok(())
    }
}
