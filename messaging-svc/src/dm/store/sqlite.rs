//! The SQLite direct-message store: writers are serialized by `BEGIN IMMEDIATE`; ids from a
//! counter row; a batch's rows written a few multi-row statements at a time.

use super::writes::{Found, ROWS_PER_STATEMENT, Writes, values};

type SqliteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// `count` ids from the counter (the writer holds the database lock), in increasing order.
async fn allocate_ids(tx: &mut SqliteTx, count: i64) -> Result<Vec<i64>, sqlx::Error> {
    let last: i64 = sqlx::query_scalar("UPDATE dm_counters SET value = value + $1 WHERE name = 'messages' RETURNING value")
        .bind(count)
        .fetch_one(&mut **tx)
        .await?;
    Ok((last - count + 1..=last).collect())
}

/// A batch's lookups a statement each (the writer lock makes them one step anyway): the
/// mailboxes, the ids when every mailbox exists, the conversations. `select_mailboxes` and
/// `select_conversations` are the shared SQL's (`dm_store!` below).
async fn find(tx: &mut SqliteTx, accounts: &[i64], count: i64, keys: &[&(String, String)]) -> Result<Found, sqlx::Error> {
    let mut heads = std::collections::BTreeMap::new();
    select_mailboxes(tx, accounts, &mut heads).await?;
    let ids = if heads.len() == accounts.len() { Some(allocate_ids(tx, count).await?) } else { None };
    let mut conversations = std::collections::HashMap::with_capacity(keys.len());
    select_conversations(tx, keys, &mut conversations).await?;
    Ok(Found { heads, ids, conversations })
}

/// Writes a batch's messages, outbox rows, mailbox entries, memberships, notifications and
/// mailbox heads, one multi-row statement per table and [`ROWS_PER_STATEMENT`] rows.
async fn write(tx: &mut SqliteTx, writes: &Writes<'_>) -> Result<(), sqlx::Error> {
    let messages: Vec<_> = writes.messages.iter().zip(&writes.network_ids).collect();
    for chunk in messages.chunks(ROWS_PER_STATEMENT) {
        let statement = format!(
            "INSERT INTO dm_messages (id, conversation_id, sender_account_id, sender_address, recipient_account_id, recipient_address, \
             content, sent_at, delivery, content_type, xmtp_message_id) VALUES {}",
            values(chunk.len(), 11)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        for (message, network_id) in chunk {
            query = query
                .bind(message.id)
                .bind(message.conversation_id)
                .bind(message.sender_account_id)
                .bind(&message.sender_address)
                .bind(message.recipient_account_id)
                .bind(&message.recipient_address)
                .bind(&message.content)
                .bind(message.sent_at)
                .bind(&message.delivery)
                .bind(&message.content_type)
                .bind(*network_id);
        }
        query.execute(&mut **tx).await?;
    }
    insert_pairs(tx, "INSERT INTO dm_outbox (message_id, next_attempt_at)", &writes.outbox, "").await?;
    insert_pairs(tx, "INSERT INTO dm_mailbox_messages (account_id, message_id)", &writes.mailbox_entries, "").await?;
    for chunk in writes.memberships.chunks(ROWS_PER_STATEMENT) {
        // A new membership starts with the consent the account set for the peer before they
        // talked, if any.
        let statement = format!(
            "INSERT INTO dm_memberships (account_id, peer, conversation_id, last_message_id, consent) \
             SELECT v.column1, v.column2, v.column3, v.column4, COALESCE(p.consent, 'unknown') FROM (VALUES {}) AS v \
             LEFT JOIN dm_peer_consent p ON p.account_id = v.column1 AND p.peer = v.column2 WHERE true \
             ON CONFLICT (account_id, peer) DO UPDATE SET last_message_id = excluded.last_message_id",
            values(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        for membership in chunk {
            query = query.bind(membership.account_id).bind(&membership.peer).bind(membership.conversation_id).bind(membership.last_message_id);
        }
        query.execute(&mut **tx).await?;
    }
    for chunk in writes.notifications.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(crate::push::store::enqueue_dm_sql(chunk.len())));
        for notification in chunk {
            query = query
                .bind(notification.account_id)
                .bind(notification.message_id)
                .bind(&notification.topic_key)
                .bind(&notification.peer)
                .bind(&notification.topic)
                .bind(notification.at)
                .bind(notification.at);
        }
        query.execute(&mut **tx).await?;
    }
    insert_pairs(
        tx,
        "INSERT INTO dm_mailboxes (account_id, last_message_id)",
        &writes.heads,
        "ON CONFLICT (account_id) DO UPDATE SET last_message_id = excluded.last_message_id",
    )
    .await?;
    Ok(())
}

/// `insert` (`INSERT INTO table (a, b)`) of `rows`, then `suffix`: a multi-row statement per
/// [`ROWS_PER_STATEMENT`] rows.
async fn insert_pairs(tx: &mut SqliteTx, insert: &str, rows: &[(i64, i64)], suffix: &str) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("{insert} VALUES {} {suffix}", values(chunk.len(), 2))));
        for (first, second) in chunk {
            query = query.bind(first).bind(second);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

crate::dm::store::sql::dm_store!(SqliteDmStore, sqlx::Sqlite, "BEGIN IMMEDIATE", "", "", allocate_ids, find, write);
