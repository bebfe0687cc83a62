//! Ethereum signatures and the texts Clawx asks wallets to sign.
//!
//! Signed-expiry requests: the message for `(domain, expiry, device)` is the lowercase hex
//! SHA-256 of `clawx:signed-request:v1\n<domain>\n<expiry ms>\n<device true|false>`; the wallet
//! signs that 64-character text as UTF-8 with EIP-191 `personal_sign`.

use alloy_primitives::{Address, Signature, U256};
use sha2::{Digest, Sha256};

/// Why a signature cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureProblem {
    /// Not 65 bytes of hex, or an impossible `v`, `r` or `s`.
    Malformed(&'static str),
    /// `s` in the upper half of the curve order (a malleated signature).
    NotCanonical,
}

/// Parses a 65-byte `r || s || v` signature, hex with or without `0x`; `v` may be 27/28 or 0/1.
pub fn parse_signature(text: &str) -> Result<Signature, SignatureProblem> {
    let digits = text.trim().strip_prefix("0x").unwrap_or(text.trim());
    if digits.len() != 130 {
        return Err(SignatureProblem::Malformed("a signature must be 65 bytes of hex"));
    }
    let bytes = hex::decode(digits).map_err(|_| SignatureProblem::Malformed("a signature must be 65 bytes of hex"))?;
    let parity = match bytes[64] {
        0 | 27 => false,
        1 | 28 => true,
        _ => return Err(SignatureProblem::Malformed("the signature's v must be 27 or 28")),
    };
    let r = U256::from_be_slice(&bytes[..32]);
    let s = U256::from_be_slice(&bytes[32..64]);
    if r.is_zero() || s.is_zero() {
        return Err(SignatureProblem::Malformed("the signature's r and s must not be zero"));
    }
    let signature = Signature::new(r, s, parity);
    if signature.normalize_s().is_some() {
        return Err(SignatureProblem::NotCanonical);
    }
    Ok(signature)
}

/// The address that signed `message` with EIP-191 `personal_sign`, if any.
pub fn recover_personal_sign(signature: &Signature, message: &[u8]) -> Option<Address> {
    signature.recover_address_from_msg(message).ok()
}

/// The text to sign for a signed-expiry request.
pub fn signed_request_message(domain: &str, expiry_ms: i64, device: bool) -> String {
    let digest = Sha256::digest(format!("clawx:signed-request:v1\n{domain}\n{expiry_ms}\n{device}").as_bytes());
    hex::encode(digest)
}

/// The XMTP inbox id of a wallet, as XMTP clients compute it: the hex SHA-256 of the lowercase
/// address followed by the decimal nonce (1).
pub fn xmtp_inbox_id(address: &Address) -> String {
    hex::encode(Sha256::digest(format!("{address:#x}1").as_bytes()))
}

/// An EIP-4361 sign-in message proving control of `address` to link it to an account.
pub fn link_wallet_message(authority: &str, uri: &str, address_checksummed: &str, nonce: &str, issued_at: &str, expires_at: &str) -> String {
    format!(
        "{authority} wants you to sign in with your Ethereum account:\n{address_checksummed}\n\n\
         Link this wallet to your Clawx account.\n\n\
         URI: {uri}\nVersion: 1\nChain ID: 1\nNonce: {nonce}\nIssued At: {issued_at}\nExpiration Time: {expires_at}"
    )
}

/// The nonce line of a link message.
pub fn nonce_of(message: &str) -> Option<&str> {
    message.lines().find_map(|line| line.strip_prefix("Nonce: ")).map(str::trim)
}

#[cfg(test)]
mod tests {
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    fn hex_signature(signature: &Signature) -> String {
        hex::encode(signature.as_bytes())
    }

    #[test]
    fn personal_sign_round_trip_and_rejections() {
        let signer = PrivateKeySigner::random();
        let message = signed_request_message("alice", 1_900_000_000_000, true);
        assert_eq!(message.len(), 64);
        let signature = signer.sign_message_sync(message.as_bytes()).unwrap();
        let text = hex_signature(&signature);
        let parsed = parse_signature(&format!("0x{text}")).unwrap();
        assert_eq!(recover_personal_sign(&parsed, message.as_bytes()), Some(signer.address()));
        // v as 0/1 is accepted too.
        let mut raw = signature.as_bytes();
        raw[64] -= 27;
        assert_eq!(recover_personal_sign(&parse_signature(&hex::encode(raw)).unwrap(), message.as_bytes()), Some(signer.address()));
        // A different message recovers to someone else.
        let other = signed_request_message("alice", 1_900_000_000_000, false);
        assert_ne!(recover_personal_sign(&parsed, other.as_bytes()), Some(signer.address()));
        // The malleated twin (n - s, flipped v) is refused.
        let order: U256 = "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141".parse().unwrap();
        let high = Signature::new(signature.r(), order - signature.s(), !signature.v());
        assert_eq!(recover_personal_sign(&high, message.as_bytes()), Some(signer.address()), "the twin is valid math");
        assert_eq!(parse_signature(&hex_signature(&high)), Err(SignatureProblem::NotCanonical));
        assert!(matches!(parse_signature("0x1234"), Err(SignatureProblem::Malformed(_))));
        let mut bad_v = signature.as_bytes();
        bad_v[64] = 5;
        assert!(matches!(parse_signature(&hex::encode(bad_v)), Err(SignatureProblem::Malformed(_))));
    }

    #[test]
    fn inbox_id_matches_xmtp() {
        // sha256("0x0000000000000000000000000000000000000001" + "1")
        let address: Address = "0x0000000000000000000000000000000000000001".parse().unwrap();
        assert_eq!(xmtp_inbox_id(&address), hex::encode(Sha256::digest(b"0x00000000000000000000000000000000000000011")));
    }

    #[test]
    fn link_messages_carry_their_nonce() {
        let message = link_wallet_message("127.0.0.1:8080", "http://127.0.0.1:8080", "0xAb", "n0nce", "a", "b");
        assert_eq!(nonce_of(&message), Some("n0nce"));
        assert!(message.starts_with("127.0.0.1:8080 wants you to sign in with your Ethereum account:\n0xAb\n"));
    }
}
