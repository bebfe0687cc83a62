//! Receiving: an installation joins the groups its welcomes invite it to, then reads each
//! group's messages after its cursor, merging peers' commits and decrypting application
//! messages into [`ReceivedMessage`]s. Joins, group state and cursors change in one
//! [`MlsSession`], so a failed pull leaves nothing half-applied and the next pull starts over
//! from the last committed point.

use clawx_proto::xmtp::{
    identity::MlsCredential,
    mls::{
        api::v1::{group_message, welcome_message},
        message_contents::{ConversationType, EncodedContent, GroupMetadataV1, PlaintextEnvelope, WelcomeWrapperAlgorithm, plaintext_envelope},
    },
};
use openmls::prelude::*;
use prost::Message as _;
use tls_codec::Deserialize as _;

use super::{
    AgentError, Engine,
    mls::{CLAWX_ENTRY_PREFIX, IMMUTABLE_METADATA_EXTENSION, init_key_entry},
    state::{AgentProvider, MlsSession},
    wrapper::{self, xwing_key_entry},
};

/// Messages or welcomes read per page.
const PAGE: u32 = 100;
/// Pages read per pull, for welcomes and for each group: a bound on the work of one call (the
/// next pull reads on).
const MAX_PAGES: usize = 10;
/// Groups read per pull.
pub const MAX_GROUPS_PER_PULL: usize = 1000;

/// An application message an installation decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub group_id: Vec<u8>,
    /// The network's id of the message.
    pub xmtp_message_id: u64,
    pub sent_at_ns: u64,
    /// The inbox of the installation that sent it.
    pub sender_inbox_id: String,
    /// `authority/type:major.minor`, e.g. `xmtp.org/text:1.0`.
    pub content_type: String,
    /// The text of `xmtp.org/text` content (UTF-8, uncompressed).
    pub text: Option<String>,
    /// What the sender offers instead of content this engine does not decode.
    pub fallback: Option<String>,
    pub idempotency_key: String,
}

fn welcome_cursor_entry() -> Vec<u8> {
    [CLAWX_ENTRY_PREFIX, b"welcome-cursor"].concat()
}

/// The state entry of a joined group: its message cursor.
fn group_entry(group_id: &[u8]) -> Vec<u8> {
    [CLAWX_ENTRY_PREFIX, b"group/", group_id].concat()
}

/// The state entry naming the account's DM group with a peer inbox.
fn dm_entry(peer_inbox_id: &str) -> Vec<u8> {
    [CLAWX_ENTRY_PREFIX, b"dm/", peer_inbox_id.as_bytes()].concat()
}

/// The account's DM group with `peer_inbox_id`, if it has one.
pub(crate) fn dm_group_of(provider: &AgentProvider, peer_inbox_id: &str) -> Option<Vec<u8>> {
    provider.storage().values.read().expect("MLS storage lock").get(&dm_entry(peer_inbox_id)).cloned()
}

/// Records the account's DM group with `peer_inbox_id`; the first one recorded stays.
pub(crate) fn remember_dm(provider: &AgentProvider, peer_inbox_id: &str, group_id: &[u8]) {
    provider.storage().values.write().expect("MLS storage lock").entry(dm_entry(peer_inbox_id)).or_insert_with(|| group_id.to_vec());
}

/// The other member of a DM group (from its immutable metadata), if the group is a DM.
fn dm_peer(group: &MlsGroup, own_inbox_id: &str) -> Option<String> {
    let bytes = &group.extensions().unknown(IMMUTABLE_METADATA_EXTENSION)?.0;
    let metadata = GroupMetadataV1::decode(tls_codec::VLBytes::tls_deserialize_exact(bytes).ok()?.as_slice()).ok()?;
    if metadata.conversation_type != ConversationType::Dm as i32 {
        return None;
    }
    let members = metadata.dm_members?;
    [members.dm_member_one, members.dm_member_two].into_iter().flatten().map(|inbox| inbox.inbox_id).find(|inbox_id| inbox_id != own_inbox_id)
}

/// Makes `receive` read a group this installation created.
pub(crate) fn track_group(provider: &AgentProvider, group_id: &[u8]) {
    write_u64(provider, group_entry(group_id), 0);
}

