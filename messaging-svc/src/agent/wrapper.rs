//! Welcome wrappers: a welcome goes to each installation sealed with HPKE outside MLS, as XMTP
//! clients expect. The recipient's key package says how:
//!
//! - with no welcome-wrapper extension (0xff03): Curve25519 HPKE (DHKEM(X25519), HKDF-SHA256,
//!   ChaCha20Poly1305) to the key package's init key, `wrapper_algorithm` 1;
//! - with the extension, a protobuf `WelcomeWrapperEncryption { pub_key = 1, algorithm = 2 }`:
//!   for `XWING_MLKEM_768_DRAFT_6` (2), X-Wing HPKE (X-Wing draft-06 KEM under HPKE KEM id
//!   0x004D, HKDF-SHA256, ChaCha20Poly1305) to `pub_key` (1,216 bytes: ML-KEM-768's
//!   encapsulation key, then the X25519 key), `wrapper_algorithm` 2; for any other algorithm
//!   but `SYMMETRIC_KEY`, Curve25519 HPKE to `pub_key`. XMTP clients refuse a key package whose
//!   extension does not decode, or that names `SYMMETRIC_KEY`, rather than fall back to its
//!   init key; so does Clawx ([`AgentError::Mls`]).
//!
//! Either way: HPKE base mode, info = TLS `EncryptContext { label: "MLS 1.0 MLS_WELCOME",
//! context: "" }`, empty aad, and `data` = TLS `HpkeCiphertext { kem_output, ciphertext }`.
//! The KEM id 0x004D (not X-Wing's later HPKE code point 0x647a) is the one XMTP clients put in
//! the HPKE suite id, so it decides the keys.
//!
//! Clawx's own key packages carry an X-Wing key too ([`XWingKeyPair`]), so XMTP clients wrap
//! their welcomes to Clawx with X-Wing.

use clawx_proto::xmtp::mls::message_contents::{WelcomeWrapperAlgorithm, WelcomeWrapperEncryption};
use hpke_rs::{
    Hpke, HpkePrivateKey, HpkePublicKey, Mode,
    hpke_types::{AeadAlgorithm, KdfAlgorithm, KemAlgorithm},
};
use hpke_rs_rust_crypto::HpkeRustCrypto;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tls_codec::{Deserialize as _, Serialize as _};

use super::{
    AgentError,
    mls::{CIPHERSUITE, CLAWX_ENTRY_PREFIX, WELCOME_WRAPPER_ENCRYPTION_EXTENSION},
};

/// XMTP's HPKE info for welcomes: TLS `EncryptContext { label: "MLS 1.0 MLS_WELCOME", context: "" }`.
pub const WELCOME_INFO: &[u8] = b"\x13MLS 1.0 MLS_WELCOME\x00";
/// An X-Wing public key: ML-KEM-768's encapsulation key (1,184 bytes), then X25519's (32).
pub const XWING_PUBLIC_KEY_BYTES: usize = 1216;
/// An X-Wing secret key: its 32-byte seed.
pub const XWING_SECRET_KEY_BYTES: usize = 32;
/// An X-Wing KEM output: ML-KEM-768's ciphertext (1,088 bytes), then X25519's (32).
pub const XWING_KEM_OUTPUT_BYTES: usize = 1120;
/// An X25519 public key.
const CURVE25519_PUBLIC_KEY_BYTES: usize = 32;
/// Largest welcome-wrapper extension read from a key package (an X-Wing one is 1,222 bytes).
pub const MAX_WRAPPER_EXTENSION_BYTES: usize = 4096;

/// The HPKE suite of X-Wing welcomes.
#[allow(deprecated)] // 0x004D is deprecated by the HPKE crate, but it is XMTP's.
fn xwing_hpke() -> Hpke<HpkeRustCrypto> {
    Hpke::new(Mode::Base, KemAlgorithm::XWingDraft06Obsolete, KdfAlgorithm::HkdfSha256, AeadAlgorithm::ChaCha20Poly1305)
}

