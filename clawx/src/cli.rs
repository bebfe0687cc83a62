//! The command line: `clawx dev`, `clawx serve <role>`, `clawx migrate`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clawx_common::{
    Backends, Database, InternalAuth, Secret,
    config::{CacheArgs, DatabaseArgs, SecretArgs, TelemetryArgs},
    crypto::Keyring,
    service::ServiceConfig,
    storage::Migrations,
};
use tokio::net::TcpListener;

use clawx_messaging::{dm::consent::SpamPolicy, node::NodeLimits, push::PushConfig};

use crate::{Stack, StackConfig};

#[derive(Parser, Debug)]
#[command(name = "clawx", version, about = "Self-hosted messaging, identity and verification backend for AI agents")]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole suite in one process on embedded SQLite, with nothing else installed.
    Dev(DevArgs),
    /// Run one role, configured by flags or CLAWX_* environment variables.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the gateway listens (REST, gRPC and grpc-web on one port).
    #[arg(long, env = "CLAWX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the SQLite files and generated secrets are kept.
    #[arg(long, env = "CLAWX_DATA_DIR", default_value = ".clawx")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub xmtp_node: XmtpNodeArgs,
    #[command(flatten)]
    pub messaging: MessagingArgs,
    #[command(flatten)]
    pub push: PushArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    pub badges: BadgeArgs,
}

/// Badge and gated-group options shared by `dev` and `serve groups`. Chain RPCs are read from
/// `CLAWX_CHAIN_RPC_<chainId>` variables (one per chain, so not flags).
#[derive(Args, Debug, Clone)]
pub struct BadgeArgs {
    /// How often each member of a gated group is checked again on chain, in seconds.
    #[arg(long, env = "CLAWX_BADGE_RECHECK_SECS", default_value_t = 3600)]
    pub badge_recheck_secs: u64,
    /// Members one re-check tick of a groups replica takes.
    #[arg(long, env = "CLAWX_BADGE_RECHECK_BATCH", default_value_t = 500)]
    pub badge_recheck_batch: u32,
    /// Deadline of one chain call, in milliseconds.
    #[arg(long, env = "CLAWX_CHAIN_TIMEOUT_MS", default_value_t = 5000)]
    pub chain_timeout_ms: u64,
    /// How long a balance read is reused by joins and dry runs, in seconds (0: never).
    #[arg(long, env = "CLAWX_CHAIN_CACHE_SECS", default_value_t = 15)]
    pub chain_cache_secs: u64,
}

impl BadgeArgs {
    /// The settings, with the chains of the `CLAWX_CHAIN_RPC_<chainId>` environment variables.
    pub fn settings(&self) -> anyhow::Result<clawx_groups::BadgeSettings> {
        Ok(clawx_groups::BadgeSettings {
            chains: clawx_groups::badges::chains_from_vars(std::env::vars())?,
            chain_timeout: Duration::from_millis(self.chain_timeout_ms.clamp(100, 60_000)),
            balance_cache_ttl: Duration::from_secs(self.chain_cache_secs.min(3600)),
            recheck_interval: Duration::from_secs(self.badge_recheck_secs.max(1)),
            recheck_batch: self.badge_recheck_batch.max(1),
            ..clawx_groups::BadgeSettings::default()
        })
    }
}