fn read_u64(provider: &AgentProvider, key: &[u8]) -> u64 {
    let values = provider.storage().values.read().expect("MLS storage lock");
    values.get(key).and_then(|value| <[u8; 8]>::try_from(value.as_slice()).ok()).map_or(0, u64::from_be_bytes)
}

fn write_u64(provider: &AgentProvider, key: Vec<u8>, value: u64) {
    provider.storage().values.write().expect("MLS storage lock").insert(key, value.to_be_bytes().to_vec());
}

fn mls_error(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> AgentError {
    move |error| AgentError::Mls(format!("{what}: {error}"))
}

/// Opens a welcome's wrapper: HPKE to one of the installation's key packages, with X-Wing to
/// its X-Wing key (`wrapper_algorithm` 2) or Curve25519 to its init key (1, and as XMTP clients
/// read it, 0 and unknown values); the symmetric-key wrapper (3) of pointed-to welcomes is not
/// for this installation, whose key packages ask for no welcome pointers.
fn unwrap_welcome(provider: &AgentProvider, data: &[u8], hpke_public_key: &[u8], wrapper_algorithm: i32) -> Result<Vec<u8>, AgentError> {
    let secret_of = |entry: Vec<u8>| {
        provider
            .storage()
            .values
            .read()
            .expect("MLS storage lock")
            .get(&entry)
            .cloned()
            .ok_or_else(|| AgentError::Mls("welcome for a key package this installation does not hold".into()))
    };
    match WelcomeWrapperAlgorithm::try_from(wrapper_algorithm) {
        Ok(WelcomeWrapperAlgorithm::XwingMlkem768Draft6) => wrapper::open_xwing(data, &secret_of(xwing_key_entry(hpke_public_key))?),
        Ok(WelcomeWrapperAlgorithm::SymmetricKey) => Err(AgentError::Mls("a symmetric-key welcome without its pointer".into())),
        _ => wrapper::open_curve25519(provider.crypto(), data, &secret_of(init_key_entry(hpke_public_key))?),
    }
}

/// Opens a welcome (HPKE to one of the installation's key packages), joins its group; the
/// group's id.
fn join(provider: &AgentProvider, data: &[u8], hpke_public_key: &[u8], wrapper_algorithm: i32, own_inbox_id: &str) -> Result<GroupId, AgentError> {
    let welcome_bytes = unwrap_welcome(provider, data, hpke_public_key, wrapper_algorithm)?;
    let message = MlsMessageIn::tls_deserialize_exact(&welcome_bytes).map_err(|error| mls_error("welcome")(&error))?;
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(AgentError::Mls("welcome data is not an MLS Welcome".into()));
    };
    let join_config = MlsGroupJoinConfig::builder().use_ratchet_tree_extension(true).max_past_epochs(3).build();
    let staged = StagedWelcome::new_from_welcome(provider, &join_config, welcome, None).map_err(|error| mls_error("welcome")(&error))?;
    let group = staged.into_group(provider).map_err(|error| mls_error("join")(&error))?;
    if let Some(peer) = dm_peer(&group, own_inbox_id) {
        remember_dm(provider, &peer, group.group_id().as_slice());
    }
    Ok(group.group_id().clone())
}

/// The inbox a credential names.
fn inbox_of(credential: &Credential) -> String {
    BasicCredential::try_from(credential.clone())
        .ok()
        .and_then(|basic| MlsCredential::decode(basic.identity()).ok())
        .map(|credential| credential.inbox_id)
        .unwrap_or_default()
}

/// Decodes an application message's plaintext: `None` for envelopes that carry no content
/// (device sync).
fn decode(plaintext: &[u8]) -> Option<(String, Option<String>, Option<String>, String)> {
    let envelope = PlaintextEnvelope::decode(plaintext).ok()?;
    let (content, idempotency_key) = match envelope.content? {
        plaintext_envelope::Content::V1(v1) => (v1.content, v1.idempotency_key),
        plaintext_envelope::Content::V2(v2) => match v2.message_type? {
            plaintext_envelope::v2::MessageType::Content(content) => (content, v2.idempotency_key),
            _ => return None,
        },
    };
    let encoded = EncodedContent::decode(content.as_slice()).ok()?;
    let kind = encoded.r#type.clone().unwrap_or_default();
    let content_type = format!("{}/{}:{}.{}", kind.authority_id, kind.type_id, kind.version_major, kind.version_minor);
    let is_text = kind.authority_id == "xmtp.org" && kind.type_id == "text" && encoded.compression.is_none();
    let text = if is_text { String::from_utf8(encoded.content).ok() } else { None };
    Some((content_type, text, encoded.fallback, idempotency_key))
}

