//! Identity publication: an account's installation is created on first use, its key package
//! uploaded (and refreshed before it expires) and its inbox published on the network:
//! `CreateInbox` (for a wallet with no inbox yet) and `AddAssociation` of the installation key,
//! one update signed by the wallet (through the identity service) and by the installation.

use clawx_common::time::now_ms;
use clawx_proto::xmtp::identity::associations::{
    AddAssociation, CreateInbox, IdentifierKind, IdentityAction, IdentityUpdate, MemberIdentifier, RecoverableEcdsaSignature,
    RecoverableEd25519Signature, Signature, identity_action, member_identifier, signature,
};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha512};

use super::{
    AgentError, Engine, mls,
    network::{InboxHistory, XmtpNetwork},
    state::{AgentProvider, MlsSession},
    store::InstallationRecord,
};
use crate::node::validate::{
    sig::inbox_id_for,
    text::{ActionText, Subject, signature_text},
};

/// libxmtp's context of installation-key signatures (Ed25519ph).
const INSTALLATION_SIGNATURE_CONTEXT: &[u8] = b"IDENTITY UPDATE SIGNATURE";
/// The nonce of inboxes Clawx creates: XMTP clients compute an address's default inbox id with it.
pub const INBOX_NONCE: u64 = 1;
/// A key package is replaced when it has less than this left to live.
pub const KEY_PACKAGE_REFRESH_MS: i64 = 14 * 24 * 3600 * 1000;

/// The encryption context of an installation's secret key.
fn private_key_context(account_id: i64) -> Vec<u8> {
    format!("xmtp-installation:{account_id}").into_bytes()
}

/// Whether the history grants `installation_key` messaging access (a publication that went
/// through before a crash).
fn grants(history: &InboxHistory, installation_key: &[u8]) -> bool {
    history.updates.iter().flat_map(|(_, update)| &update.actions).any(|action| match &action.kind {
        Some(identity_action::Kind::Add(add)) => matches!(
            &add.new_member_identifier,
            Some(MemberIdentifier { kind: Some(member_identifier::Kind::InstallationPublicKey(key)) }) if key == installation_key
        ),
        _ => false,
    })
}

fn wallet_signature(bytes: Vec<u8>) -> Signature {
    Signature { signature: Some(signature::Signature::Erc191(RecoverableEcdsaSignature { bytes })) }
}

fn create_inbox(wallet_address: &str, signed_by_wallet: Vec<u8>) -> IdentityAction {
    IdentityAction {
        kind: Some(identity_action::Kind::CreateInbox(CreateInbox {
            initial_identifier: wallet_address.to_string(),
            nonce: INBOX_NONCE,
            initial_identifier_signature: Some(wallet_signature(signed_by_wallet)),
            initial_identifier_kind: IdentifierKind::Ethereum as i32,
            relying_party: None,
        })),
    }
}

/// Grants `key`'s installation messaging access: the update's `text` signed by the wallet and,
/// Ed25519ph with libxmtp's context, by the installation.
fn add_installation(key: &SigningKey, text: &str, signed_by_wallet: Vec<u8>) -> Result<IdentityAction, AgentError> {
    let installation_key = key.verifying_key().to_bytes().to_vec();
    let signed_by_installation = key
        .sign_prehashed(Sha512::new().chain_update(text.as_bytes()), Some(INSTALLATION_SIGNATURE_CONTEXT))
        .map_err(|error| AgentError::Mls(format!("installation signature: {error}")))?;
    Ok(IdentityAction {
        kind: Some(identity_action::Kind::Add(AddAssociation {
            new_member_identifier: Some(MemberIdentifier { kind: Some(member_identifier::Kind::InstallationPublicKey(installation_key.clone())) }),
            existing_member_signature: Some(wallet_signature(signed_by_wallet)),
            new_member_signature: Some(Signature {
                signature: Some(signature::Signature::InstallationKey(RecoverableEd25519Signature {
                    bytes: signed_by_installation.to_bytes().to_vec(),
                    public_key: installation_key,
                })),
            }),
            relying_party: None,
        })),
    })
}

fn timestamp_ns() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0)
}

