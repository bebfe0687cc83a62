//! Persistence of badges, gated groups and their members, and partner notifications with one
//! delivery per member: one trait, the same SQL on PostgreSQL and SQLite, one conformance
//! suite (`tests/badges_store.rs`) run against both.
//!
//! Work several replicas share is claimed, never shared: deliveries and members due for a
//! re-check are taken with `FOR UPDATE SKIP LOCKED` on PostgreSQL (on SQLite one statement
//! under the single writer lock), and a claim moves the row out of the due set (a delivery's
//! `next_attempt_at` to the end of its lease, a member's `checked_at` to now).

use std::sync::Arc;

use async_trait::async_trait;
use clawx_common::Database;

/// A badge as stored, with its group and member count when read.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct BadgeRecord {
    pub code: String,
    pub name: String,
    pub chain_id: i64,
    /// Lowercase hex.
    pub contract: String,
    /// `erc20`, `erc721` or `erc1155`.
    pub standard: String,
    /// Decimal.
    pub token_id: Option<String>,
    /// Decimal.
    pub min_balance: String,
    pub partner_account_id: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Set when read: the gated group's id, if created.
    pub group_id: Option<String>,
    /// Set when read: the group's members.
    pub member_count: i64,
}

/// A member the re-check took.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DueMember {
    pub group_id: String,
    pub badge_code: String,
    pub address: String,
    pub joined_at: i64,
}

/// A notification as queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub id: String,
    pub badge_code: String,
    pub partner_account_id: i64,
    pub subject: String,
    /// The direct message each member receives.
    pub content: String,
    pub created_at: i64,
}

/// A notification and how far its delivery got.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationStatus {
    pub id: String,
    pub badge_code: String,
    pub partner_account_id: i64,
    pub subject: String,
    pub recipients: i64,
    pub delivered: i64,
    pub pending: i64,
    pub failed: i64,
    pub created_at: i64,
}

/// A delivery a worker claimed.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub notification_id: String,
    pub address: String,
    /// This attempt's number (1 for the first); settling names it, so a worker whose lease
    /// ran out cannot settle a delivery another worker took over.
    pub attempts: i64,
    pub partner_account_id: i64,
    pub content: String,
}

/// A store failure the domain can act on; anything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a badge with this code exists")]
    BadgeExists,
    #[error("no such badge")]
    NoBadge,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the badges part of the groups service keeps.
#[async_trait]
pub trait BadgeStore: Send + Sync + std::fmt::Debug {
    /// Stores a new badge (`BadgeExists` when the code is taken).
    async fn create_badge(&self, badge: &BadgeRecord) -> StoreResult<()>;
    async fn badge(&self, code: &str) -> StoreResult<Option<BadgeRecord>>;
    /// The badge's group: the existing one, or a new one with `new_id`; whether this call
    /// created it (`NoBadge` when the badge does not exist).
    async fn ensure_group(&self, code: &str, new_id: &str, now: i64) -> StoreResult<(String, bool)>;
    /// Adds a member (checked now); whether it was not one already.
    async fn add_member(&self, group_id: &str, address: &str, now: i64) -> StoreResult<bool>;
    /// Removes a member; whether it was one.
    async fn remove_member(&self, group_id: &str, address: &str) -> StoreResult<bool>;
    async fn is_member(&self, group_id: &str, address: &str) -> StoreResult<bool>;
    /// Takes at most `limit` members last checked at or before `due_before` (oldest first) and
    /// marks them checked at `now`.
    async fn claim_recheck(&self, now: i64, due_before: i64, limit: u32) -> StoreResult<Vec<DueMember>>;
    /// Removes a member the re-check found no longer holding, unless it left and joined again
    /// since it was taken (`joined_at` differs); whether it was removed.
    async fn remove_stale_member(&self, group_id: &str, address: &str, joined_at: i64) -> StoreResult<bool>;
    /// Makes a member due again at once (its chain could not be read).
    async fn recheck_again(&self, group_id: &str, address: &str) -> StoreResult<()>;
    /// Queues a notification with one pending delivery per member of the badge's group (none
    /// without a group), in one transaction; the number of recipients.
    async fn create_notification(&self, notification: &NewNotification) -> StoreResult<i64>;
    async fn notification(&self, id: &str) -> StoreResult<Option<NotificationStatus>>;
    /// Takes at most `limit` due deliveries, hiding them until `lease_until` and counting the
    /// attempt.
    async fn claim_deliveries(&self, now: i64, lease_until: i64, limit: u32) -> StoreResult<Vec<ClaimedDelivery>>;
    /// The delivery (attempt `attempt`) reached the inbox; false when another worker took it
    /// over since.
    async fn delivered(&self, id: i64, attempt: i64) -> StoreResult<bool>;
    /// The attempt failed; due again at `next_attempt_at`.
    async fn retry_delivery(&self, id: i64, attempt: i64, next_attempt_at: i64, error: &str) -> StoreResult<bool>;
    /// The delivery cannot be made: kept as `failed`.
    async fn fail_delivery(&self, id: i64, attempt: i64, error: &str) -> StoreResult<bool>;
}

