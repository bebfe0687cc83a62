//! The SQL of the groups store, shared by both dialects (sqlx binds `$N` the same way on
//! PostgreSQL and SQLite); [`groups_store!`] instantiates it with each dialect's transaction
//! start and row-locking clause.
//!
//! `member_count` changes only in the transaction that inserts or deletes a member row, by the
//! rows that statement changed, after the group row is locked (PostgreSQL `FOR UPDATE`; SQLite
//! writers are serialized by `BEGIN IMMEDIATE`), so it stays exact under concurrent joins and
//! leaves.

/// A statement built at run time from constant pieces (column lists, the dialect's clauses);
/// values are always bound, never formatted in.
macro_rules! sql {
    ($($argument:tt)*) => {
        sqlx::AssertSqlSafe(format!($($argument)*))
    };
}

macro_rules! groups_store {
    ($name:ident, $db:ty, $begin:literal, $for_update:literal) => {
        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                $name { pool }
            }

            /// The owner of the group, with its row locked for the rest of the transaction.
            async fn lock_group(tx: &mut sqlx::Transaction<'static, $db>, id: &str) -> StoreResult<i64> {
                let owner: Option<i64> =
                    sqlx::query_scalar(sql!("SELECT owner_id FROM groups WHERE id = $1 {}", $for_update)).bind(id).fetch_optional(&mut **tx).await?;
                owner.ok_or(StoreError::NotFound)
            }

            async fn message_by_id(&self, id: i64) -> StoreResult<Option<MessageRecord>> {
                let row = sqlx::query_as::<_, MessageRecord>(sql!("SELECT {MESSAGE_COLUMNS} FROM group_messages WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row)
            }

            /// What an existing idempotency key answers, if it is still kept.
            async fn answer_key(&self, account_id: i64, key: &str, hash: &[u8], now: i64) -> StoreResult<Option<SendOutcome>> {
                let row: Option<(Vec<u8>, i64, i64)> =
                    sqlx::query_as("SELECT request_hash, message_id, created_at FROM group_idempotency_keys WHERE account_id = $1 AND key = $2")
                        .bind(account_id)
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                let Some((stored_hash, message_id, created_at)) = row else { return Ok(None) };
                if created_at <= now - IDEMPOTENCY_TTL_MS {
                    return Ok(None);
                }
                if stored_hash != hash {
                    return Ok(Some(SendOutcome::KeyReused));
                }
                Ok(self.message_by_id(message_id).await?.map(SendOutcome::Repeated))
            }
        }

        #[async_trait]
        impl GroupsStore for $name {
            async fn create_group(&self, group: &NewGroup) -> StoreResult<GroupRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                let inserted = sqlx::query_as::<_, GroupRecord>(sql!(
                    "INSERT INTO groups (id, title, title_lower, description, description_lower, x_url, github_url, website_url, \
                     owner_id, member_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10) \
                     RETURNING {GROUP_COLUMNS}"
                ))
                .bind(&group.id)
                .bind(&group.title)
                .bind(group.title.to_lowercase())
                .bind(&group.description)
                .bind(group.description.to_lowercase())
                .bind(&group.x_url)
                .bind(&group.github_url)
                .bind(&group.website_url)
                .bind(group.owner_id)
                .bind(group.created_at)
                .fetch_one(&mut *tx)
                .await;
                let record = match inserted {
                    Ok(record) => record,
                    Err(error) if is_unique_violation(&error) => return Err(StoreError::IdTaken),
                    Err(error) => return Err(error.into()),
                };
                sqlx::query("INSERT INTO group_members (group_id, account_id, joined_at) VALUES ($1, $2, $3)")
                    .bind(&group.id)
                    .bind(group.owner_id)
                    .bind(group.created_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(record)
            }

            async fn group(&self, id: &str) -> StoreResult<Option<GroupRecord>> {
                let row = sqlx::query_as::<_, GroupRecord>(sql!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row)
            }

            async fn list_groups(&self, search: Option<&str>, limit: u32, offset: u32) -> StoreResult<(Vec<GroupRecord>, u64)> {
                let (groups, total) = match search {
                    Some(search) => {
                        let pattern = like_pattern(search);
                        let filter = "WHERE title_lower LIKE $1 ESCAPE '\\' OR description_lower LIKE $1 ESCAPE '\\'";
                        let groups = sqlx::query_as::<_, GroupRecord>(sqlx::AssertSqlSafe(format!(
                            "SELECT {GROUP_COLUMNS} FROM groups {filter} ORDER BY seq DESC LIMIT $2 OFFSET $3"
                        )))
                        .bind(&pattern)
                        .bind(i64::from(limit))
                        .bind(i64::from(offset))
                        .fetch_all(&self.pool)
                        .await?;
                        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM groups {filter}")))
                            .bind(&pattern)
                            .fetch_one(&self.pool)
                            .await?;
                        (groups, total)
                    }
                    None => {
                        let groups =
                            sqlx::query_as::<_, GroupRecord>(sql!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY seq DESC LIMIT $1 OFFSET $2"))
                                .bind(i64::from(limit))
                                .bind(i64::from(offset))
                                .fetch_all(&self.pool)
                                .await?;
                        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM groups").fetch_one(&self.pool).await?;
                        (groups, total)
                    }
                };
                Ok((groups, u64::try_from(total).unwrap_or(0)))
            }

            async fn update_group(&self, id: &str, owner_id: i64, changes: &GroupChanges, now: i64) -> StoreResult<GroupRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                if Self::lock_group(&mut tx, id).await? != owner_id {
                    return Err(StoreError::NotOwner);
                }
                // Each field: $n is whether to change it, $n+1 its new value.
                let record = sqlx::query_as::<_, GroupRecord>(sql!(
                    "UPDATE groups SET \
                     title = CASE WHEN $2 THEN $3 ELSE title END, title_lower = CASE WHEN $2 THEN $4 ELSE title_lower END, \
                     description = CASE WHEN $5 THEN $6 ELSE description END, \
                     description_lower = CASE WHEN $5 THEN $7 ELSE description_lower END, \
                     x_url = CASE WHEN $8 THEN $9 ELSE x_url END, github_url = CASE WHEN $10 THEN $11 ELSE github_url END, \
                     website_url = CASE WHEN $12 THEN $13 ELSE website_url END, updated_at = $14 \
                     WHERE id = $1 RETURNING {GROUP_COLUMNS}"
                ))
                .bind(id)
                .bind(changes.title.is_some())
                .bind(changes.title.clone().unwrap_or_default())
                .bind(changes.title.as_deref().map(str::to_lowercase).unwrap_or_default())
                .bind(changes.description.is_some())
                .bind(changes.description.clone().unwrap_or_default())
                .bind(changes.description.as_deref().map(str::to_lowercase).unwrap_or_default())
                .bind(changes.x_url.is_some())
                .bind(changes.x_url.clone().flatten())
                .bind(changes.github_url.is_some())
                .bind(changes.github_url.clone().flatten())
                .bind(changes.website_url.is_some())
                .bind(changes.website_url.clone().flatten())
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(record)
            }

            async fn delete_group(&self, id: &str, owner_id: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                if Self::lock_group(&mut tx, id).await? != owner_id {
                    return Err(StoreError::NotOwner);
                }
                // Explicit rather than only by cascade, so the order is the same everywhere.
                for statement in [
                    "DELETE FROM group_idempotency_keys WHERE message_id IN (SELECT id FROM group_messages WHERE group_id = $1)",
                    "DELETE FROM group_messages WHERE group_id = $1",
                    "DELETE FROM group_members WHERE group_id = $1",
                    "DELETE FROM groups WHERE id = $1",
                ] {
                    sqlx::query(statement).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn join(&self, id: &str, account_id: i64, now: i64) -> StoreResult<(bool, i64)> {
                let mut tx = self.pool.begin_with($begin).await?;
                Self::lock_group(&mut tx, id).await?;
                let added = sqlx::query(
                    "INSERT INTO group_members (group_id, account_id, joined_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (group_id, account_id) DO NOTHING",
                )
                .bind(id)
                .bind(account_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let count: i64 = sqlx::query_scalar("UPDATE groups SET member_count = member_count + $2 WHERE id = $1 RETURNING member_count")
                    .bind(id)
                    .bind(added as i64)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((added > 0, count))
            }

            async fn leave(&self, id: &str, account_id: i64) -> StoreResult<i64> {
                let mut tx = self.pool.begin_with($begin).await?;
                if Self::lock_group(&mut tx, id).await? == account_id {
                    return Err(StoreError::OwnerCannotLeave);
                }
                let removed = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND account_id = $2")
                    .bind(id)
                    .bind(account_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Err(StoreError::NotAMember);
                }
                let count: i64 = sqlx::query_scalar("UPDATE groups SET member_count = member_count - $2 WHERE id = $1 RETURNING member_count")
                    .bind(id)
                    .bind(removed as i64)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(count)
            }

            async fn remove_members(&self, id: &str, account_ids: &[i64]) -> StoreResult<u64> {
                if account_ids.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.pool.begin_with($begin).await?;
                let owner_id = match Self::lock_group(&mut tx, id).await {
                    Ok(owner_id) => owner_id,
                    Err(StoreError::NotFound) => return Ok(0),
                    Err(error) => return Err(error),
                };
                let mut removed = 0;
                for account_id in account_ids.iter().filter(|account_id| **account_id != owner_id) {
                    removed += sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND account_id = $2")
                        .bind(id)
                        .bind(account_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                sqlx::query("UPDATE groups SET member_count = member_count - $2 WHERE id = $1")
                    .bind(id)
                    .bind(removed as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(removed)
            }

            async fn members(&self, id: &str, limit: u32) -> StoreResult<Vec<MemberRecord>> {
                let rows = sqlx::query_as::<_, MemberRecord>(
                    "SELECT account_id, joined_at FROM group_members WHERE group_id = $1 ORDER BY joined_at, account_id LIMIT $2",
                )
                .bind(id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn member_ids(&self, id: &str) -> StoreResult<Vec<i64>> {
                let ids = sqlx::query_scalar("SELECT account_id FROM group_members WHERE group_id = $1 ORDER BY account_id")
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(ids)
            }

            async fn is_member(&self, id: &str, account_id: i64) -> StoreResult<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT account_id FROM group_members WHERE group_id = $1 AND account_id = $2")
                    .bind(id)
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn send_message(&self, message: &NewMessage) -> StoreResult<SendOutcome> {
                if let Some((key, hash)) = &message.idempotency
                    && let Some(outcome) = self.answer_key(message.sender_id, key, hash, message.sent_at).await?
                {
                    return Ok(outcome);
                }
                let mut tx = self.pool.begin_with($begin).await?;
                let member: Option<i64> = sqlx::query_scalar("SELECT account_id FROM group_members WHERE group_id = $1 AND account_id = $2")
                    .bind(&message.group_id)
                    .bind(message.sender_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if member.is_none() {
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT owner_id FROM groups WHERE id = $1").bind(&message.group_id).fetch_optional(&mut *tx).await?;
                    return Err(if exists.is_some() { StoreError::NotAMember } else { StoreError::NotFound });
                }
                let inserted = sqlx::query_as::<_, MessageRecord>(sql!(
                    "INSERT INTO group_messages (group_id, sender_id, content, sent_at) VALUES ($1, $2, $3, $4) RETURNING {MESSAGE_COLUMNS}"
                ))
                .bind(&message.group_id)
                .bind(message.sender_id)
                .bind(&message.content)
                .bind(message.sent_at)
                .fetch_one(&mut *tx)
                .await;
                let record = match inserted {
                    Ok(record) => record,
                    // The group was deleted since the membership was read.
                    Err(sqlx::Error::Database(error)) if error.is_foreign_key_violation() => return Err(StoreError::NotFound),
                    Err(error) => return Err(error.into()),
                };
                if let Some((key, hash)) = &message.idempotency {
                    sqlx::query("DELETE FROM group_idempotency_keys WHERE account_id = $1 AND created_at <= $2")
                        .bind(message.sender_id)
                        .bind(message.sent_at - IDEMPOTENCY_TTL_MS)
                        .execute(&mut *tx)
                        .await?;
                    let claimed = sqlx::query(
                        "INSERT INTO group_idempotency_keys (account_id, key, request_hash, message_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (account_id, key) DO NOTHING",
                    )
                    .bind(message.sender_id)
                    .bind(key)
                    .bind(hash)
                    .bind(record.id)
                    .bind(message.sent_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed == 0 {
                        // A concurrent send with the same key committed first: its answer.
                        drop(tx);
                        return Ok(self.answer_key(message.sender_id, key, hash, message.sent_at).await?.unwrap_or(SendOutcome::KeyReused));
                    }
                }
                tx.commit().await?;
                Ok(SendOutcome::Stored(record))
            }

            async fn messages(&self, id: &str, before_id: i64, after_id: i64, limit: u32) -> StoreResult<Vec<MessageRecord>> {
                let rows = sqlx::query_as::<_, MessageRecord>(sql!(
                    "SELECT {MESSAGE_COLUMNS} FROM group_messages WHERE group_id = $1 AND id < $2 AND id > $3 ORDER BY id DESC LIMIT $4"
                ))
                .bind(id)
                .bind(before_id)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }
        }
    };
}

use async_trait::async_trait;
use clawx_common::storage::is_unique_violation;

use crate::store::{
    GroupChanges, GroupRecord, GroupsStore, IDEMPOTENCY_TTL_MS, MemberRecord, MessageRecord, NewGroup, NewMessage, SendOutcome, StoreError,
    StoreResult, like_pattern,
};

const GROUP_COLUMNS: &str = "id, title, description, x_url, github_url, website_url, owner_id, member_count, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "id, group_id, sender_id, content, sent_at";

groups_store!(PostgresStore, sqlx::Postgres, "BEGIN", "FOR UPDATE");
// SQLite write transactions take the write lock up front, so concurrent writers wait on the
// busy timeout instead of failing on lock upgrade (and need no row locks).
groups_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE", "");