/// Tweet verification options shared by `dev`, `serve verify` and `serve gateway`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Only verified accounts may send messages and create groups (403 NOT_VERIFIED), and
    /// accounts still unverified 24 hours after creation are deleted. Set it on the gateway and
    /// verify roles alike.
    #[arg(long, env = "CLAWX_REQUIRE_VERIFICATION", default_value_t = false)]
    pub require_verification: bool,
    /// The X account verification tweets mention (with or without @).
    #[arg(long, env = "CLAWX_VERIFY_MENTION", default_value = "claw_mail")]
    pub verify_mention: String,
    /// Verification starts, and completes, each account may make per hour; 0 disables the limit.
    #[arg(long, env = "CLAWX_VERIFY_ATTEMPTS_PER_HOUR", default_value_t = 20)]
    pub verify_attempts_per_hour: u32,
    /// How often the deletion of accounts past their verification window runs, in seconds
    /// (with CLAWX_REQUIRE_VERIFICATION).
    #[arg(long, env = "CLAWX_VERIFY_SWEEP_INTERVAL_SECS", default_value_t = 60)]
    pub verify_sweep_interval_secs: u64,
    /// Base URL of the X API v2, asked first when a bearer token is set.
    #[arg(long, env = "CLAWX_TWITTER_API_URL", default_value = "https://api.twitter.com")]
    pub twitter_api_url: String,
    /// Bearer token of the X API v2; without it the API is skipped.
    #[arg(long, env = "CLAWX_TWITTER_BEARER_TOKEN", hide_env_values = true)]
    pub twitter_bearer_token: Option<Secret>,
    /// Base URL of X's public syndication endpoint (what embedded tweets read), asked next.
    #[arg(long, env = "CLAWX_TWITTER_SYNDICATION_URL", default_value = "https://cdn.syndication.twimg.com")]
    pub twitter_syndication_url: String,
    /// Base URL of X's oEmbed endpoint, asked last when enabled.
    #[arg(long, env = "CLAWX_TWITTER_OEMBED_URL", default_value = "https://publish.twitter.com")]
    pub twitter_oembed_url: String,
    /// Ask oEmbed too. It gives no stable user id, so the X account is bound by username.
    #[arg(long, env = "CLAWX_TWITTER_OEMBED_ENABLED", default_value_t = false)]
    pub twitter_oembed_enabled: bool,
    /// Deadline of one request to a tweet source, in seconds.
    #[arg(long, env = "CLAWX_TWITTER_TIMEOUT_SECS", default_value_t = 5)]
    pub twitter_timeout_secs: u64,
    /// How long a tweet lookup is reused, in seconds (not-found answers at most 10).
    #[arg(long, env = "CLAWX_TWITTER_CACHE_SECS", default_value_t = 60)]
    pub twitter_cache_secs: u64,
}

impl VerifyArgs {
    pub fn settings(&self) -> clawx_verify::Settings {
        clawx_verify::Settings {
            mention_handle: self.verify_mention.trim().trim_start_matches('@').to_string(),
            require_verification: self.require_verification,
            attempts_per_hour: self.verify_attempts_per_hour,
            sweep_interval: Duration::from_secs(self.verify_sweep_interval_secs.max(1)),
            sources: clawx_verify::SourceSettings {
                api_url: self.twitter_api_url.clone(),
                bearer_token: self.twitter_bearer_token.clone().filter(|token| !token.expose().is_empty()),
                syndication_url: self.twitter_syndication_url.clone(),
                oembed_url: self.twitter_oembed_url.clone(),
                oembed_enabled: self.twitter_oembed_enabled,
                timeout: Duration::from_secs(self.twitter_timeout_secs.clamp(1, 60)),
                cache_ttl: Duration::from_secs(self.twitter_cache_secs.min(3600)),
            },
            ..clawx_verify::Settings::default()
        }
    }
}

/// Direct-message options shared by `dev` and `serve messaging`.
#[derive(Args, Debug, Clone)]
pub struct MessagingArgs {
    /// Largest direct or group message, in bytes of content.
    #[arg(long, env = "CLAWX_MESSAGE_MAX_BYTES", default_value_t = clawx_messaging::dm::DEFAULT_MAX_MESSAGE_BYTES)]
    pub message_max_bytes: usize,
    /// Block reports from distinct accounts that give an address the full report weight (0.8)
    /// in the spam score.
    #[arg(long, env = "CLAWX_SPAM_REPORTS", default_value_t = SpamPolicy::default().reports)]
    pub spam_reports: u32,
    /// New conversations an account may open in an hour before that spam signal counts fully.
    #[arg(long, env = "CLAWX_SPAM_FIRST_CONTACTS_PER_HOUR", default_value_t = SpamPolicy::default().first_contacts_per_hour)]
    pub spam_first_contacts_per_hour: u32,
    /// An unverified account younger than this many hours adds 0.1 to its spam score.
    #[arg(long, env = "CLAWX_SPAM_NEW_ACCOUNT_HOURS", default_value_t = SpamPolicy::default().new_account_hours)]
    pub spam_new_account_hours: u32,
    /// The spam score from which an address is spam (0 to 1).
    #[arg(long, env = "CLAWX_SPAM_SCORE_THRESHOLD", default_value_t = SpamPolicy::default().score_threshold)]
    pub spam_score_threshold: f64,
    /// Another XMTP v3 node for the accounts' XMTP clients (https for TLS); by default they use
    /// this server's own node.
    #[arg(long, env = "CLAWX_XMTP_API_URL")]
    pub xmtp_api_url: Option<String>,
    /// Seconds between pulls of every account's XMTP installation (messages from this server's
    /// node also arrive at once; from another node, at the next pull).
    #[arg(long, env = "CLAWX_XMTP_SYNC_INTERVAL_SECS", default_value_t = 30)]
    pub xmtp_sync_interval_secs: u64,
    /// Attempts to carry a message over XMTP before it is `failed`.
    #[arg(long, env = "CLAWX_XMTP_DELIVERY_ATTEMPTS", default_value_t = 6)]
    pub xmtp_delivery_attempts: u32,
}