/// Publishes a new inbox for `wallet_address` with `installations` fresh installations, each
/// with a key package on the network, that no engine runs: a peer with many installations for
/// benchmarks and tests (nothing in the service calls it). `sign_with_wallet` signs the
/// update's text for the wallet (EIP-191, 65 bytes). The inbox's id.
pub async fn publish_external_inbox(
    network: &XmtpNetwork,
    wallet_address: &str,
    installations: usize,
    sign_with_wallet: impl FnOnce(&str) -> Vec<u8>,
) -> Result<String, AgentError> {
    let wallet_address = wallet_address.to_ascii_lowercase();
    let inbox_id = inbox_id_for(&wallet_address, INBOX_NONCE);
    let keys: Vec<SigningKey> = (0..installations).map(|_| SigningKey::generate(&mut rand::rngs::OsRng)).collect();
    let public_keys: Vec<[u8; 32]> = keys.iter().map(|key| key.verifying_key().to_bytes()).collect();
    let timestamp_ns = timestamp_ns();
    let mut texts = vec![ActionText::CreateInbox(Subject::Ethereum(&wallet_address))];
    texts.extend(public_keys.iter().map(|public| ActionText::Add(Subject::Installation(public))));
    let text = signature_text(&inbox_id, timestamp_ns, &texts);
    let signed_by_wallet = sign_with_wallet(&text);
    let mut actions = vec![create_inbox(&wallet_address, signed_by_wallet.clone())];
    for key in &keys {
        actions.push(add_installation(key, &text, signed_by_wallet.clone())?);
    }
    network.publish_identity_update(IdentityUpdate { actions, client_timestamp_ns: timestamp_ns, inbox_id: inbox_id.clone() }).await?;
    for key in &keys {
        // Each key package's private keys are dropped: nobody reads what is sent to them.
        let key_package = mls::key_package(&AgentProvider::default(), &inbox_id, key)?;
        network.upload_key_package(key_package.bytes).await?;
    }
    Ok(inbox_id)
}

impl Engine {
    /// The account's installation, created if needed, with a fresh key package on the network
    /// and its identity published: what an account needs before it sends or receives.
    #[tracing::instrument(name = "agent.ready", skip_all, fields(account.id = account_id))]
    pub async fn ensure_ready(&self, account_id: i64) -> Result<InstallationRecord, AgentError> {
        let mut installation = match self.store.installation(account_id).await? {
            Some(found) => found,
            None => self.create_installation(account_id).await?,
        };
        let key = self.signing_key(&installation).await?;
        if installation.key_package_expires_at.is_none_or(|expires_at| expires_at <= now_ms() + KEY_PACKAGE_REFRESH_MS) {
            installation.key_package_expires_at = Some(self.refresh_key_package(&installation, &key).await?);
        }
        if installation.identity_published_at.is_none() {
            // Published under the installation's lock, so replicas publish it once; recorded
            // after the lock is released (the record is the installation's row, which the lock
            // holds). A replica that gets the lock meanwhile finds the installation on the
            // network and publishes nothing.
            let lock = MlsSession::open(self.store.as_ref(), &self.keyring, account_id).await?;
            let current = self.store.installation(account_id).await?.ok_or(AgentError::NoInstallation)?;
            let published_at = match current.identity_published_at {
                Some(published_at) => published_at,
                None => {
                    self.publish_identity(&installation, &key).await?;
                    drop(lock);
                    let published_at = now_ms();
                    self.store.set_identity_published(account_id, published_at).await?;
                    tracing::info!(inbox.id = %installation.inbox_id, "XMTP identity published");
                    published_at
                }
            };
            installation.identity_published_at = Some(published_at);
        }
        Ok(installation)
    }

    /// A new installation for the account: a fresh Ed25519 key, stored encrypted. Two replicas
    /// creating one at once agree on the first stored.
    async fn create_installation(&self, account_id: i64) -> Result<InstallationRecord, AgentError> {
        let profiles = self.identity.resolve(&[account_id], &[], &[]).await.map_err(AgentError::Identity)?;
        let profile = profiles.into_iter().find(|profile| profile.id == account_id).ok_or(AgentError::NoAccount)?;
        let wallet_address = profile.wallet_address.to_ascii_lowercase();
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let installation = InstallationRecord {
            account_id,
            inbox_id: inbox_id_for(&wallet_address, INBOX_NONCE),
            wallet_address,
            installation_key: key.verifying_key().to_bytes().to_vec(),
            private_key: self.keyring.encrypt(&key.to_bytes(), &private_key_context(account_id)),
            created_at: now_ms(),
            identity_published_at: None,
            key_package_expires_at: None,
        };
        Ok(self.store.create_installation(&installation).await?)
    }

