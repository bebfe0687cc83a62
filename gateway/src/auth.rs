//! Edge authentication: who is calling, from the request headers.
//!
//! - API keys (`X-Api-Key: <key>` or `Authorization: Bearer <key>`): looked up in a per-replica
//!   cache, then in the shared cache (Redis in production), then asked of the identity service.
//! - Signed-expiry requests (`x-auth-domain`, `x-auth-expires` or `x-auth-expiration`,
//!   `x-auth-signature`): per-replica cache, then the identity service (which verifies the
//!   signature once and remembers the recovery).
//!
//! The identity service announces revocations (key revoked, wallet unlinked, domain released)
//! on pub/sub; every replica drops that account's cached credentials at once. The replica that
//! served the revocation drops them before it answers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use clawx_common::{
    AuthMethod, Cache, ErrorCode, Principal, ServiceError,
    auth::{CREDENTIALS_REVOKED_CHANNEL, CredentialsRevoked, api_key_cache_key, api_key_hash, looks_like_api_key},
    pubsub::{Event, PubSub},
    time::now_ms,
};
use clawx_proto::identity::{AuthenticateRequest, AuthenticateSignatureRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    limiter::{Limiter, refused_error},
    upstream::Upstreams,
};

/// Headers that carry client credentials; never forwarded to services.
pub const CREDENTIAL_HEADERS: &[&str] = &["x-api-key", "authorization", "x-auth-domain", "x-auth-expires", "x-auth-expiration", "x-auth-signature"];

/// How long this replica trusts an authenticated API key without asking again.
const LOCAL_TTL: Duration = Duration::from_secs(30);
/// How long the shared cache keeps an authenticated API key.
const SHARED_TTL: Duration = Duration::from_secs(60);
/// Upper bound on cached credentials per replica.
const LOCAL_CAPACITY: usize = 100_000;
/// Revocations kept for a slow listener before it lags (and then checks its credentials anyway).
const REVOCATION_BACKLOG: usize = 256;

/// Removes every client credential from headers about to be forwarded.
pub fn strip_credentials(headers: &mut HeaderMap) {
    for name in CREDENTIAL_HEADERS {
        headers.remove(*name);
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
}

/// The credentials a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    ApiKey(String),
    Signature { domain: String, expires: String, signature: String },
}

/// Reads the credentials of a request; malformed combinations are errors.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, ServiceError> {
    let signature = header(headers, "x-auth-signature");
    let domain = header(headers, "x-auth-domain");
    let expires = header(headers, "x-auth-expires").or_else(|| header(headers, "x-auth-expiration"));
    if signature.is_some() || domain.is_some() || expires.is_some() {
        return match (domain, expires, signature) {
            (Some(domain), Some(expires), Some(signature)) => {
                Ok(Credentials::Signature { domain: domain.to_string(), expires: expires.to_string(), signature: signature.to_string() })
            }
            _ => Err(ServiceError::new(ErrorCode::SignatureMalformed, "a signed request needs x-auth-domain, x-auth-expires and x-auth-signature")),
        };
    }
    if let Some(key) = header(headers, "x-api-key") {
        return Ok(Credentials::ApiKey(key.to_string()));
    }
    if let Some(authorization) = header(headers, "authorization") {
        let (scheme, token) = authorization.split_once(' ').unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            return Ok(Credentials::ApiKey(token.trim().to_string()));
        }
        return Err(ServiceError::unauthorized("Authorization must be `Bearer <api key>`"));
    }
    Ok(Credentials::None)
}

#[derive(Clone, Copy, Debug)]
struct LocalEntry {
    account_id: i64,
    /// Whether the account was verified when authenticated (the identity service drops cached
    /// credentials when that changes).
    verified: bool,
    expires: Instant,
}

/// Credentials this replica has already authenticated.
#[derive(Debug)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, LocalEntry>>,
    /// Bumped by every revocation, so a lookup that raced with one is not cached.
    generation: AtomicU64,
    /// Every revocation, for long-lived calls (MCP waits and subscriptions) to check their
    /// credentials again: `Some(account)` for one account, `None` for all.
    revocations: broadcast::Sender<Option<i64>>,
}

impl Default for AuthCache {
    fn default() -> AuthCache {
        AuthCache { entries: Mutex::default(), generation: AtomicU64::new(0), revocations: broadcast::channel(REVOCATION_BACKLOG).0 }
    }
}

impl AuthCache {
    /// Revocations from now on (a lagging receiver must treat the gap as "every account").
    pub fn revocations(&self) -> broadcast::Receiver<Option<i64>> {
        self.revocations.subscribe()
    }

