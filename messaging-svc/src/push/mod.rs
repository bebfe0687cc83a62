//! Push notifications. An account registers topics to a delivery target (a webhook URL or an
//! FCM registration token); when a message arrives on a registered topic, its writer queues a
//! notification in the same transaction, and the [`worker`] delivers it through a [`Provider`]
//! — never on the send path — with retries, exponential backoff and jitter, and unregisters a
//! target that says it is gone.
//!
//! Topics:
//! - `/clawx/inbox/1`: every direct message to the account;
//! - `/clawx/dm/1/<conversation id>`: one of the account's conversations (the `topic` of each
//!   message the API returns);
//! - `/xmtp/mls/1/g-<hex group id>/proto` and `/xmtp/mls/1/w-<hex installation key>/proto`:
//!   envelopes written to this server's XMTP node for that group or installation.
//!
//! Messages from a peer the account denied are not pushed.

pub mod fcm;
pub mod store;
pub mod target;
pub mod webhook;
pub mod worker;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use clawx_common::{ErrorCode, ServiceError, ServiceResult};
use clawx_proto::messaging as pb;
use serde_json::json;

use self::store::{PushStore, Registered, RegistrationLimits, TopicRegistration};
use crate::dm::{
    Handles, address,
    consent::{MAX_TARGETS, TOPIC_PREFIX, signed_by},
    identity::Identity,
    store::{Party, StoredMessage},
};

/// The topic of every direct message to an account.
pub const INBOX_TOPIC: &str = "/clawx/inbox/1";
/// Largest XMTP payload carried in a webhook notification (larger ones are announced without it).
pub const MAX_WEBHOOK_ENVELOPE_BYTES: usize = 64 * 1024;
/// Largest XMTP payload carried in an FCM notification (FCM messages hold 4 KB).
pub const MAX_FCM_ENVELOPE_BYTES: usize = 2 * 1024;
/// Characters of a message shown in an FCM notification.
const FCM_PREVIEW_CHARS: usize = 200;

/// How many push targets (of all accounts) one XMTP topic may be registered to.
pub const MAX_TARGETS_PER_XMTP_TOPIC: u32 = 20;

/// Push settings (`CLAWX_PUSH_*`).
#[derive(Clone)]
pub struct PushConfig {
    /// Whether webhook URLs may reach loopback, private and link-local addresses
    /// (`CLAWX_PUSH_ALLOW_PRIVATE_TARGETS`, default false; for tests and closed networks).
    pub allow_private_targets: bool,
    /// The master secret webhook signing secrets are derived from (`CLAWX_PUSH_WEBHOOK_SECRET`).
    pub webhook_secret: Vec<u8>,
    /// FCM, when configured.
    pub fcm: Option<fcm::FcmSettings>,
    /// Attempts per notification before it is marked failed (`CLAWX_PUSH_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// The first retry's delay, doubled for each further one (`CLAWX_PUSH_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// The longest delay between attempts (`CLAWX_PUSH_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// How often an idle worker looks for due notifications (`CLAWX_PUSH_POLL_MS`).
    pub poll_interval: Duration,
    /// Notifications one worker claims at a time (`CLAWX_PUSH_BATCH`).
    pub batch: u32,
    /// Deliveries one worker runs at once (`CLAWX_PUSH_CONCURRENCY`).
    pub concurrency: usize,
    /// Timeout of one delivery call (`CLAWX_PUSH_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Targets one account may register (`CLAWX_PUSH_MAX_TARGETS_PER_ACCOUNT`).
    pub max_targets_per_account: u32,
    /// Topics one account may register over all its targets (`CLAWX_PUSH_MAX_TOPICS_PER_ACCOUNT`).
    pub max_topics_per_account: u32,
}

/// Written by hand: the master webhook secret is never printed (`Providers`, `Worker` and
/// `Push` print their config and providers through this and `Webhook`'s).
impl std::fmt::Debug for PushConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PushConfig")
            .field("allow_private_targets", &self.allow_private_targets)
            .field("webhook_secret", &"..")
            .field("fcm", &self.fcm)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("poll_interval", &self.poll_interval)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("max_targets_per_account", &self.max_targets_per_account)
            .field("max_topics_per_account", &self.max_topics_per_account)
            .finish()
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            allow_private_targets: false,
            webhook_secret: Vec::new(),
            fcm: None,
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(15 * 60),
            poll_interval: Duration::from_secs(1),
            batch: 64,
            concurrency: 16,
            timeout: Duration::from_secs(10),
            max_targets_per_account: 10,
            max_topics_per_account: 1000,
        }
    }
}