impl MessagingArgs {
    /// The agent engine's settings; `keyring` `None` turns it off.
    pub fn agents(&self, keyring: Option<Keyring>) -> clawx_messaging::agent::AgentConfig {
        clawx_messaging::agent::AgentConfig {
            keyring,
            api_url: self.xmtp_api_url.clone().filter(|url| !url.is_empty()),
            sync_interval: Duration::from_secs(self.xmtp_sync_interval_secs.max(1)),
            max_attempts: self.xmtp_delivery_attempts.max(1),
        }
    }

    pub fn spam(&self) -> SpamPolicy {
        SpamPolicy {
            reports: self.spam_reports,
            first_contacts_per_hour: self.spam_first_contacts_per_hour,
            new_account_hours: self.spam_new_account_hours,
            score_threshold: self.spam_score_threshold,
        }
    }
}

/// Push-notification options shared by `dev` and `serve messaging`.
#[derive(Args, Debug, Clone)]
pub struct PushArgs {
    /// Let webhook URLs reach loopback, private and link-local addresses (tests, closed networks).
    #[arg(long, env = "CLAWX_PUSH_ALLOW_PRIVATE_TARGETS", default_value_t = false)]
    pub push_allow_private_targets: bool,
    /// Master secret each webhook's signing secret is derived from: `whsec_<base64>` (at least 24
    /// bytes) or at least 32 characters; default: derived from CLAWX_JWT_SECRET.
    #[arg(long, env = "CLAWX_PUSH_WEBHOOK_SECRET", hide_env_values = true)]
    pub push_webhook_secret: Option<clawx_common::Secret>,
    /// FCM service-account JSON, inline or the path of its file; FCM push is off without it.
    #[arg(long, env = "CLAWX_PUSH_FCM_SERVICE_ACCOUNT", hide_env_values = true)]
    pub push_fcm_service_account: Option<clawx_common::Secret>,
    /// Firebase project of FCM sends (default: the service account's project_id).
    #[arg(long, env = "CLAWX_PUSH_FCM_PROJECT_ID")]
    pub push_fcm_project_id: Option<String>,
    /// FCM API base URL.
    #[arg(long, env = "CLAWX_PUSH_FCM_BASE_URL", default_value = clawx_messaging::push::fcm::DEFAULT_BASE_URL)]
    pub push_fcm_base_url: String,
    /// OAuth 2.0 token URL (default: the service account's token_uri, else Google's).
    #[arg(long, env = "CLAWX_PUSH_FCM_TOKEN_URL")]
    pub push_fcm_token_url: Option<String>,
    /// Attempts per notification before it is marked failed.
    #[arg(long, env = "CLAWX_PUSH_MAX_ATTEMPTS", default_value_t = PushConfig::default().max_attempts)]
    pub push_max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubled for each further one (with jitter).
    #[arg(long, env = "CLAWX_PUSH_RETRY_BASE_MS", default_value_t = PushConfig::default().retry_base.as_millis() as u64)]
    pub push_retry_base_ms: u64,
    /// Longest delay between attempts, in milliseconds.
    #[arg(long, env = "CLAWX_PUSH_RETRY_MAX_MS", default_value_t = PushConfig::default().retry_max.as_millis() as u64)]
    pub push_retry_max_ms: u64,
    /// How often an idle push worker looks for due notifications, in milliseconds.
    #[arg(long, env = "CLAWX_PUSH_POLL_MS", default_value_t = PushConfig::default().poll_interval.as_millis() as u64)]
    pub push_poll_ms: u64,
    /// Notifications a push worker claims at a time.
    #[arg(long, env = "CLAWX_PUSH_BATCH", default_value_t = PushConfig::default().batch)]
    pub push_batch: u32,
    /// Deliveries a push worker runs at once.
    #[arg(long, env = "CLAWX_PUSH_CONCURRENCY", default_value_t = PushConfig::default().concurrency)]
    pub push_concurrency: usize,
    /// Timeout of one delivery call, in milliseconds.
    #[arg(long, env = "CLAWX_PUSH_TIMEOUT_MS", default_value_t = PushConfig::default().timeout.as_millis() as u64)]
    pub push_timeout_ms: u64,
    /// Push targets (webhook URLs, FCM tokens) one account may register.
    #[arg(long, env = "CLAWX_PUSH_MAX_TARGETS_PER_ACCOUNT", default_value_t = PushConfig::default().max_targets_per_account)]
    pub push_max_targets_per_account: u32,
    /// Push topics one account may register over all its targets.
    #[arg(long, env = "CLAWX_PUSH_MAX_TOPICS_PER_ACCOUNT", default_value_t = PushConfig::default().max_topics_per_account)]
    pub push_max_topics_per_account: u32,
}

