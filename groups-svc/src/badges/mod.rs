//! Badges and token-gated groups (Push-style), and partner notifications.
//!
//! - A badge is a code and a holding rule on an EVM chain ([`rules`]); its creator is its
//!   partner. Each badge has at most one gated group, whose members are wallet addresses that
//!   signed the badge code and held the token when they joined; the re-check ([`recheck`])
//!   removes those that no longer hold.
//! - Balances are read through alloy providers per chain ([`chain`]); a chain that cannot
//!   answer is `CHAIN_UNAVAILABLE`, never a guess.
//! - A partner notification is queued with one delivery per member in one transaction and
//!   delivered in the background ([`notify`]) as a direct message from the partner's account,
//!   whose idempotency key (notification id and member) makes every retry harmless.

pub mod chain;
pub(crate) mod grpc;
pub mod notify;
pub mod recheck;
pub mod rules;
pub mod services;
pub mod store;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use alloy_primitives::U256;
use clawx_common::{ErrorCode, ServiceError, ServiceResult, time::now_ms};

use self::{
    chain::{ChainError, Chains},
    rules::{Action, HoldingRule, Standard, lower_hex},
    services::{DomainOwner, Services},
    store::{BadgeRecord, BadgeStore, NewNotification, NotificationStatus, StoreError},
};

/// Environment variables naming chain RPCs: `CLAWX_CHAIN_RPC_<chainId>=<http(s) URL>`.
pub const CHAIN_RPC_ENV_PREFIX: &str = "CLAWX_CHAIN_RPC_";
/// Longest notification subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest notification message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 10_000;
/// Longest link of a notification.
pub const MAX_URL_BYTES: usize = 2048;

/// How badges reach chains and how their background work runs.
#[derive(Clone, Debug)]
pub struct BadgeSettings {
    /// Chain id → JSON-RPC URL.
    pub chains: BTreeMap<u64, String>,
    /// Longest wait for one chain call.
    pub chain_timeout: Duration,
    /// How long a balance read is reused (joins and dry runs; the re-check always reads).
    pub balance_cache_ttl: Duration,
    /// How often each member is checked again; how often the re-check runs.
    pub recheck_interval: Duration,
    /// Most members one re-check tick takes.
    pub recheck_batch: u32,
    /// How often the delivery worker looks for due deliveries.
    pub delivery_poll_interval: Duration,
    /// Most deliveries one worker tick takes.
    pub delivery_batch: u32,
    /// How long a claimed delivery is hidden from other workers.
    pub delivery_lease: Duration,
    /// Attempts before a delivery is given up as failed.
    pub delivery_max_attempts: i64,
    /// First retry delay (doubled per attempt).
    pub delivery_retry_base: Duration,
}

impl Default for BadgeSettings {
    fn default() -> Self {
        BadgeSettings {
            chains: BTreeMap::new(),
            chain_timeout: Duration::from_secs(5),
            balance_cache_ttl: Duration::from_secs(15),
            recheck_interval: Duration::from_secs(3600),
            recheck_batch: 500,
            delivery_poll_interval: Duration::from_secs(1),
            delivery_batch: 50,
            delivery_lease: Duration::from_secs(60),
            delivery_max_attempts: 8,
            delivery_retry_base: Duration::from_secs(2),
        }
    }
}

/// Reads `CLAWX_CHAIN_RPC_<chainId>` variables from `vars` (the process environment in
/// production).
pub fn chains_from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut chains = BTreeMap::new();
    for (name, value) in vars {
        let Some(id) = name.strip_prefix(CHAIN_RPC_ENV_PREFIX) else { continue };
        let chain_id: u64 =
            id.parse().ok().filter(|id| *id > 0).ok_or_else(|| anyhow::anyhow!("{name}: the suffix must be a chain id (a positive number)"))?;
        let url = value.trim();
        anyhow::ensure!(!url.is_empty(), "{name} is empty");
        chains.insert(chain_id, url.to_string());
    }
    Ok(chains)
}

/// A badge as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Badge {
    pub code: String,
    pub name: String,
    pub rule: HoldingRule,
    pub partner_account_id: i64,
    pub group_id: Option<String>,
    pub member_count: i64,
    pub created_at: i64,
}

