//! Signature primitives, byte-for-byte with libxmtp v1.9.0 xmtp_id.
use alloy_primitives::Signature as EthSignature;
use ed25519_dalek::{Signature as EdSignature, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};

/// xmtp_id/src/constants.rs — "DO NOT CHANGE. SIGNATURES WILL BREAK"
pub const INSTALLATION_KEY_SIGNATURE_CONTEXT: &[u8] = b"IDENTITY UPDATE SIGNATURE";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error("ecdsa signature must be 65 bytes (r||s||v), got {0}")]
    EcdsaLength(usize),
    #[error("ecdsa signature r/s out of range")]
    EcdsaScalar,
    #[error("ecdsa recovery byte {0} invalid")]
    EcdsaV(u8),
    #[error("ecdsa public key recovery failed")]
    EcdsaRecover,
    #[error("installation public key must be a 32-byte Ed25519 point")]
    Ed25519Key,
    #[error("installation signature must be 64 bytes, got {0}")]
    Ed25519Length(usize),
    #[error("ed25519 signature verification failed")]
    Ed25519Verify,
    #[error("passkey public key is not a SEC1 P-256 point")]
    PasskeyKey,
    #[error("passkey signature is not DER ECDSA")]
    PasskeyDer,
    #[error("passkey client_data_json invalid or challenge != base64url(signature text)")]
    PasskeyClientData,
    #[error("passkey signature verification failed")]
    PasskeyVerify,
}

/// Result of recovering an EIP-191 (personal_sign) signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredEcdsa {
    /// "0x" + 40 lowercase hex — libxmtp h160addr_to_string
    pub address: String,
    /// libxmtp `to_lower_s` output: r || low-s || original v byte. This is what libxmtp
    /// stores as `raw_bytes` (replay / seen_signatures key).
    pub normalized: Vec<u8>,
}

/// libxmtp VerifiedSignature::from_recoverable_ecdsa (verified_signature.rs) + to_lower_s
/// (signature.rs): k256 parse of r||s (rejects 0 and >= n), s -> n-s if high **without
/// flipping v**, then alloy `Signature::try_from(65 bytes)` (v ∈ {0,1,27,28,35..}) and
/// `recover_address_from_msg` (EIP-191 prefix + keccak256).
pub fn recover_eip191(text: &str, sig: &[u8]) -> Result<RecoveredEcdsa, SigError> {
    // to_lower_s accepts 64 or 65 bytes, but the alloy parse right after needs exactly 65.
    if sig.len() != 65 {
        return Err(SigError::EcdsaLength(sig.len()));
    }
    let k = k256::ecdsa::Signature::try_from(&sig[..64]).map_err(|_| SigError::EcdsaScalar)?;
    let mut normalized = match k.normalize_s() {
        Some(low) => low.to_bytes().to_vec(),
        None => sig[..64].to_vec(),
    };
    normalized.push(sig[64]);
    let parsed = EthSignature::try_from(normalized.as_slice()).map_err(|_| SigError::EcdsaV(sig[64]))?;
    let addr = parsed.recover_address_from_msg(text.as_bytes()).map_err(|_| SigError::EcdsaRecover)?;
    Ok(RecoveredEcdsa { address: format!("0x{}", hex::encode(addr.as_slice())), normalized })
}

/// libxmtp `CredentialVerify::credential_verify::<InstallationKeyContext>`: Ed25519ph
/// (SHA-512 prehash of the UTF-8 text) with context "IDENTITY UPDATE SIGNATURE".
pub fn verify_installation_signature(text: &str, sig: &[u8], public_key: &[u8]) -> Result<(), SigError> {
    // serialization.rs: `sig.public_key.as_slice().try_into()?` (32 bytes + point decompression)
    let vk = VerifyingKey::try_from(public_key).map_err(|_| SigError::Ed25519Key)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| SigError::Ed25519Length(sig.len()))?;
    let mut prehashed = Sha512::new();
    prehashed.update(text.as_bytes());
    vk.verify_prehashed(prehashed, Some(INSTALLATION_KEY_SIGNATURE_CONTEXT), &EdSignature::from_bytes(&sig)).map_err(|_| SigError::Ed25519Verify)
}

#[derive(serde::Deserialize)]
struct ClientDataJson {
    origin: String,
    challenge: String,
}

/// libxmtp VerifiedSignature::from_passkey. Returns (relying_party = clientData.origin,
/// raw signature bytes as libxmtp stores them = fixed 64-byte r||s).
pub fn verify_passkey(
    text: &str,
    public_key: &[u8],
    signature_der: &[u8],
    authenticator_data: &[u8],
    client_data_json: &[u8],
) -> Result<(String, Vec<u8>), SigError> {
    use base64::Engine as _;
    use p256::ecdsa::signature::Verifier as _;
    let cd: ClientDataJson = serde_json::from_slice(client_data_json).map_err(|_| SigError::PasskeyClientData)?;
    if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes()) != cd.challenge {
        return Err(SigError::PasskeyClientData);
    }
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| SigError::PasskeyKey)?;
    let sig = p256::ecdsa::Signature::from_der(signature_der).map_err(|_| SigError::PasskeyDer)?;
    let mut data = authenticator_data.to_vec();
    data.extend_from_slice(&Sha256::digest(client_data_json));
    vk.verify(&data, &sig).map_err(|_| SigError::PasskeyVerify)?;
    Ok((cd.origin, sig.to_vec()))
}

/// inbox id = lowercase hex(sha256(identifier_string + decimal nonce)), member.rs `inbox_id`.
/// For Ethereum the identifier string must be 42 chars, "0x", hex (case NOT normalised here —
/// libxmtp hashes the string as sent; the signer check forces it to be lowercase anyway).
pub fn inbox_id_for(identifier: &str, nonce: u64) -> String {
    hex::encode(Sha256::digest(format!("{identifier}{nonce}").as_bytes()))
}

pub fn is_valid_eth_address_for_inbox(addr: &str) -> bool {
    addr.len() == 42 && addr.starts_with("0x") && addr[2..].chars().all(|c| c.is_ascii_hexdigit())
}
