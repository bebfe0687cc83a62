//! Persistence of the identity service: one trait, a PostgreSQL and a SQLite implementation
//! sharing their SQL, and one conformance suite run against both.

mod postgres;
pub(crate) mod sql;
mod sqlite;

use async_trait::async_trait;
use clawx_common::Database;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A stored account.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRecord {
    pub id: i64,
    /// EIP-55 checksummed.
    pub wallet_address: String,
    /// The wallet's private key, encrypted under the master key.
    pub wallet_key: Vec<u8>,
    pub xmtp_inbox_id: String,
    pub handle: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub x_url: Option<String>,
    pub github_url: Option<String>,
    pub website_url: Option<String>,
    pub verified: bool,
    pub twitter_username: Option<String>,
    pub created_at: i64,
    pub registered_at: Option<i64>,
    pub updated_at: i64,
}

/// A stored API key (never the key itself). Its columns are read under names apart from the
/// account's (`key_columns_of_k!`), so one joined row holds both.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    #[sqlx(rename = "public_id")]
    pub id: String,
    pub account_id: i64,
    #[sqlx(rename = "key_name")]
    pub name: String,
    pub prefix: String,
    #[sqlx(rename = "key_created_at")]
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A key about to be stored.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: String,
    pub key_hash: String,
    pub prefix: String,
    pub name: String,
}

/// An account about to be stored, with its first key.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub wallet_address: String,
    pub wallet_key: Vec<u8>,
    pub xmtp_inbox_id: String,
    pub first_key: NewApiKey,
    pub created_at: i64,
    /// A handle and profile registered with the account, in the same transaction.
    pub registration: Option<NewRegistration>,
}

/// A handle and profile set when an account is created (`POST /agents`).
#[derive(Clone, Debug)]
pub struct NewRegistration {
    pub handle: String,
    pub profile: ProfileFields,
}