impl PushConfig {
    /// The settings with every bound in its range.
    pub fn bounded(mut self) -> PushConfig {
        self.max_attempts = self.max_attempts.clamp(1, 100);
        self.retry_base = self.retry_base.max(Duration::from_millis(10));
        self.retry_max = self.retry_max.max(self.retry_base);
        self.poll_interval = self.poll_interval.max(Duration::from_millis(10));
        self.batch = self.batch.clamp(1, 1000);
        self.concurrency = self.concurrency.clamp(1, 256);
        self.timeout = self.timeout.clamp(Duration::from_millis(100), Duration::from_secs(120));
        self.max_targets_per_account = self.max_targets_per_account.max(1);
        self.max_topics_per_account = self.max_topics_per_account.max(1);
        self
    }

    /// The master webhook secret: `configured` (`whsec_<base64>` of at least 24 bytes, or any
    /// text of at least 32 characters), else derived from `fallback` (the internal JWT secret,
    /// the same on every replica).
    pub fn webhook_master_secret(configured: Option<&str>, fallback: Option<&str>) -> anyhow::Result<Vec<u8>> {
        use sha2::{Digest, Sha256};
        match configured.map(str::trim).filter(|value| !value.is_empty()) {
            Some(value) => {
                if let Some(encoded) = value.strip_prefix("whsec_") {
                    let bytes =
                        STANDARD.decode(encoded).map_err(|_| anyhow::anyhow!("CLAWX_PUSH_WEBHOOK_SECRET: whsec_ must be followed by base64"))?;
                    anyhow::ensure!(bytes.len() >= 24, "CLAWX_PUSH_WEBHOOK_SECRET must hold at least 24 bytes");
                    return Ok(bytes);
                }
                anyhow::ensure!(value.len() >= 32, "CLAWX_PUSH_WEBHOOK_SECRET must be whsec_<base64> or at least 32 characters");
                Ok(value.as_bytes().to_vec())
            }
            None => Ok(fallback
                .map(|secret| Sha256::new().chain_update(b"clawx push webhook master\0").chain_update(secret).finalize().to_vec())
                .unwrap_or_default()),
        }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failed: `retry_base` doubled per
    /// attempt up to `retry_max`, then between half and all of it ("equal jitter"), so retries
    /// of many notifications spread out.
    pub fn backoff(&self, attempt: u32, random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let full = self.retry_base.saturating_mul(1u32 << exponent).min(self.retry_max);
        full.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

/// What one delivery attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again later.
    Retry(String),
    /// The target says it no longer exists (webhook 410, FCM `UNREGISTERED`): unregister it.
    Gone(String),
    /// The notification cannot be delivered to this target; do not retry.
    Rejected(String),
}

/// A way of delivering notifications.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Delivers `notification` to `address` (a URL or a token) registered by `account_id`.
    async fn deliver(&self, account_id: i64, address: &str, notification: &Notification) -> Outcome;
}

/// A notification, ready for any provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Stable across retries: `push_<job id>`.
    pub id: String,
    /// `message.created` or `xmtp.envelope`.
    pub event: &'static str,
    pub topic: String,
    /// When the message arrived (Unix ms).
    pub at_ms: i64,
    /// The webhook `data`.
    pub data: serde_json::Value,
    /// FCM `data` (strings only).
    pub fcm_data: Vec<(&'static str, String)>,
    /// FCM `notification` title and body, for messages people read.
    pub fcm_alert: Option<(String, String)>,
}

impl Notification {
    /// For a direct message.
    pub fn message(id: String, message: &StoredMessage, handles: &Handles) -> Notification {
        let handle = |account: Option<i64>| account.and_then(|id| handles.get(&id).cloned().flatten());
        let topic = format!("{TOPIC_PREFIX}{}", message.conversation_id);
        let sender_handle = handle(message.sender_account_id);
        let data = json!({
            "topic": topic,
            "message": {
                "id": message.id,
                "sender_id": message.sender_account_id,
                "recipient_id": message.recipient_account_id,
                "sender_handle": sender_handle,
                "recipient_handle": handle(message.recipient_account_id),
                "sender_address": message.sender_address,
                "recipient_address": message.recipient_address,
                "content": message.content,
                "sent_at": clawx_common::time::format_sql_datetime(message.sent_at),
                "topic": topic,
            }
        });
        let mut fcm_data = vec![("type", "message.created".to_string()), ("topic", topic.clone()), ("message_id", message.id.to_string())];
        if let Some(sender) = message.sender_account_id {
            fcm_data.push(("sender_id", sender.to_string()));
        }
        if let Some(sender) = &sender_handle {
            fcm_data.push(("sender_handle", sender.clone()));
        }
        let title = sender_handle.clone().or(message.sender_address.clone()).unwrap_or_else(|| "New message".to_string());
        let preview: String = message.content.chars().take(FCM_PREVIEW_CHARS).collect();
        Notification { id, event: "message.created", topic, at_ms: message.sent_at, data, fcm_data, fcm_alert: Some((title, preview)) }
    }