    fn get(&self, key: &str) -> Option<LocalEntry> {
        let mut entries = self.entries.lock().expect("auth cache lock");
        match entries.get(key) {
            Some(entry) if entry.expires > Instant::now() => Some(*entry),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches an entry unless a revocation happened since `generation` was read.
    fn insert(&self, key: String, entry: LocalEntry, generation: u64) -> bool {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if self.generation() != generation {
            return false;
        }
        if entries.len() >= LOCAL_CAPACITY {
            let now = Instant::now();
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= LOCAL_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, entry);
        true
    }

    /// Drops every cached credential of an account.
    pub fn revoke_account(&self, account_id: i64) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, entry| entry.account_id != account_id);
        let _no_listener = self.revocations.send(Some(account_id));
    }

    /// Drops everything (announcements may have been missed).
    pub fn clear(&self) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
        let _no_listener = self.revocations.send(None);
    }

    /// Listens for revocations until `shutdown` or until the cache is dropped.
    pub fn listen(cache: &Arc<AuthCache>, pubsub: &PubSub, shutdown: CancellationToken) {
        let mut subscription = pubsub.subscribe(CREDENTIALS_REVOKED_CHANNEL);
        let weak: Weak<AuthCache> = Arc::downgrade(cache);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = subscription.recv() => event,
                    () = shutdown.cancelled() => return,
                };
                let Some(cache) = weak.upgrade() else { return };
                match event {
                    Some(Event::Message(payload)) => match serde_json::from_slice::<CredentialsRevoked>(&payload) {
                        Ok(revoked) => cache.revoke_account(revoked.account_id),
                        Err(error) => tracing::warn!(%error, "unreadable revocation announcement"),
                    },
                    Some(Event::Gap) => cache.clear(),
                    None => return,
                }
            }
        });
    }
}

/// What the shared cache keeps for an API key.
#[derive(Serialize, Deserialize)]
struct SharedEntry {
    account_id: i64,
    #[serde(default)]
    verified: bool,
}

/// Who a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub principal: Principal,
    /// Whether the account is verified (false for anonymous callers).
    pub verified: bool,
}

fn signature_cache_key(domain: &str, expires: &str, signature: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [domain.to_ascii_lowercase().as_str(), expires, signature.trim_start_matches("0x")] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("s:{}", hex::encode(hasher.finalize()))
}

/// Finds out who is calling: the caches first, then the identity service.
#[derive(Debug)]
pub struct Authenticator {
    pub cache: Arc<AuthCache>,
    /// The cache shared by every replica (Redis in production).
    shared: Cache,
    upstreams: Upstreams,
}

impl Authenticator {
    pub fn new(cache: Arc<AuthCache>, shared: Cache, upstreams: Upstreams) -> Authenticator {
        Authenticator { cache, shared, upstreams }
    }

    /// The principal of a request: anonymous without credentials, an account with valid ones,
    /// an error with invalid ones.
    pub async fn authenticate(&self, limiter: &Limiter, headers: &HeaderMap, client_ip: &str) -> Result<Authenticated, ServiceError> {
        let client_ip = Some(client_ip.to_string());
        match credentials(headers)? {
            Credentials::None => Ok(Authenticated { principal: Principal::anonymous(client_ip), verified: false }),
            Credentials::ApiKey(key) => {
                let entry = self.authenticate_key(limiter, &key, client_ip.as_deref().unwrap_or("unknown")).await?;
                Ok(Authenticated { principal: Principal::account(entry.account_id, AuthMethod::ApiKey, client_ip), verified: entry.verified })
            }
            Credentials::Signature { domain, expires, signature } => {
                let entry = self.authenticate_signature(limiter, &domain, &expires, &signature, client_ip.as_deref().unwrap_or("unknown")).await?;
                Ok(Authenticated { principal: Principal::account(entry.account_id, AuthMethod::Signature, client_ip), verified: entry.verified })
            }
        }
    }

    /// Counts a credential check the caches could not answer; refuses past the per-IP limit, so
    /// guessing keys or signatures costs the guesser, not the identity service.
    async fn charge_credential_check(limiter: &Limiter, client_ip: &str) -> Result<(), ServiceError> {
        limiter
            .limit(&format!("authcheck:{client_ip}"), limiter.limits.auth_checks_per_minute)
            .await
            .map(|_| ())
            .map_err(|refused| refused_error(&refused))
    }

