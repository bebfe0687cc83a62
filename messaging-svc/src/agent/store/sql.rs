//! The SQL of the agent store, shared by both dialects. [`agent_store!`] instantiates it for a
//! dialect whose module defines `Lease` (how the dialect holds an installation's state across an
//! operation) with `async fn acquire(&Pool, account_id, OwnedMutexGuard<()>) ->
//! StoreResult<Box<dyn StateLease>>`, and `fn locks_for(&Pool) -> Arc<InstallationLocks>` (the
//! in-process locks stores on the same database share).

/// Rows per multi-row statement (3 parameters each).
pub const ROWS_PER_STATEMENT: usize = 256;

macro_rules! agent_store {
    ($name:ident, $db:ty) => {
        use async_trait::async_trait;
        use clawx_common::storage::placeholders;

        use $crate::agent::store::{AgentStore, InstallationLocks, InstallationRecord, StateLease, StateRows, StoreResult, sql::ROWS_PER_STATEMENT};

        const INSTALLATION_COLUMNS: &str =
            "account_id, inbox_id, wallet_address, installation_key, private_key, created_at, identity_published_at, key_package_expires_at";

        #[derive(Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            locks: std::sync::Arc<InstallationLocks>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                let locks = locks_for(&pool);
                $name { pool, locks }
            }
        }

        async fn load_rows<'e, E>(executor: E, account_id: i64) -> StoreResult<StateRows>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query_as("SELECT state_key, state_value FROM agent_mls_state WHERE account_id = $1").bind(account_id).fetch_all(executor).await
        }

        /// Writes what an operation changed, inside the caller's transaction.
        async fn write_rows(tx: &mut sqlx::Transaction<'static, $db>, account_id: i64, upserts: &StateRows, deletes: &[Vec<u8>]) -> StoreResult<()> {
            for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
                let statement = format!("DELETE FROM agent_mls_state WHERE account_id = $1 AND state_key IN ({})", placeholders(2, chunk.len()));
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(account_id);
                for key in chunk {
                    query = query.bind(key);
                }
                query.execute(&mut **tx).await?;
            }
            for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
                let values: Vec<String> = (0..chunk.len()).map(|row| format!("({})", placeholders(1 + row * 3, 3))).collect();
                let statement = format!(
                    "INSERT INTO agent_mls_state (account_id, state_key, state_value) VALUES {} \
                     ON CONFLICT (account_id, state_key) DO UPDATE SET state_value = excluded.state_value",
                    values.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for (key, value) in chunk {
                    query = query.bind(account_id).bind(key).bind(value);
                }
                query.execute(&mut **tx).await?;
            }
            Ok(())
        }

        #[async_trait]
        impl AgentStore for $name {
            async fn installation(&self, account_id: i64) -> StoreResult<Option<InstallationRecord>> {
                let statement = format!("SELECT {INSTALLATION_COLUMNS} FROM agent_installations WHERE account_id = $1");
                sqlx::query_as(sqlx::AssertSqlSafe(statement)).bind(account_id).fetch_optional(&self.pool).await
            }

            async fn create_installation(&self, installation: &InstallationRecord) -> StoreResult<InstallationRecord> {
                sqlx::query(
                    "INSERT INTO agent_installations (account_id, inbox_id, wallet_address, installation_key, private_key, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id) DO NOTHING",
                )
                .bind(installation.account_id)
                .bind(&installation.inbox_id)
                .bind(&installation.wallet_address)
                .bind(&installation.installation_key)
                .bind(&installation.private_key)
                .bind(installation.created_at)
                .execute(&self.pool)
                .await?;
                self.installation(installation.account_id).await?.ok_or(sqlx::Error::RowNotFound)
            }

            async fn set_identity_published(&self, account_id: i64, at: i64) -> StoreResult<()> {
                sqlx::query("UPDATE agent_installations SET identity_published_at = $2 WHERE account_id = $1")
                    .bind(account_id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_key_package_expiry(&self, account_id: i64, expires_at: i64) -> StoreResult<()> {
                sqlx::query("UPDATE agent_installations SET key_package_expires_at = $2 WHERE account_id = $1")
                    .bind(account_id)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn replace_private_key(&self, account_id: i64, private_key: &[u8]) -> StoreResult<()> {
                sqlx::query("UPDATE agent_installations SET private_key = $2 WHERE account_id = $1")
                    .bind(account_id)
                    .bind(private_key)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn lock_state(&self, account_id: i64) -> StoreResult<Box<dyn StateLease>> {
                let guard = self.locks.lock(account_id).await;
                Lease::acquire(&self.pool, account_id, guard).await
            }

            async fn account_of_inbox(&self, inbox_id: &str) -> StoreResult<Option<i64>> {
                sqlx::query_scalar("SELECT account_id FROM agent_installations WHERE inbox_id = $1 ORDER BY account_id LIMIT 1")
                    .bind(inbox_id)
                    .fetch_optional(&self.pool)
                    .await
            }

            async fn account_of_installation(&self, installation_key: &[u8]) -> StoreResult<Option<i64>> {
                sqlx::query_scalar("SELECT account_id FROM agent_installations WHERE installation_key = $1")
                    .bind(installation_key)
                    .fetch_optional(&self.pool)
                    .await
            }

            async fn add_groups(&self, account_id: i64, group_ids: &[Vec<u8>]) -> StoreResult<()> {
                for chunk in group_ids.chunks(ROWS_PER_STATEMENT) {
                    let values: Vec<String> = (0..chunk.len()).map(|row| format!("({})", placeholders(1 + row * 2, 2))).collect();
                    let statement = format!(
                        "INSERT INTO agent_groups (group_id, account_id) VALUES {} ON CONFLICT (group_id, account_id) DO NOTHING",
                        values.join(", ")
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                    for group_id in chunk {
                        query = query.bind(group_id).bind(account_id);
                    }
                    query.execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn accounts_in_group(&self, group_id: &[u8]) -> StoreResult<Vec<i64>> {
                sqlx::query_scalar("SELECT account_id FROM agent_groups WHERE group_id = $1 ORDER BY account_id LIMIT 1000")
                    .bind(group_id)
                    .fetch_all(&self.pool)
                    .await
            }

            async fn installed_accounts(&self, after_account_id: i64, limit: u32) -> StoreResult<Vec<i64>> {
                sqlx::query_scalar("SELECT account_id FROM agent_installations WHERE account_id > $1 ORDER BY account_id LIMIT $2")
                    .bind(after_account_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
        }
    };
}

pub(crate) use agent_store;