    /// For an XMTP envelope (its payload is end-to-end encrypted; receivers decrypt it).
    pub fn envelope(id: String, topic: &str, envelope: &store::Envelope) -> Notification {
        let carried = !envelope.data.is_empty() || envelope.size == 0;
        let encoded = carried.then(|| STANDARD.encode(&envelope.data));
        let data = json!({
            "topic": topic,
            "envelope_id": envelope.id,
            "created_ns": envelope.created_ns,
            "message": encoded,
            "message_size": envelope.size,
        });
        let mut fcm_data = vec![("type", "xmtp.envelope".to_string()), ("topic", topic.to_string()), ("envelope_id", envelope.id.to_string())];
        if let Some(encoded) = encoded.filter(|_| envelope.data.len() <= MAX_FCM_ENVELOPE_BYTES) {
            fcm_data.push(("encrypted_message", encoded));
        }
        Notification { id, event: "xmtp.envelope", topic: topic.to_string(), at_ms: envelope.created_ns / 1_000_000, data, fcm_data, fcm_alert: None }
    }

    /// The JSON body of a webhook call (the Standard Webhooks payload shape).
    pub fn webhook_body(&self) -> serde_json::Value {
        json!({"type": self.event, "timestamp": clawx_common::time::format_rfc3339(self.at_ms), "data": self.data})
    }

    /// The JSON body of an FCM `messages:send` call to `token`.
    pub fn fcm_body(&self, token: &str) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> =
            self.fcm_data.iter().map(|(key, value)| (key.to_string(), serde_json::Value::String(value.clone()))).collect();
        let mut message = json!({"token": token, "data": data});
        if let Some((title, body)) = &self.fcm_alert {
            message["notification"] = json!({"title": title, "body": body});
        }
        json!({"message": message})
    }
}

/// The providers of a replica.
#[derive(Clone, Debug)]
pub struct Providers {
    pub webhook: Arc<webhook::Webhook>,
    pub fcm: Option<Arc<fcm::Fcm>>,
}

impl Providers {
    /// The providers `config` describes; fails when FCM is configured but not usable.
    pub fn from_config(config: &PushConfig) -> anyhow::Result<Providers> {
        // HTTPS calls need a rustls crypto provider; the binary installs ring's at start, and
        // so does this for embedders and tests (a no-op when one is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let webhook = Arc::new(webhook::Webhook::new(config.webhook_secret.clone(), config.timeout, config.allow_private_targets)?);
        let fcm = match &config.fcm {
            Some(settings) => Some(Arc::new(fcm::Fcm::new(settings, config.timeout)?)),
            None => None,
        };
        Ok(Providers { webhook, fcm })
    }

    /// The provider of `platform`.
    pub fn of(&self, platform: &str) -> Option<&dyn Provider> {
        match platform {
            "webhook" => Some(&*self.webhook as &dyn Provider),
            "fcm" => self.fcm.as_deref().map(|fcm| fcm as &dyn Provider),
            _ => None,
        }
    }
}

/// Registration of push topics.
#[derive(Debug)]
pub struct Push {
    store: Arc<dyn PushStore>,
    identity: Identity,
    providers: Providers,
    config: PushConfig,
}

fn internal(error: sqlx::Error) -> ServiceError {
    ServiceError::internal(format!("push store: {error}"))
}

