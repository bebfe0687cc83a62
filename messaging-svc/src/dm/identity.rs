//! Accounts, handles and wallets, as the identity service knows them.

use clawx_common::{
    InternalAuth, Principal, ServiceError, ServiceResult,
    auth::{AuthMethod, CREDENTIALS_REVOKED_CHANNEL, CredentialsRevoked},
    pubsub::{Event, PubSub},
};
use clawx_proto::identity::{
    ListWalletsRequest, Profile, ResolveAccountsRequest, SignXmtpIdentityUpdateRequest, identity_service_client::IdentityServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

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

    fn forget(&mut self, id: i64) {
        if let Some(profile) = self.by_id.remove(&id) {
            if let Some(handle) = profile.handle {
                self.by_handle.remove(&handle);
            }
            self.by_address.remove(&profile.wallet_address.to_ascii_lowercase());
        }
    }

    fn clear(&mut self) {
        self.by_id.clear();
        self.by_handle.clear();
        self.by_address.clear();
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
        let known = Known {
            by_id: hashlink::LruCache::new(KNOWN_ACCOUNTS),
            by_handle: hashlink::LruCache::new(KNOWN_ACCOUNTS),
            by_address: hashlink::LruCache::new(KNOWN_ACCOUNTS),
        };
        Ok(Identity {
            client: IdentityServiceClient::new(clawx_common::grpc::service_channel(url)?),
            auth,
            known: std::sync::Arc::new(std::sync::Mutex::new(known)),
        })
    }

    /// Forgets remembered accounts the identity service announces on its revocation channel (an
    /// account deleted, its credentials revoked), on every replica, until `shutdown`; a gap in
    /// the announcements forgets everything.
    pub fn forget_announced(&self, pubsub: &PubSub, shutdown: CancellationToken) {
        let mut subscription = pubsub.subscribe(CREDENTIALS_REVOKED_CHANNEL);
        let known = std::sync::Arc::downgrade(&self.known);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = subscription.recv() => event,
                    () = shutdown.cancelled() => return,
                };
                let Some(known) = known.upgrade() else { return };
                match event {
                    Some(Event::Message(payload)) => match serde_json::from_slice::<CredentialsRevoked>(&payload) {
                        Ok(revoked) => known.lock().expect("known accounts lock").forget(revoked.account_id),
                        Err(error) => tracing::warn!(%error, "unreadable revocation announcement"),
                    },
                    Some(Event::Gap) => known.lock().expect("known accounts lock").clear(),
                    None => return,
                }
            }
        });
    }

    /// Forgets one account on this replica at once.
    pub fn forget(&self, account_id: i64) {
        self.known.lock().expect("known accounts lock").forget(account_id);
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

    /// Whether `address` (lowercase) is `account_id`'s server-held wallet or a wallet linked to
    /// it. Linked wallets are asked for every time: an unlinked wallet stops counting at once.
    pub async fn owns_wallet(&self, account_id: i64, address: &str) -> ServiceResult<bool> {
        let profiles = self.resolve(&[account_id], &[], &[]).await?;
        if profiles.iter().any(|profile| profile.id == account_id && profile.wallet_address.to_ascii_lowercase() == address) {
            return Ok(true);
        }
        let mut request = tonic::Request::new(ListWalletsRequest {});
        self.auth.authorize(&mut request, "identity", &Principal::account(account_id, AuthMethod::Service, None));
        match self.client.clone().list_wallets(request).await {
            Ok(answer) => Ok(answer.into_inner().wallets.iter().any(|wallet| wallet.address.to_ascii_lowercase() == address)),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "identity service call failed");
                Err(ServiceError::new(clawx_common::ErrorCode::Unavailable, "the identity service is unavailable; retry"))
            }
        }
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
        self.auth.authorize(&mut request, "identity", &Principal::from_service(crate::SERVICE));
        match self.client.clone().sign_xmtp_identity_update(request).await {
            Ok(answer) => Ok(answer.into_inner().signature),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "XMTP identity update signing failed");
                Err(ServiceError::from_status(&status))
            }
        }
    }
}