impl PushArgs {
    /// The push settings; `jwt_secret` is the fallback the webhook master secret is derived from.
    pub fn config(&self, jwt_secret: Option<&clawx_common::Secret>) -> anyhow::Result<PushConfig> {
        let webhook_secret = PushConfig::webhook_master_secret(
            self.push_webhook_secret.as_ref().map(clawx_common::Secret::expose),
            jwt_secret.map(clawx_common::Secret::expose),
        )?;
        let fcm = match &self.push_fcm_service_account {
            Some(account) => Some(clawx_messaging::push::fcm::FcmSettings {
                service_account_json: clawx_messaging::push::fcm::FcmSettings::service_account_from(account.expose())?,
                project_id: self.push_fcm_project_id.clone(),
                base_url: Some(self.push_fcm_base_url.clone()),
                token_url: self.push_fcm_token_url.clone(),
            }),
            None => None,
        };
        Ok(PushConfig {
            allow_private_targets: self.push_allow_private_targets,
            webhook_secret,
            fcm,
            max_attempts: self.push_max_attempts,
            retry_base: Duration::from_millis(self.push_retry_base_ms),
            retry_max: Duration::from_millis(self.push_retry_max_ms),
            poll_interval: Duration::from_millis(self.push_poll_ms),
            batch: self.push_batch,
            concurrency: self.push_concurrency,
            timeout: Duration::from_millis(self.push_timeout_ms),
            max_targets_per_account: self.push_max_targets_per_account,
            max_topics_per_account: self.push_max_topics_per_account,
        })
    }
}

/// Bounds of the XMTP node, shared by `dev` and `serve messaging`.
#[derive(Args, Debug, Clone)]
pub struct XmtpNodeArgs {
    /// Largest XMTP group message, in bytes.
    #[arg(long, env = "CLAWX_XMTP_MAX_MESSAGE_BYTES", default_value_t = NodeLimits::default().max_message_bytes)]
    pub xmtp_max_message_bytes: usize,
    /// Largest XMTP welcome, in bytes.
    #[arg(long, env = "CLAWX_XMTP_MAX_WELCOME_BYTES", default_value_t = NodeLimits::default().max_welcome_bytes)]
    pub xmtp_max_welcome_bytes: usize,
    /// Most bytes one XMTP reply carries: pages stop short of it, batch answers past it are refused.
    #[arg(long, env = "CLAWX_XMTP_MAX_REPLY_BYTES", default_value_t = NodeLimits::default().max_reply_bytes)]
    pub xmtp_max_reply_bytes: usize,
    /// Commit-log entries one XMTP group may hold.
    #[arg(long, env = "CLAWX_XMTP_COMMIT_LOG_PER_GROUP", default_value_t = NodeLimits::default().commit_log_entries_per_group)]
    pub xmtp_commit_log_per_group: i64,
    /// XMTP subscriptions one messaging replica serves at once.
    #[arg(long, env = "CLAWX_XMTP_MAX_SUBSCRIPTIONS", default_value_t = NodeLimits::default().max_subscriptions)]
    pub xmtp_max_subscriptions: usize,
    /// Topics one messaging replica watches at once, over all its XMTP subscriptions.
    #[arg(long, env = "CLAWX_XMTP_MAX_TOPICS", default_value_t = NodeLimits::default().max_topics)]
    pub xmtp_max_topics: usize,
    /// Topics one client address watches at once, over all its XMTP subscriptions.
    #[arg(long, env = "CLAWX_XMTP_TOPICS_PER_CLIENT", default_value_t = NodeLimits::default().topics_per_client)]
    pub xmtp_topics_per_client: usize,
}

