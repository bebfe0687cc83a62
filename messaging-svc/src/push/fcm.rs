//! The FCM HTTP v1 provider. A service account's key signs an RS256 JWT (the OAuth 2.0 JWT
//! bearer grant), exchanged at the token URL for an access token that is cached until shortly
//! before it expires; each notification is then `POST {base}/v1/projects/{project}/messages:send`
//! with that token. A token FCM reports as `UNREGISTERED` (its `errorCode`) is unregistered here; a bare
//! 404 is retried.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::{Notification, Outcome, Provider};

/// The OAuth 2.0 scope of FCM sends.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Google's token endpoint, used when the service account names none.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// FCM's API base.
pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
/// Largest answer read from the token endpoint or FCM.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// A cached access token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// FCM settings (`CLAWX_PUSH_FCM_*`). The service account is never logged.
#[derive(Clone, Default)]
pub struct FcmSettings {
    /// The service-account JSON (inline, or read from the file `CLAWX_PUSH_FCM_SERVICE_ACCOUNT` names).
    pub service_account_json: String,
    /// The Firebase project; default: the service account's `project_id`.
    pub project_id: Option<String>,
    /// Default: `https://fcm.googleapis.com`.
    pub base_url: Option<String>,
    /// Default: the service account's `token_uri`, else Google's.
    pub token_url: Option<String>,
}

impl std::fmt::Debug for FcmSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FcmSettings")
            .field("project_id", &self.project_id)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl FcmSettings {
    /// Reads `value` as inline JSON (starting with `{`) or as the path of a JSON file.
    pub fn service_account_from(value: &str) -> anyhow::Result<String> {
        let value = value.trim();
        if value.starts_with('{') {
            return Ok(value.to_string());
        }
        // The value is not echoed: a mangled inline JSON would put the private key in the log.
        std::fs::read_to_string(value).map_err(|error| {
            anyhow::anyhow!(
                "cannot read CLAWX_PUSH_FCM_SERVICE_ACCOUNT as a file ({error}); give the service-account JSON inline or the path of its file"
            )
        })
    }
}

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// Sends notifications through FCM HTTP v1.
pub struct Fcm {
    client: reqwest::Client,
    key: jsonwebtoken::EncodingKey,
    key_id: Option<String>,
    client_email: String,
    token_url: String,
    send_url: String,
    token: tokio::sync::Mutex<TokenState>,
}

/// The cached access token, and when the last fetch of one failed.
#[derive(Default)]
struct TokenState {
    cached: Option<CachedToken>,
    failed: Option<(Instant, String)>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Fcm").field("send_url", &self.send_url).finish_non_exhaustive()
    }
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer.
async fn bounded_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    body
}

/// The signing key of a PEM RSA private key (PKCS#8, as service accounts hold it, or PKCS#1).
fn rsa_key(pem: &str) -> Option<jsonwebtoken::EncodingKey> {
    use rsa::{
        pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey},
        pkcs8::DecodePrivateKey,
    };
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem)).ok()?;
    let der = key.to_pkcs1_der().ok()?;
    Some(jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()))
}

impl Fcm {
    /// The provider for `settings`; fails (without echoing the key) when the service account
    /// is not usable.
    pub fn new(settings: &FcmSettings, timeout: Duration) -> anyhow::Result<Fcm> {
        let account: ServiceAccount = serde_json::from_str(&settings.service_account_json)
            .map_err(|_| anyhow::anyhow!("the FCM service account is not valid JSON with client_email and private_key"))?;
        let key =
            rsa_key(&account.private_key).ok_or_else(|| anyhow::anyhow!("the FCM service account's private_key is not an RSA private key in PEM"))?;
        let project = settings
            .project_id
            .clone()
            .or(account.project_id.clone())
            .filter(|project| !project.is_empty())
            .ok_or_else(|| anyhow::anyhow!("set CLAWX_PUSH_FCM_PROJECT_ID: the FCM service account names no project_id"))?;
        let base = settings.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let token_url = settings.token_url.clone().or(account.token_uri.clone()).unwrap_or_else(|| DEFAULT_TOKEN_URL.to_string());
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout.min(Duration::from_secs(5))).build()?;
        Ok(Fcm {
            client,
            key,
            key_id: account.private_key_id,
            client_email: account.client_email,
            token_url,
            send_url: format!("{}/v1/projects/{}/messages:send", base.trim_end_matches('/'), project),
            token: tokio::sync::Mutex::new(TokenState::default()),
        })
    }

    /// A valid access token: the cached one, or a new one from the token endpoint. One fetch
    /// runs at a time; deliveries that waited for a fetch that failed fail at once with its
    /// error rather than each trying again in turn, so a slow or failing token endpoint costs a
    /// delivery at most one token timeout before its send.
    async fn access_token(&self) -> Result<String, String> {
        let asked_at = Instant::now();
        let mut state = self.token.lock().await;
        if let Some(token) = state.cached.as_ref().filter(|token| Instant::now() < token.renew_at) {
            return Ok(token.value.clone());
        }
        if let Some((failed_at, error)) = &state.failed
            && *failed_at >= asked_at
        {
            return Err(error.clone());
        }
        match self.fetch_token().await {
            Ok(token) => {
                let value = token.value.clone();
                state.cached = Some(token);
                state.failed = None;
                Ok(value)
            }
            Err(error) => {
                state.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// A new access token from the token endpoint.
    async fn fetch_token(&self) -> Result<CachedToken, String> {
        let now = clawx_common::time::now_ms() / 1000;
        let claims = Claims { iss: &self.client_email, scope: SCOPE, aud: &self.token_url, iat: now, exp: now + 3600 };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| "cannot sign the FCM token request".to_string())?;
        let body = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
        let response = self
            .client
            .post(&self.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|_| "the FCM token endpoint could not be reached".to_string())?;
        let status = response.status();
        let answer = bounded_body(response).await;
        if !status.is_success() {
            return Err(format!("the FCM token endpoint answered {}", status.as_u16()));
        }
        let answer: TokenAnswer = serde_json::from_slice(&answer).map_err(|_| "the FCM token endpoint answered no access_token".to_string())?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        Ok(CachedToken { value: answer.access_token, renew_at })
    }

    async fn forget_token(&self) {
        self.token.lock().await.cached = None;
    }
}

/// Whether an FCM error answer says the registration token is no longer valid.
fn unregistered(body: &[u8]) -> bool {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let details = answer["error"]["details"].as_array().cloned().unwrap_or_default();
    details.iter().any(|detail| detail["errorCode"] == "UNREGISTERED")
}

#[async_trait]
impl Provider for Fcm {
    async fn deliver(&self, _account_id: i64, address: &str, notification: &Notification) -> Outcome {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(error) => return Outcome::Retry(error),
        };
        let body = notification.fcm_body(address);
        let sent = self.client.post(&self.send_url).bearer_auth(token).json(&body).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Outcome::Retry("FCM did not answer in time".into()),
            Err(_) => return Outcome::Retry("FCM could not be reached".into()),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let answer = bounded_body(response).await;
        match status.as_u16() {
            // Only FCM's own `UNREGISTERED` error code unregisters a token; a bare 404 (a
            // proxy, a wrong project) is retried.
            _ if unregistered(&answer) => Outcome::Gone("FCM: the registration token is not registered".into()),
            401 => {
                self.forget_token().await;
                Outcome::Retry("FCM refused the access token".into())
            }
            400 | 403 => Outcome::Rejected(format!("FCM refused the message ({})", status.as_u16())),
            code => Outcome::Retry(format!("FCM answered {code}")),
        }
    }
}
