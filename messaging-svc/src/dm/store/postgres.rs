//! The PostgreSQL direct-message store: ids from a sequence, per-account serialization by row
//! locks, and a batch in four round trips when its mailboxes and conversations exist: `BEGIN`,
//! one statement that finds, one that writes, `COMMIT`.

use std::sync::LazyLock;

use super::writes::{Found, Writes};

type PgTx = sqlx::Transaction<'static, sqlx::Postgres>;

/// `count` ids from the sequence, in increasing order.
async fn allocate_ids(tx: &mut PgTx, count: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT nextval('dm_message_ids') FROM generate_series(1, $1::BIGINT) ORDER BY 1").bind(count).fetch_all(&mut **tx).await
}

/// A batch's lookups in one statement (see [`find`]). `ids` runs only once the `locked` rows are
/// locked: its one-time condition needs all of them.
const FIND_SQL: &str = "WITH locked AS MATERIALIZED (\
       SELECT account_id, last_message_id FROM dm_mailboxes WHERE account_id = ANY($1::BIGINT[]) ORDER BY account_id FOR UPDATE), \
     ids AS MATERIALIZED (\
       SELECT nextval('dm_message_ids') AS id FROM generate_series(1, $2::BIGINT) \
       WHERE (SELECT count(*) FROM locked) = cardinality($1::BIGINT[])) \
     SELECT l.accounts, l.heads, i.ids, c.ids AS conversations, c.lows, c.highs FROM \
     (SELECT array_agg(account_id ORDER BY account_id) AS accounts, array_agg(last_message_id ORDER BY account_id) AS heads FROM locked) l, \
     (SELECT array_agg(id ORDER BY id) AS ids FROM ids) i, \
     (SELECT array_agg(c.id) AS ids, array_agg(c.party_low) AS lows, array_agg(c.party_high) AS highs \
      FROM dm_conversations c JOIN UNNEST($3::TEXT[], $4::TEXT[]) AS k (low, high) ON c.party_low = k.low AND c.party_high = k.high) c";

/// Locks the existing mailboxes of `accounts` (in id order, so concurrent batches cannot
/// deadlock), takes `count` ids when they all exist, and finds the existing conversations of
/// `keys`: one round trip where three went before.
async fn find(tx: &mut PgTx, accounts: &[i64], count: i64, keys: &[&(String, String)]) -> Result<Found, sqlx::Error> {
    type Row = (Option<Vec<i64>>, Option<Vec<i64>>, Option<Vec<i64>>, Option<Vec<i64>>, Option<Vec<String>>, Option<Vec<String>>);
    let (locked, heads, ids, conversations, lows, highs): Row = sqlx::query_as(FIND_SQL)
        .bind(accounts)
        .bind(count)
        .bind(keys.iter().map(|(low, _)| low.as_str()).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, high)| high.as_str()).collect::<Vec<_>>())
        .fetch_one(&mut **tx)
        .await?;
    let heads = locked.unwrap_or_default().into_iter().zip(heads.unwrap_or_default()).collect();
    let conversations = lows.unwrap_or_default().into_iter().zip(highs.unwrap_or_default()).zip(conversations.unwrap_or_default()).collect();
    Ok(Found { heads, ids, conversations })
}

/// The statement of [`write`].
static WRITE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH messages AS (\
           INSERT INTO dm_messages (id, conversation_id, sender_account_id, sender_address, recipient_account_id, recipient_address, \
           content, sent_at, delivery, content_type, xmtp_message_id) \
           SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], \
           $9::TEXT[], $10::TEXT[], $11::TEXT[])), \
         outbox AS (INSERT INTO dm_outbox (message_id, next_attempt_at) SELECT * FROM UNNEST($12::BIGINT[], $13::BIGINT[])), \
         mailbox AS (INSERT INTO dm_mailbox_messages (account_id, message_id) SELECT * FROM UNNEST($14::BIGINT[], $15::BIGINT[])), \
         memberships AS (\
           INSERT INTO dm_memberships (account_id, peer, conversation_id, last_message_id, consent) \
           SELECT v.account_id, v.peer, v.conversation_id, v.last_message_id, COALESCE(p.consent, 'unknown') \
           FROM UNNEST($16::BIGINT[], $17::TEXT[], $18::BIGINT[], $19::BIGINT[]) AS v (account_id, peer, conversation_id, last_message_id) \
           LEFT JOIN dm_peer_consent p ON p.account_id = v.account_id AND p.peer = v.peer \
           ON CONFLICT (account_id, peer) DO UPDATE SET last_message_id = excluded.last_message_id), \
         notifications AS ({}) \
         UPDATE dm_mailboxes SET last_message_id = h.head FROM UNNEST($26::BIGINT[], $27::BIGINT[]) AS h (account_id, head) \
         WHERE dm_mailboxes.account_id = h.account_id",
        crate::push::store::enqueue_dm_from(
            "UNNEST($20::BIGINT[], $21::BIGINT[], $22::TEXT[], $23::TEXT[], $24::TEXT[], $25::BIGINT[], $25::BIGINT[]) \
             AS v (column1, column2, column3, column4, column5, column6, column7)"
        )
    )
});

/// Writes a batch's messages, outbox rows, mailbox entries, memberships, notifications and
/// mailbox heads in one statement: each table's rows arrive as arrays (one statement text for
/// every batch size, so it stays prepared) and the statements share a data-modifying `WITH`,
/// one round trip where one statement per table cost six. Every part of a `WITH` runs to
/// completion and sees the database as it was before the statement, which none of them needs
/// otherwise: the notification's consent check reads the memberships as they were, and a new
/// membership's consent from the peer consent (see [`crate::push::store::enqueue_dm_from`]).
async fn write(tx: &mut PgTx, writes: &Writes<'_>) -> Result<(), sqlx::Error> {
    let messages = writes.messages;
    let notifications = &writes.notifications;
    let memberships = &writes.memberships;
    sqlx::query(sqlx::AssertSqlSafe(WRITE_SQL.as_str()))
        .bind(messages.iter().map(|m| m.id).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.conversation_id).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.sender_account_id).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.sender_address.as_deref()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.recipient_account_id).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.recipient_address.as_deref()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.sent_at).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.delivery.as_str()).collect::<Vec<_>>())
        .bind(messages.iter().map(|m| m.content_type.as_deref()).collect::<Vec<_>>())
        .bind(&writes.network_ids)
        .bind(writes.outbox.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(writes.outbox.iter().map(|(_, due)| *due).collect::<Vec<_>>())
        .bind(writes.mailbox_entries.iter().map(|(account_id, _)| *account_id).collect::<Vec<_>>())
        .bind(writes.mailbox_entries.iter().map(|(_, message_id)| *message_id).collect::<Vec<_>>())
        .bind(memberships.iter().map(|m| m.account_id).collect::<Vec<_>>())
        .bind(memberships.iter().map(|m| m.peer.as_str()).collect::<Vec<_>>())
        .bind(memberships.iter().map(|m| m.conversation_id).collect::<Vec<_>>())
        .bind(memberships.iter().map(|m| m.last_message_id).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.account_id).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.message_id).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.topic_key.as_str()).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.peer.as_str()).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.topic.as_str()).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.at).collect::<Vec<_>>())
        .bind(writes.heads.iter().map(|(account_id, _)| *account_id).collect::<Vec<_>>())
        .bind(writes.heads.iter().map(|(_, head)| *head).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

crate::dm::store::sql::dm_store!(PostgresDmStore, sqlx::Postgres, "BEGIN", "FOR UPDATE", "FOR UPDATE SKIP LOCKED", allocate_ids, find, write);
