//! The SQLite agent store: one process writes the database, so the process's own lock (shared
//! by every store on the file) is the installation's lock; state is read without a transaction and written in a short
//! `BEGIN IMMEDIATE` one, so a slow network call never holds the database's write lock.

// The shared SQL (`agent_store!` below) brings the store's types and `async_trait` into scope.
use tokio::sync::OwnedMutexGuard;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, LazyLock, Mutex},
};

/// The in-process locks of each SQLite file: every store of this process on one file shares
/// them, since they are the only lock the installations have.
static LOCKS_BY_FILE: LazyLock<Mutex<HashMap<PathBuf, Arc<InstallationLocks>>>> = LazyLock::new(Mutex::default);

fn locks_for(pool: &sqlx::SqlitePool) -> Arc<InstallationLocks> {
    let file = pool.connect_options().get_filename().to_path_buf();
    Arc::clone(LOCKS_BY_FILE.lock().expect("SQLite installation locks").entry(file).or_default())
}

/// The replica's lock on the installation.
struct Lease {
    account_id: i64,
    pool: sqlx::SqlitePool,
    _local: OwnedMutexGuard<()>,
}

impl Lease {
    async fn acquire(pool: &sqlx::SqlitePool, account_id: i64, local: OwnedMutexGuard<()>) -> StoreResult<Box<dyn StateLease>> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT account_id FROM agent_installations WHERE account_id = $1").bind(account_id).fetch_optional(pool).await?;
        if exists.is_none() {
            return Err(sqlx::Error::RowNotFound);
        }
        Ok(Box::new(Lease { account_id, pool: pool.clone(), _local: local }))
    }
}

#[async_trait]
impl StateLease for Lease {
    async fn load(&mut self) -> StoreResult<StateRows> {
        load_rows(&self.pool, self.account_id).await
    }

    async fn save(self: Box<Self>, upserts: StateRows, deletes: Vec<Vec<u8>>) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        write_rows(&mut tx, self.account_id, &upserts, &deletes).await?;
        tx.commit().await
    }
}

crate::agent::store::sql::agent_store!(SqliteAgentStore, sqlx::Sqlite);
