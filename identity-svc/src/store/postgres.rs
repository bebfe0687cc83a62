//! The PostgreSQL store.

crate::store::sql::sql_store!(PostgresStore, sqlx::Postgres, "BEGIN", "FOR UPDATE");
