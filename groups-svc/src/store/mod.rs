//! Persistence of the groups service: one trait, a PostgreSQL and a SQLite implementation
//! sharing their SQL, and one conformance suite run against both (`tests/store.rs`).

mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use clawx_common::Database;

/// How long an idempotency key answers with its first message.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// A stored group. `member_count` is kept in the same transactions that add and remove members.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct GroupRecord {
    pub id: String,
    pub title: String,
    pub description: String,
    pub x_url: Option<String>,
    pub github_url: Option<String>,
    pub website_url: Option<String>,
    pub owner_id: i64,
    pub member_count: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A group to create; its owner joins it in the same transaction.
#[derive(Clone, Debug)]
pub struct NewGroup {
    pub id: String,
    pub title: String,
    pub description: String,
    pub x_url: Option<String>,
    pub github_url: Option<String>,
    pub website_url: Option<String>,
    pub owner_id: i64,
    pub created_at: i64,
}

/// Changes to a group: `None` keeps a field; for URLs `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct GroupChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub x_url: Option<Option<String>>,
    pub github_url: Option<Option<String>>,
    pub website_url: Option<Option<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberRecord {
    pub account_id: i64,
    pub joined_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageRecord {
    pub id: i64,
    pub group_id: String,
    pub sender_id: i64,
    pub content: String,
    pub sent_at: i64,
}

/// A message to store, with its idempotency key and what the key stands for (a hash of the
/// group and the content).
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub group_id: String,
    pub sender_id: i64,
    pub content: String,
    pub sent_at: i64,
    pub idempotency: Option<(String, Vec<u8>)>,
}

/// What a send did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Stored(MessageRecord),
    /// The key was used within 24 hours for the same request: its first message.
    Repeated(MessageRecord),
    /// The key was used within 24 hours for another request.
    KeyReused,
}

/// A store failure the domain can act on; anything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such group")]
    NotFound,
    /// The caller is not the group's owner.
    #[error("not the group's owner")]
    NotOwner,
    #[error("the owner cannot leave")]
    OwnerCannotLeave,
    #[error("not a member")]
    NotAMember,
    /// A group with this id exists already (a random id collided).
    #[error("group id taken")]
    IdTaken,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the groups service keeps.
#[async_trait]
pub trait GroupsStore: Send + Sync + std::fmt::Debug {
    /// Creates the group with its owner as its one member.
    async fn create_group(&self, group: &NewGroup) -> StoreResult<GroupRecord>;
    async fn group(&self, id: &str) -> StoreResult<Option<GroupRecord>>;
    /// Groups newest first, those whose lower-cased title or description contains `search`
    /// (already lower-cased) when given, and how many match in all.
    async fn list_groups(&self, search: Option<&str>, limit: u32, offset: u32) -> StoreResult<(Vec<GroupRecord>, u64)>;
    /// Applies `changes` if `owner_id` owns the group (`NotFound`, `NotOwner`).
    async fn update_group(&self, id: &str, owner_id: i64, changes: &GroupChanges, now: i64) -> StoreResult<GroupRecord>;
    /// Deletes the group with its members, messages and their idempotency keys if `owner_id`
    /// owns it (`NotFound`, `NotOwner`).
    async fn delete_group(&self, id: &str, owner_id: i64) -> StoreResult<()>;
    /// Adds the account to the group; whether it was not a member before, and the count after.
    async fn join(&self, id: &str, account_id: i64, now: i64) -> StoreResult<(bool, i64)>;
    /// Removes the account from the group; the count after (`NotFound`, `OwnerCannotLeave`,
    /// `NotAMember`).
    async fn leave(&self, id: &str, account_id: i64) -> StoreResult<i64>;
    /// Removes accounts that no longer exist from the group's members (never its owner); how
    /// many were removed.
    async fn remove_members(&self, id: &str, account_ids: &[i64]) -> StoreResult<u64>;
    /// The group's members by join time, at most `limit`.
    async fn members(&self, id: &str, limit: u32) -> StoreResult<Vec<MemberRecord>>;
    /// Every member's account id, for the live fan-out of a message.
    async fn member_ids(&self, id: &str) -> StoreResult<Vec<i64>>;
    async fn is_member(&self, id: &str, account_id: i64) -> StoreResult<bool>;
    /// Stores a message from a member (`NotFound`, `NotAMember`), or answers its idempotency key.
    async fn send_message(&self, message: &NewMessage) -> StoreResult<SendOutcome>;
    /// Messages newest first with `after_id < id < before_id`.
    async fn messages(&self, id: &str, before_id: i64, after_id: i64, limit: u32) -> StoreResult<Vec<MessageRecord>>;
}

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn GroupsStore> {
    match database {
        Database::Postgres(pool) => Arc::new(sql::PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(sql::SqliteStore::new(pool.clone())),
    }
}

/// `text` escaped for a `LIKE ... ESCAPE '\'` pattern, wrapped in `%` for a substring match.
pub fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