impl Engine {
    /// Pulls the account's new welcomes and group messages from the network; the application
    /// messages decrypted, in order per group.
    pub async fn receive(&self, account_id: i64) -> Result<Vec<ReceivedMessage>, AgentError> {
        let mut received = Vec::new();
        self.receive_with(account_id, |messages| {
            received = messages;
            async { Ok(0) }
        })
        .await?;
        Ok(received)
    }

    /// Pulls as [`receive`](Self::receive) and hands the messages to `deliver` before the new
    /// group state and cursors are stored: messages `deliver` could not keep are decrypted
    /// again by the next pull, so `deliver` must be idempotent. What `deliver` answers.
    #[tracing::instrument(name = "agent.receive", skip_all, fields(account.id = account_id))]
    pub async fn receive_with<F, Fut>(&self, account_id: i64, deliver: F) -> Result<usize, AgentError>
    where
        F: FnOnce(Vec<ReceivedMessage>) -> Fut,
        Fut: Future<Output = Result<usize, AgentError>>,
    {
        let installation = self.ensure_ready(account_id).await?;
        let session = MlsSession::open(self.store.as_ref(), &self.keyring, account_id).await?;
        let provider = session.provider();

        let mut cursor = read_u64(provider, &welcome_cursor_entry());
        let mut joined = Vec::new();
        for _ in 0..MAX_PAGES {
            let welcomes = self.network.welcomes(&installation.installation_key, cursor, PAGE).await?;
            let full = welcomes.len() as u32 >= PAGE;
            for welcome in welcomes {
                let Some(welcome_message::Version::V1(v1)) = welcome.version else { continue };
                cursor = cursor.max(v1.id);
                match join(provider, &v1.data, &v1.hpke_public_key, v1.wrapper_algorithm, &installation.inbox_id) {
                    Ok(group_id) => {
                        write_u64(provider, group_entry(group_id.as_slice()), 0);
                        joined.push(group_id.to_vec());
                        tracing::info!(group.id = %hex::encode(group_id.as_slice()), "joined an XMTP group");
                    }
                    Err(error) => tracing::warn!(%error, welcome.id = v1.id, "welcome skipped"),
                }
            }
            if !full {
                break;
            }
        }
        write_u64(provider, welcome_cursor_entry(), cursor);

        let group_prefix = group_entry(&[]);
        let groups: Vec<(Vec<u8>, u64)> = {
            let values = provider.storage().values.read().expect("MLS storage lock");
            values
                .iter()
                .filter_map(|(key, value)| {
                    let group_id = key.strip_prefix(group_prefix.as_slice())?.to_vec();
                    Some((group_id, <[u8; 8]>::try_from(value.as_slice()).map_or(0, u64::from_be_bytes)))
                })
                .take(MAX_GROUPS_PER_PULL)
                .collect()
        };
        let mut received = Vec::new();
        for (group_id, mut cursor) in groups {
            let Some(mut group) =
                MlsGroup::load(provider.storage(), &GroupId::from_slice(&group_id)).map_err(|error| mls_error("load group")(&error))?
            else {
                continue;
            };
            for _ in 0..MAX_PAGES {
                let messages = self.network.group_messages(&group_id, cursor, PAGE).await?;
                let full = messages.len() as u32 >= PAGE;
                for message in messages {
                    let Some(group_message::Version::V1(v1)) = message.version else { continue };
                    cursor = cursor.max(v1.id);
                    let Ok(protocol) =
                        MlsMessageIn::tls_deserialize_exact(&v1.data).map_err(|_| ()).and_then(|m| m.try_into_protocol_message().map_err(|_| ()))
                    else {
                        tracing::warn!(message.id = v1.id, "group message is not an MLS protocol message; skipped");
                        continue;
                    };
                    // Messages of epochs before this installation joined cannot be read by it.
                    if protocol.epoch() < group.epoch() {
                        continue;
                    }
                    let processed = match group.process_message(provider, protocol) {
                        Ok(processed) => processed,
                        Err(error) => {
                            tracing::warn!(%error, message.id = v1.id, "group message skipped");
                            continue;
                        }
                    };
                    let sender_inbox_id = inbox_of(processed.credential());
                    match processed.into_content() {
                        ProcessedMessageContent::ApplicationMessage(application) => {
                            if let Some((content_type, text, fallback, idempotency_key)) = decode(&application.into_bytes()) {
                                received.push(ReceivedMessage {
                                    group_id: group_id.clone(),
                                    xmtp_message_id: v1.id,
                                    sent_at_ns: v1.created_ns,
                                    sender_inbox_id,
                                    content_type,
                                    text,
                                    fallback,
                                    idempotency_key,
                                });
                            }
                        }
                        ProcessedMessageContent::StagedCommitMessage(staged) => {
                            group.merge_staged_commit(provider, *staged).map_err(|error| mls_error("merge commit")(&error))?;
                        }
                        _ => {}
                    }
                }
                if !full {
                    break;
                }
            }
            write_u64(provider, group_entry(&group_id), cursor);
        }
        // Groups are recorded first: a group the state holds always wakes this account.
        self.store.add_groups(account_id, &joined).await?;
        let delivered = deliver(received).await?;
        session.commit().await?;
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use tls_codec::Serialize as _;

    use super::*;
    use crate::agent::{mls, wrapper::Wrapper};

    /// A group of `creator`'s with `member_key_package` added; the TLS-serialized welcome.
    fn invite(creator: &AgentProvider, key: &SigningKey, member_key_package: KeyPackage) -> (GroupId, Vec<u8>) {
        let signer = mls::signer(key);
        let mut group = MlsGroup::builder()
            .ciphersuite(mls::CIPHERSUITE)
            .with_capabilities(mls::leaf_capabilities())
            .use_ratchet_tree_extension(true)
            .build(creator, &signer, mls::credential("alice-inbox", key))
            .unwrap();
        let (_, welcome, _) = group.add_members(creator, &signer, &[member_key_package]).unwrap();
        group.merge_pending_commit(creator).unwrap();
        (group.group_id().clone(), welcome.tls_serialize_detached().unwrap())
    }

    #[test]
    fn clawx_installations_exchange_xwing_wrapped_welcomes() {
        let (alice, bob) = (AgentProvider::default(), AgentProvider::default());
        let (alice_key, bob_key) = (SigningKey::generate(&mut rand::rngs::OsRng), SigningKey::generate(&mut rand::rngs::OsRng));
        let bytes = mls::key_package(&bob, "bob-inbox", &bob_key).unwrap().bytes;
        let key_package = KeyPackageIn::tls_deserialize_exact(&bytes).unwrap().validate(alice.crypto(), ProtocolVersion::Mls10).unwrap();

        // Bob's key package asks for X-Wing; Alice wraps the welcome so, Bob opens it and joins.
        let wrapper = Wrapper::for_key_package(&key_package).unwrap();
        assert_eq!((wrapper.name(), wrapper.algorithm() as i32, wrapper.public_key().len()), ("X-Wing", 2, 1216));
        let (group_id, welcome) = invite(&alice, &alice_key, key_package.clone());
        let data = wrapper.seal(alice.crypto(), &welcome).unwrap();
        assert!(join(&bob, &data, wrapper.public_key(), 1, "bob-inbox").is_err(), "an X-Wing key is not a Curve25519 one");
        assert_eq!(join(&bob, &data, wrapper.public_key(), 2, "bob-inbox").unwrap(), group_id);

        // A sender that ignores the X-Wing key wraps to the init key with Curve25519: Bob opens
        // that too (the key package is a last-resort one, so it can be used again).
        let init = Wrapper::Curve25519(key_package.hpke_init_key().as_slice().to_vec());
        let (group_id, welcome) = invite(&alice, &alice_key, key_package);
        let data = init.seal(alice.crypto(), &welcome).unwrap();
        assert!(join(&bob, &data, init.public_key(), 2, "bob-inbox").is_err(), "no X-Wing key is held for an init key");
        assert_eq!(join(&bob, &data, init.public_key(), 0, "bob-inbox").unwrap(), group_id, "unspecified reads as Curve25519");
    }
}
