//! An installation's MLS state for the length of one operation: loaded from the database under
//! the installation's lock into openmls' in-memory storage, changed by openmls, and written back
//! (only what changed, in one transaction) by [`MlsSession::commit`]. A session dropped without
//! committing leaves the stored state as it was, so a failed or crashed operation can be
//! retried from the last committed state.
//!
//! Every value is encrypted at rest with the keyring, bound to its installation and key; values
//! under a retired master key are re-encrypted under the active one when the session commits.

use std::collections::{HashMap, HashSet};

use clawx_common::crypto::Keyring;
use openmls::prelude::OpenMlsProvider;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};

use super::{
    AgentError,
    store::{AgentStore, StateLease, StateRows},
};

/// Largest MLS state of one installation, in bytes of plaintext values: a bound on the work and
/// memory of one operation.
pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

/// openmls' crypto with an installation's state.
#[derive(Debug, Default)]
pub struct AgentProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for AgentProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// The encryption context of one state value: its installation and key.
fn value_context(account_id: i64, key: &[u8]) -> Vec<u8> {
    let mut context = format!("xmtp-mls:{account_id}:").into_bytes();
    context.extend_from_slice(key);
    context
}

/// One operation's exclusive view of an installation's MLS state.
pub struct MlsSession {
    account_id: i64,
    keyring: Keyring,
    lease: Box<dyn StateLease>,
    /// The plaintext values as loaded.
    loaded: HashMap<Vec<u8>, Vec<u8>>,
    /// Keys whose stored value is under a retired master key.
    stale: HashSet<Vec<u8>>,
    provider: AgentProvider,
}

impl std::fmt::Debug for MlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsSession").field("account_id", &self.account_id).field("values", &self.loaded.len()).finish_non_exhaustive()
    }
}

impl MlsSession {
    /// Waits for the installation's lock, then loads its state.
    pub async fn open(store: &dyn AgentStore, keyring: &Keyring, account_id: i64) -> Result<MlsSession, AgentError> {
        let mut lease = store.lock_state(account_id).await.map_err(|error| match error {
            sqlx::Error::RowNotFound => AgentError::NoInstallation,
            other => AgentError::Store(other),
        })?;
        let rows = lease.load().await?;
        let mut loaded = HashMap::with_capacity(rows.len());
        let mut stale = HashSet::new();
        let mut total = 0usize;
        for (key, blob) in rows {
            let value = keyring.decrypt(&blob, &value_context(account_id, &key)).map_err(|error| AgentError::Keyring(error.to_string()))?;
            total += key.len() + value.len();
            if total > MAX_STATE_BYTES {
                return Err(AgentError::StateTooLarge);
            }
            if keyring.needs_rotation(&blob) {
                stale.insert(key.clone());
            }
            loaded.insert(key, value);
        }
        let provider = AgentProvider { crypto: RustCrypto::default(), storage: MemoryStorage { values: std::sync::RwLock::new(loaded.clone()) } };
        Ok(MlsSession { account_id, keyring: keyring.clone(), lease, loaded, stale, provider })
    }

    pub fn account_id(&self) -> i64 {
        self.account_id
    }

    /// The provider openmls works with during the session.
    pub fn provider(&self) -> &AgentProvider {
        &self.provider
    }

    /// Writes what the session changed (and re-encrypts values under a retired master key) in
    /// one transaction and releases the lock; the number of values written and removed.
    pub async fn commit(self) -> Result<(usize, usize), AgentError> {
        let MlsSession { account_id, keyring, lease, loaded, stale, provider } = self;
        let current = provider.storage.values.into_inner().map_err(|_| AgentError::Mls("MLS storage lock poisoned".into()))?;
        let total: usize = current.iter().map(|(key, value)| key.len() + value.len()).sum();
        if total > MAX_STATE_BYTES {
            return Err(AgentError::StateTooLarge);
        }
        let deletes: Vec<Vec<u8>> = loaded.keys().filter(|key| !current.contains_key(*key)).cloned().collect();
        let upserts: StateRows = current
            .into_iter()
            .filter(|(key, value)| stale.contains(key) || loaded.get(key) != Some(value))
            .map(|(key, value)| {
                let blob = keyring.encrypt(&value, &value_context(account_id, &key));
                (key, blob)
            })
            .collect();
        let counts = (upserts.len(), deletes.len());
        lease.save(upserts, deletes).await?;
        Ok(counts)
    }
}
