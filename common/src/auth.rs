//! Internal authentication between Clawx roles. The gateway authenticates users at the edge and
//! calls services with a short-lived JWT (HS256, one audience per service) naming the principal;
//! each service verifies it and never trusts raw client headers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

use crate::{
    config::Secret,
    error::{ErrorCode, ServiceError},
};

/// gRPC metadata key carrying the internal JWT.
pub const INTERNAL_TOKEN_METADATA: &str = "clawx-internal-token";
const ISSUER: &str = "clawx";
/// Lifetime of an internal token: long enough for one call (and a long-lived stream's start),
/// short enough that a leaked token is useless.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// Pub/sub channel on which the identity service announces revoked credentials (a JSON
/// [`CredentialsRevoked`]); gateways drop what they cached for that account.
pub const CREDENTIALS_REVOKED_CHANNEL: &str = "auth.revoked";

/// The announcement on [`CREDENTIALS_REVOKED_CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRevoked {
    pub account_id: i64,
}

/// Pub/sub channel on which the identity service announces new accounts (a JSON
/// [`AccountCreated`]); the messaging service publishes their XMTP identities at once.
pub const ACCOUNT_CREATED_CHANNEL: &str = "accounts.created";

/// The announcement on [`ACCOUNT_CREATED_CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    pub account_id: i64,
}

/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "clx_";

/// The stored form of an API key: lowercase hex SHA-256. Keys carry 192 random bits, so a fast
/// hash is enough.
pub fn api_key_hash(api_key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(api_key.as_bytes()))
}

/// Whether text has the shape of a Clawx API key (`clx_` and 48 hex digits).
pub fn looks_like_api_key(text: &str) -> bool {
    text.strip_prefix(API_KEY_PREFIX).is_some_and(|rest| rest.len() == 48 && rest.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The shared-cache key of an authenticated API key.
pub fn api_key_cache_key(key_hash: &str) -> String {
    format!("auth:key:{key_hash}")
}

/// How the caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// No credentials: a public endpoint.
    Anonymous,
    /// An API key (`X-Api-Key` or `Authorization: Bearer`).
    ApiKey,
    /// A signed-expiry request (`x-auth-domain`, `x-auth-expires`, `x-auth-signature`).
    Signature,
    /// Another Clawx service acting on its own behalf.
    Service,
}

/// Who a call acts for, as established by the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The account, for authenticated calls.
    pub account_id: Option<i64>,
    pub method: AuthMethod,
    /// The client's IP address as the gateway saw it, for rate limits and audit logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The Clawx service making the call, for calls a service makes on its own behalf (see
    /// [`Principal::from_service`]); some calls are reserved to one service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_service: Option<String>,
}

impl Principal {
    pub fn anonymous(client_ip: Option<String>) -> Principal {
        Principal { account_id: None, method: AuthMethod::Anonymous, client_ip, caller_service: None }
    }

    pub fn service() -> Principal {
        Principal { account_id: None, method: AuthMethod::Service, client_ip: None, caller_service: None }
    }

    /// The service `name` (its JWT audience, e.g. "verify") acting on its own behalf.
    pub fn from_service(name: &str) -> Principal {
        Principal { caller_service: Some(name.to_string()), ..Principal::service() }
    }

    pub fn account(account_id: i64, method: AuthMethod, client_ip: Option<String>) -> Principal {
        Principal { account_id: Some(account_id), method, client_ip, caller_service: None }
    }

    /// Whether the call comes from one of the Clawx services `names`, acting on its own behalf.
    pub fn is_service(&self, names: &[&str]) -> bool {
        self.method == AuthMethod::Service && self.caller_service.as_deref().is_some_and(|caller| names.contains(&caller))
    }

    /// The authenticated account, or `UNAUTHORIZED`.
    pub fn require_account(&self) -> Result<i64, ServiceError> {
        self.account_id.ok_or_else(|| ServiceError::new(ErrorCode::Unauthorized, "authentication required: send X-Api-Key or a signed request"))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(flatten)]
    principal: Principal,
}

