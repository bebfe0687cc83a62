//! The SQL of the verify store, shared by both dialects (sqlx binds `$N` the same way on
//! PostgreSQL and SQLite); [`sql_store!`] instantiates it with each dialect's transaction start.

macro_rules! sql_store {
    ($name:ident, $db:ty, $begin:literal) => {
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
        impl VerifyStore for $name {
            async fn issue_code(&self, code: &CodeRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO verification_codes (account_id, code, issued_at, expires_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account_id) DO UPDATE SET code = excluded.code, issued_at = excluded.issued_at, \
                     expires_at = excluded.expires_at",
                )
                .bind(code.account_id)
                .bind(&code.code)
                .bind(code.issued_at)
                .bind(code.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn code(&self, account_id: i64) -> StoreResult<Option<CodeRecord>> {
                let row =
                    sqlx::query_as::<_, CodeRecord>("SELECT account_id, code, issued_at, expires_at FROM verification_codes WHERE account_id = $1")
                        .bind(account_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row)
            }

            async fn verification(&self, account_id: i64) -> StoreResult<Option<VerificationRecord>> {
                let row = sqlx::query_as::<_, VerificationRecord>(
                    "SELECT account_id, twitter_user_id, twitter_username, tweet_id, verified_at FROM verifications WHERE account_id = $1",
                )
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row)
            }

            async fn record_verification(&self, verification: &VerificationRecord) -> StoreResult<()> {
                let username_lower = verification.twitter_username.to_ascii_lowercase();
                let mut tx = self.pool.begin_with($begin).await?;
                let existing: Option<i64> = sqlx::query_scalar("SELECT account_id FROM verifications WHERE account_id = $1")
                    .bind(verification.account_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if existing.is_some() {
                    return Err(StoreError::AlreadyVerified);
                }
                // A username binds only where a side has no user id: usernames can be renamed.
                let taken: Option<i64> = match &verification.twitter_user_id {
                    Some(user_id) => {
                        sqlx::query_scalar(
                            "SELECT account_id FROM verifications WHERE twitter_user_id = $1 \
                             OR (twitter_user_id IS NULL AND twitter_username_lower = $2) LIMIT 1",
                        )
                        .bind(user_id)
                        .bind(&username_lower)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                    None => {
                        sqlx::query_scalar("SELECT account_id FROM verifications WHERE twitter_username_lower = $1 LIMIT 1")
                            .bind(&username_lower)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                };
                if taken.is_some() {
                    return Err(StoreError::TwitterAlreadyUsed);
                }
                let inserted = sqlx::query(
                    "INSERT INTO verifications (account_id, twitter_user_id, twitter_username, twitter_username_lower, tweet_id, verified_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(verification.account_id)
                .bind(&verification.twitter_user_id)
                .bind(&verification.twitter_username)
                .bind(&username_lower)
                .bind(&verification.tweet_id)
                .bind(verification.verified_at)
                .execute(&mut *tx)
                .await;
                if let Err(error) = inserted {
                    if !is_unique_violation(&error) {
                        return Err(StoreError::Database(error));
                    }
                    // A concurrent completion committed first: the same account (its primary
                    // key) or the same X account (its unique indexes). Which, once it is visible.
                    drop(tx);
                    let same_account: Option<i64> = sqlx::query_scalar("SELECT account_id FROM verifications WHERE account_id = $1")
                        .bind(verification.account_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    return Err(if same_account.is_some() { StoreError::AlreadyVerified } else { StoreError::TwitterAlreadyUsed });
                }
                sqlx::query("DELETE FROM verification_codes WHERE account_id = $1").bind(verification.account_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn remove_verification(&self, account_id: i64) -> StoreResult<()> {
                sqlx::query("DELETE FROM verifications WHERE account_id = $1").bind(account_id).execute(&self.pool).await?;
                Ok(())
            }

            async fn claim_expiry(&self, account_id: i64, owner: &str, now: i64, lease_until: i64) -> StoreResult<bool> {
                let claimed: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO expiry_claims (account_id, owner, lease_until) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until \
                     WHERE expiry_claims.lease_until < $4 OR expiry_claims.owner = excluded.owner RETURNING account_id",
                )
                .bind(account_id)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(claimed.is_some())
            }

            async fn stale_expiry_claims(&self, now: i64, limit: u32) -> StoreResult<Vec<i64>> {
                let ids = sqlx::query_scalar("SELECT account_id FROM expiry_claims WHERE lease_until < $1 ORDER BY account_id LIMIT $2")
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(ids)
            }

            async fn release_expiry(&self, account_id: i64, owner: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM expiry_claims WHERE account_id = $1 AND owner = $2")
                    .bind(account_id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn finish_expiry(&self, account_id: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                for statement in [
                    "DELETE FROM verification_codes WHERE account_id = $1",
                    "DELETE FROM verifications WHERE account_id = $1",
                    "DELETE FROM expiry_claims WHERE account_id = $1",
                ] {
                    sqlx::query(statement).bind(account_id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

use async_trait::async_trait;
use clawx_common::storage::is_unique_violation;

use crate::store::{CodeRecord, StoreError, StoreResult, VerificationRecord, VerifyStore};

sql_store!(PostgresStore, sqlx::Postgres, "BEGIN");
// SQLite write transactions take the write lock up front, so concurrent writers wait on the
// busy timeout instead of failing on lock upgrade.
sql_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
