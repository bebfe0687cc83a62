//! Persistence of push registrations and the notification queue: one trait, one SQL body for
//! both dialects. Jobs are enqueued by the writers of messages, in their own transactions
//! ([`enqueue_dm_sql`] and [`enqueue_dm_from`] for direct messages, [`enqueue_xmtp_sql`] for XMTP envelopes), so an
//! acknowledged message is never without its notification; the worker claims due jobs with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL (on SQLite one statement under the single writer lock).

use std::sync::Arc;

use async_trait::async_trait;
use clawx_common::Database;

use crate::dm::store::StoredMessage;

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// A topic to register, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRegistration {
    /// `inbox`, `dm:<conversation id>` or an XMTP topic.
    pub topic_key: String,
    /// The topic as the caller wrote it.
    pub topic: String,
    /// The peer named with it (`a:<id>` or `w:<address>`).
    pub peer: Option<String>,
}

/// The bounds of one account's registrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationLimits {
    pub max_targets: u32,
    pub max_topics: u32,
    /// How many targets (of all accounts) one XMTP topic may be registered to.
    pub max_targets_per_xmtp_topic: u32,
}

/// What a registration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    /// `target_id` holds the topics; `new_topics` of them were not registered to it before.
    Done { target_id: i64, target_created: bool, new_topics: u32 },
    /// The account has `max_targets` targets already; nothing stored.
    TooManyTargets,
    /// The account would have more than `max_topics` topics; nothing stored.
    TooManyTopics,
    /// This XMTP topic would be registered to more than `max_targets_per_xmtp_topic` targets;
    /// nothing stored.
    TopicTaken(String),
}

/// A claimed job with its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub target_id: i64,
    pub account_id: i64,
    /// `webhook` or `fcm`.
    pub platform: String,
    /// The URL or token.
    pub address: String,
    pub topic: String,
    /// `dm`, `xmtp_group` or `xmtp_welcome`.
    pub kind: String,
    pub ref_id: i64,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
}

/// An XMTP envelope a job names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub id: i64,
    pub created_ns: i64,
    /// The encrypted payload; empty when larger than asked for.
    pub data: Vec<u8>,
    pub size: i64,
}

/// A job as the queue holds it (for tests and operators).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedJob {
    pub id: i64,
    pub target_id: i64,
    pub topic: String,
    pub kind: String,
    pub ref_id: i64,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Everything the push service keeps.
#[async_trait]
pub trait PushStore: Send + Sync + std::fmt::Debug {
    /// Whether the account is in the conversation.
    async fn is_member(&self, account_id: i64, conversation_id: i64) -> StoreResult<bool>;
    /// Registers `topics` to the account's target (created if new), within `limits`; all or
    /// nothing.
    async fn register(
        &self,
        account_id: i64,
        platform: &str,
        address: &str,
        topics: &[TopicRegistration],
        limits: RegistrationLimits,
        now_ms: i64,
    ) -> StoreResult<Registered>;
    /// Claims up to `limit` due jobs, at most `per_target` of them for one target: each gets its
    /// attempt counted and is hidden until `lease_until_ms` (when a worker dies mid-delivery,
    /// the job is due again then). Due jobs of a target past its share are moved behind the
    /// other due jobs (due at `now_ms`, attempts unchanged), so a target with a backlog cannot
    /// hold the head of the queue.
    async fn claim(&self, now_ms: i64, lease_until_ms: i64, limit: u32, per_target: u32) -> StoreResult<Vec<ClaimedJob>>;
    /// The job was delivered (attempt `attempt`): removed. False when another worker took the
    /// job over since.
    async fn delivered(&self, job_id: i64, attempt: i64) -> StoreResult<bool>;
    /// The attempt failed; the job is due again at `next_attempt_at`.
    async fn retry(&self, job_id: i64, attempt: i64, next_attempt_at: i64, error: &str) -> StoreResult<bool>;
    /// The job is out of attempts (or cannot be delivered): kept as `failed`.
    async fn fail(&self, job_id: i64, attempt: i64, error: &str) -> StoreResult<bool>;
    /// Removes a target, its topics and its jobs (the target told us it is gone).
    async fn unregister_target(&self, target_id: i64) -> StoreResult<bool>;
    /// Removes a job whose message no longer exists.
    async fn drop_job(&self, job_id: i64) -> StoreResult<()>;
    /// The direct message a job names.
    async fn message(&self, message_id: i64) -> StoreResult<Option<StoredMessage>>;
    /// The XMTP envelope a job names (`xmtp_group` or `xmtp_welcome`); its data only when at
    /// most `max_bytes`.
    async fn envelope(&self, kind: &str, id: i64, max_bytes: usize) -> StoreResult<Option<Envelope>>;
    /// Deletes failed jobs last tried before `before_ms`; how many.
    async fn delete_failed_before(&self, before_ms: i64) -> StoreResult<u64>;
    /// The jobs of a target, oldest first.
    async fn jobs_of(&self, target_id: i64) -> StoreResult<Vec<QueuedJob>>;
    /// The account's targets: (id, platform, address).
    async fn targets_of(&self, account_id: i64) -> StoreResult<Vec<(i64, String, String)>>;
}

