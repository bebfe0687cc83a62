//! Agent-initiated DMs: an MLS group of XMTP's DM kind between the account's installation and
//! every installation of the peer's inbox, announced by a commit and a welcome per installation
//! (wrapped as its key package asks: X-Wing or Curve25519 HPKE, see [`super::wrapper`]).

use std::collections::HashMap;

use clawx_proto::xmtp::{
    identity::associations::{MemberIdentifier, identity_action, member_identifier},
    mls::{
        api::v1::{WelcomeMessageInput, welcome_message_input},
        message_contents::{
            ConversationType, DmMembers, GroupMembership, GroupMetadataV1, GroupMutableMetadataV1, GroupMutablePermissionsV1, Inbox, Inboxes,
            MembershipPolicy, MetadataPolicy, PermissionsUpdatePolicy, PolicySet, membership_policy, metadata_policy, permissions_update_policy,
        },
    },
};
use openmls::prelude::*;
use prost::Message as _;
use tls_codec::{Deserialize as _, Serialize as _};

use super::{AgentError, Engine, mls, network::InboxHistory, state::MlsSession, wrapper::Wrapper};

/// Most installations of a peer a DM is opened with.
pub const MAX_PEER_INSTALLATIONS: usize = 64;
/// The mutable metadata fields XMTP clients know; in a DM either member may change any.
const METADATA_FIELDS: [&str; 7] = [
    "group_name",
    "description",
    "group_image_url_square",
    "message_disappear_from_ns",
    "message_disappear_in_ns",
    "minimum_supported_protocol_version",
    "app_data",
];

/// The installations an inbox's history grants and has not revoked.
fn installations(history: &InboxHistory) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for (_, update) in &history.updates {
        for action in &update.actions {
            let key_of = |member: &Option<MemberIdentifier>| match member.as_ref().and_then(|member| member.kind.clone()) {
                Some(member_identifier::Kind::InstallationPublicKey(key)) => Some(key),
                _ => None,
            };
            match &action.kind {
                Some(identity_action::Kind::Add(add)) => keys.extend(key_of(&add.new_member_identifier)),
                Some(identity_action::Kind::Revoke(revoke)) => {
                    if let Some(revoked) = key_of(&revoke.member_to_revoke) {
                        keys.retain(|key| *key != revoked);
                    }
                }
                _ => {}
            }
        }
    }
    keys.dedup();
    keys
}

fn unknown(id: u16, bytes: Vec<u8>) -> Extension {
    Extension::Unknown(id, UnknownExtension(bytes))
}

/// The group context extensions of a DM between `own` and `peer` (XMTP's DM policies: nobody
/// adds or removes members or admins, either member may change the metadata).
fn dm_extensions(own: (&str, u64), peer: (&str, u64)) -> Result<Extensions<GroupContext>, AgentError> {
    let metadata = GroupMetadataV1 {
        conversation_type: ConversationType::Dm as i32,
        creator_account_address: String::new(),
        creator_inbox_id: own.0.to_string(),
        dm_members: Some(DmMembers {
            dm_member_one: Some(Inbox { inbox_id: own.0.to_string() }),
            dm_member_two: Some(Inbox { inbox_id: peer.0.to_string() }),
        }),
        oneshot_message: None,
    };
    // This one extension is a TLS byte vector around the protobuf; the others are bare.
    let immutable = tls_codec::VLBytes::new(metadata.encode_to_vec()).tls_serialize_detached().map_err(|error| AgentError::Mls(error.to_string()))?;
    let mutable = GroupMutableMetadataV1 {
        attributes: [("group_name", ""), ("description", ""), ("group_image_url_square", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        admin_list: Some(Inboxes { inbox_ids: Vec::new() }),
        super_admin_list: Some(Inboxes { inbox_ids: Vec::new() }),
    };
    let deny_members = MembershipPolicy { kind: Some(membership_policy::Kind::Base(membership_policy::BasePolicy::Deny as i32)) };
    let deny_permissions =
        PermissionsUpdatePolicy { kind: Some(permissions_update_policy::Kind::Base(permissions_update_policy::PermissionsBasePolicy::Deny as i32)) };
    let allow_metadata = MetadataPolicy { kind: Some(metadata_policy::Kind::Base(metadata_policy::MetadataBasePolicy::Allow as i32)) };
    let permissions = GroupMutablePermissionsV1 {
        policies: Some(PolicySet {
            add_member_policy: Some(deny_members.clone()),
            remove_member_policy: Some(deny_members),
            update_metadata_policy: METADATA_FIELDS.iter().map(|field| (field.to_string(), allow_metadata.clone())).collect::<HashMap<_, _>>(),
            add_admin_policy: Some(deny_permissions.clone()),
            remove_admin_policy: Some(deny_permissions.clone()),
            update_permissions_policy: Some(deny_permissions),
        }),
    };
    let membership = GroupMembership {
        members: [(own.0.to_string(), own.1), (peer.0.to_string(), peer.1)].into_iter().collect(),
        failed_installations: Vec::new(),
    };
    let required = [
        ExtensionType::Unknown(mls::GROUP_MEMBERSHIP_EXTENSION),
        ExtensionType::Unknown(mls::MUTABLE_METADATA_EXTENSION),
        ExtensionType::Unknown(mls::GROUP_PERMISSIONS_EXTENSION),
        ExtensionType::Unknown(mls::IMMUTABLE_METADATA_EXTENSION),
        ExtensionType::LastResort,
        ExtensionType::ApplicationId,
    ];
    Extensions::from_vec(vec![
        unknown(mls::IMMUTABLE_METADATA_EXTENSION, immutable),
        unknown(mls::MUTABLE_METADATA_EXTENSION, mutable.encode_to_vec()),
        unknown(mls::GROUP_MEMBERSHIP_EXTENSION, membership.encode_to_vec()),
        unknown(mls::GROUP_PERMISSIONS_EXTENSION, permissions.encode_to_vec()),
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &required,
            &[ProposalType::GroupContextExtensions],
            &[CredentialType::Basic],
        )),
    ])
    .map_err(|error| AgentError::Mls(format!("DM extensions: {error}")))
}

