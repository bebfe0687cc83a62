//! The SQL of the direct-message store, shared by both dialects (sqlx binds `$N` the same way
//! on PostgreSQL and SQLite). [`dm_store!`] instantiates it with a dialect's transaction start,
//! row-locking clauses and three functions where the dialects differ:
//! - id allocation: `async fn(&mut Transaction, count) -> Result<Vec<i64>, sqlx::Error>`, ids in
//!   increasing order;
//! - a batch's lookups: `async fn(&mut Transaction, accounts, count, conversation keys) ->
//!   Result<writes::Found, sqlx::Error>` (it may use `select_mailboxes` and
//!   `select_conversations`, defined here);
//! - a batch's writes: `async fn(&mut Transaction, &writes::Writes) -> Result<(), sqlx::Error>`.

macro_rules! dm_store {
    ($name:ident, $db:ty, $begin:literal, $for_update:literal, $skip_locked:literal, $allocate_ids:path, $find:path, $write:path) => {
        use std::collections::{BTreeMap, BTreeSet, HashMap};

        use async_trait::async_trait;
        use clawx_common::storage::placeholders;
        use sqlx::Row;

        use $crate::dm::store::{
            Consent, DmStore, IDEMPOTENCY_TTL_MS, InboundMessage, MESSAGE_COLUMNS, NewMessage, OutboxEntry, OutboxResult, Party, ReceiveOutcome,
            SendOutcome, StoreResult, StoredMessage, writes,
        };

        type Tx = sqlx::Transaction<'static, $db>;

        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                $name { pool }
            }
        }

        /// What one try at a batch came to.
        enum Attempt<T> {
            Done(T),
            /// These accounts have no mailbox yet: nothing was written.
            MissingMailboxes(Vec<i64>),
        }

        /// Locks the batch's mailboxes; takes `count` ids under those locks (so each mailbox
        /// receives its ids in order, which streams rely on); and finds the existing
        /// conversations of `keys` (from [`conversation_key`]). The dialect's `find` does what it
        /// can in one go (PostgreSQL: everything, when every mailbox exists). When a mailbox is
        /// missing, it is created here if `create_missing` (and locked after the others, out of
        /// account order), otherwise the batch is given up so its caller can create it on its
        /// own first: see [`create_mailboxes`].
        async fn prepare(
            tx: &mut Tx,
            accounts: &BTreeSet<i64>,
            count: usize,
            keys: &BTreeSet<(String, String)>,
            create_missing: bool,
        ) -> Result<Attempt<(BTreeMap<i64, i64>, Vec<i64>, HashMap<(String, String), i64>)>, sqlx::Error> {
            let accounts: Vec<i64> = accounts.iter().copied().collect();
            let keys: Vec<&(String, String)> = keys.iter().collect();
            let writes::Found { mut heads, ids, conversations } = $find(tx, &accounts, count as i64, &keys).await?;
            let missing: Vec<i64> = accounts.iter().copied().filter(|account_id| !heads.contains_key(account_id)).collect();
            if !missing.is_empty() {
                if !create_missing {
                    return Ok(Attempt::MissingMailboxes(missing));
                }
                insert_mailboxes(tx, &missing).await?;
                select_mailboxes(tx, &missing, &mut heads).await?;
            }
            let ids = match ids {
                Some(ids) => ids,
                None => $allocate_ids(tx, count as i64).await?,
            };
            Ok(Attempt::Done((heads, ids, conversations)))
        }

        async fn insert_mailboxes(tx: &mut Tx, accounts: &[i64]) -> Result<(), sqlx::Error> {
            for chunk in accounts.chunks(writes::ROWS_PER_STATEMENT) {
                let statement =
                    format!("INSERT INTO dm_mailboxes (account_id) VALUES {} ON CONFLICT (account_id) DO NOTHING", writes::values(chunk.len(), 1));
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for account_id in chunk {
                    query = query.bind(account_id);
                }
                query.execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// One try at a batch (sends or received messages) in a transaction, at a time (Unix ms);
        /// `true` creates missing mailboxes in that transaction rather than giving up.
        type Try<B, T> = for<'t> fn(&'t mut Tx, &'t [B], i64, bool) -> futures::future::BoxFuture<'t, Result<Attempt<T>, sqlx::Error>>;

        /// Stores `batch` with `attempt` in one transaction, committed when it is done; when the
        /// batch names accounts with no mailbox, creates them first (see [`create_mailboxes`]) and
        /// tries again. On failure the transaction is dropped, which rolls it back: nothing
        /// half-written.
        async fn in_batch_transaction<B: Sync, T>(pool: &sqlx::Pool<$db>, batch: &[B], now_ms: i64, attempt: Try<B, T>) -> Result<T, sqlx::Error> {
            let mut create_missing = false;
            loop {
                let mut tx = pool.begin_with($begin).await?;
                match attempt(&mut tx, batch, now_ms, create_missing).await? {
                    Attempt::Done(outcomes) => {
                        tx.commit().await?;
                        return Ok(outcomes);
                    }
                    Attempt::MissingMailboxes(missing) => {
                        tx.rollback().await?;
                        create_mailboxes(pool, &missing).await?;
                        create_missing = true;
                    }
                }
            }
        }

        /// Creates the mailboxes of `accounts`, committed on their own. A batch that names an
        /// account with no mailbox gives up, creates it here and starts again, so its second try
        /// finds every mailbox and locks them all in one statement, in account order: no batch
        /// then holds one mailbox while it waits for another out of order (which could deadlock
        /// with a batch locking the same two the other way round). The second try creates what
        /// it still misses in its own transaction (an account deleted meanwhile).
        async fn create_mailboxes(pool: &sqlx::Pool<$db>, accounts: &[i64]) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            insert_mailboxes(&mut tx, accounts).await?;
            tx.commit().await
        }

        /// Locks the existing mailbox rows of `accounts` (in id order) into `heads`.
        async fn select_mailboxes(tx: &mut Tx, accounts: &[i64], heads: &mut BTreeMap<i64, i64>) -> Result<(), sqlx::Error> {
            for chunk in accounts.chunks(writes::ROWS_PER_STATEMENT) {
                let statement = format!(
                    "SELECT account_id, last_message_id FROM dm_mailboxes WHERE account_id IN ({}) ORDER BY account_id {}",
                    placeholders(1, chunk.len()),
                    $for_update
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for account_id in chunk {
                    query = query.bind(account_id);
                }
                for row in query.fetch_all(&mut **tx).await? {
                    heads.insert(row.try_get::<i64, _>("account_id")?, row.try_get::<i64, _>("last_message_id")?);
                }
            }
            Ok(())
        }

        /// The key of the conversation between two parties: their keys, lower first.
        fn conversation_key(first: &Party, second: &Party) -> (String, String) {
            let (first, second) = (first.key(), second.key());
            if first <= second { (first, second) } else { (second, first) }
        }

        /// Creates the conversations of `keys` that `ids` lacks, into `ids`: two statements per
        /// [`writes::ROWS_PER_STATEMENT`] conversations rather than two per conversation. Created in
        /// key order, so concurrent batches cannot deadlock on them.
        async fn create_conversations(
            tx: &mut Tx,
            keys: &BTreeSet<(String, String)>,
            now_ms: i64,
            ids: &mut HashMap<(String, String), i64>,
        ) -> Result<(), sqlx::Error> {
            let missing: Vec<&(String, String)> = keys.iter().filter(|key| !ids.contains_key(*key)).collect();
            for chunk in missing.chunks(writes::ROWS_PER_STATEMENT) {
                let statement = format!(
                    "INSERT INTO dm_conversations (party_low, party_high, created_at) VALUES {} ON CONFLICT (party_low, party_high) DO NOTHING",
                    writes::values(chunk.len(), 3)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for (low, high) in chunk {
                    query = query.bind(low).bind(high).bind(now_ms);
                }
                query.execute(&mut **tx).await?;
            }
            select_conversations(tx, &missing, ids).await
        }

        /// The ids of the existing conversations of `keys`, into `ids`.
        async fn select_conversations(tx: &mut Tx, keys: &[&(String, String)], ids: &mut HashMap<(String, String), i64>) -> Result<(), sqlx::Error> {
            for chunk in keys.chunks(writes::ROWS_PER_STATEMENT) {
                let statement = format!(
                    "SELECT id, party_low, party_high FROM dm_conversations WHERE (party_low, party_high) IN (VALUES {})",
                    writes::values(chunk.len(), 2)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for (low, high) in chunk {
                    query = query.bind(low).bind(high);
                }
                for row in query.fetch_all(&mut **tx).await? {
                    ids.insert((row.try_get::<String, _>("party_low")?, row.try_get::<String, _>("party_high")?), row.try_get::<i64, _>("id")?);
                }
            }
            Ok(())
        }

        async fn message_by_id(tx: &mut Tx, id: i64) -> Result<StoredMessage, sqlx::Error> {
            let statement = format!("SELECT {MESSAGE_COLUMNS} FROM dm_messages m WHERE m.id = $1");
            sqlx::query_as(sqlx::AssertSqlSafe(statement)).bind(id).fetch_one(&mut **tx).await
        }

        async fn store_batch(tx: &mut Tx, batch: &[NewMessage], now_ms: i64, create_missing: bool) -> Result<Attempt<Vec<SendOutcome>>, sqlx::Error> {
            let accounts: BTreeSet<i64> =
                batch.iter().flat_map(|message| [Some(message.sender_account_id), message.recipient.account_id()]).flatten().collect();
            let keys: Vec<(String, String)> =
                batch.iter().map(|message| conversation_key(&Party::Account(message.sender_account_id), &message.recipient)).collect();
            let (mut heads, ids, mut conversations) =
                match prepare(tx, &accounts, batch.len(), &keys.iter().cloned().collect(), create_missing).await? {
                    Attempt::Done(prepared) => prepared,
                    Attempt::MissingMailboxes(missing) => return Ok(Attempt::MissingMailboxes(missing)),
                };
            // The missing conversations of sends without an idempotency key are created at once; a
            // keyed send may be a repeat, so its conversation is only created when it is not.
            let unkeyed: BTreeSet<(String, String)> =
                batch.iter().zip(&keys).filter(|(message, _)| message.idempotency.is_none()).map(|(_, key)| key.clone()).collect();
            create_conversations(tx, &unkeyed, now_ms, &mut conversations).await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut new_messages = Vec::with_capacity(batch.len());
            // Messages are written after the loop; a repeated key of this batch must still find
            // its first message, so keep them at hand.
            let mut written_here: HashMap<i64, usize> = HashMap::new();
            let mut touched = BTreeSet::new();
            for (index, (message, id)) in batch.iter().zip(ids).enumerate() {
                if let Some((key, hash)) = &message.idempotency {
                    let earlier = claim_key_in_batch(tx, message.sender_account_id, key, hash, id, now_ms, &written_here, &new_messages).await?;
                    if let Some(outcome) = earlier {
                        outcomes.push(outcome);
                        continue;
                    }
                }
                let key = &keys[index];
                if !conversations.contains_key(key) {
                    create_conversations(tx, &BTreeSet::from([key.clone()]), now_ms, &mut conversations).await?;
                }
                let conversation_id = conversations.get(key).copied().ok_or(sqlx::Error::RowNotFound)?;
                let stored = StoredMessage {
                    id,
                    conversation_id,
                    sender_account_id: Some(message.sender_account_id),
                    sender_address: None,
                    recipient_account_id: message.recipient.account_id(),
                    recipient_address: message.recipient.address().map(str::to_string),
                    content: message.content.clone(),
                    sent_at: now_ms,
                    delivery: "stored".to_string(),
                    delivery_error: None,
                    content_type: None,
                };
                let previous = chain(&mut heads, &mut touched, &stored);
                written_here.insert(id, new_messages.len());
                new_messages.push(stored.clone());
                outcomes.push(SendOutcome::Stored { message: stored, previous });
            }
            $write(tx, &writes::Writes::plan(&new_messages, Vec::new(), moved_heads(heads, &touched))).await?;
            Ok(Attempt::Done(outcomes))
        }

        /// Puts `message` at the head of its accounts' mailboxes (locked, in `heads`); per
        /// account, the id before it there.
        fn chain(heads: &mut BTreeMap<i64, i64>, touched: &mut BTreeSet<i64>, message: &StoredMessage) -> Vec<(i64, i64)> {
            let mut previous = Vec::with_capacity(2);
            for account_id in message.accounts() {
                let head = heads.get_mut(&account_id).expect("every account of the batch is locked");
                previous.push((account_id, *head));
                *head = message.id;
                touched.insert(account_id);
            }
            previous
        }

        /// The new heads of the mailboxes the batch entered.
        fn moved_heads(heads: BTreeMap<i64, i64>, touched: &BTreeSet<i64>) -> Vec<(i64, i64)> {
            heads.into_iter().filter(|(account_id, _)| touched.contains(account_id)).collect()
        }

        /// Whether a received message is stored already: by its network id, or (sent by an
        /// account here) as the message its idempotency key names.
        async fn already_received(tx: &mut Tx, message: &InboundMessage) -> Result<bool, sqlx::Error> {
            let known: Option<i64> = sqlx::query_scalar("SELECT id FROM dm_messages WHERE xmtp_message_id = $1")
                .bind(&message.xmtp_message_id)
                .fetch_optional(&mut **tx)
                .await?;
            if known.is_some() {
                return Ok(true);
            }
            let (Some(id), Party::Account(sender)) = (message.echo_of, &message.sender) else { return Ok(false) };
            let echo: Option<i64> =
                sqlx::query_scalar("SELECT id FROM dm_messages WHERE id = $1 AND sender_account_id = $2 AND recipient_account_id = $3")
                    .bind(id)
                    .bind(sender)
                    .bind(message.recipient_account_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            Ok(echo.is_some())
        }

        async fn store_received(
            tx: &mut Tx,
            batch: &[InboundMessage],
            now_ms: i64,
            create_missing: bool,
        ) -> Result<Attempt<Vec<ReceiveOutcome>>, sqlx::Error> {
            let mut outcomes = vec![ReceiveOutcome::Known; batch.len()];
            let mut fresh = Vec::new();
            let mut seen = BTreeSet::new();
            for (index, message) in batch.iter().enumerate() {
                if seen.insert(message.xmtp_message_id.as_str()) && !already_received(tx, message).await? {
                    fresh.push(index);
                }
            }
            if fresh.is_empty() {
                return Ok(Attempt::Done(outcomes));
            }
            let accounts: BTreeSet<i64> =
                fresh.iter().flat_map(|index| [Some(batch[*index].recipient_account_id), batch[*index].sender.account_id()]).flatten().collect();
            let keys: BTreeSet<(String, String)> =
                fresh.iter().map(|index| conversation_key(&batch[*index].sender, &Party::Account(batch[*index].recipient_account_id))).collect();
            let (mut heads, ids, mut conversations) = match prepare(tx, &accounts, fresh.len(), &keys, create_missing).await? {
                Attempt::Done(prepared) => prepared,
                Attempt::MissingMailboxes(missing) => return Ok(Attempt::MissingMailboxes(missing)),
            };
            create_conversations(tx, &keys, now_ms, &mut conversations).await?;
            let mut new_messages = Vec::with_capacity(fresh.len());
            let mut network_ids = Vec::with_capacity(fresh.len());
            let mut touched = BTreeSet::new();
            for (index, id) in fresh.into_iter().zip(ids) {
                let inbound = &batch[index];
                network_ids.push(Some(inbound.xmtp_message_id.as_str()));
                let key = conversation_key(&inbound.sender, &Party::Account(inbound.recipient_account_id));
                let stored = StoredMessage {
                    id,
                    conversation_id: conversations.get(&key).copied().ok_or(sqlx::Error::RowNotFound)?,
                    sender_account_id: inbound.sender.account_id(),
                    sender_address: inbound.sender.address().map(str::to_string),
                    recipient_account_id: Some(inbound.recipient_account_id),
                    recipient_address: None,
                    content: inbound.content.clone(),
                    sent_at: inbound.sent_at,
                    delivery: "sent".to_string(),
                    delivery_error: None,
                    content_type: inbound.content_type.clone(),
                };
                let previous = chain(&mut heads, &mut touched, &stored);
                new_messages.push(stored.clone());
                outcomes[index] = ReceiveOutcome::Stored { message: stored, previous };
            }
            $write(tx, &writes::Writes::plan(&new_messages, network_ids, moved_heads(heads, &touched))).await?;
            Ok(Attempt::Done(outcomes))
        }

        /// Claims the idempotency key for `message_id`; otherwise what the key already names,
        /// from this batch's own unwritten messages when it was claimed earlier in the batch.
        #[allow(clippy::too_many_arguments)]
        async fn claim_key_in_batch(
            tx: &mut Tx,
            account_id: i64,
            key: &str,
            hash: &[u8],
            message_id: i64,
            now_ms: i64,
            written_here: &HashMap<i64, usize>,
            new_messages: &[StoredMessage],
        ) -> Result<Option<SendOutcome>, sqlx::Error> {
            let claimed = sqlx::query(
                "INSERT INTO dm_idempotency_keys (account_id, idempotency_key, request_hash, message_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (account_id, idempotency_key) DO UPDATE SET request_hash = excluded.request_hash, \
                 message_id = excluded.message_id, created_at = excluded.created_at WHERE dm_idempotency_keys.created_at < $6",
            )
            .bind(account_id)
            .bind(key)
            .bind(hash)
            .bind(message_id)
            .bind(now_ms)
            .bind(now_ms - IDEMPOTENCY_TTL_MS)
            .execute(&mut **tx)
            .await?;
            if claimed.rows_affected() > 0 {
                return Ok(None);
            }
            let row = sqlx::query("SELECT request_hash, message_id FROM dm_idempotency_keys WHERE account_id = $1 AND idempotency_key = $2")
                .bind(account_id)
                .bind(key)
                .fetch_one(&mut **tx)
                .await?;
            let stored_hash: Vec<u8> = row.try_get("request_hash")?;
            if stored_hash != hash {
                return Ok(Some(SendOutcome::KeyReused));
            }
            let first_id: i64 = row.try_get("message_id")?;
            if let Some(index) = written_here.get(&first_id) {
                return Ok(Some(SendOutcome::Repeated(new_messages[*index].clone())));
            }
            Ok(Some(SendOutcome::Repeated(message_by_id(tx, first_id).await?)))
        }

        #[async_trait]
        impl DmStore for $name {
            async fn send_batch(&self, batch: &[NewMessage], now_ms: i64) -> StoreResult<Vec<SendOutcome>> {
                in_batch_transaction(&self.pool, batch, now_ms, |tx, batch, now_ms, create_missing| {
                    Box::pin(store_batch(tx, batch, now_ms, create_missing))
                })
                .await
            }

            async fn receive_batch(&self, batch: &[InboundMessage], now_ms: i64) -> StoreResult<Vec<ReceiveOutcome>> {
                in_batch_transaction(&self.pool, batch, now_ms, |tx, batch, now_ms, create_missing| {
                    Box::pin(store_received(tx, batch, now_ms, create_missing))
                })
                .await
            }

            async fn claim_outbox(&self, now_ms: i64, lease_until_ms: i64, limit: u32) -> StoreResult<Vec<OutboxEntry>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let statement = format!(
                    "SELECT message_id, attempts FROM dm_outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY message_id LIMIT $2 {}",
                    $skip_locked
                );
                let due: Vec<(i64, i32)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(statement)).bind(now_ms).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
                let mut entries = Vec::with_capacity(due.len());
                for (message_id, attempts) in due {
                    sqlx::query("UPDATE dm_outbox SET attempts = attempts + 1, next_attempt_at = $2 WHERE message_id = $1")
                        .bind(message_id)
                        .bind(lease_until_ms)
                        .execute(&mut *tx)
                        .await?;
                    entries.push(OutboxEntry { message: message_by_id(&mut tx, message_id).await?, attempts: attempts + 1 });
                }
                tx.commit().await?;
                Ok(entries)
            }

            async fn finish_outbox(&self, message_id: i64, result: &OutboxResult) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                let (state, next_attempt_at, error) = match result {
                    OutboxResult::Sent => ("sent", 0, None),
                    OutboxResult::Retry { at_ms, error } => ("pending", *at_ms, Some(error.as_str())),
                    OutboxResult::Failed { error } => ("failed", 0, Some(error.as_str())),
                };
                sqlx::query("UPDATE dm_outbox SET state = $2, next_attempt_at = $3, last_error = $4 WHERE message_id = $1")
                    .bind(message_id)
                    .bind(state)
                    .bind(next_attempt_at)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                if state != "pending" {
                    sqlx::query("UPDATE dm_messages SET delivery = $2, delivery_error = $3 WHERE id = $1")
                        .bind(message_id)
                        .bind(state)
                        .bind(error)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }

            async fn inbox(&self, account_id: i64, consent: Option<Consent>, limit: u32, offset: u32) -> StoreResult<Vec<StoredMessage>> {
                let filter = if consent.is_some() { "AND mb.consent = $4" } else { "" };
                let statement = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM dm_memberships mb JOIN dm_messages m ON m.id = mb.last_message_id \
                     WHERE mb.account_id = $1 {filter} ORDER BY mb.last_message_id DESC LIMIT $2 OFFSET $3"
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(statement)).bind(account_id).bind(i64::from(limit)).bind(i64::from(offset));
                if let Some(consent) = consent {
                    query = query.bind(consent.as_str());
                }
                query.fetch_all(&self.pool).await
            }

            async fn conversation(
                &self,
                account_id: i64,
                peer: &Party,
                before_id: i64,
                after_id: i64,
                limit: u32,
                offset: u32,
            ) -> StoreResult<Vec<StoredMessage>> {
                let conversation_id: Option<i64> =
                    sqlx::query_scalar("SELECT conversation_id FROM dm_memberships WHERE account_id = $1 AND peer = $2")
                        .bind(account_id)
                        .bind(peer.key())
                        .fetch_optional(&self.pool)
                        .await?;
                let Some(conversation_id) = conversation_id else {
                    return Ok(Vec::new());
                };
                let statement = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM dm_messages m WHERE m.conversation_id = $1 AND m.id < $2 AND m.id > $3 \
                     ORDER BY m.id DESC LIMIT $4 OFFSET $5"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(statement))
                    .bind(conversation_id)
                    .bind(before_id)
                    .bind(after_id)
                    .bind(i64::from(limit))
                    .bind(i64::from(offset))
                    .fetch_all(&self.pool)
                    .await
            }

            async fn mailbox_after(&self, account_id: i64, after_id: i64, limit: u32) -> StoreResult<Vec<StoredMessage>> {
                let statement = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM dm_mailbox_messages x JOIN dm_messages m ON m.id = x.message_id \
                     WHERE x.account_id = $1 AND x.message_id > $2 ORDER BY x.message_id LIMIT $3"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(statement)).bind(account_id).bind(after_id).bind(i64::from(limit)).fetch_all(&self.pool).await
            }

            async fn mailbox_heads(&self, account_ids: &[i64]) -> StoreResult<Vec<i64>> {
                if account_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let statement =
                    format!("SELECT account_id, last_message_id FROM dm_mailboxes WHERE account_id IN ({})", placeholders(1, account_ids.len()));
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for account_id in account_ids {
                    query = query.bind(account_id);
                }
                let mut heads = HashMap::new();
                for row in query.fetch_all(&self.pool).await? {
                    heads.insert(row.try_get::<i64, _>("account_id")?, row.try_get::<i64, _>("last_message_id")?);
                }
                Ok(account_ids.iter().map(|account_id| heads.get(account_id).copied().unwrap_or(0)).collect())
            }

            async fn delete_idempotency_keys_before(&self, before_ms: i64) -> StoreResult<u64> {
                let deleted = sqlx::query("DELETE FROM dm_idempotency_keys WHERE created_at < $1").bind(before_ms).execute(&self.pool).await?;
                Ok(deleted.rows_affected())
            }

            async fn set_conversation_consent(&self, account_id: i64, conversation_id: i64, consent: Consent) -> StoreResult<Option<Party>> {
                let peer: Option<String> =
                    sqlx::query_scalar("UPDATE dm_memberships SET consent = $1 WHERE account_id = $2 AND conversation_id = $3 RETURNING peer")
                        .bind(consent.as_str())
                        .bind(account_id)
                        .bind(conversation_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(peer.as_deref().and_then(Party::from_key))
            }

            async fn set_peer_consent(&self, account_id: i64, peer: &Party, consent: Consent) -> StoreResult<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                // Kept per peer as well, so a conversation that starts later starts with it.
                sqlx::query(
                    "INSERT INTO dm_peer_consent (account_id, peer, consent) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id, peer) DO UPDATE SET consent = excluded.consent",
                )
                .bind(account_id)
                .bind(peer.key())
                .bind(consent.as_str())
                .execute(&mut *tx)
                .await?;
                let updated = sqlx::query("UPDATE dm_memberships SET consent = $1 WHERE account_id = $2 AND peer = $3")
                    .bind(consent.as_str())
                    .bind(account_id)
                    .bind(peer.key())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(updated.rows_affected() > 0)
            }

            async fn set_topic_consent(&self, account_id: i64, topic: &str, consent: Consent) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO dm_topic_consent (account_id, topic, consent) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id, topic) DO UPDATE SET consent = excluded.consent",
                )
                .bind(account_id)
                .bind(topic)
                .bind(consent.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn topic_consent(&self, account_id: i64, topic: &str) -> StoreResult<Consent> {
                let consent: Option<String> = sqlx::query_scalar("SELECT consent FROM dm_topic_consent WHERE account_id = $1 AND topic = $2")
                    .bind(account_id)
                    .bind(topic)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match consent.as_deref() {
                    Some("allowed") => Consent::Allowed,
                    Some("denied") => Consent::Denied,
                    _ => Consent::Unknown,
                })
            }

            async fn is_denied(&self, account_id: i64, peer: &Party) -> StoreResult<bool> {
                let consent: Option<String> = sqlx::query_scalar("SELECT consent FROM dm_memberships WHERE account_id = $1 AND peer = $2")
                    .bind(account_id)
                    .bind(peer.key())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(consent.as_deref() == Some(Consent::Denied.as_str()))
            }

            async fn report_spam(&self, reporter_account_id: i64, address: &str, reported_account_id: Option<i64>, now_ms: i64) -> StoreResult<bool> {
                let inserted = sqlx::query(
                    "INSERT INTO dm_spam_reports (reporter_account_id, reported_address, reported_account_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (reporter_account_id, reported_address) DO NOTHING",
                )
                .bind(reporter_account_id)
                .bind(address)
                .bind(reported_account_id)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(inserted.rows_affected() > 0)
            }

            async fn spam_reporters(&self, address: &str, account_id: Option<i64>) -> StoreResult<i64> {
                // -1 matches no account id.
                sqlx::query_scalar(
                    "SELECT COUNT(DISTINCT reporter_account_id) FROM dm_spam_reports WHERE reported_address = $1 OR reported_account_id = $2",
                )
                .bind(address)
                .bind(account_id.unwrap_or(-1))
                .fetch_one(&self.pool)
                .await
            }

            async fn first_contacts_since(&self, account_id: i64, since_ms: i64) -> StoreResult<i64> {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM dm_conversations c WHERE (c.party_low = $1 OR c.party_high = $1) AND c.created_at >= $2 \
                     AND (SELECT m.sender_account_id FROM dm_messages m WHERE m.conversation_id = c.id ORDER BY m.id LIMIT 1) = $3",
                )
                .bind(Party::Account(account_id).key())
                .bind(since_ms)
                .bind(account_id)
                .fetch_one(&self.pool)
                .await
            }
        }
    };
}

pub(crate) use dm_store;
