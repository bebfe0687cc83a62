//! Consent and spam: an account allows or blocks conversations and peers (blocking files a spam
//! report), and anyone may ask whether an address looks like a source of spam, judged from this
//! server's own signals.

use alloy_primitives::{Address, Signature, U256};
use clawx_common::{ErrorCode, ServiceError, ServiceResult};
use clawx_proto::messaging as pb;

use super::{
    DirectMessages, address, internal,
    store::{Consent, Party},
};

/// The prefix of a Clawx conversation topic (`/clawx/dm/1/<conversation id>`).
pub const TOPIC_PREFIX: &str = "/clawx/dm/1/";
/// Targets one call may name.
pub const MAX_TARGETS: usize = 100;

/// Thresholds of the spam check (`CLAWX_SPAM_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct SpamPolicy {
    /// Block reports from distinct accounts that alone make the score reach 0.8
    /// (`CLAWX_SPAM_REPORTS`, default 3).
    pub reports: u32,
    /// New conversations opened in the last hour that count fully (`CLAWX_SPAM_FIRST_CONTACTS_PER_HOUR`,
    /// default 30).
    pub first_contacts_per_hour: u32,
    /// An unverified account younger than this counts a little (`CLAWX_SPAM_NEW_ACCOUNT_HOURS`,
    /// default 24).
    pub new_account_hours: u32,
    /// The score from which an address is spam (`CLAWX_SPAM_SCORE_THRESHOLD`, default 0.5).
    pub score_threshold: f64,
}

impl Default for SpamPolicy {
    fn default() -> Self {
        SpamPolicy { reports: 3, first_contacts_per_hour: 30, new_account_hours: 24, score_threshold: 0.5 }
    }
}

impl SpamPolicy {
    /// The policy with every threshold in its range (counts at least 1, the score in 0..=1).
    pub fn bounded(self) -> SpamPolicy {
        SpamPolicy {
            reports: self.reports.max(1),
            first_contacts_per_hour: self.first_contacts_per_hour.max(1),
            new_account_hours: self.new_account_hours,
            score_threshold: self.score_threshold.clamp(0.0, 1.0),
        }
    }
}

/// A 65-byte `r || s || v` signature, hex with or without `0x`, canonical (low `s`).
fn parse_signature(text: &str) -> Option<Signature> {
    let digits = text.trim().strip_prefix("0x").unwrap_or(text.trim());
    let bytes = hex::decode(digits).ok().filter(|bytes| bytes.len() == 65)?;
    let parity = match bytes[64] {
        0 | 27 => false,
        1 | 28 => true,
        _ => return None,
    };
    let signature = Signature::new(U256::from_be_slice(&bytes[..32]), U256::from_be_slice(&bytes[32..64]), parity);
    signature.normalize_s().is_none().then_some(signature)
}

/// Whether `signature` is the EIP-191 `personal_sign` of `topic` by `owner` (lowercase hex).
pub(crate) fn signed_by(signature: &str, topic: &str, owner: &str) -> bool {
    let Some(signature) = parse_signature(signature) else { return false };
    let recovered: Option<Address> = signature.recover_address_from_msg(topic.as_bytes()).ok();
    recovered.is_some_and(|address| format!("{address:#x}") == owner)
}

fn forbidden(message: &str) -> ServiceError {
    ServiceError::new(ErrorCode::Forbidden, message)
}

