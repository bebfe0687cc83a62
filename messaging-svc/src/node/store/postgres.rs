//! The PostgreSQL node store: ids from a sequence, per-group serialization by row locks.

crate::node::store::sql::node_store!(PostgresStore, sqlx::Postgres, "BEGIN", "FOR UPDATE", "SELECT nextval('xmtp_ids')");
