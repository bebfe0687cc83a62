//! The PostgreSQL direct-message store: ids from a sequence, per-account serialization by row
//! locks.

crate::dm::store::sql::dm_store!(PostgresDmStore, sqlx::Postgres, "BEGIN", "FOR UPDATE", "SELECT nextval('dm_message_ids')");