/// What a topic names, checked.
fn topic_key(topic: &str) -> Result<TopicKind, ServiceError> {
    let invalid = || {
        ServiceError::invalid(
            "topic",
            "topic must be /clawx/inbox/1, /clawx/dm/1/<conversation id>, /xmtp/mls/1/g-<hex>/proto or /xmtp/mls/1/w-<hex>/proto",
        )
    };
    if topic == INBOX_TOPIC {
        return Ok(TopicKind::Inbox);
    }
    if let Some(id) = topic.strip_prefix(TOPIC_PREFIX) {
        let digits = !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit());
        let id = id.parse::<i64>().ok().filter(|id| digits && *id > 0).ok_or_else(invalid)?;
        return Ok(TopicKind::Conversation(id));
    }
    let xmtp = topic.strip_prefix("/xmtp/mls/1/").and_then(|rest| rest.strip_suffix("/proto"));
    if let Some(rest) = xmtp {
        let hex_part = rest.strip_prefix("g-").or_else(|| rest.strip_prefix("w-")).ok_or_else(invalid)?;
        let valid = !hex_part.is_empty() && hex_part.len() <= 256 && hex_part.len() % 2 == 0 && hex_part.bytes().all(|byte| byte.is_ascii_hexdigit());
        if !valid {
            return Err(invalid());
        }
        return Ok(TopicKind::Xmtp(format!("/xmtp/mls/1/{}-{}/proto", &rest[..1], hex_part.to_ascii_lowercase())));
    }
    Err(invalid())
}

/// The lowercase form of an XMTP topic (`/xmtp/mls/1/g-<hex>/proto`, `/xmtp/mls/1/w-<hex>/proto`);
/// `None` for anything else.
pub fn normalized_xmtp_topic(topic: &str) -> Option<String> {
    match topic_key(topic) {
        Ok(TopicKind::Xmtp(topic)) => Some(topic),
        _ => None,
    }
}

enum TopicKind {
    Inbox,
    Conversation(i64),
    Xmtp(String),
}

impl Push {
    pub fn new(store: Arc<dyn PushStore>, identity: Identity, providers: Providers, config: PushConfig) -> Push {
        Push { store, identity, providers, config }
    }

