//! Persistence of the XMTP node: one trait, a PostgreSQL and a SQLite implementation sharing
//! their SQL, and one conformance suite run against both.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use clawx_common::Database;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A group message about to be stored.
#[derive(Clone, Debug)]
pub struct NewGroupMessage {
    pub group_id: Vec<u8>,
    pub data: Vec<u8>,
    pub sender_hmac: Vec<u8>,
    pub should_push: bool,
    pub is_commit: bool,
}

/// A stored group message.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredGroupMessage {
    pub id: i64,
    pub group_id: Vec<u8>,
    pub created_ns: i64,
    pub data: Vec<u8>,
    pub sender_hmac: Vec<u8>,
    pub should_push: bool,
    pub is_commit: bool,
}

/// A newly stored item and the id of the item before it on the same topic (group or
/// installation), so live subscribers can tell whether they missed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted<T> {
    pub item: T,
    pub previous_id: i64,
}

/// A welcome about to be stored: the encoded `WelcomeMessageInput`.
#[derive(Clone, Debug)]
pub struct NewWelcome {
    pub installation_key: Vec<u8>,
    pub message: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredWelcome {
    pub id: i64,
    pub installation_key: Vec<u8>,
    pub created_ns: i64,
    pub message: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredIdentityUpdate {
    pub sequence_id: i64,
    pub inbox_id: String,
    pub server_timestamp_ns: i64,
    pub update_bytes: Vec<u8>,
}

/// An inbox's log position, for optimistic appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxPosition {
    pub last_sequence_id: i64,
    /// Stored as a 32-bit integer.
    #[sqlx(try_from = "i32")]
    pub update_count: i64,
}

#[derive(Clone, Debug)]
pub struct NewCommitLogEntry {
    pub group_id: Vec<u8>,
    pub entry: Vec<u8>,
    /// The encoded `RecoverableEd25519Signature`.
    pub signature: Option<Vec<u8>>,
    /// The Ed25519 public key that signed the entry (checked before it reaches the store).
    pub signer: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredCommitLogEntry {
    pub id: i64,
    pub group_id: Vec<u8>,
    pub entry: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// Which way a page runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ids greater than the cursor, oldest first.
    Ascending,
    /// Ids smaller than the cursor (or the newest when the cursor is 0), newest first.
    Descending,
}

/// Rows read within a byte budget: at least one row when any exists, then rows while the
/// running total stays within the budget. `cut` tells that more rows were left unread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budgeted<T> {
    pub items: Vec<T>,
    pub cut: bool,
}

/// The bytes a stored item adds to a reply: its payloads plus a fixed allowance for the
/// envelope (ids, timestamps, field tags).
pub const ENVELOPE_BYTES: usize = 64;

/// A store failure the node can act on; anything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The inbox log moved since it was read (retry), or an installation key is bound to
    /// another inbox.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// What was asked for does not fit the byte budget of one reply.
    #[error("the reply would exceed {0} bytes")]
    OverBudget(usize),
    /// A per-topic bound is reached (the group's commit log is full).
    #[error("{0}")]
    Full(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the XMTP node keeps.
#[async_trait]
pub trait NodeStore: Send + Sync + std::fmt::Debug {
    /// Stores the latest key package of an installation: `Conflict` when the installation key
    /// was registered for another inbox, or when the package expires before the stored one (an
    /// old package replayed).
    async fn upsert_key_package(&self, installation_key: &[u8], inbox_id: &str, key_package: &[u8], not_after: i64, now_ms: i64) -> StoreResult<()>;
    /// The latest key package of each installation key that has one; `OverBudget` when they
    /// add up to more than `max_bytes`.
    async fn key_packages(&self, installation_keys: &[Vec<u8>], max_bytes: usize) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Stores group messages atomically; a message already stored is skipped. Returns the
    /// stored ones, in id order.
    async fn insert_group_messages(&self, messages: &[NewGroupMessage], created_ns: i64) -> StoreResult<Vec<Inserted<StoredGroupMessage>>>;
    /// A page of a group's messages: at most `limit`, and no more bytes than `max_bytes`
    /// (but at least one message).
    async fn group_messages(
        &self,
        group_id: &[u8],
        cursor: i64,
        direction: Direction,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Budgeted<StoredGroupMessage>>;
    /// The newest message of each group (their content only when `with_content`), keyed by
    /// group id; `OverBudget` when they add up to more than `max_bytes`.
    async fn newest_group_messages(
        &self,
        group_ids: &[Vec<u8>],
        with_content: bool,
        max_bytes: usize,
    ) -> StoreResult<std::collections::HashMap<Vec<u8>, StoredGroupMessage>>;
    /// The last message id of each group (0 when empty), in request order.
    async fn group_heads(&self, group_ids: &[Vec<u8>]) -> StoreResult<Vec<i64>>;
    /// The last welcome id of each installation (0 when none), in request order.
    async fn welcome_heads(&self, installation_keys: &[Vec<u8>]) -> StoreResult<Vec<i64>>;

    /// Stores welcomes atomically; a welcome already stored is skipped.
    async fn insert_welcomes(&self, welcomes: &[NewWelcome], created_ns: i64) -> StoreResult<Vec<Inserted<StoredWelcome>>>;
    /// A page of an installation's welcomes, bounded like [`NodeStore::group_messages`].
    async fn welcomes(
        &self,
        installation_key: &[u8],
        cursor: i64,
        direction: Direction,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Budgeted<StoredWelcome>>;

    /// The log of an inbox, oldest first, and its position as of that log (`None` before the
    /// first update).
    async fn identity_log(&self, inbox_id: &str) -> StoreResult<(Option<InboxPosition>, Vec<StoredIdentityUpdate>)>;
    /// Appends an update if the log is still at `expected` (`Conflict` otherwise) and records
    /// the Ethereum addresses the update linked and unlinked.
    async fn append_identity_update(
        &self,
        inbox_id: &str,
        expected: Option<InboxPosition>,
        update_bytes: &[u8],
        linked_addresses: &[String],
        unlinked_addresses: &[String],
        server_timestamp_ns: i64,
    ) -> StoreResult<StoredIdentityUpdate>;
    /// For each `(inbox, sequence id)` (distinct inboxes), the updates after that sequence id,
    /// oldest first; `OverBudget` when they add up to more than `max_bytes`.
    async fn identity_updates_after(&self, requests: &[(String, i64)], max_bytes: usize) -> StoreResult<Vec<Vec<StoredIdentityUpdate>>>;
    /// The inbox each (lowercase) address currently belongs to.
    async fn inbox_ids(&self, addresses: &[String]) -> StoreResult<Vec<Option<String>>>;

    /// Appends commit-log entries atomically. A group's log accepts the signer of its first
    /// entry only: entries by other signers are skipped (readers would skip them too). `Full`
    /// when a group would hold more than `max_per_group` entries. Returns the stored ones.
    async fn insert_commit_log(&self, entries: &[NewCommitLogEntry], max_per_group: i64) -> StoreResult<Vec<StoredCommitLogEntry>>;
    /// A page of a group's commit log, oldest first, bounded like [`NodeStore::group_messages`].
    async fn commit_log(&self, group_id: &[u8], cursor: i64, limit: u32, max_bytes: usize) -> StoreResult<Budgeted<StoredCommitLogEntry>>;
}

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn NodeStore> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
    }
}