/// The profile fields set at registration or by an update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileFields {
    pub name: String,
    pub description: Option<String>,
    pub x_url: Option<String>,
    pub github_url: Option<String>,
    pub website_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkedWalletRecord {
    pub address: String,
    pub account_id: i64,
    pub linked_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ChallengeRecord {
    pub nonce: String,
    pub account_id: i64,
    pub address_lower: String,
    pub message: String,
    pub expires_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DomainRecord {
    pub name: String,
    pub account_id: i64,
    pub claimed_at: i64,
}

/// A store failure the domain can act on; anything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is already used, e.g. `handle`.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    /// The account already registered a handle.
    #[error("already registered")]
    AlreadyRegistered,
    /// The account's last API key cannot be revoked.
    #[error("last key")]
    LastKey,
    /// The account already holds as many keys, wallets or domains as it may.
    #[error("limit reached")]
    LimitExceeded,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Filters of the user directory.
#[derive(Clone, Debug, Default)]
pub struct UserQuery {
    /// Lowercase substring of the handle or the name.
    pub search: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// Everything the identity service keeps.
#[async_trait]
pub trait IdentityStore: Send + Sync + std::fmt::Debug {
    /// Stores an account, its first key and its registration (if any) atomically
    /// (`Conflict("handle")`).
    async fn create_account(&self, account: NewAccount) -> StoreResult<AccountRecord>;
    async fn account(&self, id: i64) -> StoreResult<Option<AccountRecord>>;
    async fn account_by_handle(&self, handle: &str) -> StoreResult<Option<AccountRecord>>;
    async fn accounts_by_wallet(&self, addresses_lower: &[String]) -> StoreResult<Vec<AccountRecord>>;
    async fn accounts_by_id(&self, ids: &[i64]) -> StoreResult<Vec<AccountRecord>>;
    async fn accounts_by_handle(&self, handles: &[String]) -> StoreResult<Vec<AccountRecord>>;
    /// Sets the handle and profile of an account that has none (`AlreadyRegistered`,
    /// `Conflict("handle")`).
    async fn register(&self, id: i64, handle: &str, profile: &ProfileFields, at: i64) -> StoreResult<AccountRecord>;
    /// Applies a patch to the profile of an account, atomically (`NotFound`).
    async fn update_profile(&self, id: i64, patch: &ProfilePatch, at: i64) -> StoreResult<AccountRecord>;
    /// Registered accounts, oldest first.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<AccountRecord>>;

    /// The account and key behind a key hash.
    async fn account_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<(AccountRecord, ApiKeyRecord)>>;
    async fn touch_api_key(&self, key_id: &str, at: i64) -> StoreResult<()>;
    /// Adds a key unless the account holds `limit` already (`LimitExceeded`, `NotFound`). The
    /// count and the insert are one transaction that holds the account's lock, so concurrent
    /// creations cannot overshoot the cap.
    async fn create_api_key(&self, account_id: i64, key: &NewApiKey, at: i64, limit: i64) -> StoreResult<ApiKeyRecord>;
    async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Deletes a key of the account (`NotFound`, `LastKey`); returns its hash.
    async fn revoke_api_key(&self, account_id: i64, key_id: &str) -> StoreResult<String>;
    async fn count_api_keys(&self, account_id: i64) -> StoreResult<i64>;

    /// Stores a challenge, dropping expired ones and keeping at most `keep` per account.
    async fn create_challenge(&self, challenge: &ChallengeRecord, now: i64, keep: u32) -> StoreResult<()>;
    /// Removes and returns a challenge (single use).
    async fn take_challenge(&self, nonce: &str) -> StoreResult<Option<ChallengeRecord>>;
    /// Links a wallet (idempotent for the same account; `Conflict("wallet")` for another;
    /// `LimitExceeded` when the account links `limit` others already, checked under its lock).
    async fn link_wallet(&self, account_id: i64, address: &str, at: i64, limit: i64) -> StoreResult<LinkedWalletRecord>;
    async fn list_wallets(&self, account_id: i64) -> StoreResult<Vec<LinkedWalletRecord>>;
    /// Unlinks a wallet of the account (`NotFound`).
    async fn unlink_wallet(&self, account_id: i64, address_lower: &str) -> StoreResult<()>;
    async fn wallet_owner(&self, address_lower: &str) -> StoreResult<Option<i64>>;

    /// Claims a domain (idempotent for the same account; `Conflict("domain")` for another;
    /// `LimitExceeded` when the account holds `limit` others already, checked under its lock).
    async fn claim_domain(&self, account_id: i64, name: &str, at: i64, limit: i64) -> StoreResult<DomainRecord>;
    async fn list_domains(&self, account_id: i64) -> StoreResult<Vec<DomainRecord>>;
    async fn release_domain(&self, account_id: i64, name: &str) -> StoreResult<()>;
    /// The account a signed-request domain names: a claimed domain, or a handle.
    async fn account_for_domain(&self, domain: &str) -> StoreResult<Option<i64>>;

    /// Sets whether an account is verified and by which X username (`NotFound`).
    async fn set_verification(&self, id: i64, verified: bool, twitter_username: Option<&str>, at: i64) -> StoreResult<AccountRecord>;
    /// The hashes of an account's API keys, to drop them from caches.
    async fn api_key_hashes(&self, account_id: i64) -> StoreResult<Vec<String>>;
    /// Unverified accounts created before `created_before`, with ids above `after_id`, by id.
    async fn unverified_accounts(&self, created_before: i64, after_id: i64, limit: u32) -> StoreResult<Vec<AccountRecord>>;
    /// Deletes the account (with its keys, wallets, challenges and domains) if it is unverified
    /// and was created before `created_before`; returns the hashes of the keys it held, or
    /// `None` when no such account was deleted.
    async fn delete_unverified_account(&self, id: i64, created_before: i64) -> StoreResult<Option<Vec<String>>>;
}

/// The store of a connected database.
pub fn for_database(database: &Database) -> std::sync::Arc<dyn IdentityStore> {
    match database {
        Database::Postgres(pool) => std::sync::Arc::new(PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => std::sync::Arc::new(SqliteStore::new(pool.clone())),
    }
}

/// A partial profile update: `None` leaves a field, `Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub x_url: Option<Option<String>>,
    pub github_url: Option<Option<String>>,
    pub website_url: Option<Option<String>>,
}

impl ProfilePatch {
    /// The profile after applying the patch to `current`.
    pub fn apply(&self, current: &AccountRecord) -> ProfileFields {
        fn pick(patch: &Option<Option<String>>, current: &Option<String>) -> Option<String> {
            match patch {
                Some(value) => value.clone(),
                None => current.clone(),
            }
        }
        ProfileFields {
            name: self.name.clone().or_else(|| current.name.clone()).unwrap_or_default(),
            description: pick(&self.description, &current.description),
            x_url: pick(&self.x_url, &current.x_url),
            github_url: pick(&self.github_url, &current.github_url),
            website_url: pick(&self.website_url, &current.website_url),
        }
    }
}
