//! The identity rules: accounts, keys, handles, profiles, wallets, domains and authentication.
//! No transport or SQL here: the gRPC adapter calls in, the store is a trait.

pub mod signature;
pub mod types;
pub mod xmtp;

use std::{sync::Arc, time::Duration};

use alloy_signer_local::PrivateKeySigner;
use clawx_common::{
    Backends, ErrorCode, ServiceError, ServiceResult,
    auth::{
        ACCOUNT_CREATED_CHANNEL, API_KEY_PREFIX, AccountCreated, CREDENTIALS_REVOKED_CHANNEL, CredentialsRevoked, api_key_cache_key, api_key_hash,
        looks_like_api_key,
    },
    crypto::Keyring,
    time::{format_rfc3339, now_ms},
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use self::{
    signature::{SignatureProblem, parse_signature, recover_personal_sign, signed_request_message, xmtp_inbox_id},
    types::{Handle, WalletAddress, parse_domain, parse_name, parse_text, parse_url},
};
use crate::store::{
    AccountRecord, ApiKeyRecord, ChallengeRecord, DomainRecord, IdentityStore, LinkedWalletRecord, NewAccount, NewApiKey, NewRegistration,
    ProfileFields, ProfilePatch, StoreError, UserQuery,
};

/// Limits of one account.
pub const MAX_API_KEYS: i64 = 20;
pub const MAX_LINKED_WALLETS: i64 = 20;
pub const MAX_DOMAINS: i64 = 20;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
pub const MAX_KEY_NAME_CHARS: usize = 64;
/// Default and largest page of the user directory.
pub const DEFAULT_USERS_LIMIT: u32 = 50;
pub const MAX_USERS_LIMIT: u32 = 200;
/// Default and largest page of unverified accounts.
pub const DEFAULT_UNVERIFIED_LIMIT: u32 = 100;
pub const MAX_UNVERIFIED_LIMIT: u32 = 500;
/// Longest X username kept on a profile (X allows 15 characters).
pub const MAX_TWITTER_USERNAME_CHARS: usize = 50;
const OUTSTANDING_CHALLENGES: u32 = 10;
/// How long a key's `last_used_at` may lag behind.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Settings of the identity rules.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Public base URL of the installation, named in wallet-link messages (EIP-4361).
    pub public_url: String,
    /// How far ahead a signed request's expiry may be.
    pub signature_horizon: Duration,
    /// How long a wallet-link challenge stays valid.
    pub challenge_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            public_url: "http://127.0.0.1:8080".to_string(),
            signature_horizon: Duration::from_secs(30 * 24 * 3600),
            challenge_ttl: Duration::from_secs(10 * 60),
        }
    }
}

/// A freshly created account and its first key (shown once).
#[derive(Debug)]
pub struct CreatedAccount {
    pub account: AccountRecord,
    pub api_key: String,
    pub api_key_id: String,
}

/// The result of authenticating a credential.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub account: AccountRecord,
    /// Until when the credential may be cached (0: the caller's default).
    pub valid_until_ms: i64,
}

/// What `RegisterHandle` asks for, unparsed.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub handle: String,
    pub name: String,
    pub description: Option<String>,
    pub x_url: Option<String>,
    pub github_url: Option<String>,
    pub website_url: Option<String>,
}

/// What `UpdateMe` asks for, unparsed: `None` leaves a field, an empty string clears it.
#[derive(Clone, Debug, Default)]
pub struct ProfileUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub x_url: Option<String>,
    pub github_url: Option<String>,
    pub website_url: Option<String>,
}

/// A challenge for linking a wallet.
#[derive(Clone, Debug)]
pub struct WalletChallenge {
    pub message: String,
    pub nonce: String,
    pub expires_at_ms: i64,
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// Maps store failures that are not the caller's to `INTERNAL` (logged).
fn internal(error: StoreError) -> ServiceError {
    ServiceError::internal(error)
}

fn new_api_key(name: &str) -> (NewApiKey, String) {
    let secret = format!("{API_KEY_PREFIX}{}", random_hex(24));
    let key = NewApiKey {
        id: format!("key_{}", random_hex(8)),
        key_hash: api_key_hash(&secret),
        prefix: secret[..API_KEY_PREFIX.len() + 8].to_string(),
        name: name.to_string(),
    };
    (key, secret)
}

/// The identity service's rules over its store.
#[derive(Clone, Debug)]
pub struct Identity {
    store: Arc<dyn IdentityStore>,
    keyring: Keyring,
    backends: Backends,
    settings: Settings,
}

impl Identity {
    pub fn new(store: Arc<dyn IdentityStore>, keyring: Keyring, backends: Backends, settings: Settings) -> Identity {
        Identity { store, keyring, backends, settings }
    }

