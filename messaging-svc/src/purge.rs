//! Deleting an account's direct messages when the account itself is deleted (the verify
//! service's sweep of accounts never verified): its conversations and every message in them,
//! both sides' mailbox and membership rows, outbox entries, its mailbox, idempotency keys and
//! the spam reports it filed, its push targets, topics and queued notifications, and consent it
//! set or that names it, and its XMTP installation (keys, MLS state, groups). One transaction;
//! repeating it finds nothing left.

use clawx_common::{Database, Principal, ServiceError, ServiceResult};

/// The services that may purge an account.
const PURGERS: &[&str] = &["verify", "identity"];

/// Refuses callers other than the services that delete accounts.
pub fn authorize(principal: &Principal) -> ServiceResult<()> {
    if principal.is_service(PURGERS) {
        Ok(())
    } else {
        Err(ServiceError::forbidden("this call is reserved for the Clawx services that delete accounts"))
    }
}

const CONVERSATIONS: &str = "SELECT id FROM dm_conversations WHERE party_low = $1 OR party_high = $1";

macro_rules! purge_in {
    ($pool:expr, $begin:literal, $account_id:expr) => {
        async {
            let party = format!("a:{}", $account_id);
            let messages = format!("SELECT id FROM dm_messages WHERE conversation_id IN ({CONVERSATIONS})");
            let mut tx = $pool.begin_with($begin).await?;
            for statement in [
                format!("DELETE FROM push_jobs WHERE kind = 'dm' AND ref_id IN ({messages})"),
                format!("DELETE FROM dm_outbox WHERE message_id IN ({messages})"),
                format!("DELETE FROM dm_mailbox_messages WHERE message_id IN ({messages})"),
                format!("DELETE FROM dm_memberships WHERE conversation_id IN ({CONVERSATIONS})"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(statement)).bind(&party).execute(&mut *tx).await?;
            }
            let deleted = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM dm_messages WHERE conversation_id IN ({CONVERSATIONS})")))
                .bind(&party)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM dm_conversations WHERE party_low = $1 OR party_high = $1").bind(&party).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM dm_peer_consent WHERE peer = $1").bind(&party).execute(&mut *tx).await?;
            for statement in [
                "DELETE FROM dm_mailbox_messages WHERE account_id = $1",
                "DELETE FROM dm_memberships WHERE account_id = $1",
                "DELETE FROM dm_mailboxes WHERE account_id = $1",
                "DELETE FROM dm_idempotency_keys WHERE account_id = $1",
                "DELETE FROM dm_spam_reports WHERE reporter_account_id = $1",
                "DELETE FROM push_jobs WHERE target_id IN (SELECT id FROM push_targets WHERE account_id = $1)",
                "DELETE FROM push_topics WHERE account_id = $1",
                "DELETE FROM push_targets WHERE account_id = $1",
                "DELETE FROM dm_peer_consent WHERE account_id = $1",
                "DELETE FROM dm_topic_consent WHERE account_id = $1",
                // The account's XMTP installation: its keys, MLS state and groups.
                "DELETE FROM agent_groups WHERE account_id = $1",
                "DELETE FROM agent_mls_state WHERE account_id = $1",
                "DELETE FROM agent_installations WHERE account_id = $1",
            ] {
                sqlx::query(statement).bind($account_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(deleted)
        }
        .await
    };
}

/// Deletes the account's messages; how many there were.
pub async fn purge_account(database: &Database, account_id: i64) -> ServiceResult<u64> {
    let result = match database {
        Database::Postgres(pool) => purge_in!(pool, "BEGIN", account_id),
        Database::Sqlite(pool) => purge_in!(pool, "BEGIN IMMEDIATE", account_id),
    };
    let deleted = result.map_err(ServiceError::internal)?;
    tracing::info!(account.id = account_id, messages = deleted, "account's messages purged");
    Ok(deleted)
}