impl XmtpNodeArgs {
    pub fn limits(&self) -> NodeLimits {
        NodeLimits {
            max_message_bytes: self.xmtp_max_message_bytes.max(1024),
            max_welcome_bytes: self.xmtp_max_welcome_bytes.max(1024),
            max_reply_bytes: self.xmtp_max_reply_bytes.max(64 * 1024),
            commit_log_entries_per_group: self.xmtp_commit_log_per_group.max(1),
            max_subscriptions: self.xmtp_max_subscriptions.max(1),
            max_topics: self.xmtp_max_topics.max(1),
            topics_per_client: self.xmtp_topics_per_client.max(1),
            ..NodeLimits::default()
        }
    }
}

/// Identity options shared by `dev` and `serve identity`.
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Public base URL of this installation, named in wallet-link messages (EIP-4361);
    /// default: the gateway's address.
    #[arg(long, env = "CLAWX_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How far ahead a signed request's expiry may be, in days.
    #[arg(long, env = "CLAWX_SIGNATURE_HORIZON_DAYS", default_value_t = 30)]
    pub signature_horizon_days: u64,
}

impl IdentityArgs {
    fn settings(&self, default_public_url: &str) -> clawx_identity::Settings {
        clawx_identity::Settings {
            public_url: self.public_url.clone().unwrap_or_else(|| default_public_url.to_string()),
            signature_horizon: Duration::from_secs(self.signature_horizon_days.clamp(1, 365) * 86_400),
            ..clawx_identity::Settings::default()
        }
    }
}

/// A role `clawx serve` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Identity,
    Messaging,
    Groups,
    Verify,
    Gateway,
}

