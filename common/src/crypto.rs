//! Encryption of secret key material at rest: AES-256-GCM under a master key from configuration,
//! tagged with the key id so the master key can be rotated (new data under the active key, old
//! data still readable under retired keys until re-encrypted).

use std::collections::HashMap;

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, KeyInit, Payload, rand_core::RngCore},
};
use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::config::{Secret, SecretArgs};

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The master keys: one active, any number retired.
#[derive(Clone)]
pub struct Keyring {
    active_id: String,
    keys: HashMap<String, Key<Aes256Gcm>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("active_id", &self.active_id).finish_non_exhaustive()
    }
}

/// Parses `<kid>:<64 hex>` or `<64 hex>` (the id is then derived from the key).
fn parse_key(text: &str) -> anyhow::Result<(String, Key<Aes256Gcm>)> {
    let text = text.trim();
    let (id, hex_key) = match text.split_once(':') {
        Some((id, hex_key)) => (Some(id.to_string()), hex_key),
        None => (None, text),
    };
    let bytes = hex::decode(hex_key).context("a master key must be 64 hex characters (32 bytes)")?;
    anyhow::ensure!(bytes.len() == 32, "a master key must be 64 hex characters (32 bytes)");
    let id = match id {
        Some(id) => {
            anyhow::ensure!(
                !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "a master key id must be 1-32 letters, digits, - or _"
            );
            id
        }
        None => hex::encode(&Sha256::digest(&bytes)[..4]),
    };
    Ok((id, *Key::<Aes256Gcm>::from_slice(&bytes)))
}

impl Keyring {
    /// The keyring configured by `CLAWX_MASTER_KEY` and `CLAWX_MASTER_KEYS_RETIRED`.
    pub fn from_args(args: &SecretArgs) -> anyhow::Result<Keyring> {
        let active = args.master_key.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "CLAWX_MASTER_KEY is not set: it encrypts wallet and XMTP keys at rest \
                 (64 hex characters, e.g. `openssl rand -hex 32`, optionally as <kid>:<hex>)"
            )
        })?;
        Keyring::new(active, args.master_keys_retired.as_ref())
    }

    pub fn new(active: &Secret, retired: Option<&Secret>) -> anyhow::Result<Keyring> {
        let (active_id, active_key) = parse_key(active.expose()).context("CLAWX_MASTER_KEY")?;
        let mut keys = HashMap::from([(active_id.clone(), active_key)]);
        for text in retired.map(|secret| secret.expose()).unwrap_or("").split(',').filter(|t| !t.trim().is_empty()) {
            let (id, key) = parse_key(text).context("CLAWX_MASTER_KEYS_RETIRED")?;
            anyhow::ensure!(!keys.contains_key(&id), "master key id {id} appears twice");
            keys.insert(id, key);
        }
        Ok(Keyring { active_id, keys })
    }

    pub fn active_id(&self) -> &str {
        &self.active_id
    }

    /// Encrypts `plaintext` under the active key. `context` binds the ciphertext to where it is
    /// stored (e.g. `wallet:42`), so it cannot be moved to another row.
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let key = &self.keys[&self.active_id];
        let mut nonce = [0u8; NONCE_LEN];
        aes_gcm::aead::OsRng.fill_bytes(&mut nonce);
        let ciphertext = Aes256Gcm::new(key)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            .expect("AES-GCM encryption of a bounded message cannot fail");
        let mut blob = Vec::with_capacity(2 + self.active_id.len() + NONCE_LEN + ciphertext.len());
        blob.push(FORMAT_VERSION);
        blob.push(self.active_id.len() as u8);
        blob.extend_from_slice(self.active_id.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        blob
    }

    /// Decrypts a blob made by [`Keyring::encrypt`] with the same `context`.
    pub fn decrypt(&self, blob: &[u8], context: &[u8]) -> anyhow::Result<Vec<u8>> {
        let key_id = Keyring::key_id_of(blob).context("malformed encrypted blob")?;
        let key = self.keys.get(key_id).with_context(|| format!("data is encrypted under master key {key_id}, which is not configured"))?;
        let rest = &blob[2 + key_id.len()..];
        anyhow::ensure!(rest.len() > NONCE_LEN, "malformed encrypted blob");
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        Aes256Gcm::new(key)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context })
            .map_err(|_| anyhow::anyhow!("decryption failed: wrong key or tampered data"))
    }

    /// The id of the key a blob is encrypted under.
    pub fn key_id_of(blob: &[u8]) -> Option<&str> {
        let (&version, rest) = blob.split_first()?;
        let (&id_len, rest) = rest.split_first()?;
        if version != FORMAT_VERSION || rest.len() < usize::from(id_len) {
            return None;
        }
        std::str::from_utf8(&rest[..usize::from(id_len)]).ok()
    }

    /// Whether a blob should be re-encrypted under the active key.
    pub fn needs_rotation(&self, blob: &[u8]) -> bool {
        Keyring::key_id_of(blob) != Some(self.active_id.as_str())
    }
}

/// A fresh random master key in the `<kid>:<hex>` form.
pub fn generate_master_key() -> String {
    let mut key = [0u8; 32];
    aes_gcm::aead::OsRng.fill_bytes(&mut key);
    let id = hex::encode(&Sha256::digest(key)[..4]);
    format!("{id}:{}", hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_bound_to_context() {
        let ring = Keyring::new(&Secret::new(generate_master_key()), None).unwrap();
        let blob = ring.encrypt(b"private key", b"wallet:1");
        assert_eq!(ring.decrypt(&blob, b"wallet:1").unwrap(), b"private key");
        assert!(ring.decrypt(&blob, b"wallet:2").is_err());
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(ring.decrypt(&tampered, b"wallet:1").is_err());
        assert!(!ring.needs_rotation(&blob));
    }

    #[test]
    fn rotation_keeps_old_data_readable() {
        let old_key = generate_master_key();
        let old = Keyring::new(&Secret::new(old_key.clone()), None).unwrap();
        let blob = old.encrypt(b"secret", b"ctx");
        let new = Keyring::new(&Secret::new(generate_master_key()), Some(&Secret::new(old_key))).unwrap();
        assert!(new.needs_rotation(&blob));
        assert_eq!(new.decrypt(&blob, b"ctx").unwrap(), b"secret");
        let without_old = Keyring::new(&Secret::new(generate_master_key()), None).unwrap();
        let error = without_old.decrypt(&blob, b"ctx").unwrap_err().to_string();
        assert!(error.contains("not configured"), "{error}");
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert!(Keyring::new(&Secret::new("abcd"), None).is_err());
        assert!(Keyring::new(&Secret::new(format!("bad id!:{}", "00".repeat(32))), None).is_err());
        let ring = Keyring::new(&Secret::new("00".repeat(32)), None).unwrap();
        assert_eq!(ring.active_id().len(), 8);
    }
}