/// Most tokens each side of [`InternalAuth`] keeps; past it the cache starts over.
const TOKEN_CACHE_ENTRIES: usize = 4096;

/// Issues and verifies internal tokens. Both sides remember recent tokens: an issued token is
/// reused for the same audience and principal while more than half its lifetime is left (one
/// signature, and a repeated header value HTTP/2 compresses, for a busy caller), and a verified
/// token is trusted again until it expires (one HMAC check per token, not per call).
#[derive(Clone)]
pub struct InternalAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issued: Arc<Mutex<HashMap<(String, Principal), IssuedToken>>>,
    verified: Arc<Mutex<HashMap<String, VerifiedToken>>>,
}

/// An issued token and its expiry (Unix seconds).
type IssuedToken = (String, u64);
/// A verified token's audience, principal and expiry (Unix seconds).
type VerifiedToken = (String, Principal, u64);

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalAuth([redacted])")
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

impl InternalAuth {
    pub fn new(secret: &Secret) -> InternalAuth {
        InternalAuth {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            issued: Arc::default(),
            verified: Arc::default(),
        }
    }

    /// A token for calls to the service `audience` (e.g. "identity"), valid at least half of
    /// [`TOKEN_TTL`] from now.
    pub fn issue(&self, audience: &str, principal: &Principal) -> String {
        let now = unix_now();
        let key = (audience.to_string(), principal.clone());
        let mut issued = self.issued.lock().expect("issued tokens lock");
        if let Some((token, exp)) = issued.get(&key)
            && *exp >= now + TOKEN_TTL.as_secs() / 2
        {
            return token.clone();
        }
        let token = self.sign(audience, principal, now);
        if issued.len() >= TOKEN_CACHE_ENTRIES {
            issued.clear();
        }
        issued.insert(key, (token.clone(), now + TOKEN_TTL.as_secs()));
        token
    }

    fn sign(&self, audience: &str, principal: &Principal, now: u64) -> String {
        let claims = Claims {
            iss: ISSUER.to_string(),
            aud: audience.to_string(),
            sub: principal.account_id.map_or_else(|| "-".to_string(), |id| id.to_string()),
            iat: now,
            exp: now + TOKEN_TTL.as_secs(),
            principal: principal.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 signing of plain claims cannot fail")
    }

    /// The principal of a valid token for `audience`.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Principal, ServiceError> {
        let now = unix_now();
        if let Some((verified_for, principal, exp)) = self.verified.lock().expect("verified tokens lock").get(token)
            && verified_for == audience
            && now < *exp
        {
            return Ok(principal.clone());
        }
        let claims = self.check(token, audience)?;
        // Trusted again until it expires (without the leeway the full check allows).
        if now < claims.exp {
            let mut verified = self.verified.lock().expect("verified tokens lock");
            if verified.len() >= TOKEN_CACHE_ENTRIES {
                verified.clear();
            }
            verified.insert(token.to_string(), (audience.to_string(), claims.principal.clone(), claims.exp));
        }
        Ok(claims.principal)
    }

    fn check(&self, token: &str, audience: &str) -> Result<Claims, ServiceError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims).map_err(|error| {
            tracing::debug!(%error, "internal token rejected");
            ServiceError::new(ErrorCode::Unauthorized, "missing or invalid internal token")
        })
    }

    /// Adds a token for `audience` to an outgoing request.
    pub fn authorize<T>(&self, request: &mut Request<T>, audience: &str, principal: &Principal) {
        let token = self.issue(audience, principal);
        let value = MetadataValue::try_from(token).expect("a JWT is valid ASCII metadata");
        request.metadata_mut().insert(INTERNAL_TOKEN_METADATA, value);
    }

    /// A tonic interceptor that admits only calls with a valid token for `audience` and puts
    /// the [`Principal`] into the request extensions.
    pub fn interceptor(&self, audience: &'static str) -> VerifyToken {
        VerifyToken { auth: self.clone(), audience }
    }
}