    async fn authenticate_key(&self, limiter: &Limiter, key: &str, client_ip: &str) -> Result<LocalEntry, ServiceError> {
        if !looks_like_api_key(key) {
            return Err(ServiceError::unauthorized("invalid API key"));
        }
        let hash = api_key_hash(key);
        let local_key = format!("k:{hash}");
        if let Some(entry) = self.cache.get(&local_key) {
            return Ok(entry);
        }
        let generation = self.cache.generation();
        let shared_key = api_key_cache_key(&hash);
        let shared = match self.shared.get(&shared_key).await {
            Ok(Some(bytes)) => serde_json::from_slice::<SharedEntry>(&bytes).ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "shared auth cache unavailable");
                None
            }
        };
        let (account_id, verified) = match shared {
            Some(entry) => (entry.account_id, entry.verified),
            None => {
                Self::charge_credential_check(limiter, client_ip).await?;
                let request = AuthenticateRequest { api_key: key.to_string() };
                let account = self
                    .upstreams
                    .identity(&Principal::service())
                    .authenticate(request)
                    .await
                    .map_err(|status| ServiceError::from_status(&status))?;
                let account = account.into_inner();
                let (account_id, verified) = (account.account_id, account.verified);
                if self.cache.generation() == generation {
                    let entry = serde_json::to_vec(&SharedEntry { account_id, verified }).expect("plain struct");
                    if let Err(error) = self.shared.set(&shared_key, &entry, SHARED_TTL).await {
                        tracing::warn!(%error, "could not share an authenticated key");
                    }
                }
                (account_id, verified)
            }
        };
        let entry = LocalEntry { account_id, verified, expires: Instant::now() + LOCAL_TTL };
        self.cache.insert(local_key, entry, generation);
        Ok(entry)
    }

    async fn authenticate_signature(
        &self,
        limiter: &Limiter,
        domain: &str,
        expires: &str,
        signature: &str,
        client_ip: &str,
    ) -> Result<LocalEntry, ServiceError> {
        let local_key = signature_cache_key(domain, expires, signature);
        if let Some(entry) = self.cache.get(&local_key) {
            return Ok(entry);
        }
        Self::charge_credential_check(limiter, client_ip).await?;
        let generation = self.cache.generation();
        let request = AuthenticateSignatureRequest { domain: domain.to_string(), expires: expires.to_string(), signature: signature.to_string() };
        let account = self
            .upstreams
            .identity(&Principal::service())
            .authenticate_signature(request)
            .await
            .map_err(|status| ServiceError::from_status(&status))?
            .into_inner();
        let remaining = Duration::from_millis((account.valid_until_ms - now_ms()).max(0) as u64);
        let entry = LocalEntry {
            account_id: account.account_id,
            verified: account.verified,
            expires: Instant::now() + remaining.min(Duration::from_secs(300)),
        };
        self.cache.insert(local_key, entry, generation);
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn reads_every_credential_form() {
        assert_eq!(credentials(&headers(&[])).unwrap(), Credentials::None);
        assert_eq!(credentials(&headers(&[("x-api-key", "k1")])).unwrap(), Credentials::ApiKey("k1".into()));
        assert_eq!(credentials(&headers(&[("authorization", "Bearer k2")])).unwrap(), Credentials::ApiKey("k2".into()));
        assert_eq!(credentials(&headers(&[("authorization", "bearer  k3 ")])).unwrap(), Credentials::ApiKey("k3".into()));
        assert!(credentials(&headers(&[("authorization", "Basic abc")])).is_err());
        let signed = credentials(&headers(&[("x-auth-domain", "a"), ("x-auth-expiration", "5"), ("x-auth-signature", "0x")])).unwrap();
        assert_eq!(signed, Credentials::Signature { domain: "a".into(), expires: "5".into(), signature: "0x".into() });
        let partial = credentials(&headers(&[("x-auth-domain", "a"), ("x-api-key", "k")])).unwrap_err();
        assert_eq!(partial.code, ErrorCode::SignatureMalformed);
    }

    #[test]
    fn revocations_drop_entries_and_block_racing_inserts() {
        let cache = AuthCache::default();
        let entry = |account_id| LocalEntry { account_id, verified: false, expires: Instant::now() + LOCAL_TTL };
        let generation = cache.generation();
        assert!(cache.insert("a".into(), entry(1), generation));
        assert!(cache.insert("b".into(), entry(2), generation));
        let before_revocation = cache.generation();
        cache.revoke_account(1);
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
        assert!(!cache.insert("a".into(), entry(1), before_revocation), "a lookup that raced a revocation is not cached");
    }
}
