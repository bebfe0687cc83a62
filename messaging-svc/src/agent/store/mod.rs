//! Persistence of the XMTP agent engine: each account's installation and its openmls state, one
//! trait with a PostgreSQL and a SQLite implementation sharing their SQL.
//!
//! The MLS state of an installation is a set of key-value pairs (openmls' storage keys and
//! values, each value encrypted by the caller). It is read and written under the installation's
//! lock ([`AgentStore::lock_state`]): every change to one installation's groups is serialized,
//! across tasks of a replica by an in-process lock and across replicas by a row lock on the
//! installation (PostgreSQL `SELECT ... FOR UPDATE`; SQLite has one writer process), so two
//! replicas never advance one group from the same epoch. What an operation changed is written
//! in one transaction, or not at all.

mod postgres;
mod sql;
mod sqlite;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use async_trait::async_trait;
use clawx_common::Database;
use tokio::sync::OwnedMutexGuard;

pub use postgres::PostgresAgentStore;
pub use sqlite::SqliteAgentStore;

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// An account's XMTP installation.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct InstallationRecord {
    pub account_id: i64,
    pub inbox_id: String,
    /// Lowercase `0x` + 40 hex digits.
    pub wallet_address: String,
    /// The Ed25519 public key.
    pub installation_key: Vec<u8>,
    /// The Ed25519 secret key, encrypted with the keyring.
    pub private_key: Vec<u8>,
    pub created_at: i64,
    /// When the inbox and installation were published (`None`: not yet).
    pub identity_published_at: Option<i64>,
    /// When the last uploaded key package expires (`None`: none uploaded).
    pub key_package_expires_at: Option<i64>,
}

/// One installation's MLS state rows as stored: key, encrypted value.
pub type StateRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Exclusive access to one installation's MLS state, from [`AgentStore::lock_state`]. Dropping
/// it without [`StateLease::save`] writes nothing and releases the lock.
#[async_trait]
pub trait StateLease: Send {
    /// The installation's state rows.
    async fn load(&mut self) -> StoreResult<StateRows>;
    /// Writes `upserts` and removes `deletes` in one transaction, then releases the lock.
    async fn save(self: Box<Self>, upserts: StateRows, deletes: Vec<Vec<u8>>) -> StoreResult<()>;
}

/// Everything the agent engine keeps.
#[async_trait]
pub trait AgentStore: Send + Sync + std::fmt::Debug {
    /// The account's installation, if it has one.
    async fn installation(&self, account_id: i64) -> StoreResult<Option<InstallationRecord>>;
    /// Stores `installation` unless the account has one already; the account's installation
    /// either way (so two replicas creating one at once agree on the first).
    async fn create_installation(&self, installation: &InstallationRecord) -> StoreResult<InstallationRecord>;
    /// Records that the installation's identity was published at `at`.
    async fn set_identity_published(&self, account_id: i64, at: i64) -> StoreResult<()>;
    /// Records the expiry of the key package just uploaded.
    async fn set_key_package_expiry(&self, account_id: i64, expires_at: i64) -> StoreResult<()>;
    /// Replaces the encrypted secret key (re-encryption under a new master key).
    async fn replace_private_key(&self, account_id: i64, private_key: &[u8]) -> StoreResult<()>;
    /// Locks the installation's MLS state (`RowNotFound` when the account has no installation).
    async fn lock_state(&self, account_id: i64) -> StoreResult<Box<dyn StateLease>>;
    /// The account whose installation belongs to `inbox_id`, if it is one of this service's.
    async fn account_of_inbox(&self, inbox_id: &str) -> StoreResult<Option<i64>>;
    /// The account of an installation key, if it is one of this service's.
    async fn account_of_installation(&self, installation_key: &[u8]) -> StoreResult<Option<i64>>;
    /// Records that the account's installation belongs to `group_ids`.
    async fn add_groups(&self, account_id: i64, group_ids: &[Vec<u8>]) -> StoreResult<()>;
    /// The accounts whose installations belong to `group_id`.
    async fn accounts_in_group(&self, group_id: &[u8]) -> StoreResult<Vec<i64>>;
    /// Accounts with an installation, in id order after `after_account_id`.
    async fn installed_accounts(&self, after_account_id: i64, limit: u32) -> StoreResult<Vec<i64>>;
}

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn AgentStore> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresAgentStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteAgentStore::new(pool.clone())),
    }
}

/// In-process locks by installation: tasks of one replica wait here rather than each holding a
/// database connection while waiting for the row lock.
#[derive(Debug, Default)]
pub struct InstallationLocks {
    locks: Mutex<HashMap<i64, Weak<tokio::sync::Mutex<()>>>>,
}

/// Locks held before the map is swept of unused entries.
const LOCKS_BEFORE_SWEEP: usize = 4096;

impl InstallationLocks {
    /// Waits for, then holds, the lock of `account_id`'s installation.
    pub async fn lock(&self, account_id: i64) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock().expect("installation locks");
            if locks.len() >= LOCKS_BEFORE_SWEEP {
                locks.retain(|_, lock| lock.strong_count() > 0);
            }
            match locks.get(&account_id).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(account_id, Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        mutex.lock_owned().await
    }
}