/// The answer of a dry run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eligibility {
    pub badge_code: String,
    pub address: String,
    pub rule: HoldingRule,
    pub balance: U256,
    pub eligible: bool,
}

/// What the badges part of the groups service does.
#[derive(Clone, Debug)]
pub struct Badges {
    store: Arc<dyn BadgeStore>,
    chains: Chains,
    services: Services,
}

fn internal(error: StoreError) -> ServiceError {
    ServiceError::internal(error)
}

pub(crate) fn chain_error(error: ChainError) -> ServiceError {
    match error {
        ChainError::NotConfigured(chain_id) => ServiceError::new(ErrorCode::ChainUnavailable, format!("no RPC is configured for chain {chain_id}")),
        ChainError::Unavailable { chain_id, reason } => {
            ServiceError::new(ErrorCode::ChainUnavailable, format!("chain {chain_id} cannot be read right now ({reason}); try again later"))
        }
    }
}

fn record_to_badge(record: BadgeRecord) -> ServiceResult<Badge> {
    let rule = HoldingRule::parse(
        u64::try_from(record.chain_id).map_err(ServiceError::internal)?,
        &record.contract,
        &record.standard,
        record.token_id.as_deref(),
        Some(&record.min_balance),
    )
    .map_err(|error| ServiceError::internal(format!("stored badge {} has an invalid rule: {error}", record.code)))?;
    Ok(Badge {
        code: record.code,
        name: record.name,
        rule,
        partner_account_id: record.partner_account_id,
        group_id: record.group_id,
        member_count: record.member_count,
        created_at: record.created_at,
    })
}

fn check_url(field: &str, url: Option<String>) -> ServiceResult<Option<String>> {
    let Some(url) = url.filter(|url| !url.is_empty()) else { return Ok(None) };
    let valid = url.len() <= MAX_URL_BYTES
        && url::Url::parse(&url).is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some())
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if !valid {
        return Err(ServiceError::invalid(field, format!("{field} must be an http or https URL of at most {MAX_URL_BYTES} bytes")));
    }
    Ok(Some(url))
}

fn check_text(field: &str, text: &str, max_chars: usize, multiline: bool) -> ServiceResult<String> {
    let text = text.trim();
    let bad_char = |c: char| c.is_control() && !(multiline && matches!(c, '\n' | '\t'));
    if text.is_empty() || text.chars().count() > max_chars || text.chars().any(bad_char) {
        return Err(ServiceError::invalid(field, format!("{field} must be 1 to {max_chars} characters without control characters")));
    }
    Ok(text.to_string())
}

/// The direct message a notification becomes: the subject, a blank line, the message, then
/// the links, each on its own line.
pub fn notification_content(subject: &str, message: &str, cta_url: Option<&str>, image_url: Option<&str>) -> String {
    let mut content = format!("{subject}\n\n{message}");
    if let Some(url) = cta_url {
        content.push_str(&format!("\n\n{url}"));
    }
    if let Some(url) = image_url {
        content.push_str(&format!("\n\nImage: {url}"));
    }
    content
}

/// A notification as sent.
#[derive(Clone, Debug)]
pub struct NotificationRequest {
    pub badge_code: String,
    pub subject: String,
    pub message: String,
    pub cta_url: Option<String>,
    pub image_url: Option<String>,
    pub sender_domain: String,
}

impl Badges {
    pub fn new(store: Arc<dyn BadgeStore>, chains: Chains, services: Services) -> Badges {
        Badges { store, chains, services }
    }

    async fn existing(&self, code: &str) -> ServiceResult<Badge> {
        let record = self.store.badge(code).await.map_err(internal)?.ok_or_else(|| ServiceError::not_found(format!("no badge {code}")))?;
        record_to_badge(record)
    }