fn wrapper_error(what: &str, error: impl std::fmt::Debug) -> AgentError {
    AgentError::Mls(format!("welcome wrapper: {what}: {error:?}"))
}

/// How a welcome is sealed for one installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrapper {
    /// Curve25519 HPKE to this X25519 key.
    Curve25519(Vec<u8>),
    /// X-Wing HPKE to this X-Wing key.
    XWing(Vec<u8>),
}

impl Wrapper {
    /// What `key_package` asks for (see the module's docs).
    pub fn for_key_package(key_package: &KeyPackage) -> Result<Wrapper, AgentError> {
        match key_package.extensions().unknown(WELCOME_WRAPPER_ENCRYPTION_EXTENSION) {
            None => Ok(Wrapper::Curve25519(key_package.hpke_init_key().as_slice().to_vec())),
            Some(extension) => Wrapper::from_extension(&extension.0),
        }
    }

    /// The wrapper a welcome-wrapper extension's bytes name.
    pub fn from_extension(bytes: &[u8]) -> Result<Wrapper, AgentError> {
        let malformed = |why: String| AgentError::Mls(format!("key package's welcome wrapper extension: {why}"));
        if bytes.len() > MAX_WRAPPER_EXTENSION_BYTES {
            return Err(malformed(format!("{} bytes, more than {MAX_WRAPPER_EXTENSION_BYTES}", bytes.len())));
        }
        let extension = WelcomeWrapperEncryption::decode(bytes).map_err(|error| malformed(error.to_string()))?;
        let (wrapper, expected) = match WelcomeWrapperAlgorithm::try_from(extension.algorithm) {
            Ok(WelcomeWrapperAlgorithm::XwingMlkem768Draft6) => (Wrapper::XWing(extension.pub_key), XWING_PUBLIC_KEY_BYTES),
            Ok(WelcomeWrapperAlgorithm::SymmetricKey) => return Err(malformed("names the symmetric-key wrapper".into())),
            // Curve25519, unspecified and unknown algorithms: Curve25519 to the extension's key.
            _ => (Wrapper::Curve25519(extension.pub_key), CURVE25519_PUBLIC_KEY_BYTES),
        };
        if wrapper.public_key().len() != expected {
            return Err(malformed(format!("a {}-byte key for the {} wrapper", wrapper.public_key().len(), wrapper.name())));
        }
        Ok(wrapper)
    }

    /// `wrapper_algorithm` of the welcome.
    pub fn algorithm(&self) -> WelcomeWrapperAlgorithm {
        match self {
            Wrapper::Curve25519(_) => WelcomeWrapperAlgorithm::Curve25519,
            Wrapper::XWing(_) => WelcomeWrapperAlgorithm::XwingMlkem768Draft6,
        }
    }

    /// `hpke_public_key` of the welcome.
    pub fn public_key(&self) -> &[u8] {
        match self {
            Wrapper::Curve25519(key) | Wrapper::XWing(key) => key,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Wrapper::Curve25519(_) => "Curve25519",
            Wrapper::XWing(_) => "X-Wing",
        }
    }

    /// `welcome` (a TLS-serialized MLS message) sealed for the recipient: the welcome's `data`.
    pub fn seal(&self, crypto: &RustCrypto, welcome: &[u8]) -> Result<Vec<u8>, AgentError> {
        let ciphertext = match self {
            Wrapper::Curve25519(key) => crypto
                .hpke_seal(CIPHERSUITE.hpke_config(), key, WELCOME_INFO, &[], welcome)
                .map_err(|error| wrapper_error("Curve25519 seal", error))?,
            Wrapper::XWing(key) => {
                let (kem_output, mut context) = xwing_hpke()
                    .setup_sender(&HpkePublicKey::new(key.clone()), WELCOME_INFO, None, None, None)
                    .map_err(|error| wrapper_error("X-Wing encapsulation", error))?;
                let ciphertext = context.seal(&[], welcome).map_err(|error| wrapper_error("X-Wing seal", error))?;
                HpkeCiphertext { kem_output: kem_output.into(), ciphertext: ciphertext.into() }
            }
        };
        ciphertext.tls_serialize_detached().map_err(|error| wrapper_error("encode", error))
    }
}