const BADGE_COLUMNS: &str = "b.code, b.name, b.chain_id, b.contract, b.standard, b.token_id, b.min_balance, b.partner_account_id, b.created_at, \
     g.id AS group_id, (SELECT COUNT(*) FROM gated_members m WHERE m.group_id = g.id) AS member_count";

macro_rules! sql_store {
    ($name:ident, $db:ty, $begin:literal, $skip_locked:literal, $skip_locked_members:literal) => {
        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                $name { pool }
            }
        }

        #[async_trait]
        impl BadgeStore for $name {
            async fn create_badge(&self, badge: &BadgeRecord) -> StoreResult<()> {
                let inserted = sqlx::query(
                    "INSERT INTO badges (code, name, chain_id, contract, standard, token_id, min_balance, partner_account_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&badge.code)
                .bind(&badge.name)
                .bind(badge.chain_id)
                .bind(&badge.contract)
                .bind(&badge.standard)
                .bind(&badge.token_id)
                .bind(&badge.min_balance)
                .bind(badge.partner_account_id)
                .bind(badge.created_at)
                .execute(&self.pool)
                .await;
                match inserted {
                    Ok(_) => Ok(()),
                    Err(error) if is_unique_violation(&error) => Err(StoreError::BadgeExists),
                    Err(error) => Err(StoreError::Database(error)),
                }
            }

            async fn badge(&self, code: &str) -> StoreResult<Option<BadgeRecord>> {
                let statement = format!("SELECT {BADGE_COLUMNS} FROM badges b LEFT JOIN gated_groups g ON g.badge_code = b.code WHERE b.code = $1");
                let row = sqlx::query_as::<_, BadgeRecord>(sqlx::AssertSqlSafe(statement)).bind(code).fetch_optional(&self.pool).await?;
                Ok(row)
            }

            async fn ensure_group(&self, code: &str, new_id: &str, now: i64) -> StoreResult<(String, bool)> {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT code FROM badges WHERE code = $1").bind(code).fetch_optional(&self.pool).await?;
                if exists.is_none() {
                    return Err(StoreError::NoBadge);
                }
                let inserted =
                    sqlx::query("INSERT INTO gated_groups (id, badge_code, created_at) VALUES ($1, $2, $3) ON CONFLICT (badge_code) DO NOTHING")
                        .bind(new_id)
                        .bind(code)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                let id: String = sqlx::query_scalar("SELECT id FROM gated_groups WHERE badge_code = $1").bind(code).fetch_one(&self.pool).await?;
                Ok((id, inserted.rows_affected() == 1))
            }

            async fn add_member(&self, group_id: &str, address: &str, now: i64) -> StoreResult<bool> {
                let inserted = sqlx::query(
                    "INSERT INTO gated_members (group_id, address, joined_at, checked_at) VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (group_id, address) DO NOTHING",
                )
                .bind(group_id)
                .bind(address)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(inserted.rows_affected() == 1)
            }

            async fn remove_member(&self, group_id: &str, address: &str) -> StoreResult<bool> {
                let removed = sqlx::query("DELETE FROM gated_members WHERE group_id = $1 AND address = $2")
                    .bind(group_id)
                    .bind(address)
                    .execute(&self.pool)
                    .await?;
                Ok(removed.rows_affected() == 1)
            }

            async fn is_member(&self, group_id: &str, address: &str) -> StoreResult<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT joined_at FROM gated_members WHERE group_id = $1 AND address = $2")
                    .bind(group_id)
                    .bind(address)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn claim_recheck(&self, now: i64, due_before: i64, limit: u32) -> StoreResult<Vec<DueMember>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let statement = concat!(
                    "SELECT m.group_id, g.badge_code, m.address, m.joined_at FROM gated_members m JOIN gated_groups g ON g.id = m.group_id \
                     WHERE m.checked_at <= $1 ORDER BY m.checked_at, m.group_id, m.address LIMIT $2 ",
                    $skip_locked_members
                );
                let due: Vec<DueMember> = sqlx::query_as(statement).bind(due_before).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
                for member in &due {
                    sqlx::query("UPDATE gated_members SET checked_at = $1 WHERE group_id = $2 AND address = $3")
                        .bind(now)
                        .bind(&member.group_id)
                        .bind(&member.address)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(due)
            }

            async fn remove_stale_member(&self, group_id: &str, address: &str, joined_at: i64) -> StoreResult<bool> {
                let removed = sqlx::query("DELETE FROM gated_members WHERE group_id = $1 AND address = $2 AND joined_at = $3")
                    .bind(group_id)
                    .bind(address)
                    .bind(joined_at)
                    .execute(&self.pool)
                    .await?;
                Ok(removed.rows_affected() == 1)
            }

            async fn recheck_again(&self, group_id: &str, address: &str) -> StoreResult<()> {
                sqlx::query("UPDATE gated_members SET checked_at = 0 WHERE group_id = $1 AND address = $2")
                    .bind(group_id)
                    .bind(address)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_notification(&self, notification: &NewNotification) -> StoreResult<i64> {
                let mut tx = self.pool.begin_with($begin).await?;
                let group: Option<String> = sqlx::query_scalar("SELECT id FROM gated_groups WHERE badge_code = $1")
                    .bind(&notification.badge_code)
                    .fetch_optional(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO badge_notifications (id, badge_code, partner_account_id, subject, content, recipients, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6)",
                )
                .bind(&notification.id)
                .bind(&notification.badge_code)
                .bind(notification.partner_account_id)
                .bind(&notification.subject)
                .bind(&notification.content)
                .bind(notification.created_at)
                .execute(&mut *tx)
                .await?;
                let recipients = match group {
                    Some(group_id) => sqlx::query(
                        "INSERT INTO badge_deliveries (notification_id, address, next_attempt_at) \
                         SELECT $1, address, $2 FROM gated_members WHERE group_id = $3 ORDER BY address",
                    )
                    .bind(&notification.id)
                    .bind(notification.created_at)
                    .bind(&group_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64,
                    None => 0,
                };
                sqlx::query("UPDATE badge_notifications SET recipients = $1 WHERE id = $2")
                    .bind(recipients)
                    .bind(&notification.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(recipients)
            }

            async fn notification(&self, id: &str) -> StoreResult<Option<NotificationStatus>> {
                let row = sqlx::query_as::<_, NotificationStatus>(
                    "SELECT n.id, n.badge_code, n.partner_account_id, n.subject, n.recipients, \
                     (SELECT COUNT(*) FROM badge_deliveries d WHERE d.notification_id = n.id AND d.state = 'delivered') AS delivered, \
                     (SELECT COUNT(*) FROM badge_deliveries d WHERE d.notification_id = n.id AND d.state = 'pending') AS pending, \
                     (SELECT COUNT(*) FROM badge_deliveries d WHERE d.notification_id = n.id AND d.state = 'failed') AS failed, \
                     n.created_at FROM badge_notifications n WHERE n.id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row)
            }

            async fn claim_deliveries(&self, now: i64, lease_until: i64, limit: u32) -> StoreResult<Vec<ClaimedDelivery>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let statement = concat!(
                    "SELECT id FROM badge_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2 ",
                    $skip_locked
                );
                let ids: Vec<i64> = sqlx::query_scalar(statement).bind(now).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    sqlx::query("UPDATE badge_deliveries SET next_attempt_at = $1, attempts = attempts + 1 WHERE id = $2")
                        .bind(lease_until)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    let delivery = sqlx::query_as::<_, ClaimedDelivery>(
                        "SELECT d.id, d.notification_id, d.address, d.attempts, n.partner_account_id, n.content \
                         FROM badge_deliveries d JOIN badge_notifications n ON n.id = d.notification_id WHERE d.id = $1",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    claimed.push(delivery);
                }
                tx.commit().await?;
                Ok(claimed)
            }

            async fn delivered(&self, id: i64, attempt: i64) -> StoreResult<bool> {
                let updated = sqlx::query(
                    "UPDATE badge_deliveries SET state = 'delivered', last_error = NULL WHERE id = $1 AND attempts = $2 AND state = 'pending'",
                )
                .bind(id)
                .bind(attempt)
                .execute(&self.pool)
                .await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn retry_delivery(&self, id: i64, attempt: i64, next_attempt_at: i64, error: &str) -> StoreResult<bool> {
                let updated = sqlx::query(
                    "UPDATE badge_deliveries SET next_attempt_at = $1, last_error = $2 WHERE id = $3 AND attempts = $4 AND state = 'pending'",
                )
                .bind(next_attempt_at)
                .bind(error)
                .bind(id)
                .bind(attempt)
                .execute(&self.pool)
                .await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn fail_delivery(&self, id: i64, attempt: i64, error: &str) -> StoreResult<bool> {
                let updated = sqlx::query(
                    "UPDATE badge_deliveries SET state = 'failed', last_error = $1 WHERE id = $2 AND attempts = $3 AND state = 'pending'",
                )
                .bind(error)
                .bind(id)
                .bind(attempt)
                .execute(&self.pool)
                .await?;
                Ok(updated.rows_affected() == 1)
            }
        }
    };
}

use clawx_common::storage::is_unique_violation;

sql_store!(PostgresBadgeStore, sqlx::Postgres, "BEGIN", "FOR UPDATE SKIP LOCKED", "FOR UPDATE OF m SKIP LOCKED");
// SQLite write transactions take the write lock up front, so concurrent claims run one after
// the other and never take the same rows.
sql_store!(SqliteBadgeStore, sqlx::Sqlite, "BEGIN IMMEDIATE", "", "");

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn BadgeStore> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresBadgeStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteBadgeStore::new(pool.clone())),
    }
}
