//! Persistence of the verify service: one trait, a PostgreSQL and a SQLite implementation
//! sharing their SQL, and one conformance suite run against both.

mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use clawx_common::Database;

/// An account's outstanding verification code.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct CodeRecord {
    pub account_id: i64,
    pub code: String,
    /// Unix milliseconds.
    pub issued_at: i64,
    pub expires_at: i64,
}

/// A verified account and the X account that proved it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct VerificationRecord {
    pub account_id: i64,
    /// The X account's stable id; `None` when the tweet source gave only a username (oEmbed).
    pub twitter_user_id: Option<String>,
    pub twitter_username: String,
    pub tweet_id: String,
    pub verified_at: i64,
}

/// A store failure the domain can act on; anything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The X account already proved another Clawx account.
    #[error("the X account is already bound to another account")]
    TwitterAlreadyUsed,
    /// The account is already verified.
    #[error("already verified")]
    AlreadyVerified,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the verify service keeps.
#[async_trait]
pub trait VerifyStore: Send + Sync + std::fmt::Debug {
    /// Stores the account's code, replacing any earlier one.
    async fn issue_code(&self, code: &CodeRecord) -> StoreResult<()>;
    async fn code(&self, account_id: i64) -> StoreResult<Option<CodeRecord>>;
    async fn verification(&self, account_id: i64) -> StoreResult<Option<VerificationRecord>>;
    /// Binds the X account to the Clawx account and drops its code, in one transaction
    /// (`AlreadyVerified`, `TwitterAlreadyUsed`: the same user id, or the same username where
    /// either side was bound by username only).
    async fn record_verification(&self, verification: &VerificationRecord) -> StoreResult<()>;
    /// Undoes [`VerifyStore::record_verification`] when the identity service could not be told.
    async fn remove_verification(&self, account_id: i64) -> StoreResult<()>;
    /// Takes the expiry lease on an account unless another owner holds an unexpired one.
    async fn claim_expiry(&self, account_id: i64, owner: &str, now: i64, lease_until: i64) -> StoreResult<bool>;
    /// Accounts whose expiry lease ran out before the sweep finished (a replica stopped
    /// mid-way), so another sweep can finish them.
    async fn stale_expiry_claims(&self, now: i64, limit: u32) -> StoreResult<Vec<i64>>;
    /// Drops the owner's lease on an account it turned out not to delete.
    async fn release_expiry(&self, account_id: i64, owner: &str) -> StoreResult<()>;
    /// Forgets everything about an account the expiry sweep deleted (its lease, code and
    /// verification rows).
    async fn finish_expiry(&self, account_id: i64) -> StoreResult<()>;
}

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn VerifyStore> {
    match database {
        Database::Postgres(pool) => Arc::new(sql::PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(sql::SqliteStore::new(pool.clone())),
    }
}