    async fn account(&self, account_id: i64) -> ServiceResult<AccountRecord> {
        self.store
            .account(account_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ServiceError::new(ErrorCode::Unauthorized, "the account no longer exists"))
    }

    /// Drops every cached credential of an account, on every gateway replica: first from the
    /// shared cache (so a replica that hears the announcement cannot refill from it), then by
    /// announcement; and both once more a moment later, for a replica that authenticated the
    /// credential just before the revocation and wrote it back.
    async fn revoke_cached_credentials(&self, account_id: i64, key_hashes: Vec<String>) {
        let backends = self.backends.clone();
        let cache_keys: Vec<String> = key_hashes.iter().map(|hash| api_key_cache_key(hash)).collect();
        let revoke = move |backends: Backends, cache_keys: Vec<String>| async move {
            for cache_key in &cache_keys {
                if let Err(error) = backends.cache.delete(cache_key).await {
                    tracing::error!(%error, "could not drop a revoked key from the shared cache");
                }
            }
            let announcement = serde_json::to_vec(&CredentialsRevoked { account_id }).expect("plain struct");
            if let Err(error) = backends.pubsub.publish(CREDENTIALS_REVOKED_CHANNEL, &announcement).await {
                tracing::error!(%error, account.id = account_id, "could not announce revoked credentials");
            }
        };
        revoke(backends.clone(), cache_keys.clone()).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            revoke(backends, cache_keys).await;
        });
    }

    /// Creates an account with a fresh wallet, its XMTP inbox id and a first API key.
    pub async fn create_account(&self) -> ServiceResult<CreatedAccount> {
        self.create_account_with(None).await
    }

    /// Creates an account, with `handle` and `name` registered when given (in one transaction:
    /// `HANDLE_TAKEN` and nothing created when the handle is taken).
    pub async fn create_account_with(&self, registration: Option<(String, String)>) -> ServiceResult<CreatedAccount> {
        let registration = match registration {
            None => None,
            Some((handle, name)) => {
                let handle = Handle::parse("handle", &handle)?;
                let profile = ProfileFields { name: parse_name("name", &name, MAX_NAME_CHARS)?, ..ProfileFields::default() };
                Some(NewRegistration { handle: handle.as_str().to_string(), profile })
            }
        };
        let signer = PrivateKeySigner::random();
        let address = signer.address();
        let wallet_address = address.to_checksum(None);
        let wallet_key = self.keyring.encrypt(signer.to_bytes().as_slice(), wallet_key_context(&wallet_address).as_bytes());
        let (first_key, api_key) = new_api_key("default");
        let api_key_id = first_key.id.clone();
        let handle = registration.as_ref().map(|registration| registration.handle.clone());
        let new_account =
            NewAccount { wallet_address, wallet_key, xmtp_inbox_id: xmtp_inbox_id(&address), first_key, created_at: now_ms(), registration };
        let account = match self.store.create_account(new_account).await {
            Ok(account) => account,
            Err(StoreError::Conflict("handle")) => {
                return Err(ServiceError::new(ErrorCode::HandleTaken, format!("the handle {} is already taken", handle.unwrap_or_default())));
            }
            Err(error) => return Err(internal(error)),
        };
        tracing::info!(account.id = account.id, "account created");
        // The messaging service publishes the account's XMTP identity when it hears this; one
        // it misses is published on the account's first use instead.
        let announcement = serde_json::to_vec(&AccountCreated { account_id: account.id }).expect("plain struct");
        if let Err(error) = self.backends.pubsub.publish(ACCOUNT_CREATED_CHANNEL, &announcement).await {
            tracing::warn!(%error, account.id = account.id, "could not announce the new account");
        }
        Ok(CreatedAccount { account, api_key, api_key_id })
    }

    /// Signs an XMTP identity-update text for the account's own inbox with its server-held
    /// wallet (EIP-191): 65 bytes `r || s || v`, `v` 27 or 28. Texts for another inbox, another
    /// owner, with a time far from now or with actions other than creating the inbox and
    /// granting or revoking installations are refused (`VALIDATION_FAILED` on
    /// `signature_text`).
    pub async fn sign_xmtp_identity_update(&self, account_id: i64, text: &str) -> ServiceResult<(Vec<u8>, AccountRecord)> {
        let account =
            self.store.account(account_id).await.map_err(internal)?.ok_or_else(|| ServiceError::not_found(format!("no account {account_id}")))?;
        let wallet_lower = account.wallet_address.to_ascii_lowercase();
        let actions = xmtp::check_identity_update_text(text, &account.xmtp_inbox_id, &wallet_lower, time::OffsetDateTime::now_utc())
            .map_err(|problem| ServiceError::invalid("signature_text", problem.to_string()))?;
        let signer = self.wallet_signer(&account)?;
        let signature = alloy_signer::SignerSync::sign_message_sync(&signer, text.as_bytes()).map_err(ServiceError::internal)?;
        let mut bytes = signature.as_bytes().to_vec();
        if bytes[64] < 27 {
            bytes[64] += 27;
        }
        tracing::info!(account.id = account_id, actions = actions.len(), "XMTP identity update signed");
        Ok((bytes, account))
    }

    /// The wallet signer of an account, for services that act as its XMTP client.
    pub fn wallet_signer(&self, account: &AccountRecord) -> ServiceResult<PrivateKeySigner> {
        let bytes =
            self.keyring.decrypt(&account.wallet_key, wallet_key_context(&account.wallet_address).as_bytes()).map_err(ServiceError::internal)?;
        PrivateKeySigner::from_slice(&bytes).map_err(ServiceError::internal)
    }

    pub async fn register(&self, account_id: i64, registration: Registration) -> ServiceResult<AccountRecord> {
        let handle = Handle::parse("handle", &registration.handle)?;
        let profile = ProfileFields {
            name: parse_name("name", &registration.name, MAX_NAME_CHARS)?,
            description: parse_text("description", registration.description.as_deref().unwrap_or(""), MAX_DESCRIPTION_CHARS)?,
            x_url: parse_url("x_url", registration.x_url.as_deref().unwrap_or(""))?,
            github_url: parse_url("github_url", registration.github_url.as_deref().unwrap_or(""))?,
            website_url: parse_url("website_url", registration.website_url.as_deref().unwrap_or(""))?,
        };
        match self.store.register(account_id, handle.as_str(), &profile, now_ms()).await {
            Ok(account) => {
                tracing::info!(account.id = account_id, handle = %handle, "handle registered");
                Ok(account)
            }
            Err(StoreError::Conflict(_)) => Err(ServiceError::new(ErrorCode::HandleTaken, format!("the handle {handle} is already taken"))),
            Err(StoreError::AlreadyRegistered) => {
                Err(ServiceError::new(ErrorCode::AlreadyRegistered, "this account already registered a handle; handles cannot be changed"))
            }
            Err(StoreError::NotFound) => Err(ServiceError::new(ErrorCode::Unauthorized, "the account no longer exists")),
            Err(error) => Err(internal(error)),
        }
    }

    pub async fn me(&self, account_id: i64) -> ServiceResult<AccountRecord> {
        self.account(account_id).await
    }

    pub async fn update_me(&self, account_id: i64, update: ProfileUpdate) -> ServiceResult<AccountRecord> {
        let patch = ProfilePatch {
            name: update.name.as_deref().map(|name| parse_name("name", name, MAX_NAME_CHARS)).transpose()?,
            description: update.description.as_deref().map(|text| parse_text("description", text, MAX_DESCRIPTION_CHARS)).transpose()?,
            x_url: update.x_url.as_deref().map(|url| parse_url("x_url", url)).transpose()?,
            github_url: update.github_url.as_deref().map(|url| parse_url("github_url", url)).transpose()?,
            website_url: update.website_url.as_deref().map(|url| parse_url("website_url", url)).transpose()?,
        };
        let current = self.account(account_id).await?;
        if current.handle.is_none() {
            return Err(ServiceError::new(ErrorCode::NotRegistered, "register a handle first (POST /account/register); it sets your profile"));
        }
        match self.store.update_profile(account_id, &patch, now_ms()).await {
            Ok(account) => Ok(account),
            Err(StoreError::NotFound) => Err(ServiceError::new(ErrorCode::Unauthorized, "the account no longer exists")),
            Err(error) => Err(internal(error)),
        }
    }

    pub async fn list_users(&self, search: &str, limit: Option<u32>, offset: u32) -> ServiceResult<Vec<AccountRecord>> {
        let limit = limit.unwrap_or(DEFAULT_USERS_LIMIT).min(MAX_USERS_LIMIT);
        if search.chars().count() > 100 {
            return Err(ServiceError::invalid("search", "search must be at most 100 characters"));
        }
        let search = search.trim();
        let query = UserQuery { search: (!search.is_empty()).then(|| search.to_lowercase()), limit, offset: offset.min(1_000_000) };
        self.store.list_users(&query).await.map_err(internal)
    }

    pub async fn user(&self, handle: &str) -> ServiceResult<AccountRecord> {
        let not_found = || ServiceError::not_found(format!("no user with handle {handle}"));
        let handle = Handle::parse("handle", handle).map_err(|_| not_found())?;
        self.store.account_by_handle(handle.as_str()).await.map_err(internal)?.ok_or_else(not_found)
    }

    pub async fn create_key(&self, account_id: i64, name: &str) -> ServiceResult<(ApiKeyRecord, String)> {
        let name = parse_name("name", name, MAX_KEY_NAME_CHARS)?;
        let (key, secret) = new_api_key(&name);
        let record = match self.store.create_api_key(account_id, &key, now_ms(), MAX_API_KEYS).await {
            Ok(record) => record,
            Err(StoreError::LimitExceeded) => {
                return Err(ServiceError::new(
                    ErrorCode::LimitExceeded,
                    format!("an account may hold at most {MAX_API_KEYS} API keys; revoke one first"),
                ));
            }
            Err(StoreError::NotFound) => return Err(ServiceError::not_found("no such account")),
            Err(error) => return Err(internal(error)),
        };
        tracing::info!(account.id = account_id, key.id = %record.id, "API key created");
        Ok((record, secret))
    }

    pub async fn list_keys(&self, account_id: i64) -> ServiceResult<Vec<ApiKeyRecord>> {
        self.store.list_api_keys(account_id).await.map_err(internal)
    }

    pub async fn revoke_key(&self, account_id: i64, key_id: &str) -> ServiceResult<()> {
        match self.store.revoke_api_key(account_id, key_id).await {
            Ok(key_hash) => {
                tracing::info!(account.id = account_id, key.id = key_id, "API key revoked");
                self.revoke_cached_credentials(account_id, vec![key_hash]).await;
                Ok(())
            }
            Err(StoreError::NotFound) => Err(ServiceError::not_found(format!("no API key {key_id} on this account"))),
            Err(StoreError::LastKey) => {
                Err(ServiceError::new(ErrorCode::LastKey, "this is the account's last API key; create another before revoking it"))
            }
            Err(error) => Err(internal(error)),
        }
    }

    fn authority(&self) -> String {
        url::Url::parse(&self.settings.public_url)
            .ok()
            .and_then(|url| {
                url.host_str().map(|host| match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                })
            })
            .unwrap_or_else(|| "clawx".to_string())
    }

    pub async fn wallet_challenge(&self, account_id: i64, address: &str) -> ServiceResult<WalletChallenge> {
        let address = WalletAddress::parse("address", address)?;
        let now = now_ms();
        let expires_at_ms = now + self.settings.challenge_ttl.as_millis() as i64;
        let nonce = random_hex(16);
        let message = signature::link_wallet_message(
            &self.authority(),
            &self.settings.public_url,
            &address.checksummed(),
            &nonce,
            &format_rfc3339(now),
            &format_rfc3339(expires_at_ms),
        );
        let challenge =
            ChallengeRecord { nonce: nonce.clone(), account_id, address_lower: address.lower(), message: message.clone(), expires_at: expires_at_ms };
        self.store.create_challenge(&challenge, now, OUTSTANDING_CHALLENGES).await.map_err(internal)?;
        Ok(WalletChallenge { message, nonce, expires_at_ms })
    }

    pub async fn link_wallet(&self, account_id: i64, address: &str, message: &str, signature: &str) -> ServiceResult<LinkedWalletRecord> {
        let address = WalletAddress::parse("address", address)?;
        let parsed = parse_signature(signature).map_err(|problem| match problem {
            SignatureProblem::Malformed(reason) => ServiceError::invalid("signature", reason),
            SignatureProblem::NotCanonical => ServiceError::invalid("signature", "the signature is not canonical (high s)"),
        })?;
        let invalid = |reason: &str| ServiceError::new(ErrorCode::ChallengeInvalid, reason.to_string());
        let nonce = signature::nonce_of(message).ok_or_else(|| invalid("the message is not a Clawx wallet challenge"))?;
        let challenge = self
            .store
            .take_challenge(nonce)
            .await
            .map_err(internal)?
            .ok_or_else(|| invalid("unknown or already used challenge; request a new one"))?;
        if challenge.account_id != account_id || challenge.message != message {
            return Err(invalid("the message differs from the challenge issued to this account"));
        }
        if challenge.address_lower != address.lower() {
            return Err(invalid("the challenge was issued for another address"));
        }
        if challenge.expires_at <= now_ms() {
            return Err(ServiceError::new(ErrorCode::ChallengeExpired, "the challenge expired; request a new one"));
        }
        if recover_personal_sign(&parsed, message.as_bytes()) != Some(address.0) {
            return Err(ServiceError::invalid("signature", format!("the signature was not made by {}", address.checksummed())));
        }
        match self.store.link_wallet(account_id, &address.checksummed(), now_ms(), MAX_LINKED_WALLETS).await {
            Ok(wallet) => {
                tracing::info!(account.id = account_id, wallet = %wallet.address, "wallet linked");
                Ok(wallet)
            }
            Err(StoreError::Conflict(_)) => Err(ServiceError::new(ErrorCode::WalletAlreadyLinked, "this wallet is linked to another account")),
            Err(StoreError::LimitExceeded) => {
                Err(ServiceError::new(ErrorCode::LimitExceeded, format!("an account may link at most {MAX_LINKED_WALLETS} wallets")))
            }
            Err(StoreError::NotFound) => Err(ServiceError::not_found("no such account")),
            Err(error) => Err(internal(error)),
        }
    }

    pub async fn list_wallets(&self, account_id: i64) -> ServiceResult<Vec<LinkedWalletRecord>> {
        self.store.list_wallets(account_id).await.map_err(internal)
    }

    pub async fn unlink_wallet(&self, account_id: i64, address: &str) -> ServiceResult<()> {
        let not_found = || ServiceError::not_found(format!("no linked wallet {address} on this account"));
        let address = WalletAddress::parse("address", address).map_err(|_| not_found())?;
        match self.store.unlink_wallet(account_id, &address.lower()).await {
            Ok(()) => {
                tracing::info!(account.id = account_id, wallet = %address.checksummed(), "wallet unlinked");
                self.revoke_cached_credentials(account_id, Vec::new()).await;
                Ok(())
            }
            Err(StoreError::NotFound) => Err(not_found()),
            Err(error) => Err(internal(error)),
        }
    }

    pub async fn claim_domain(&self, account_id: i64, name: &str) -> ServiceResult<DomainRecord> {
        let name = parse_domain("name", name)?;
        match self.store.claim_domain(account_id, &name, now_ms(), MAX_DOMAINS).await {
            Ok(domain) => Ok(domain),
            Err(StoreError::Conflict(_)) => Err(ServiceError::new(ErrorCode::Conflict, format!("the domain {name} is claimed by another account"))),
            Err(StoreError::LimitExceeded) => {
                Err(ServiceError::new(ErrorCode::LimitExceeded, format!("an account may claim at most {MAX_DOMAINS} domains")))
            }
            Err(StoreError::NotFound) => Err(ServiceError::not_found("no such account")),
            Err(error) => Err(internal(error)),
        }
    }

    pub async fn list_domains(&self, account_id: i64) -> ServiceResult<Vec<DomainRecord>> {
        self.store.list_domains(account_id).await.map_err(internal)
    }

    pub async fn release_domain(&self, account_id: i64, name: &str) -> ServiceResult<()> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self.store.release_domain(account_id, &name).await {
            Ok(()) => {
                self.revoke_cached_credentials(account_id, Vec::new()).await;
                Ok(())
            }
            Err(StoreError::NotFound) => Err(ServiceError::not_found(format!("no domain {name} on this account"))),
            Err(error) => Err(internal(error)),
        }
    }

    fn normalize_domain(domain: &str) -> String {
        domain.trim().trim_end_matches('.').to_ascii_lowercase()
    }

    /// The text to sign for requests on behalf of `domain` until `expiry_ms`.
    pub async fn signature_message(&self, domain: &str, expiry_ms: i64, device: bool) -> ServiceResult<(String, String)> {
        let domain = Identity::normalize_domain(domain);
        let now = now_ms();
        if expiry_ms <= now {
            return Err(ServiceError::invalid("expiry", "expiry must be a Unix timestamp in milliseconds, in the future"));
        }
        if expiry_ms > now + self.settings.signature_horizon.as_millis() as i64 {
            return Err(ServiceError::invalid(
                "expiry",
                format!("expiry must be at most {} days ahead", self.settings.signature_horizon.as_secs() / 86_400),
            ));
        }
        if self.store.account_for_domain(&domain).await.map_err(internal)?.is_none() {
            return Err(ServiceError::not_found(format!("no account answers to the domain {domain}")));
        }
        Ok((signed_request_message(&domain, expiry_ms, device), domain))
    }

    /// The account behind an API key.
    pub async fn authenticate_key(&self, api_key: &str) -> ServiceResult<Authenticated> {
        let unauthorized = || ServiceError::new(ErrorCode::Unauthorized, "invalid API key");
        if !looks_like_api_key(api_key) {
            return Err(unauthorized());
        }
        let (account, key) = self.store.account_by_key_hash(&api_key_hash(api_key)).await.map_err(internal)?.ok_or_else(unauthorized)?;
        let marker = format!("keyused:{}", key.id);
        if matches!(self.backends.cache.set_if_absent(&marker, b"1", LAST_USED_RESOLUTION).await, Ok(true))
            && let Err(error) = self.store.touch_api_key(&key.id, now_ms()).await
        {
            tracing::warn!(%error, "could not record key use");
        }
        Ok(Authenticated { account, valid_until_ms: 0 })
    }

    /// The account behind a signed-expiry request.
    pub async fn authenticate_signature(&self, domain: &str, expires: &str, signature: &str) -> ServiceResult<Authenticated> {
        let malformed = |reason: String| ServiceError::new(ErrorCode::SignatureMalformed, reason);
        let expiry_ms: i64 = expires.trim().parse().map_err(|_| malformed("x-auth-expires must be a Unix timestamp in milliseconds".to_string()))?;
        let now = now_ms();
        if expiry_ms <= now {
            return Err(ServiceError::new(ErrorCode::SignatureExpired, "the signature expired; sign a new message"));
        }
        if expiry_ms > now + self.settings.signature_horizon.as_millis() as i64 {
            return Err(malformed(format!("x-auth-expires is more than {} days ahead", self.settings.signature_horizon.as_secs() / 86_400)));
        }
        let domain = Identity::normalize_domain(domain);
        if domain.is_empty() {
            return Err(malformed("x-auth-domain is empty".to_string()));
        }
        let account_id = self
            .store
            .account_for_domain(&domain)
            .await
            .map_err(internal)?
            .ok_or_else(|| ServiceError::new(ErrorCode::DomainNotFound, format!("no account answers to the domain {domain}")))?;
        let parsed = parse_signature(signature).map_err(|problem| match problem {
            SignatureProblem::Malformed(reason) => malformed(format!("x-auth-signature: {reason}")),
            SignatureProblem::NotCanonical => ServiceError::new(ErrorCode::SignatureNotCanonical, "x-auth-signature is not canonical (high s)"),
        })?;
        for device in [true, false] {
            let message = signed_request_message(&domain, expiry_ms, device);
            if self.signed_by_linked_wallet(&parsed, &message, account_id, expiry_ms - now).await? {
                let account = self.account(account_id).await?;
                return Ok(Authenticated { account, valid_until_ms: expiry_ms });
            }
        }
        Err(ServiceError::new(ErrorCode::SignatureMismatch, format!("the signature was not made by a wallet linked to {domain}")))
    }

    /// Whether `message` was signed by a wallet linked to the account. A recovery that matched
    /// is remembered in the shared cache (a pure function of its inputs), so a reused signature
    /// costs one recovery; failed ones are not, so junk signatures cannot fill the cache.
    async fn signed_by_linked_wallet(
        &self,
        signature: &alloy_primitives::Signature,
        message: &str,
        account_id: i64,
        ttl_ms: i64,
    ) -> ServiceResult<bool> {
        let mut hasher = Sha256::new();
        hasher.update(message.as_bytes());
        hasher.update(signature.as_bytes());
        let cache_key = format!("sigrec:{}", hex::encode(hasher.finalize()));
        let cached = match self.backends.cache.get(&cache_key).await {
            Ok(Some(bytes)) if bytes.len() == 20 => Some(alloy_primitives::Address::from_slice(&bytes)),
            _ => None,
        };
        let Some(signer) = cached.or_else(|| recover_personal_sign(signature, message.as_bytes())) else { return Ok(false) };
        // The link is checked every time, so an unlinked wallet stops at once.
        if self.store.wallet_owner(&format!("{signer:#x}")).await.map_err(internal)? != Some(account_id) {
            return Ok(false);
        }
        if cached.is_none() {
            let ttl = Duration::from_millis(ttl_ms.clamp(1, 3_600_000) as u64);
            if let Err(error) = self.backends.cache.set(&cache_key, signer.as_slice(), ttl).await {
                tracing::debug!(%error, "could not cache a signature recovery");
            }
        }
        Ok(true)
    }

    /// Marks an account verified (or not) with the X username that proved it, and drops its
    /// cached credentials everywhere so gateways see the change on the next call.
    pub async fn set_verification(&self, account_id: i64, verified: bool, twitter_username: Option<&str>) -> ServiceResult<AccountRecord> {
        let twitter_username = twitter_username.map(str::trim).filter(|username| !username.is_empty());
        if let Some(username) = twitter_username
            && (username.chars().count() > MAX_TWITTER_USERNAME_CHARS || !username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(ServiceError::invalid("twitter_username", "twitter_username must be letters, digits and _ (at most 50)"));
        }
        let account = match self.store.set_verification(account_id, verified, twitter_username, now_ms()).await {
            Ok(account) => account,
            Err(StoreError::NotFound) => return Err(ServiceError::not_found(format!("no account {account_id}"))),
            Err(error) => return Err(internal(error)),
        };
        let hashes = self.store.api_key_hashes(account_id).await.map_err(internal)?;
        self.revoke_cached_credentials(account_id, hashes).await;
        tracing::info!(account.id = account_id, verified, "verification set");
        Ok(account)
    }

    /// Unverified accounts created before `created_before_ms`, with ids above `after_id`.
    pub async fn unverified_accounts(&self, created_before_ms: i64, after_id: i64, limit: u32) -> ServiceResult<Vec<AccountRecord>> {
        let limit = if limit == 0 { DEFAULT_UNVERIFIED_LIMIT } else { limit.min(MAX_UNVERIFIED_LIMIT) };
        self.store.unverified_accounts(created_before_ms, after_id, limit).await.map_err(internal)
    }

    /// Deletes an account that is unverified and was created before `created_before_ms`;
    /// whether it did. Its cached credentials are dropped everywhere.
    pub async fn delete_unverified_account(&self, account_id: i64, created_before_ms: i64) -> ServiceResult<bool> {
        match self.store.delete_unverified_account(account_id, created_before_ms).await.map_err(internal)? {
            Some(hashes) => {
                self.revoke_cached_credentials(account_id, hashes).await;
                tracing::info!(account.id = account_id, "unverified account deleted");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Accounts by id, handle or wallet address (for other services).
    pub async fn resolve(&self, ids: &[i64], handles: &[String], wallets: &[String]) -> ServiceResult<Vec<AccountRecord>> {
        if ids.len() + handles.len() + wallets.len() > crate::store::sql::MAX_LOOKUP {
            return Err(ServiceError::invalid("ids", "too many accounts in one lookup"));
        }
        let mut accounts = self.store.accounts_by_id(ids).await.map_err(internal)?;
        let handles: Vec<String> = handles.iter().map(|handle| handle.to_ascii_lowercase()).collect();
        accounts.extend(self.store.accounts_by_handle(&handles).await.map_err(internal)?);
        let wallets: Vec<String> = wallets.iter().map(|wallet| wallet.to_ascii_lowercase()).collect();
        accounts.extend(self.store.accounts_by_wallet(&wallets).await.map_err(internal)?);
        accounts.sort_by_key(|account| account.id);
        accounts.dedup_by_key(|account| account.id);
        Ok(accounts)
    }
}

fn wallet_key_context(wallet_address: &str) -> String {
    format!("wallet:{}", wallet_address.to_ascii_lowercase())
}
