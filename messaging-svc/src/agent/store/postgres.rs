//! The PostgreSQL agent store: an installation's state is read and written in one transaction
//! that holds the installation's row lock for the whole operation, so replicas take turns.

// The shared SQL (`agent_store!` below) brings the store's types and `async_trait` into scope.
use tokio::sync::OwnedMutexGuard;

/// Each store has its own in-process locks: the row lock serializes across stores and replicas.
fn locks_for(_pool: &sqlx::PgPool) -> std::sync::Arc<InstallationLocks> {
    std::sync::Arc::new(InstallationLocks::default())
}

/// An open transaction holding the installation's row lock (and the replica's own lock).
struct Lease {
    account_id: i64,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    _local: OwnedMutexGuard<()>,
}

impl Lease {
    async fn acquire(pool: &sqlx::PgPool, account_id: i64, local: OwnedMutexGuard<()>) -> StoreResult<Box<dyn StateLease>> {
        let mut tx = pool.begin().await?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT account_id FROM agent_installations WHERE account_id = $1 FOR UPDATE")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            return Err(sqlx::Error::RowNotFound);
        }
        Ok(Box::new(Lease { account_id, tx, _local: local }))
    }
}

#[async_trait]
impl StateLease for Lease {
    async fn load(&mut self) -> StoreResult<StateRows> {
        load_rows(&mut *self.tx, self.account_id).await
    }

    async fn save(mut self: Box<Self>, upserts: StateRows, deletes: Vec<Vec<u8>>) -> StoreResult<()> {
        write_rows(&mut self.tx, self.account_id, &upserts, &deletes).await?;
        self.tx.commit().await
    }
}

crate::agent::store::sql::agent_store!(PostgresAgentStore, sqlx::Postgres);
