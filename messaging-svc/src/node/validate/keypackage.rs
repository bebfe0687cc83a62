//! (a) UploadKeyPackage validation with crates.io openmls 0.9.2.
use openmls::prelude::{BasicCredential, Ciphersuite, KeyPackageIn, KeyPackageVerifyError, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;
use prost::Message as _;
use tls_codec::Deserialize as _;

use clawx_proto::xmtp::identity::MlsCredential;

/// The only ciphersuite libxmtp uses (0x0003).
pub const XMTP_CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// Upper bound on an uploaded key package (libxmtp's are ~1.7 KB with the X-Wing key).
pub const MAX_KEY_PACKAGE_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct ValidatedKeyPackage {
    /// Leaf node signature key = Ed25519 installation public key (32 bytes). Storage key.
    pub installation_key: Vec<u8>,
    /// From BasicCredential(identity = MlsCredential{inbox_id}) — self-asserted by the uploader.
    pub inbox_id: String,
    pub hpke_init_key: Vec<u8>,
    /// Lifetime (seconds since epoch) from the leaf node.
    pub not_before: u64,
    pub not_after: u64,
    pub last_resort: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyPackageError {
    #[error("key package too large ({0} bytes)")]
    TooLarge(usize),
    #[error("key package is not a TLS-serialized MLS KeyPackage: {0}")]
    Malformed(#[from] tls_codec::Error),
    #[error("key package lifetime invalid: {0}")]
    Lifetime(KeyPackageVerifyError),
    #[error("key package verification failed: {0}")]
    Invalid(KeyPackageVerifyError),
    #[error("unsupported ciphersuite {0:#06x} (XMTP uses 0x0003)")]
    Ciphersuite(u16),
    #[error("leaf credential is not a BasicCredential")]
    NotBasicCredential,
    #[error("credential identity is not an xmtp.identity.MlsCredential: {0}")]
    BadCredential(#[from] prost::DecodeError),
    #[error("credential inbox_id {0:?} is not 64 lowercase hex characters")]
    BadInboxId(String),
    #[error("leaf ApplicationId extension does not equal the credential inbox_id")]
    ApplicationIdMismatch,
    #[error("openmls panicked while parsing")]
    Panic,
}

impl From<KeyPackageVerifyError> for KeyPackageError {
    fn from(e: KeyPackageVerifyError) -> Self {
        match e {
            KeyPackageVerifyError::LifetimeError(_) | KeyPackageVerifyError::MissingLifetime => KeyPackageError::Lifetime(e),
            e => KeyPackageError::Invalid(e),
        }
    }
}

pub fn is_inbox_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validate an uploaded key package exactly like libxmtp's mls_validation_service
/// (`VerifiedKeyPackageV2::from_bytes`), plus three stricter, libxmtp-compatible checks
/// (ciphersuite 0x0003, inbox_id format, ApplicationId == inbox_id when present).
pub fn validate_key_package(bytes: &[u8]) -> Result<ValidatedKeyPackage, KeyPackageError> {
    if bytes.len() > MAX_KEY_PACKAGE_BYTES {
        return Err(KeyPackageError::TooLarge(bytes.len()));
    }
    // openmls is not hardened against every crafted input: never let a panic cross the RPC.
    std::panic::catch_unwind(|| validate_inner(bytes)).unwrap_or(Err(KeyPackageError::Panic))
}

fn validate_inner(bytes: &[u8]) -> Result<ValidatedKeyPackage, KeyPackageError> {
    // Exact: trailing bytes are rejected (libxmtp also uses tls_deserialize_exact here).
    let kp_in = KeyPackageIn::tls_deserialize_exact(bytes)?;
    // Verifies: leaf node signature (source = key_package), protocol version 1.0,
    // init_key != encryption_key, KeyPackage signature (both with the leaf signature key),
    // KP extensions ⊆ leaf capabilities, lifetime present and valid *now*.
    let kp = kp_in.validate(&RustCrypto::default(), ProtocolVersion::Mls10)?;

    if kp.ciphersuite() != XMTP_CIPHERSUITE {
        return Err(KeyPackageError::Ciphersuite(kp.ciphersuite().into()));
    }
    let leaf = kp.leaf_node();
    let basic = BasicCredential::try_from(leaf.credential().clone()).map_err(|_| KeyPackageError::NotBasicCredential)?;
    let cred = MlsCredential::decode(basic.identity())?;
    if !is_inbox_id(&cred.inbox_id) {
        return Err(KeyPackageError::BadInboxId(cred.inbox_id));
    }
    if let Some(app_id) = leaf.extensions().application_id()
        && app_id.as_slice() != cred.inbox_id.as_bytes()
    {
        return Err(KeyPackageError::ApplicationIdMismatch);
    }
    let lifetime = kp.life_time();
    Ok(ValidatedKeyPackage {
        installation_key: leaf.signature_key().as_slice().to_vec(),
        inbox_id: cred.inbox_id,
        hpke_init_key: kp.hpke_init_key().as_slice().to_vec(),
        not_before: lifetime.not_before(),
        not_after: lifetime.not_after(),
        last_resort: kp.last_resort(),
    })
}
