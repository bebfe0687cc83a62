//! The SQLite store. Write transactions take the write lock up front (`BEGIN IMMEDIATE`), so
//! concurrent writers wait on the busy timeout instead of failing on lock upgrade.

crate::store::sql::sql_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE", "");