    /// The installation's secret key; re-encrypted under the active master key if needed.
    pub(crate) async fn signing_key(&self, installation: &InstallationRecord) -> Result<SigningKey, AgentError> {
        let context = private_key_context(installation.account_id);
        let secret = self.keyring.decrypt(&installation.private_key, &context).map_err(|error| AgentError::Keyring(error.to_string()))?;
        let secret: [u8; 32] = secret.as_slice().try_into().map_err(|_| AgentError::Keyring("installation key is not 32 bytes".into()))?;
        let key = SigningKey::from_bytes(&secret);
        if key.verifying_key().to_bytes().as_slice() != installation.installation_key.as_slice() {
            return Err(AgentError::Keyring("installation secret key does not match its public key".into()));
        }
        if self.keyring.needs_rotation(&installation.private_key) {
            self.store.replace_private_key(installation.account_id, &self.keyring.encrypt(&secret, &context)).await?;
        }
        Ok(key)
    }

    /// Makes a key package, stores its private keys, then uploads it; its expiry (Unix ms).
    async fn refresh_key_package(&self, installation: &InstallationRecord, key: &SigningKey) -> Result<i64, AgentError> {
        let session = MlsSession::open(self.store.as_ref(), &self.keyring, installation.account_id).await?;
        // Another replica may have refreshed it while this one waited for the lock.
        let current = self.store.installation(installation.account_id).await?.ok_or(AgentError::NoInstallation)?;
        if let Some(expires_at) = current.key_package_expires_at.filter(|expires_at| *expires_at > now_ms() + KEY_PACKAGE_REFRESH_MS) {
            return Ok(expires_at);
        }
        let key_package = mls::key_package(session.provider(), &installation.inbox_id, key)?;
        // Stored before it is uploaded: a welcome to it can always be opened.
        session.commit().await?;
        self.network.upload_key_package(key_package.bytes).await?;
        let expires_at = i64::try_from(key_package.not_after).unwrap_or(i64::MAX / 1000) * 1000;
        self.store.set_key_package_expiry(installation.account_id, expires_at).await?;
        Ok(expires_at)
    }

    /// Publishes the inbox (if new) and the installation, unless the network has them already.
    async fn publish_identity(&self, installation: &InstallationRecord, key: &SigningKey) -> Result<(), AgentError> {
        let history = self.network.inbox_history(&installation.inbox_id).await?;
        let installation_key = key.verifying_key().to_bytes();
        if grants(&history, &installation_key) {
            return Ok(());
        }
        let create_new_inbox = history.updates.is_empty();
        let timestamp_ns = timestamp_ns();
        let mut texts = Vec::new();
        if create_new_inbox {
            texts.push(ActionText::CreateInbox(Subject::Ethereum(&installation.wallet_address)));
        }
        texts.push(ActionText::Add(Subject::Installation(&installation_key)));
        let text = signature_text(&installation.inbox_id, timestamp_ns, &texts);
        let signed_by_wallet = self.identity.sign_xmtp_identity_update(installation.account_id, &text).await.map_err(AgentError::Identity)?;
        let mut actions = Vec::new();
        if create_new_inbox {
            actions.push(create_inbox(&installation.wallet_address, signed_by_wallet.clone()));
        }
        actions.push(add_installation(key, &text, signed_by_wallet)?);
        let update = IdentityUpdate { actions, client_timestamp_ns: timestamp_ns, inbox_id: installation.inbox_id.clone() };
        match self.network.publish_identity_update(update).await {
            Ok(()) => Ok(()),
            // Another replica may have published the same installation meanwhile.
            Err(error) => match self.network.inbox_history(&installation.inbox_id).await {
                Ok(history) if grants(&history, &installation_key) => Ok(()),
                _ => Err(error),
            },
        }
    }
}