/// Opens a welcome's `data` sealed with X-Wing HPKE to the key whose secret is `secret`.
pub fn open_xwing(data: &[u8], secret: &[u8]) -> Result<Vec<u8>, AgentError> {
    let ciphertext = HpkeCiphertext::tls_deserialize_exact(data).map_err(|error| wrapper_error("decode", error))?;
    if ciphertext.kem_output.as_slice().len() != XWING_KEM_OUTPUT_BYTES {
        return Err(AgentError::Mls(format!("welcome wrapper: an X-Wing KEM output of {} bytes", ciphertext.kem_output.as_slice().len())));
    }
    let mut context = xwing_hpke()
        .setup_receiver(ciphertext.kem_output.as_slice(), &HpkePrivateKey::new(secret.to_vec()), WELCOME_INFO, None, None, None)
        .map_err(|error| wrapper_error("X-Wing decapsulation", error))?;
    context.open(&[], ciphertext.ciphertext.as_slice()).map_err(|error| wrapper_error("X-Wing open", error))
}

/// Opens a welcome's `data` sealed with Curve25519 HPKE to the X25519 key whose secret is `secret`.
pub fn open_curve25519(crypto: &RustCrypto, data: &[u8], secret: &[u8]) -> Result<Vec<u8>, AgentError> {
    let ciphertext = HpkeCiphertext::tls_deserialize_exact(data).map_err(|error| wrapper_error("decode", error))?;
    crypto.hpke_open(CIPHERSUITE.hpke_config(), &ciphertext, secret, WELCOME_INFO, &[]).map_err(|error| wrapper_error("Curve25519 open", error))
}

/// An installation's X-Wing key for welcomes, advertised in its key package.
pub struct XWingKeyPair {
    pub public: Vec<u8>,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for XWingKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XWingKeyPair").field("public", &hex::encode(Sha256::digest(&self.public))).finish_non_exhaustive()
    }
}

impl XWingKeyPair {
    pub fn generate() -> Result<XWingKeyPair, AgentError> {
        let (secret, public) = xwing_hpke().generate_key_pair().map_err(|error| wrapper_error("X-Wing key", error))?.into_keys();
        let pair = XWingKeyPair { public: public.as_slice().to_vec(), secret: secret.as_slice().to_vec() };
        if pair.public.len() != XWING_PUBLIC_KEY_BYTES || pair.secret.len() != XWING_SECRET_KEY_BYTES {
            return Err(AgentError::Mls("welcome wrapper: X-Wing key of unexpected size".into()));
        }
        Ok(pair)
    }

    /// The key package extension (0xff03) that asks senders for X-Wing welcomes to this key.
    pub fn extension(&self) -> Extension {
        let extension = WelcomeWrapperEncryption { pub_key: self.public.clone(), algorithm: WelcomeWrapperAlgorithm::XwingMlkem768Draft6 as i32 };
        Extension::Unknown(WELCOME_WRAPPER_ENCRYPTION_EXTENSION, UnknownExtension(extension.encode_to_vec()))
    }
}

/// The state entry holding the secret X-Wing key of a key package, by (a hash of) its public key.
pub fn xwing_key_entry(public: &[u8]) -> Vec<u8> {
    [CLAWX_ENTRY_PREFIX, b"xwing-key/", Sha256::digest(public).as_slice()].concat()
}

#[cfg(test)]
mod tests {
    use x_wing::{Decapsulate as _, Decapsulator as _, KeyExport as _};

    use super::*;