/// The statement that queues a notification for each new direct message whose recipient
/// registered its inbox or that conversation, unless the recipient denied the sender. Rows of
/// `VALUES` (7 parameters each): recipient account id, message id, `dm:<conversation id>`,
/// sender party key, conversation topic, now (ms), now (ms).
pub fn enqueue_dm_sql(rows: usize) -> String {
    let values = (0..rows).map(|row| format!("({})", clawx_common::storage::placeholders(1 + row * 7, 7))).collect::<Vec<_>>().join(", ");
    enqueue_dm_from(&format!("(VALUES {values}) AS v"))
}

/// [`enqueue_dm_sql`] over any `source` of rows `v(column1, ..., column7)`. The recipient's
/// consent is its membership's, or for a conversation its first message starts, the consent it
/// set for the peer before: so the statement reads the same whether the batch's memberships are
/// written before it or beside it (in one statement, which sees none of them).
pub fn enqueue_dm_from(source: &str) -> String {
    format!(
        "INSERT INTO push_jobs (target_id, topic, kind, ref_id, next_attempt_at, created_at) \
         SELECT t.target_id, v.column5, 'dm', v.column2, v.column6, v.column7 \
         FROM {source} JOIN push_topics t ON t.account_id = v.column1 AND (t.topic_key = 'inbox' OR t.topic_key = v.column3) \
         WHERE COALESCE((SELECT mb.consent FROM dm_memberships mb WHERE mb.account_id = v.column1 AND mb.peer = v.column4), \
         (SELECT pc.consent FROM dm_peer_consent pc WHERE pc.account_id = v.column1 AND pc.peer = v.column4), 'unknown') <> 'denied' \
         ORDER BY v.column2, t.target_id ON CONFLICT (target_id, kind, ref_id) DO NOTHING"
    )
}

/// The statement that queues a notification for an XMTP envelope on a registered topic, unless
/// the account denied the topic or the peer its registration named. Parameters: kind (`xmtp_group` or
/// `xmtp_welcome`), envelope id, topic, now (ms).
pub const ENQUEUE_XMTP_SQL: &str = "INSERT INTO push_jobs (target_id, topic, kind, ref_id, next_attempt_at, created_at) \
     SELECT t.target_id, t.topic, $1, $2, $4, $4 FROM push_topics t WHERE t.topic_key = $3 \
     AND NOT EXISTS (SELECT 1 FROM dm_memberships mb WHERE mb.account_id = t.account_id AND mb.peer = t.peer AND mb.consent = 'denied') \
     AND NOT EXISTS (SELECT 1 FROM dm_peer_consent pc WHERE pc.account_id = t.account_id AND pc.peer = t.peer AND pc.consent = 'denied') \
     AND NOT EXISTS (SELECT 1 FROM dm_topic_consent tc WHERE tc.account_id = t.account_id AND tc.topic = t.topic_key AND tc.consent = 'denied') \
     ON CONFLICT (target_id, kind, ref_id) DO NOTHING";

/// The XMTP topic of a group (`/xmtp/mls/1/g-<hex>/proto`) or of an installation's welcomes
/// (`/xmtp/mls/1/w-<hex>/proto`).
pub fn xmtp_topic(kind: char, id: &[u8]) -> String {
    format!("/xmtp/mls/1/{kind}-{}/proto", hex::encode(id))
}