impl Role {
    fn default_listen(self) -> SocketAddr {
        let port = match self {
            Role::Gateway => 8080,
            Role::Identity => 50051,
            Role::Messaging => 50052,
            Role::Groups => 50053,
            Role::Verify => 50054,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The role to run.
    #[arg(value_enum)]
    pub role: Role,
    /// Address to listen on (default: gateway 127.0.0.1:8080, identity :50051, messaging :50052,
    /// groups :50053, verify :50054).
    #[arg(long, env = "CLAWX_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub xmtp_node: XmtpNodeArgs,
    #[command(flatten)]
    pub messaging: MessagingArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    pub push: PushArgs,
    #[command(flatten)]
    pub badges: BadgeArgs,
    /// identity service URL (gateway, messaging, groups and verify roles).
    #[arg(long, env = "CLAWX_IDENTITY_URL", default_value = "http://127.0.0.1:50051")]
    pub identity_url: String,
    /// messaging service URL (gateway, groups and verify roles).
    #[arg(long, env = "CLAWX_MESSAGING_URL", default_value = "http://127.0.0.1:50052")]
    pub messaging_url: String,
    /// groups service URL (gateway role).
    #[arg(long, env = "CLAWX_GROUPS_URL", default_value = "http://127.0.0.1:50053")]
    pub groups_url: String,
    /// verify service URL (gateway role).
    #[arg(long, env = "CLAWX_VERIFY_URL", default_value = "http://127.0.0.1:50054")]
    pub verify_url: String,
}

/// Gateway options shared by `dev` and `serve gateway`.
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Requests per minute per account; 0 disables the limit.
    #[arg(long, env = "CLAWX_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// Account creations per minute per client IP; 0 disables the limit.
    #[arg(long, env = "CLAWX_RATE_LIMIT_CREATE_PER_MINUTE", default_value_t = 30)]
    pub rate_limit_create_per_minute: u32,
    /// Unauthenticated requests per minute per client IP; 0 disables the limit.
    #[arg(long, env = "CLAWX_RATE_LIMIT_IP_PER_MINUTE", default_value_t = 1200)]
    pub rate_limit_ip_per_minute: u32,
    /// XMTP node calls per minute per client IP; 0 disables the limit.
    #[arg(long, env = "CLAWX_RATE_LIMIT_XMTP_PER_MINUTE", default_value_t = 6000)]
    pub rate_limit_xmtp_per_minute: u32,
    /// Credentials per minute per client IP that the gateway's caches cannot answer (new or
    /// invalid keys and signatures); 0 disables the limit.
    #[arg(long, env = "CLAWX_RATE_LIMIT_AUTH_PER_MINUTE", default_value_t = 300)]
    pub rate_limit_auth_per_minute: u32,
    /// Concurrent XMTP subscription streams per client IP; 0 disables the limit.
    #[arg(long, env = "CLAWX_XMTP_STREAMS_PER_IP", default_value_t = 200)]
    pub xmtp_streams_per_ip: u32,
    /// Largest accepted REST request body, in bytes.
    #[arg(long, env = "CLAWX_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deadline of each upstream call, in seconds.
    #[arg(long, env = "CLAWX_UPSTREAM_TIMEOUT_SECS", default_value_t = 15)]
    pub upstream_timeout_secs: u64,
    /// Take the client IP from X-Forwarded-For (set only behind a trusted proxy).
    #[arg(long, env = "CLAWX_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Comma-separated origins allowed by CORS (browsers, grpc-web); empty allows any.
    #[arg(long, env = "CLAWX_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Comma-separated hosts (`name` or `name:port`) the MCP endpoint `/mcp` answers, checked
    /// against the Host header against DNS rebinding; empty allows loopback only.
    #[arg(long, env = "CLAWX_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub mcp_allowed_hosts: Vec<String>,
}

impl GatewayArgs {
    fn apply(&self, config: &mut clawx_gateway::Config) {
        config.limits = clawx_gateway::Limits {
            per_account_per_minute: self.rate_limit_per_minute,
            create_per_minute: self.rate_limit_create_per_minute,
            per_ip_per_minute: self.rate_limit_ip_per_minute,
            xmtp_per_minute: self.rate_limit_xmtp_per_minute,
            auth_checks_per_minute: self.rate_limit_auth_per_minute,
            xmtp_streams_per_ip: self.xmtp_streams_per_ip,
        };
        config.max_body_bytes = self.max_body_bytes;
        config.upstream_timeout = Duration::from_secs(self.upstream_timeout_secs.max(1));
        config.trust_forwarded_for = self.trust_forwarded_for;
        config.cors_origins = self.cors_origins.iter().filter(|origin| !origin.is_empty()).cloned().collect();
        config.mcp_allowed_hosts = self.mcp_allowed_hosts.iter().filter(|host| !host.is_empty()).cloned().collect();
    }
}

/// A service role's migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MigrateTarget {
    All,
    Identity,
    Messaging,
    Groups,
    Verify,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Which service's migrations to apply.
    #[arg(long, value_enum, default_value_t = MigrateTarget::All)]
    pub service: MigrateTarget,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

const SERVICE_MIGRATIONS: [(&str, MigrateTarget, Migrations); 4] = [
    (clawx_identity::SERVICE, MigrateTarget::Identity, clawx_identity::MIGRATIONS),
    (clawx_messaging::SERVICE, MigrateTarget::Messaging, clawx_messaging::MIGRATIONS),
    (clawx_groups::SERVICE, MigrateTarget::Groups, clawx_groups::MIGRATIONS),
    (clawx_verify::SERVICE, MigrateTarget::Verify, clawx_verify::MIGRATIONS),
];

/// Runs the parsed command until it finishes or a shutdown signal arrives.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => dev(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let secrets = crate::secrets::load_or_create(&data_dir)?;
    let gateway = args.gateway.clone();
    let keyring = Keyring::from_args(&secrets)?;
    let config = StackConfig {
        database: DatabaseArgs {
            database_url: Some(format!("sqlite://{}/{{service}}.db", data_dir.display())),
            database_max_connections: 8,
            database_schema_prefix: String::new(),
        },
        backends: Backends::memory(),
        auth: InternalAuth::new(secrets.require_jwt_secret()?),
        keyring: keyring.clone(),
        listen: args.listen,
        public_url: args.identity.public_url.clone(),
        signature_horizon: args.identity.settings("").signature_horizon,
        challenge_ttl: clawx_identity::Settings::default().challenge_ttl,
        xmtp_node: args.xmtp_node.limits(),
        message_max_bytes: args.messaging.message_max_bytes,
        spam: args.messaging.spam(),
        agents: args.messaging.agents(Some(keyring)),
        verify: args.verify.settings(),
        push: args.push.config(secrets.jwt_secret.as_ref())?,
        badges: args.badges.settings()?,
    };
    let stop = clawx_common::shutdown::on_signals();
    let mut stack = Stack::start_with(config, move |gateway_config| gateway.apply(gateway_config)).await?;
    stack.ready(Duration::from_secs(60)).await?;
    let address = stack.gateway_address;
    println!("Clawx is running: REST, gRPC and grpc-web on http://{address}");
    println!("  data directory: {}", data_dir.display());
    println!("  try: curl -s http://{address}/health");
    println!("Press Ctrl-C to stop.");
    stack.run_until(stop).await?;
    println!("Clawx stopped.");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| args.role.default_listen());
    let auth = InternalAuth::new(args.secrets.require_jwt_secret()?);
    if args.role != Role::Gateway {
        require_database(&args.database)?;
    }
    let shutdown = clawx_common::shutdown::on_signals();
    let backends = Backends::from_args(&args.cache, shutdown.clone())?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(role = ?args.role, address = %listen, "starting");
    let service = |backends, auth| ServiceConfig { database: args.database.clone(), backends, auth };
    match args.role {
        Role::Gateway => {
            let upstreams = clawx_gateway::UpstreamUrls {
                identity: args.identity_url,
                messaging: args.messaging_url,
                groups: args.groups_url,
                verify: args.verify_url,
            };
            let mut config = clawx_gateway::Config::new(upstreams, backends, auth);
            args.gateway.apply(&mut config);
            config.require_verification = args.verify.require_verification;
            clawx_gateway::run(config, listener, shutdown).await
        }
        Role::Identity => {
            let keyring = Keyring::from_args(&args.secrets)?;
            if args.identity.public_url.is_none() {
                tracing::warn!("CLAWX_PUBLIC_URL is not set: wallet-link messages will name http://127.0.0.1:8080");
            }
            let settings = args.identity.settings("http://127.0.0.1:8080");
            let config = clawx_identity::Config { service: service(backends, auth), keyring, settings };
            clawx_identity::run(config, listener, shutdown).await
        }
        Role::Messaging => {
            let config = clawx_messaging::Config {
                service: service(backends, auth),
                node: args.xmtp_node.limits(),
                identity_url: args.identity_url,
                message_max_bytes: args.messaging.message_max_bytes,
                spam: args.messaging.spam(),
                push: args.push.config(args.secrets.jwt_secret.as_ref())?,
                agents: args.messaging.agents(match args.secrets.master_key {
                    Some(_) => Some(Keyring::from_args(&args.secrets)?),
                    None => {
                        tracing::warn!("CLAWX_MASTER_KEY is not set: accounts are not XMTP clients and messages stay stored");
                        None
                    }
                }),
            };
            clawx_messaging::run(config, listener, shutdown).await
        }
        Role::Groups => {
            let config = clawx_groups::Config {
                service: service(backends, auth),
                settings: clawx_groups::Settings { message_max_bytes: args.messaging.message_max_bytes },
                badges: args.badges.settings()?,
                identity_url: args.identity_url,
                messaging_url: args.messaging_url,
            };
            clawx_groups::run(config, listener, shutdown).await
        }
        Role::Verify => {
            let config = clawx_verify::Config {
                service: service(backends, auth),
                settings: args.verify.settings(),
                identity_url: args.identity_url,
                messaging_url: args.messaging_url,
            };
            clawx_verify::run(config, listener, shutdown).await
        }
    }
}

fn require_database(args: &DatabaseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database_url.is_some(),
        "CLAWX_DATABASE_URL is not set: use postgres://user@host/db (production) or sqlite://path/{{service}}.db"
    );
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    require_database(&args.database)?;
    for (service, target, migrations) in SERVICE_MIGRATIONS {
        if args.service != MigrateTarget::All && args.service != target {
            continue;
        }
        let database = Database::connect(&args.database, service).await?;
        database.migrate(&migrations).await.with_context(|| format!("{service} migrations failed"))?;
        database.close().await;
        println!("{service}: migrations applied");
    }
    Ok(())
}
