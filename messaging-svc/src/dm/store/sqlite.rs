//! The SQLite direct-message store: writers are serialized by `BEGIN IMMEDIATE`; ids from a
//! counter row.

crate::dm::store::sql::dm_store!(
    SqliteDmStore,
    sqlx::Sqlite,
    "BEGIN IMMEDIATE",
    "",
    "UPDATE dm_counters SET value = value + 1 WHERE name = 'messages' RETURNING value"
);