macro_rules! push_store {
    ($name:ident, $db:ty, $begin:literal, $skip_locked:literal, $lock_account:literal, $lock_topic:literal) => {
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
        impl PushStore for $name {
            async fn is_member(&self, account_id: i64, conversation_id: i64) -> StoreResult<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT conversation_id FROM dm_memberships WHERE account_id = $1 AND conversation_id = $2")
                    .bind(account_id)
                    .bind(conversation_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn register(
                &self,
                account_id: i64,
                platform: &str,
                address: &str,
                topics: &[TopicRegistration],
                limits: RegistrationLimits,
                now_ms: i64,
            ) -> StoreResult<Registered> {
                let mut tx = self.pool.begin_with($begin).await?;
                // The caps below are counted, then inserted: registrations of one account run one
                // at a time, so concurrent ones cannot all pass the count.
                sqlx::query($lock_account).bind(account_id).execute(&mut *tx).await?;
                let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM push_targets WHERE account_id = $1 AND platform = $2 AND address = $3")
                    .bind(account_id)
                    .bind(platform)
                    .bind(address)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (target_id, target_created) = match existing {
                    Some(id) => (id, false),
                    None => {
                        let targets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM push_targets WHERE account_id = $1")
                            .bind(account_id)
                            .fetch_one(&mut *tx)
                            .await?;
                        if targets >= i64::from(limits.max_targets) {
                            return Ok(Registered::TooManyTargets);
                        }
                        let id: i64 = sqlx::query_scalar(
                            "INSERT INTO push_targets (account_id, platform, address, created_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (account_id, platform, address) DO UPDATE SET created_at = push_targets.created_at RETURNING id",
                        )
                        .bind(account_id)
                        .bind(platform)
                        .bind(address)
                        .bind(now_ms)
                        .fetch_one(&mut *tx)
                        .await?;
                        (id, true)
                    }
                };
                let count_on_target = "SELECT COUNT(*) FROM push_topics WHERE target_id = $1";
                let before: i64 = sqlx::query_scalar(count_on_target).bind(target_id).fetch_one(&mut *tx).await?;
                for topic in topics {
                    sqlx::query(
                        "INSERT INTO push_topics (target_id, account_id, topic_key, topic, peer, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (target_id, topic_key) DO UPDATE SET topic = excluded.topic, peer = excluded.peer",
                    )
                    .bind(target_id)
                    .bind(account_id)
                    .bind(&topic.topic_key)
                    .bind(&topic.topic)
                    .bind(&topic.peer)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                let after: i64 = sqlx::query_scalar(count_on_target).bind(target_id).fetch_one(&mut *tx).await?;
                let new_topics = u32::try_from(after - before).unwrap_or(0);
                let total: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM push_topics WHERE account_id = $1").bind(account_id).fetch_one(&mut *tx).await?;
                if total > i64::from(limits.max_topics) {
                    // Dropping the transaction rolls it back.
                    return Ok(Registered::TooManyTopics);
                }
                // An XMTP topic is shared by every member of the group: bound how many targets
                // one may reach, so one envelope cannot fan out to many calls at one receiver.
                // Topics are sorted, so concurrent registrations take their locks in one order.
                for topic in topics.iter().filter(|topic| topic.topic_key.starts_with("/xmtp/")) {
                    sqlx::query($lock_topic).bind(&topic.topic_key).execute(&mut *tx).await?;
                    let registered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM push_topics WHERE topic_key = $1")
                        .bind(&topic.topic_key)
                        .fetch_one(&mut *tx)
                        .await?;
                    if registered > i64::from(limits.max_targets_per_xmtp_topic) {
                        return Ok(Registered::TopicTaken(topic.topic.clone()));
                    }
                }
                tx.commit().await?;
                Ok(Registered::Done { target_id, target_created, new_topics })
            }

            async fn claim(&self, now_ms: i64, lease_until_ms: i64, limit: u32, per_target: u32) -> StoreResult<Vec<ClaimedJob>> {
                // Candidates: a window of the due jobs, oldest first, locked for this claim.
                let window = i64::from(limit).saturating_mul(4);
                let mut tx = self.pool.begin_with($begin).await?;
                let statement = concat!(
                    "SELECT id, target_id FROM push_jobs WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2 ",
                    $skip_locked
                );
                let candidates: Vec<(i64, i64)> = sqlx::query_as(statement).bind(now_ms).bind(window).fetch_all(&mut *tx).await?;
                let mut taken = Vec::new();
                let mut deferred = Vec::new();
                let mut per_target_taken: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
                for (id, target_id) in candidates {
                    let count = per_target_taken.entry(target_id).or_default();
                    if *count >= per_target {
                        deferred.push(id);
                    } else if taken.len() < limit as usize {
                        *count += 1;
                        taken.push(id);
                    }
                }
                if !deferred.is_empty() {
                    let statement = format!("UPDATE push_jobs SET next_attempt_at = $1 WHERE id IN ({})", clawx_common::storage::placeholders(2, deferred.len()));
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(now_ms);
                    for id in &deferred {
                        query = query.bind(id);
                    }
                    query.execute(&mut *tx).await?;
                }
                if taken.is_empty() {
                    tx.commit().await?;
                    return Ok(Vec::new());
                }
                let statement = format!(
                    "UPDATE push_jobs SET next_attempt_at = $1, attempts = attempts + 1 WHERE id IN ({}) RETURNING id, target_id, topic, kind, ref_id, attempts",
                    clawx_common::storage::placeholders(2, taken.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(lease_until_ms);
                for id in &taken {
                    query = query.bind(id);
                }
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                let mut jobs = Vec::with_capacity(rows.len());
                for row in &rows {
                    jobs.push(ClaimedJob {
                        id: row.try_get("id")?,
                        target_id: row.try_get("target_id")?,
                        account_id: 0,
                        platform: String::new(),
                        address: String::new(),
                        topic: row.try_get("topic")?,
                        kind: row.try_get("kind")?,
                        ref_id: row.try_get("ref_id")?,
                        attempt: i64::from(row.try_get::<i32, _>("attempts")?),
                    });
                }
                let target_ids: std::collections::BTreeSet<i64> = jobs.iter().map(|job| job.target_id).collect();
                let statement = format!(
                    "SELECT id, account_id, platform, address FROM push_targets WHERE id IN ({})",
                    clawx_common::storage::placeholders(1, target_ids.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for id in &target_ids {
                    query = query.bind(id);
                }
                let mut targets = std::collections::HashMap::new();
                for row in query.fetch_all(&self.pool).await? {
                    let id: i64 = row.try_get("id")?;
                    targets.insert(id, (row.try_get::<i64, _>("account_id")?, row.try_get::<String, _>("platform")?, row.try_get::<String, _>("address")?));
                }
                // A job whose target was removed meanwhile went with it.
                jobs.retain_mut(|job| match targets.get(&job.target_id) {
                    Some((account_id, platform, address)) => {
                        job.account_id = *account_id;
                        job.platform = platform.clone();
                        job.address = address.clone();
                        true
                    }
                    None => false,
                });
                jobs.sort_by_key(|job| job.id);
                Ok(jobs)
            }

            async fn delivered(&self, job_id: i64, attempt: i64) -> StoreResult<bool> {
                let deleted = sqlx::query("DELETE FROM push_jobs WHERE id = $1 AND attempts = $2")
                    .bind(job_id)
                    .bind(attempt as i32)
                    .execute(&self.pool)
                    .await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn retry(&self, job_id: i64, attempt: i64, next_attempt_at: i64, error: &str) -> StoreResult<bool> {
                let updated = sqlx::query("UPDATE push_jobs SET next_attempt_at = $3, last_error = $4 WHERE id = $1 AND attempts = $2 AND state = 'pending'")
                    .bind(job_id)
                    .bind(attempt as i32)
                    .bind(next_attempt_at)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                Ok(updated.rows_affected() > 0)
            }

            async fn fail(&self, job_id: i64, attempt: i64, error: &str) -> StoreResult<bool> {
                let updated = sqlx::query(
                    "UPDATE push_jobs SET state = 'failed', last_error = $3, next_attempt_at = $4 WHERE id = $1 AND attempts = $2 AND state = 'pending'",
                )
                .bind(job_id)
                .bind(attempt as i32)
                .bind(error)
                .bind(clawx_common::time::now_ms())
                .execute(&self.pool)
                .await?;
                Ok(updated.rows_affected() > 0)
            }

            async fn unregister_target(&self, target_id: i64) -> StoreResult<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("DELETE FROM push_jobs WHERE target_id = $1").bind(target_id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM push_topics WHERE target_id = $1").bind(target_id).execute(&mut *tx).await?;
                let deleted = sqlx::query("DELETE FROM push_targets WHERE id = $1").bind(target_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn drop_job(&self, job_id: i64) -> StoreResult<()> {
                sqlx::query("DELETE FROM push_jobs WHERE id = $1").bind(job_id).execute(&self.pool).await?;
                Ok(())
            }

            async fn message(&self, message_id: i64) -> StoreResult<Option<StoredMessage>> {
                let statement = format!("SELECT {} FROM dm_messages m WHERE m.id = $1", $crate::dm::store::MESSAGE_COLUMNS);
                sqlx::query_as(sqlx::AssertSqlSafe(statement))
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await
            }

            async fn envelope(&self, kind: &str, id: i64, max_bytes: usize) -> StoreResult<Option<Envelope>> {
                let statement = match kind {
                    "xmtp_group" => "SELECT id, created_ns, LENGTH(data) AS size, CASE WHEN LENGTH(data) <= $2 THEN data ELSE NULL END AS data \
                                     FROM xmtp_group_messages WHERE id = $1",
                    "xmtp_welcome" => "SELECT id, created_ns, LENGTH(message) AS size, CASE WHEN LENGTH(message) <= $2 THEN message ELSE NULL END AS data \
                                       FROM xmtp_welcomes WHERE id = $1",
                    _ => return Ok(None),
                };
                let row = sqlx::query(statement).bind(id).bind(max_bytes as i64).fetch_optional(&self.pool).await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some(Envelope {
                    id: row.try_get("id")?,
                    created_ns: row.try_get("created_ns")?,
                    size: row.try_get::<i64, _>("size").or_else(|_| row.try_get::<i32, _>("size").map(i64::from))?,
                    data: row.try_get::<Option<Vec<u8>>, _>("data")?.unwrap_or_default(),
                }))
            }

            async fn delete_failed_before(&self, before_ms: i64) -> StoreResult<u64> {
                let deleted = sqlx::query("DELETE FROM push_jobs WHERE state = 'failed' AND next_attempt_at < $1").bind(before_ms).execute(&self.pool).await?;
                Ok(deleted.rows_affected())
            }

            async fn jobs_of(&self, target_id: i64) -> StoreResult<Vec<QueuedJob>> {
                sqlx::query_as(
                    "SELECT id, target_id, topic, kind, ref_id, state, attempts, next_attempt_at, last_error FROM push_jobs WHERE target_id = $1 ORDER BY id",
                )
                .bind(target_id)
                .fetch_all(&self.pool)
                .await
            }

            async fn targets_of(&self, account_id: i64) -> StoreResult<Vec<(i64, String, String)>> {
                sqlx::query_as("SELECT id, platform, address FROM push_targets WHERE account_id = $1 ORDER BY id").bind(account_id).fetch_all(&self.pool).await
            }
        }
    };
}

mod postgres {
    use async_trait::async_trait;
    use sqlx::Row;

    use super::*;

    // Registrations of one account hold a transaction-scoped advisory lock in the push
    // namespace (`clwp`), keyed by the account.
    push_store!(
        PostgresPushStore,
        sqlx::Postgres,
        "BEGIN",
        "FOR UPDATE SKIP LOCKED",
        "SELECT pg_advisory_xact_lock(1668052848, CAST($1 % 2147483647 AS INTEGER))",
        "SELECT pg_advisory_xact_lock(1668052852, hashtext($1))"
    );
}

mod sqlite {
    use async_trait::async_trait;
    use sqlx::Row;

    use super::*;

    // SQLite has one writer at a time: the claiming UPDATE runs whole before another starts.
    // Registrations are serial too (BEGIN IMMEDIATE): the account lock is a no-op.
    push_store!(SqlitePushStore, sqlx::Sqlite, "BEGIN IMMEDIATE", "", "SELECT $1", "SELECT $1");
}

pub use postgres::PostgresPushStore;
pub use sqlite::SqlitePushStore;

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn PushStore> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresPushStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqlitePushStore::new(pool.clone())),
    }
}
