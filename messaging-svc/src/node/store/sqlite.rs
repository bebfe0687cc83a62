//! The SQLite node store: writers are serialized by `BEGIN IMMEDIATE`; ids from a counter row.

crate::node::store::sql::node_store!(
    SqliteStore,
    sqlx::Sqlite,
    "BEGIN IMMEDIATE",
    "",
    "UPDATE xmtp_counters SET value = value + 1 WHERE name = 'ids' RETURNING value"
);
