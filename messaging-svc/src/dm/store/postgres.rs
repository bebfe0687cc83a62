//! The PostgreSQL direct-message store: ids from a sequence, per-account serialization by row
//! locks.

/// `count` ids from the sequence, in increasing order.
async fn allocate_ids(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, count: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT nextval('dm_message_ids') FROM generate_series(1, $1::BIGINT) ORDER BY 1").bind(count).fetch_all(&mut **tx).await
}

crate::dm::store::sql::dm_store!(PostgresDmStore, sqlx::Postgres, "BEGIN", "FOR UPDATE", "FOR UPDATE SKIP LOCKED", allocate_ids);