    /// HPKE's LabeledExtract and LabeledExpand (RFC 9180 §4) with HKDF-SHA256, written out.
    fn labeled_extract(crypto: &RustCrypto, suite_id: &[u8], salt: &[u8], label: &str, ikm: &[u8]) -> Vec<u8> {
        let labeled = [b"HPKE-v1".as_slice(), suite_id, label.as_bytes(), ikm].concat();
        crypto.hkdf_extract(HashType::Sha2_256, salt, &labeled).unwrap().as_slice().to_vec()
    }

    fn labeled_expand(crypto: &RustCrypto, suite_id: &[u8], prk: &[u8], label: &str, info: &[u8], length: u16) -> Vec<u8> {
        let labeled = [length.to_be_bytes().as_slice(), b"HPKE-v1", suite_id, label.as_bytes(), info].concat();
        crypto.hkdf_expand(HashType::Sha2_256, prk, &labeled, length.into()).unwrap().as_slice().to_vec()
    }

    /// Opens an X-Wing welcome without the HPKE crate: the x-wing crate decapsulates, and the
    /// HPKE base-mode key schedule is written out here with XMTP's suite id (KEM 0x004D, KDF
    /// 0x0001 HKDF-SHA256, AEAD 0x0003 ChaCha20Poly1305) and the welcome info.
    fn independent_open(data: &[u8], secret: &[u8; 32]) -> Vec<u8> {
        let crypto = RustCrypto::default();
        let ciphertext = HpkeCiphertext::tls_deserialize_exact(data).unwrap();
        let kem_output = x_wing::Ciphertext::try_from(ciphertext.kem_output.as_slice()).unwrap();
        let shared_secret = x_wing::DecapsulationKey::from(*secret).decapsulate(&kem_output);
        let suite_id = [b"HPKE".as_slice(), &[0x00, 0x4d, 0x00, 0x01, 0x00, 0x03]].concat();
        let psk_id_hash = labeled_extract(&crypto, &suite_id, &[], "psk_id_hash", &[]);
        let info_hash = labeled_extract(&crypto, &suite_id, &[], "info_hash", WELCOME_INFO);
        let context = [[0u8].as_slice(), &psk_id_hash, &info_hash].concat();
        let secret = labeled_extract(&crypto, &suite_id, shared_secret.as_slice(), "secret", &[]);
        let key = labeled_expand(&crypto, &suite_id, &secret, "key", &context, 32);
        let base_nonce = labeled_expand(&crypto, &suite_id, &secret, "base_nonce", &context, 12);
        // The first message of the context: sequence number 0, so the nonce is the base nonce.
        crypto.aead_decrypt(AeadType::ChaCha20Poly1305, &key, ciphertext.ciphertext.as_slice(), &base_nonce, &[]).unwrap()
    }