    /// Creates a badge whose partner is `account_id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_badge(
        &self,
        account_id: i64,
        code: &str,
        name: &str,
        chain_id: u64,
        contract: &str,
        standard: &str,
        token_id: Option<&str>,
        min_balance: Option<&str>,
    ) -> ServiceResult<Badge> {
        let code = rules::parse_code("code", code)?;
        let name = rules::parse_name(name)?;
        let rule = HoldingRule::parse(chain_id, contract, standard, token_id, min_balance)?;
        if !self.chains.is_configured(chain_id) {
            return Err(ServiceError::invalid("chainId", format!("chain {chain_id} has no configured RPC on this server")));
        }
        let chain_id_column = i64::try_from(chain_id).map_err(|_| ServiceError::invalid("chainId", "chainId is too large"))?;
        let record = BadgeRecord {
            code: code.clone(),
            name,
            chain_id: chain_id_column,
            contract: lower_hex(&rule.contract),
            standard: rule.standard.as_str().to_string(),
            token_id: rule.token_id.map(|id| id.to_string()),
            min_balance: rule.min_balance.to_string(),
            partner_account_id: account_id,
            created_at: now_ms(),
            group_id: None,
            member_count: 0,
        };
        match self.store.create_badge(&record).await {
            Ok(()) => record_to_badge(record),
            Err(StoreError::BadgeExists) => Err(ServiceError::new(ErrorCode::Conflict, format!("a badge with the code {code} exists"))),
            Err(error) => Err(internal(error)),
        }
    }

    pub async fn badge(&self, code: &str) -> ServiceResult<Badge> {
        self.existing(code).await
    }

    /// Whether `address` satisfies the badge's rule now.
    pub async fn eligibility(&self, code: &str, address: &str) -> ServiceResult<Eligibility> {
        let holder = rules::parse_address("address", address)?;
        let badge = self.existing(code).await?;
        let balance = self.chains.balance(&badge.rule, holder, false).await.map_err(chain_error)?;
        Ok(Eligibility { badge_code: badge.code, address: lower_hex(&holder), eligible: badge.rule.satisfied_by(balance), rule: badge.rule, balance })
    }

    /// The badge's gated group, created unless it exists; whether this call created it.
    pub async fn create_group(&self, code: &str) -> ServiceResult<(String, bool)> {
        let new_id = uuid::Uuid::new_v4().simple().to_string();
        match self.store.ensure_group(code, &new_id, now_ms()).await {
            Ok(group) => Ok(group),
            Err(StoreError::NoBadge) => Err(ServiceError::not_found(format!("no badge {code}"))),
            Err(error) => Err(internal(error)),
        }
    }

    async fn group_of(&self, badge: &Badge) -> ServiceResult<String> {
        badge
            .group_id
            .clone()
            .ok_or_else(|| ServiceError::not_found(format!("the badge {} has no group yet: create it with POST /push/group", badge.code)))
    }

    /// Joins `address` to the badge's group if it signed the code and holds the token now.
    pub async fn join(&self, code: &str, address: &str, signature: &str) -> ServiceResult<(String, String)> {
        let holder = rules::parse_address("address", address)?;
        let signature = rules::parse_signature(signature)?;
        let badge = self.existing(code).await?;
        let group_id = self.group_of(&badge).await?;
        if !rules::signed_by(&signature, &holder, Action::Join, &badge.code) {
            return Err(ServiceError::forbidden(format!(
                "the signature is not {}'s EIP-191 signature of the badge code {:?} (or of \"Join {}\")",
                lower_hex(&holder),
                badge.code,
                badge.code
            )));
        }
        let address = lower_hex(&holder);
        if self.store.is_member(&group_id, &address).await.map_err(internal)? {
            return Ok((group_id, address));
        }
        let balance = self.chains.balance(&badge.rule, holder, false).await.map_err(chain_error)?;
        if !badge.rule.satisfied_by(balance) {
            return Err(ServiceError::forbidden(badge.rule.shortfall(&holder, balance)));
        }
        self.store.add_member(&group_id, &address, now_ms()).await.map_err(internal)?;
        tracing::info!(badge.code = %badge.code, group.id = %group_id, "member joined a gated group");
        Ok((group_id, address))
    }

    /// Removes `address` from the badge's group if it signed `Leave <code>`; leaving a group
    /// one is not in changes nothing.
    pub async fn leave(&self, code: &str, address: &str, signature: &str) -> ServiceResult<(String, String)> {
        let holder = rules::parse_address("address", address)?;
        let signature = rules::parse_signature(signature)?;
        let badge = self.existing(code).await?;
        let group_id = self.group_of(&badge).await?;
        if !rules::signed_by(&signature, &holder, Action::Leave, &badge.code) {
            return Err(ServiceError::forbidden(format!(
                "the signature is not {}'s EIP-191 signature of \"Leave {}\"",
                lower_hex(&holder),
                badge.code
            )));
        }
        let address = lower_hex(&holder);
        self.store.remove_member(&group_id, &address).await.map_err(internal)?;
        Ok((group_id, address))
    }

    /// Queues a notification from the badge's partner to every member of its group.
    pub async fn send_notification(&self, account_id: i64, request: NotificationRequest) -> ServiceResult<NotificationStatus> {
        let subject = check_text("subject", &request.subject, MAX_SUBJECT_CHARS, false)?;
        let message = check_text("message", &request.message, MAX_MESSAGE_CHARS, true)?;
        let cta_url = check_url("ctaUrl", request.cta_url)?;
        let image_url = check_url("imageUrl", request.image_url)?;
        let domain = request.sender_domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() {
            return Err(ServiceError::invalid("sender.domain", "sender.domain is required"));
        }
        let badge = self.existing(&request.badge_code).await?;
        match self.services.domain_owner(account_id, &domain).await? {
            DomainOwner::Caller => {}
            DomainOwner::Unknown => return Err(ServiceError::not_found(format!("no account answers to the domain {domain}"))),
            DomainOwner::Other => return Err(ServiceError::forbidden(format!("the domain {domain} is not yours"))),
        }
        if badge.partner_account_id != account_id {
            return Err(ServiceError::forbidden(format!("only the partner of the badge {} may notify its members", badge.code)));
        }
        let notification = NewNotification {
            id: uuid::Uuid::new_v4().simple().to_string(),
            badge_code: badge.code.clone(),
            partner_account_id: account_id,
            content: notification_content(&subject, &message, cta_url.as_deref(), image_url.as_deref()),
            subject,
            created_at: now_ms(),
        };
        let recipients = self.store.create_notification(&notification).await.map_err(internal)?;
        tracing::info!(badge.code = %badge.code, notification.id = %notification.id, recipients, "partner notification queued");
        self.notification(account_id, &notification.id).await
    }

    /// A notification of the caller's (404 for anyone else's).
    pub async fn notification(&self, account_id: i64, id: &str) -> ServiceResult<NotificationStatus> {
        let not_found = || ServiceError::not_found(format!("no notification {id}"));
        let valid_id = id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit());
        if !valid_id {
            return Err(not_found());
        }
        let status = self.store.notification(id).await.map_err(internal)?.ok_or_else(not_found)?;
        if status.partner_account_id != account_id {
            return Err(not_found());
        }
        Ok(status)
    }
}