/// What one target names, checked.
enum Target {
    Conversation(i64),
    Peer(Party, String),
    /// An XMTP topic named without a peer.
    Topic(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

impl DirectMessages {
    /// The wallet address of `party` (lowercase), and the account owning it if any.
    async fn address_of(&self, party: &Party) -> ServiceResult<Option<(String, Option<i64>)>> {
        match party {
            Party::Wallet(address) => Ok(Some((address.clone(), None))),
            Party::Account(id) => {
                let profiles = self.identity.resolve(&[*id], &[], &[]).await?;
                Ok(profiles.iter().find(|profile| profile.id == *id).map(|profile| (profile.wallet_address.to_ascii_lowercase(), Some(*id))))
            }
        }
    }

    /// Sets `account_id`'s consent to each target; DENIED files a spam report per peer.
    #[tracing::instrument(name = "dm.set_consent", skip_all, fields(account.id = account_id))]
    pub async fn set_consent(&self, account_id: i64, request: pb::SetConsentRequest) -> ServiceResult<pb::SetConsentResponse> {
        let consent = match pb::Consent::try_from(request.consent) {
            Ok(pb::Consent::Allowed) => Consent::Allowed,
            Ok(pb::Consent::Denied) => Consent::Denied,
            _ => return Err(ServiceError::invalid("consent", "consent must be allowed or denied")),
        };
        let owner = address::parse_wallet_address("ownerAddress", request.owner_address.trim())?;
        if request.targets.is_empty() {
            return Err(ServiceError::invalid("registrations", "registrations must name at least one topic"));
        }
        if request.targets.len() > MAX_TARGETS {
            return Err(ServiceError::invalid("registrations", format!("registrations may name at most {MAX_TARGETS} topics")));
        }
        if !self.identity.owns_wallet(account_id, &owner).await? {
            return Err(forbidden("ownerAddress is not a wallet of yours"));
        }

        // Check every target before changing any.
        let mut targets = Vec::with_capacity(request.targets.len());
        for target in &request.targets {
            let topic = target.topic.trim();
            if topic.is_empty() || topic.len() > 512 {
                return Err(ServiceError::invalid("topic", "topic is required (at most 512 characters)"));
            }
            if let Some(signature) = target.signature.as_deref().filter(|signature| !signature.trim().is_empty())
                && !signed_by(signature, topic, &owner)
            {
                return Err(forbidden("signature is not ownerAddress's signature of the topic"));
            }
            let conversation = topic.strip_prefix(TOPIC_PREFIX).and_then(|id| id.parse::<i64>().ok()).filter(|id| *id > 0);
            let peer = target.peer_address.as_deref().map(str::trim).filter(|peer| !peer.is_empty());
            match (conversation, peer) {
                (_, Some(peer)) => {
                    let peer = address::parse_wallet_address("peerAddress", peer)?;
                    let profiles = self.identity.resolve(&[], &[], std::slice::from_ref(&peer)).await?;
                    let party = match profiles.iter().find(|profile| profile.wallet_address.to_ascii_lowercase() == peer) {
                        Some(profile) if profile.id == account_id => {
                            return Err(ServiceError::invalid("peerAddress", "you cannot set consent to yourself"));
                        }
                        Some(profile) => Party::Account(profile.id),
                        None => Party::Wallet(peer.clone()),
                    };
                    targets.push(Target::Peer(party, peer));
                }
                (Some(id), None) => targets.push(Target::Conversation(id)),
                (None, None) => match crate::push::normalized_xmtp_topic(topic) {
                    Some(topic) => targets.push(Target::Topic(topic)),
                    None => {
                        return Err(ServiceError::not_found("topic is not a conversation of yours or an XMTP topic; name the peer with peerAddress"));
                    }
                },
            }
        }

        let mut response = pb::SetConsentResponse::default();
        let now = now_ms();
        for target in targets {
            let (changed, reported) = match target {
                Target::Conversation(id) => match self.store.set_conversation_consent(account_id, id, consent).await.map_err(internal)? {
                    Some(peer) => (true, if consent == Consent::Denied { self.address_of(&peer).await? } else { None }),
                    None => return Err(ServiceError::not_found("topic is not a conversation of yours")),
                },
                Target::Peer(party, address) => {
                    // Without a conversation yet, the consent is kept for the one that comes.
                    let changed = self.store.set_peer_consent(account_id, &party, consent).await.map_err(internal)?;
                    (changed, (consent == Consent::Denied).then(|| (address, party.account_id())))
                }
                Target::Topic(topic) => {
                    self.store.set_topic_consent(account_id, &topic, consent).await.map_err(internal)?;
                    (false, None)
                }
            };
            response.conversations += u32::from(changed);
            if let Some((address, reported_account)) = reported {
                let filed = self.store.report_spam(account_id, &address, reported_account, now).await.map_err(internal)?;
                response.reports += u32::from(filed);
            }
        }
        tracing::info!(conversations = response.conversations, reports = response.reports, consent = consent.as_str(), "consent set");
        Ok(response)
    }

    /// Whether `address` looks like a source of spam, with its score and reasons.
    pub async fn check_spam(&self, address: &str) -> ServiceResult<pb::CheckSpamResponse> {
        let address = address::parse_wallet_address("address", address.trim())?;
        let profiles = self.identity.resolve(&[], &[], std::slice::from_ref(&address)).await?;
        let account = profiles.iter().find(|profile| profile.wallet_address.to_ascii_lowercase() == address);
        let policy = &self.spam;
        let mut reasons = Vec::new();
        let mut score = 0.0;

        let reporters = self.store.spam_reporters(&address, account.map(|profile| profile.id)).await.map_err(internal)?;
        if reporters > 0 {
            score += 0.8 * (reporters as f64 / f64::from(policy.reports)).min(1.0);
            reasons.push(format!("blocked and reported by {reporters} account(s) here"));
        }
        if let Some(profile) = account {
            let now = now_ms();
            let opened = self.store.first_contacts_since(profile.id, now - 60 * 60 * 1000).await.map_err(internal)?;
            if opened > 0 {
                let share = (opened as f64 / f64::from(policy.first_contacts_per_hour)).min(1.0);
                score += 0.3 * share;
                if share >= 0.5 {
                    reasons.push(format!("opened {opened} new conversation(s) in the last hour"));
                }
            }
            let young = now - profile.created_at_ms < i64::from(policy.new_account_hours) * 60 * 60 * 1000;
            if young && !profile.verified {
                score += 0.1;
                reasons.push(format!("unverified account created less than {} hour(s) ago", policy.new_account_hours));
            } else if profile.verified {
                score -= 0.1;
            }
        }
        let score = score.clamp(0.0, 1.0);
        Ok(pb::CheckSpamResponse { is_spam: score >= policy.score_threshold && score > 0.0, score, reasons })
    }
}

#[cfg(test)]
mod tests {
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    #[test]
    fn topic_signatures_recover_to_the_owner_only() {
        let signer = PrivateKeySigner::random();
        let owner = format!("{:#x}", signer.address());
        let topic = "/clawx/dm/1/7";
        let signature = hex::encode(signer.sign_message_sync(topic.as_bytes()).unwrap().as_bytes());
        assert!(signed_by(&signature, topic, &owner));
        assert!(signed_by(&format!("0x{signature}"), topic, &owner));
        assert!(!signed_by(&signature, "/clawx/dm/1/8", &owner));
        assert!(!signed_by(&signature, topic, "0x0000000000000000000000000000000000000001"));
        assert!(!signed_by("0x1234", topic, &owner));
    }
}