    #[test]
    fn an_xwing_welcome_opens_with_an_independent_hpke_open() {
        let pair = XWingKeyPair::generate().unwrap();
        let secret: [u8; 32] = pair.secret.as_slice().try_into().unwrap();
        // The secret is the X-Wing seed: the x-wing crate derives the same public key from it.
        assert_eq!(x_wing::DecapsulationKey::from(secret).encapsulation_key().to_bytes().as_slice(), pair.public.as_slice());
        let welcome = b"an MLS welcome, TLS-serialized".repeat(40);
        let data = Wrapper::XWing(pair.public.clone()).seal(&RustCrypto::default(), &welcome).unwrap();
        // TLS HpkeCiphertext: kem_output with a 2-byte varint length (1,120 = 0x4460), then the
        // ciphertext (welcome + 16-byte tag, 1,216 = 0x44c0).
        assert_eq!(&data[..2], &[0x44, 0x60]);
        assert_eq!(&data[2 + 1120..2 + 1120 + 2], &[0x44, 0xc0]);
        assert_eq!(data.len(), 2 + 1120 + 2 + welcome.len() + 16);
        assert_eq!(independent_open(&data, &secret), welcome);
        assert_eq!(open_xwing(&data, &pair.secret).unwrap(), welcome);

        let other = XWingKeyPair::generate().unwrap();
        assert!(open_xwing(&data, &other.secret).is_err(), "another key does not open it");
        let mut tampered = data.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open_xwing(&tampered, &pair.secret).is_err());
    }

    #[test]
    fn a_curve25519_welcome_opens_with_the_init_key() {
        let crypto = RustCrypto::default();
        let pair = crypto.derive_hpke_keypair(CIPHERSUITE.hpke_config(), &[7; 32]).unwrap();
        let data = Wrapper::Curve25519(pair.public.clone()).seal(&crypto, b"welcome").unwrap();
        assert_eq!(open_curve25519(&crypto, &data, &pair.private).unwrap(), b"welcome");
    }

    #[test]
    fn the_extension_is_the_protobuf_xmtp_clients_read() {
        let pair = XWingKeyPair::generate().unwrap();
        let Extension::Unknown(id, UnknownExtension(bytes)) = pair.extension() else { panic!("an unknown extension") };
        assert_eq!(id, 0xff03);
        // Field 1 (bytes): tag 0x0a, varint length 1,216 = 0xc0 0x09; field 2 (enum): tag 0x10, 2.
        let expected = [[0x0a, 0xc0, 0x09].as_slice(), &pair.public, &[0x10, 0x02]].concat();
        assert_eq!(bytes, expected);
        assert_eq!(Wrapper::from_extension(&bytes).unwrap(), Wrapper::XWing(pair.public.clone()));
    }

    #[test]
    fn extensions_are_read_as_xmtp_clients_read_them() {
        let encode = |pub_key: Vec<u8>, algorithm: i32| WelcomeWrapperEncryption { pub_key, algorithm }.encode_to_vec();
        // Curve25519, unspecified and unknown algorithms: Curve25519 to the extension's key.
        for algorithm in [0, 1, 9] {
            assert_eq!(Wrapper::from_extension(&encode(vec![5; 32], algorithm)).unwrap(), Wrapper::Curve25519(vec![5; 32]), "{algorithm}");
        }
        // Refused: a symmetric key, keys of the wrong size, bytes that are no protobuf, too much.
        assert!(Wrapper::from_extension(&encode(vec![5; 32], 3)).is_err());
        assert!(Wrapper::from_extension(&encode(vec![5; 32], 2)).is_err());
        assert!(Wrapper::from_extension(&encode(vec![5; 1216], 1)).is_err());
        assert!(Wrapper::from_extension(&encode(vec![5; 1215], 2)).is_err());
        assert!(Wrapper::from_extension(&[0xff, 0xff, 0xff]).is_err());
        assert!(Wrapper::from_extension(&encode(vec![5; 5000], 2)).is_err());
    }

    #[test]
    fn malformed_keys_and_ciphertexts_are_errors_not_panics() {
        let crypto = RustCrypto::default();
        assert!(Wrapper::XWing(vec![7; 100]).seal(&crypto, b"welcome").is_err(), "an X-Wing key of the wrong size");
        assert!(Wrapper::Curve25519(vec![7; 100]).seal(&crypto, b"welcome").is_err(), "an X25519 key of the wrong size");
        let pair = XWingKeyPair::generate().unwrap();
        assert!(open_xwing(b"\x00", &pair.secret).is_err());
        let short = HpkeCiphertext { kem_output: vec![0; 10].into(), ciphertext: vec![0; 20].into() };
        assert!(open_xwing(&short.tls_serialize_detached().unwrap(), &pair.secret).is_err());
        let data = Wrapper::XWing(pair.public.clone()).seal(&crypto, b"welcome").unwrap();
        assert!(open_xwing(&data, &pair.secret[..31]).is_err(), "a secret of the wrong size");
    }
}