impl Standard {
    /// The protobuf enum value.
    pub fn to_proto(self) -> clawx_proto::groups::TokenStandard {
        match self {
            Standard::Erc20 => clawx_proto::groups::TokenStandard::Erc20,
            Standard::Erc721 => clawx_proto::groups::TokenStandard::Erc721,
            Standard::Erc1155 => clawx_proto::groups::TokenStandard::Erc1155,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_rpcs_come_from_prefixed_variables() {
        let vars = [
            ("CLAWX_CHAIN_RPC_1".to_string(), "https://eth.example".to_string()),
            ("CLAWX_CHAIN_RPC_31337".to_string(), " http://127.0.0.1:8545 ".to_string()),
            ("CLAWX_OTHER".to_string(), "x".to_string()),
        ];
        let chains = chains_from_vars(vars).unwrap();
        assert_eq!(chains.get(&1).map(String::as_str), Some("https://eth.example"));
        assert_eq!(chains.get(&31337).map(String::as_str), Some("http://127.0.0.1:8545"));
        assert_eq!(chains.len(), 2);
        assert!(chains_from_vars([("CLAWX_CHAIN_RPC_main".to_string(), "http://x".to_string())]).is_err());
        assert!(chains_from_vars([("CLAWX_CHAIN_RPC_0".to_string(), "http://x".to_string())]).is_err());
    }

    #[test]
    fn notifications_become_one_text() {
        assert_eq!(notification_content("Hi", "Body", None, None), "Hi\n\nBody");
        assert_eq!(
            notification_content("Hi", "Body", Some("https://a.example"), Some("https://i.example/x.png")),
            "Hi\n\nBody\n\nhttps://a.example\n\nImage: https://i.example/x.png"
        );
        assert!(check_url("ctaUrl", Some("javascript:alert(1)".into())).is_err());
        assert_eq!(check_url("ctaUrl", Some(String::new())).unwrap(), None);
    }
}