/// See [`InternalAuth::interceptor`].
#[derive(Clone, Debug)]
pub struct VerifyToken {
    auth: InternalAuth,
    audience: &'static str,
}

impl Interceptor for VerifyToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get(INTERNAL_TOKEN_METADATA)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ServiceError::new(ErrorCode::Unauthorized, "missing internal token: call Clawx through its gateway").into_status())?;
        let principal = self.auth.verify(token, self.audience).map_err(ServiceError::into_status)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// The principal a verified request carries (anonymous if the interceptor did not run).
pub fn principal_of<T>(request: &Request<T>) -> Principal {
    request.extensions().get::<Principal>().cloned().unwrap_or_else(|| Principal::anonymous(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> InternalAuth {
        InternalAuth::new(&Secret::new("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn tokens_carry_the_principal_to_their_audience_only() {
        let principal = Principal::account(42, AuthMethod::ApiKey, Some("10.0.0.1".into()));
        let token = auth().issue("identity", &principal);
        assert_eq!(auth().verify(&token, "identity").unwrap(), principal);
        assert_eq!(auth().verify(&token, "groups").unwrap_err().code, ErrorCode::Unauthorized);
        let other = InternalAuth::new(&Secret::new("another-secret-another-secret-xx"));
        assert!(other.verify(&token, "identity").is_err());
        assert!(auth().verify("not-a-jwt", "identity").is_err());
    }

    #[test]
    fn interceptor_rejects_missing_and_accepts_valid_tokens() {
        let mut interceptor = auth().interceptor("verify");
        let status = interceptor.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = Request::new(());
        auth().authorize(&mut request, "verify", &Principal::account(7, AuthMethod::Signature, None));
        let admitted = interceptor.call(request).unwrap();
        assert_eq!(principal_of(&admitted).account_id, Some(7));
    }

    #[test]
    fn remembered_tokens_keep_their_audience_and_principal() {
        let auth = auth();
        let alice = Principal::account(1, AuthMethod::ApiKey, Some("10.0.0.1".into()));
        let bob = Principal::account(2, AuthMethod::ApiKey, Some("10.0.0.1".into()));
        let token = auth.issue("messaging", &alice);
        assert_eq!(auth.issue("messaging", &alice), token, "reused while fresh");
        assert_ne!(auth.issue("identity", &alice), token, "one per audience");
        assert_ne!(auth.issue("messaging", &bob), token, "one per principal");
        // Verified once, then remembered: still only for its audience.
        assert_eq!(auth.verify(&token, "messaging").unwrap(), alice);
        assert_eq!(auth.verify(&token, "messaging").unwrap(), alice);
        assert_eq!(auth.verify(&token, "identity").unwrap_err().code, ErrorCode::Unauthorized);
        // A token that is no longer valid is not trusted from memory.
        let expired = InternalAuth { issued: Arc::default(), verified: Arc::default(), ..auth.clone() };
        let stale = expired.sign("messaging", &alice, unix_now() - 2 * TOKEN_TTL.as_secs());
        assert!(expired.verify(&stale, "messaging").is_err());
        assert!(expired.verify(&stale, "messaging").is_err());
    }

    #[test]
    fn named_services_are_told_apart() {
        let token = auth().issue("identity", &Principal::from_service("messaging"));
        let principal = auth().verify(&token, "identity").unwrap();
        assert!(principal.is_service(&["messaging"]));
        assert!(!principal.is_service(&["gateway"]));
        assert!(!Principal::service().is_service(&["messaging"]));
        let account = Principal { caller_service: Some("messaging".into()), ..Principal::account(1, AuthMethod::ApiKey, None) };
        assert!(!account.is_service(&["messaging"]), "only service principals are services");
    }
}
