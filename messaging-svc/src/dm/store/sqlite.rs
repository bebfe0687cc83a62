//! The SQLite direct-message store: writers are serialized by `BEGIN IMMEDIATE`; ids from a
//! counter row.

/// `count` ids from the counter (the writer holds the database lock), in increasing order.
async fn allocate_ids(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, count: i64) -> Result<Vec<i64>, sqlx::Error> {
    let last: i64 = sqlx::query_scalar("UPDATE dm_counters SET value = value + $1 WHERE name = 'messages' RETURNING value")
        .bind(count)
        .fetch_one(&mut **tx)
        .await?;
    Ok((last - count + 1..=last).collect())
}

crate::dm::store::sql::dm_store!(SqliteDmStore, sqlx::Sqlite, "BEGIN IMMEDIATE", "", "", allocate_ids);
