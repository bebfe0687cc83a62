//! Accounts, handles and wallets, as the identity service knows them.

use clawx_common::{InternalAuth, Principal, ServiceError, ServiceResult};
use clawx_proto::identity::{Profile, ResolveAccountsRequest, SignXmtpIdentityUpdateRequest, identity_service_client::IdentityServiceClient};
use tonic::transport::{Channel, Endpoint};

/// Most accounts asked for in one `ResolveAccounts` call.
const MAX_LOOKUP: usize = 100;

/// Accounts remembered per replica.
const KNOWN_ACCOUNTS: usize = 100_000;

/// What this service reads of an account (id, handle, server-held wallet) never changes once
/// the account has a handle: handles are immutable, and so is the server-held wallet. Those
/// accounts are remembered, so a send to a known peer costs no call to the identity service;
/// accounts without a handle yet are asked for every time.
struct Known {
    by_id: hashlink::LruCache<i64, Profile>,
    by_handle: hashlink::LruCache<String, i64>,
    by_address: hashlink::LruCache<String, i64>,
}

impl Known {
    fn profile(&mut self, id: i64) -> Option<Profile> {
        self.by_id.get(&id).cloned()
    }

    fn remember(&mut self, profile: &Profile) {
        let Some(handle) = profile.handle.clone() else { return };
        let kept = Profile { id: profile.id, handle: Some(handle.clone()), wallet_address: profile.wallet_address.clone(), ..Profile::default() };
        self.by_handle.insert(handle, profile.id);
        self.by_address.insert(profile.wallet_address.to_ascii_lowercase(), profile.id);
        self.by_id.insert(profile.id, kept);
    }
}

/// A client of the identity service, calling as this service.
#[derive(Clone)]
pub struct Identity {
    client: IdentityServiceClient<Channel>,
    auth: InternalAuth,
    known: std::sync::Arc<std::sync::Mutex<Known>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// A client of the identity service at `url`; it connects on first use.
    pub fn connect_lazy(url: &str, auth: InternalAuth) -> anyhow::Result<Identity> {
        let endpoint =
            Endpoint::from_shared(url.to_string())?.connect_timeout(std::time::Duration::from_secs(5)).timeout(std::time::Duration::from_secs(15));
        let known = Known {
            by_id: hashlink::LruCache::new(KNOWN_ACCOUNTS),
            by_handle: hashlink::LruCache::new(KNOWN_ACCOUNTS),
            by_address: hashlink::LruCache::new(KNOWN_ACCOUNTS),
        };
        Ok(Identity { client: IdentityServiceClient::new(endpoint.connect_lazy()), auth, known: std::sync::Arc::new(std::sync::Mutex::new(known)) })
    }

    /// The accounts among `ids`, `handles` and (lowercase) `wallet_addresses`: remembered ones
    /// from memory, the others from the identity service.
    pub async fn resolve(&self, ids: &[i64], handles: &[String], wallet_addresses: &[String]) -> ServiceResult<Vec<Profile>> {
        let mut found: Vec<Profile> = Vec::new();
        let (mut missing_ids, mut missing_handles, mut missing_addresses) = (Vec::new(), Vec::new(), Vec::new());
        {
            let mut known = self.known.lock().expect("known accounts lock");
            for id in ids {
                match known.profile(*id) {
                    Some(profile) => found.push(profile),
                    None => missing_ids.push(*id),
                }
            }
            for handle in handles {
                match known.by_handle.get(handle).copied().and_then(|id| known.profile(id)) {
                    Some(profile) => found.push(profile),
                    None => missing_handles.push(handle.clone()),
                }
            }
            for address in wallet_addresses {
                match known.by_address.get(&address.to_ascii_lowercase()).copied().and_then(|id| known.profile(id)) {
                    Some(profile) => found.push(profile),
                    None => missing_addresses.push(address.clone()),
                }
            }
        }
        if !missing_ids.is_empty() || !missing_handles.is_empty() || !missing_addresses.is_empty() {
            let fetched = self.fetch(&missing_ids, &missing_handles, &missing_addresses).await?;
            let mut known = self.known.lock().expect("known accounts lock");
            for profile in &fetched {
                known.remember(profile);
            }
            found.extend(fetched);
        }
        found.sort_by_key(|profile| profile.id);
        found.dedup_by_key(|profile| profile.id);
        Ok(found)
    }

    /// Asks the identity service.
    async fn fetch(&self, ids: &[i64], handles: &[String], wallet_addresses: &[String]) -> ServiceResult<Vec<Profile>> {
        let mut ids: Vec<i64> = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut requests = Vec::new();
        if !handles.is_empty() || !wallet_addresses.is_empty() {
            requests.push(ResolveAccountsRequest { ids: Vec::new(), handles: handles.to_vec(), wallet_addresses: wallet_addresses.to_vec() });
        }
        requests.extend(ids.chunks(MAX_LOOKUP).map(|chunk| ResolveAccountsRequest { ids: chunk.to_vec(), ..ResolveAccountsRequest::default() }));
        let mut profiles = Vec::new();
        for message in requests {
            let mut request = tonic::Request::new(message);
            self.auth.authorize(&mut request, "identity", &Principal::service());
            match self.client.clone().resolve_accounts(request).await {
                Ok(answer) => profiles.extend(answer.into_inner().accounts),
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "identity service call failed");
                    return Err(ServiceError::new(clawx_common::ErrorCode::Unavailable, "the identity service is unavailable; retry"));
                }
            }
        }
        Ok(profiles)
    }

    /// Has the account's server-held wallet sign an XMTP identity-update text for its own inbox
    /// (the identity service refuses any other text): 65 bytes `r || s || v`.
    pub async fn sign_xmtp_identity_update(&self, account_id: i64, text: &str) -> ServiceResult<Vec<u8>> {
        let mut request = tonic::Request::new(SignXmtpIdentityUpdateRequest { account_id, signature_text: text.to_string() });
        self.auth.authorize(&mut request, "identity", &Principal::named_service(crate::SERVICE));
        match self.client.clone().sign_xmtp_identity_update(request).await {
            Ok(answer) => Ok(answer.into_inner().signature),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "XMTP identity update signing failed");
                Err(ServiceError::from_status(&status))
            }
        }
    }
}