    /// Registers the caller's topics to a target.
    #[tracing::instrument(name = "push.register", skip_all, fields(account.id = account_id))]
    pub async fn register(&self, account_id: i64, request: pb::RegisterPushRequest) -> ServiceResult<pb::RegisterPushResponse> {
        let owner = address::parse_wallet_address("ownerAddress", request.owner_address.trim())?;
        if request.targets.is_empty() {
            return Err(ServiceError::invalid("registrations", "registrations must name at least one topic"));
        }
        if request.targets.len() > MAX_TARGETS {
            return Err(ServiceError::invalid("registrations", format!("registrations may name at most {MAX_TARGETS} topics")));
        }
        if !self.identity.owns_wallet(account_id, &owner).await? {
            return Err(ServiceError::new(ErrorCode::Forbidden, "ownerAddress is not a wallet of yours"));
        }

        let mut topics = Vec::with_capacity(request.targets.len());
        for registration in &request.targets {
            let topic = registration.topic.trim();
            if topic.is_empty() || topic.len() > 512 {
                return Err(ServiceError::invalid("topic", "topic is required (at most 512 characters)"));
            }
            if let Some(signature) = registration.signature.as_deref().filter(|signature| !signature.trim().is_empty())
                && !signed_by(signature, topic, &owner)
            {
                return Err(ServiceError::new(ErrorCode::Forbidden, "signature is not ownerAddress's signature of the topic"));
            }
            let peer = match registration.peer_address.as_deref().map(str::trim).filter(|peer| !peer.is_empty()) {
                Some(peer) => {
                    let peer = address::parse_wallet_address("peerAddress", peer)?;
                    let profiles = self.identity.resolve(&[], &[], std::slice::from_ref(&peer)).await?;
                    let party = match profiles.iter().find(|profile| profile.wallet_address.to_ascii_lowercase() == peer) {
                        Some(profile) => Party::Account(profile.id),
                        None => Party::Wallet(peer),
                    };
                    Some(party.key())
                }
                None => None,
            };
            let key = match topic_key(topic)? {
                TopicKind::Inbox => "inbox".to_string(),
                TopicKind::Conversation(id) => {
                    if !self.store.is_member(account_id, id).await.map_err(internal)? {
                        return Err(ServiceError::not_found("topic is not a conversation of yours"));
                    }
                    format!("dm:{id}")
                }
                TopicKind::Xmtp(key) => {
                    // Anyone can name a group's topic: only a signature shows the owner meant it.
                    if registration.signature.as_deref().is_none_or(|signature| signature.trim().is_empty()) {
                        return Err(ServiceError::new(
                            ErrorCode::Forbidden,
                            "an XMTP topic needs signature: ownerAddress's EIP-191 signature of the topic",
                        ));
                    }
                    key
                }
            };
            topics.push(TopicRegistration { topic_key: key, topic: topic.to_string(), peer });
        }
        let (platform, destination) = match request.target.and_then(|target| target.target) {
            Some(pb::push_target::Target::WebhookUrl(url)) => ("webhook", target::check_webhook_url(&url, self.config.allow_private_targets).await?),
            Some(pb::push_target::Target::FcmToken(token)) => {
                if self.providers.fcm.is_none() {
                    return Err(ServiceError::invalid("target.platform", "FCM push is not configured on this server; use a webhook"));
                }
                ("fcm", target::check_fcm_token(&token)?)
            }
            None => {
                return Err(ServiceError::invalid(
                    "target",
                    "target is required: {\"platform\": \"webhook\", \"url\"} or {\"platform\": \"fcm\", \"token\"}",
                ));
            }
        };
        topics.sort_by(|a, b| a.topic_key.cmp(&b.topic_key));
        topics.dedup_by(|a, b| a.topic_key == b.topic_key);

        let limits = RegistrationLimits {
            max_targets: self.config.max_targets_per_account,
            max_topics: self.config.max_topics_per_account,
            max_targets_per_xmtp_topic: MAX_TARGETS_PER_XMTP_TOPIC,
        };
        let now = clawx_common::time::now_ms();
        match self.store.register(account_id, platform, &destination, &topics, limits, now).await.map_err(internal)? {
            Registered::Done { target_id, target_created, new_topics } => {
                tracing::info!(target.id = target_id, platform, target_created, new_topics, "push topics registered");
                let webhook_secret = (platform == "webhook").then(|| self.providers.webhook.secret(account_id, &destination).encoded());
                Ok(pb::RegisterPushResponse { target_id, registered: topics.len() as u32, new_topics, webhook_secret })
            }
            Registered::TooManyTargets => Err(ServiceError::invalid(
                "target",
                format!("you have {} push targets already, the most an account may have", self.config.max_targets_per_account),
            )),
            Registered::TopicTaken(topic) => Err(ServiceError::invalid(
                "registrations",
                format!("{topic} is registered to {MAX_TARGETS_PER_XMTP_TOPIC} push targets already, the most one XMTP topic may have"),
            )),
            Registered::TooManyTopics => {
                Err(ServiceError::invalid("registrations", format!("at most {} push topics per account", self.config.max_topics_per_account)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_omits_the_secrets() {
        let config = PushConfig {
            webhook_secret: b"the-master-webhook-secret".to_vec(),
            fcm: Some(fcm::FcmSettings {
                service_account_json: "{\"private_key\": \"the-fcm-private-key\"}".into(),
                project_id: Some("project".into()),
                base_url: None,
                token_url: None,
            }),
            ..PushConfig::default()
        };
        let webhook_only = PushConfig { fcm: None, ..config.clone() };
        let providers = Providers::from_config(&webhook_only).unwrap();
        let printed = format!("{config:?} {providers:?} {:?}", providers.webhook);
        let secret_bytes = format!("{:?}", b"the-master-webhook-secret".to_vec());
        assert!(!printed.contains(&secret_bytes) && !printed.contains("the-master-webhook-secret"), "{printed}");
        assert!(!printed.contains("the-fcm-private-key"), "{printed}");
    }

    #[test]
    fn topics_are_parsed_and_normalized() {
        assert!(matches!(topic_key("/clawx/inbox/1"), Ok(TopicKind::Inbox)));
        assert!(matches!(topic_key("/clawx/dm/1/42"), Ok(TopicKind::Conversation(42))));
        match topic_key("/xmtp/mls/1/g-ABcd/proto") {
            Ok(TopicKind::Xmtp(topic)) => assert_eq!(topic, "/xmtp/mls/1/g-abcd/proto"),
            _ => panic!("an XMTP group topic"),
        }
        assert!(matches!(topic_key("/xmtp/mls/1/w-00ff/proto"), Ok(TopicKind::Xmtp(_))));
        for bad in [
            "/clawx/dm/1/0",
            "/clawx/dm/1/x",
            "/clawx/dm/1/+5",
            "/xmtp/mls/1/g-abc/proto",
            "/xmtp/mls/1/g-/proto",
            "/xmtp/mls/1/k-00/proto",
            "topic-123",
        ] {
            assert!(topic_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_bound_with_jitter() {
        let config = PushConfig { retry_base: Duration::from_secs(1), retry_max: Duration::from_secs(10), ..PushConfig::default() };
        assert_eq!(config.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(config.backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(config.backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(config.backoff(5, 1.0), Duration::from_secs(10));
        assert_eq!(config.backoff(50, 1.0), Duration::from_secs(10));
        assert_eq!(config.backoff(3, 0.0), Duration::from_secs(2), "at least half");
    }
}
