//! The MLS profile XMTP clients expect of an installation: ciphersuite, credential, leaf
//! capabilities and key packages (checked against `@xmtp/node-sdk` 5.5.0).

use ed25519_dalek::SigningKey;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use prost::Message as _;
use tls_codec::Serialize as _;

use clawx_proto::xmtp::identity::MlsCredential;

use super::{
    AgentError,
    state::AgentProvider,
    wrapper::{XWingKeyPair, xwing_key_entry},
};

/// The only ciphersuite XMTP uses (0x0003).
pub const CIPHERSUITE: Ciphersuite = crate::node::validate::keypackage::XMTP_CIPHERSUITE;

/// XMTP's private MLS extensions.
pub const MUTABLE_METADATA_EXTENSION: u16 = 0xff00;
pub const GROUP_MEMBERSHIP_EXTENSION: u16 = 0xff01;
pub const GROUP_PERMISSIONS_EXTENSION: u16 = 0xff02;
pub const WELCOME_WRAPPER_ENCRYPTION_EXTENSION: u16 = 0xff03;
pub const WELCOME_POINTEE_AEAD_TYPES_EXTENSION: u16 = 0xff04;
/// The group's immutable metadata (conversation type, DM members).
pub const IMMUTABLE_METADATA_EXTENSION: u16 = 0xf000;

/// The installation's MLS signer: its Ed25519 key.
pub fn signer(key: &SigningKey) -> SignatureKeyPair {
    SignatureKeyPair::from_raw(SignatureScheme::ED25519, key.to_bytes().to_vec(), key.verifying_key().to_bytes().to_vec())
}

/// The installation's credential: a basic credential naming its inbox, with its Ed25519 key.
pub fn credential(inbox_id: &str, key: &SigningKey) -> CredentialWithKey {
    let identity = MlsCredential { inbox_id: inbox_id.to_string() }.encode_to_vec();
    CredentialWithKey { credential: BasicCredential::new(identity).into(), signature_key: key.verifying_key().to_bytes().to_vec().into() }
}

/// What an installation's leaf node supports. The key package carries an X-Wing welcome-wrapper
/// key (so senders wrap welcomes with X-Wing HPKE) and no welcome-pointer extension (so senders
/// send it whole welcomes, never pointers).
pub fn leaf_capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[
            ExtensionType::LastResort,
            ExtensionType::ApplicationId,
            ExtensionType::Unknown(GROUP_PERMISSIONS_EXTENSION),
            ExtensionType::Unknown(MUTABLE_METADATA_EXTENSION),
            ExtensionType::Unknown(GROUP_MEMBERSHIP_EXTENSION),
            ExtensionType::Unknown(WELCOME_WRAPPER_ENCRYPTION_EXTENSION),
            ExtensionType::Unknown(WELCOME_POINTEE_AEAD_TYPES_EXTENSION),
            ExtensionType::Unknown(IMMUTABLE_METADATA_EXTENSION),
        ]),
        Some(&[ProposalType::GroupContextExtensions]),
        None,
    )
}

/// The leaf extensions of an installation: its inbox id as application id.
pub fn leaf_extensions(inbox_id: &str) -> Result<Extensions<LeafNode>, AgentError> {
    Extensions::single(Extension::ApplicationId(ApplicationIdExtension::new(inbox_id.as_bytes()))).map_err(|error| AgentError::Mls(error.to_string()))
}

/// A key package made and kept (with its private keys) in the session's state.
#[derive(Debug)]
pub struct NewKeyPackage {
    /// TLS-serialized, as uploaded.
    pub bytes: Vec<u8>,
    /// Unix seconds after which clients refuse it.
    pub not_after: u64,
}

/// A last-resort key package for the installation, stored in `provider`'s state.
pub fn key_package(provider: &AgentProvider, inbox_id: &str, key: &SigningKey) -> Result<NewKeyPackage, AgentError> {
    let mls = |error: &dyn std::fmt::Display| AgentError::Mls(format!("key package: {error}"));
    let xwing = XWingKeyPair::generate()?;
    let key_package_extensions =
        Extensions::from_vec(vec![Extension::LastResort(LastResortExtension::default()), xwing.extension()]).map_err(|error| mls(&error))?;
    let bundle = KeyPackage::builder()
        .leaf_node_capabilities(leaf_capabilities())
        .leaf_node_extensions(leaf_extensions(inbox_id)?)
        .key_package_extensions(key_package_extensions)
        .build(CIPHERSUITE, provider, &signer(key), credential(inbox_id, key))
        .map_err(|error| mls(&error))?;
    let key_package = bundle.key_package();
    let bytes = key_package.tls_serialize_detached().map_err(|error| mls(&error))?;
    // Welcomes are wrapped (HPKE) outside MLS, to the X-Wing key (or, by senders that ignore
    // it, to the init key); keep both secret keys by their public keys, beside openmls' own
    // state (encrypted at rest with it).
    let init_public = key_package.hpke_init_key().as_slice().to_vec();
    let mut values = provider.storage().values.write().map_err(|_| AgentError::Mls("MLS storage lock poisoned".into()))?;
    values.insert(init_key_entry(&init_public), bundle.init_private_key().to_vec());
    values.insert(xwing_key_entry(&xwing.public), xwing.secret.clone());
    Ok(NewKeyPackage { bytes, not_after: key_package.life_time().not_after() })
}

/// Prefix of the state entries Clawx keeps beside openmls' (openmls' keys start with its
/// labels, none of which starts so).
pub const CLAWX_ENTRY_PREFIX: &[u8] = b"clawx/";

/// The state entry holding the private init key of a key package, by its public key.
pub fn init_key_entry(init_public: &[u8]) -> Vec<u8> {
    [CLAWX_ENTRY_PREFIX, b"init-key/", init_public].concat()
}