impl Engine {
    /// The account's DM group with `peer_inbox_id`: the one it already has (opened by either
    /// side), or a new group with every installation of the peer's inbox, announced on the
    /// network. `RecipientNotOnXmtp` when the inbox has no installation with a key package.
    #[tracing::instrument(name = "agent.open_dm", skip_all, fields(account.id = account_id))]
    pub async fn open_dm(&self, account_id: i64, peer_inbox_id: &str) -> Result<Vec<u8>, AgentError> {
        let installation = self.ensure_ready(account_id).await?;
        {
            let session = MlsSession::open(self.store.as_ref(), &self.keyring, account_id).await?;
            if let Some(group_id) = super::receive::dm_group_of(session.provider(), peer_inbox_id) {
                return Ok(group_id);
            }
        }
        let key = self.signing_key(&installation).await?;
        let peer_history = self.network.inbox_history(peer_inbox_id).await?;
        let mut peer_installations = installations(&peer_history);
        peer_installations.truncate(MAX_PEER_INSTALLATIONS);
        if peer_installations.is_empty() {
            return Err(AgentError::RecipientNotOnXmtp);
        }
        let own_history = self.network.inbox_history(&installation.inbox_id).await?;
        let session = MlsSession::open(self.store.as_ref(), &self.keyring, account_id).await?;
        let provider = session.provider();
        // Another replica may have opened it meanwhile.
        if let Some(group_id) = super::receive::dm_group_of(provider, peer_inbox_id) {
            return Ok(group_id);
        }
        let mut key_packages = Vec::new();
        let mut wrappers = Vec::new();
        for bytes in self.network.key_packages(&peer_installations).await?.into_iter().flatten() {
            let parsed = KeyPackageIn::tls_deserialize_exact(&bytes)
                .ok()
                .and_then(|key_package| key_package.validate(provider.crypto(), ProtocolVersion::Mls10).ok());
            let Some(key_package) = parsed else {
                tracing::warn!("a peer installation's key package is invalid; it is left out of the DM");
                continue;
            };
            // A valid key package whose welcome wrapper extension cannot be read fails the DM,
            // as it fails XMTP clients' own: no fallback to Curve25519 and its init key.
            let wrapper = Wrapper::for_key_package(&key_package)?;
            tracing::debug!(
                installation = %hex::encode(key_package.leaf_node().signature_key().as_slice()),
                wrapper = wrapper.name(),
                "the peer installation's key package asks for this welcome wrapper"
            );
            key_packages.push(key_package);
            wrappers.push(wrapper);
        }
        if key_packages.is_empty() {
            return Err(AgentError::RecipientNotOnXmtp);
        }
        let extensions =
            dm_extensions((&installation.inbox_id, own_history.latest_sequence_id()), (peer_inbox_id, peer_history.latest_sequence_id()))?;
        let signer = mls::signer(&key);
        let group_id: [u8; 16] = rand::random();
        let mut group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(&group_id))
            .ciphersuite(mls::CIPHERSUITE)
            .with_capabilities(mls::leaf_capabilities())
            .with_group_context_extensions(extensions)
            .with_leaf_node_extensions(mls::leaf_extensions(&installation.inbox_id)?)
            .map_err(|error| AgentError::Mls(format!("DM leaf: {error}")))?
            .use_ratchet_tree_extension(true)
            .max_past_epochs(3)
            .build(provider, &signer, mls::credential(&installation.inbox_id, &key))
            .map_err(|error| AgentError::Mls(format!("DM group: {error}")))?;
        let (commit, welcome, _) =
            group.add_members(provider, &signer, &key_packages).map_err(|error| AgentError::Mls(format!("DM members: {error}")))?;
        group.merge_pending_commit(provider).map_err(|error| AgentError::Mls(format!("DM commit: {error}")))?;
        let encode = |error: tls_codec::Error| AgentError::Mls(format!("encode: {error}"));
        let commit = commit.tls_serialize_detached().map_err(encode)?;
        let welcome = welcome.tls_serialize_detached().map_err(encode)?;
        let mut welcomes = Vec::with_capacity(key_packages.len());
        for (key_package, wrapper) in key_packages.iter().zip(&wrappers) {
            welcomes.push(WelcomeMessageInput {
                version: Some(welcome_message_input::Version::V1(welcome_message_input::V1 {
                    installation_key: key_package.leaf_node().signature_key().as_slice().to_vec(),
                    data: wrapper.seal(provider.crypto(), &welcome)?,
                    hpke_public_key: wrapper.public_key().to_vec(),
                    wrapper_algorithm: wrapper.algorithm() as i32,
                    welcome_metadata: Vec::new(),
                })),
            });
        }
        self.store.add_groups(account_id, &[group_id.to_vec()]).await?;
        // Announced before it is stored: a group nobody heard of is never kept, and a DM the
        // peers heard of but this replica lost would only be opened again.
        self.network.send_group_message(commit, false).await?;
        self.network.send_welcomes(welcomes).await?;
        super::receive::track_group(provider, &group_id);
        super::receive::remember_dm(provider, peer_inbox_id, &group_id);
        session.commit().await?;
        tracing::info!(group.id = %hex::encode(group_id), "XMTP DM opened");
        Ok(group_id.to_vec())
    }
}
