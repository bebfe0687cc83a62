//! The SQL of the node store, shared by both dialects (sqlx binds `$N` the same way on
//! PostgreSQL and SQLite). [`node_store!`] instantiates it with a dialect's transaction start,
//! row-locking clause and id allocation.

use sha2::{Digest, Sha256};

/// The deduplication key of a stored item: sha256 of its topic and content.
pub(crate) fn content_hash(topic: &[u8], data: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update((topic.len() as u64).to_be_bytes());
    hasher.update(topic);
    hasher.update(data);
    hasher.finalize().to_vec()
}

macro_rules! node_store {
    ($name:ident, $db:ty, $begin:literal, $for_update:literal, $next_id:literal) => {
        use std::collections::BTreeMap;

        use async_trait::async_trait;
        use clawx_common::storage::placeholders;
        use futures::TryStreamExt;
        use sqlx::{FromRow, Row};

        use $crate::node::store::{
            Budgeted, Direction, ENVELOPE_BYTES, InboxPosition, Inserted, NewCommitLogEntry, NewGroupMessage, NewWelcome, NodeStore, StoreError,
            StoreResult, StoredCommitLogEntry, StoredGroupMessage, StoredIdentityUpdate, StoredWelcome,
            sql::content_hash,
        };

        type DbRow = <$db as sqlx::Database>::Row;
        type Tx = sqlx::Transaction<'static, $db>;
        type DbQuery<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>;

        /// Queues push notifications for an envelope on `topic` to whoever registered it, in the
        /// writer's transaction.
        async fn queue_push(tx: &mut Tx, kind: &str, id: i64, topic: &str, created_ns: i64) -> Result<(), sqlx::Error> {
            sqlx::query($crate::push::store::ENQUEUE_XMTP_SQL)
                .bind(kind)
                .bind(id)
                .bind(topic)
                .bind(created_ns / 1_000_000)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        /// Reads rows one at a time, converting each into an item and its reply size, and stops
        /// before the item that would take the total past `max_bytes` (the first item is kept
        /// when `keep_first`), so a reply never holds more than its budget in memory.
        async fn read_within<T>(
            pool: &sqlx::Pool<$db>,
            query: DbQuery<'_>,
            max_bytes: usize,
            keep_first: bool,
            convert: impl Fn(&DbRow) -> Result<(T, usize), sqlx::Error>,
        ) -> StoreResult<Budgeted<T>> {
            let mut rows = query.fetch(pool);
            let mut items = Vec::new();
            let mut total = 0usize;
            while let Some(row) = rows.try_next().await? {
                let (item, size) = convert(&row)?;
                total = total.saturating_add(size);
                if total > max_bytes && (!items.is_empty() || !keep_first) {
                    return Ok(Budgeted { items, cut: true });
                }
                items.push(item);
            }
            Ok(Budgeted { items, cut: false })
        }

        /// A page within `max_bytes` (at least one item): cut short, the caller says where to go on.
        async fn fetch_within<T>(
            pool: &sqlx::Pool<$db>,
            query: DbQuery<'_>,
            max_bytes: usize,
            convert: impl Fn(&DbRow) -> Result<(T, usize), sqlx::Error>,
        ) -> StoreResult<Budgeted<T>> {
            read_within(pool, query, max_bytes, true, convert).await
        }

        /// A reply that must be whole: `OverBudget` instead of a cut.
        async fn fetch_all_within<T>(
            pool: &sqlx::Pool<$db>,
            query: DbQuery<'_>,
            max_bytes: usize,
            convert: impl Fn(&DbRow) -> Result<(T, usize), sqlx::Error>,
        ) -> StoreResult<Vec<T>> {
            let Budgeted { items, cut } = read_within(pool, query, max_bytes, false, convert).await?;
            if cut {
                return Err(StoreError::OverBudget(max_bytes));
            }
            Ok(items)
        }

        fn message_size(message: &StoredGroupMessage) -> usize {
            message.data.len() + message.sender_hmac.len() + message.group_id.len() + ENVELOPE_BYTES
        }

        const MESSAGE_COLUMNS: &str = "id, group_id, created_ns, data, sender_hmac, should_push, is_commit";

        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                $name { pool }
            }

            /// `head` per `topic` for a fixed `SELECT topic, head ... IN` prefix, in key order.
            async fn heads(&self, prefix: &'static str, keys: &[Vec<u8>]) -> StoreResult<Vec<i64>> {
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let statement = format!("{prefix} ({})", placeholders(1, keys.len()));
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for key in keys {
                    query = query.bind(key);
                }
                let mut heads = std::collections::HashMap::new();
                for row in query.fetch_all(&self.pool).await? {
                    heads.insert(row.try_get::<Vec<u8>, _>("topic")?, row.try_get::<i64, _>("head")?);
                }
                Ok(keys.iter().map(|key| heads.get(key).copied().unwrap_or(0)).collect())
            }
        }

        async fn next_id(tx: &mut Tx) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar($next_id).fetch_one(&mut **tx).await
        }

        /// Locks (creating if needed) the group rows, in key order so concurrent batches cannot
        /// deadlock; returns each group's last message and commit-log ids.
        async fn lock_groups(tx: &mut Tx, group_ids: impl Iterator<Item = Vec<u8>>) -> Result<BTreeMap<Vec<u8>, (i64, i64)>, sqlx::Error> {
            let mut locked = BTreeMap::new();
            for group_id in group_ids.collect::<std::collections::BTreeSet<_>>() {
                sqlx::query("INSERT INTO xmtp_groups (group_id) VALUES ($1) ON CONFLICT (group_id) DO NOTHING")
                    .bind(&group_id)
                    .execute(&mut **tx)
                    .await?;
                let row = sqlx::query(concat!("SELECT last_message_id, last_commit_log_id FROM xmtp_groups WHERE group_id = $1 ", $for_update))
                    .bind(&group_id)
                    .fetch_one(&mut **tx)
                    .await?;
                locked.insert(group_id, (row.try_get("last_message_id")?, row.try_get("last_commit_log_id")?));
            }
            Ok(locked)
        }

        #[async_trait]
        impl NodeStore for $name {
            async fn upsert_key_package(&self, installation_key: &[u8], inbox_id: &str, key_package: &[u8], not_after: i64, now_ms: i64) -> StoreResult<()> {
                let result = sqlx::query(
                    "INSERT INTO xmtp_installations (installation_key, inbox_id, key_package, key_package_not_after, key_package_updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (installation_key) DO UPDATE SET \
                     inbox_id = excluded.inbox_id, key_package = excluded.key_package, \
                     key_package_not_after = excluded.key_package_not_after, key_package_updated_at = excluded.key_package_updated_at \
                     WHERE (xmtp_installations.inbox_id IS NULL OR xmtp_installations.inbox_id = excluded.inbox_id) \
                     AND (xmtp_installations.key_package_not_after IS NULL OR xmtp_installations.key_package_not_after <= excluded.key_package_not_after)",
                )
                .bind(installation_key)
                .bind(inbox_id)
                .bind(key_package)
                .bind(not_after)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                if result.rows_affected() == 0 {
                    let bound: Option<Option<String>> = sqlx::query_scalar("SELECT inbox_id FROM xmtp_installations WHERE installation_key = $1")
                        .bind(installation_key)
                        .fetch_optional(&self.pool)
                        .await?;
                    return Err(StoreError::Conflict(match bound {
                        Some(Some(bound)) if bound != inbox_id => "the installation key belongs to another inbox",
                        _ => "the key package expires before the one already stored",
                    }));
                }
                Ok(())
            }

            async fn key_packages(&self, installation_keys: &[Vec<u8>], max_bytes: usize) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
                if installation_keys.is_empty() {
                    return Ok(Vec::new());
                }
                // Only placeholders are formatted into the statement.
                let statement = format!(
                    "SELECT installation_key, key_package FROM xmtp_installations WHERE key_package IS NOT NULL AND installation_key IN ({})",
                    placeholders(1, installation_keys.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for key in installation_keys {
                    query = query.bind(key);
                }
                fetch_all_within(&self.pool, query, max_bytes, |row| {
                    let key: Vec<u8> = row.try_get("installation_key")?;
                    let key_package: Vec<u8> = row.try_get("key_package")?;
                    let size = key_package.len() + ENVELOPE_BYTES;
                    Ok(((key, key_package), size))
                })
                .await
            }

            async fn insert_group_messages(&self, messages: &[NewGroupMessage], created_ns: i64) -> StoreResult<Vec<Inserted<StoredGroupMessage>>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let mut last = lock_groups(&mut tx, messages.iter().map(|message| message.group_id.clone())).await?;
                let mut inserted = Vec::with_capacity(messages.len());
                for message in messages {
                    let id = next_id(&mut tx).await?;
                    let result = sqlx::query(
                        "INSERT INTO xmtp_group_messages (id, group_id, created_ns, data, sender_hmac, should_push, is_commit, content_hash) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (content_hash) DO NOTHING",
                    )
                    .bind(id)
                    .bind(&message.group_id)
                    .bind(created_ns)
                    .bind(&message.data)
                    .bind(&message.sender_hmac)
                    .bind(message.should_push)
                    .bind(message.is_commit)
                    .bind(content_hash(&message.group_id, &message.data))
                    .execute(&mut *tx)
                    .await?;
                    if result.rows_affected() == 0 {
                        continue;
                    }
                    if message.should_push {
                        queue_push(&mut tx, "xmtp_group", id, &$crate::push::store::xmtp_topic('g', &message.group_id), created_ns).await?;
                    }
                    let entry = last.get_mut(&message.group_id).expect("locked above");
                    let previous_id = std::mem::replace(&mut entry.0, id);
                    inserted.push(Inserted {
                        item: StoredGroupMessage {
                            id,
                            group_id: message.group_id.clone(),
                            created_ns,
                            data: message.data.clone(),
                            sender_hmac: message.sender_hmac.clone(),
                            should_push: message.should_push,
                            is_commit: message.is_commit,
                        },
                        previous_id,
                    });
                }
                for (group_id, (last_message_id, _)) in &last {
                    sqlx::query("UPDATE xmtp_groups SET last_message_id = $2 WHERE group_id = $1 AND last_message_id < $2")
                        .bind(group_id)
                        .bind(last_message_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn group_messages(
                &self,
                group_id: &[u8],
                cursor: i64,
                direction: Direction,
                limit: u32,
                max_bytes: usize,
            ) -> StoreResult<Budgeted<StoredGroupMessage>> {
                let statement = match direction {
                    Direction::Ascending => format!("SELECT {MESSAGE_COLUMNS} FROM xmtp_group_messages WHERE group_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3"),
                    Direction::Descending => format!(
                        "SELECT {MESSAGE_COLUMNS} FROM xmtp_group_messages WHERE group_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3"
                    ),
                };
                let query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(group_id).bind(cursor).bind(i64::from(limit));
                fetch_within(&self.pool, query, max_bytes, |row| {
                    let message = StoredGroupMessage::from_row(row)?;
                    let size = message_size(&message);
                    Ok((message, size))
                })
                .await
            }

            async fn newest_group_messages(
                &self,
                group_ids: &[Vec<u8>],
                with_content: bool,
                max_bytes: usize,
            ) -> StoreResult<std::collections::HashMap<Vec<u8>, StoredGroupMessage>> {
                if group_ids.is_empty() {
                    return Ok(std::collections::HashMap::new());
                }
                // Without content the payload is never read from disk.
                let data = if with_content { "m.data" } else { "m.sender_hmac AS data" };
                let statement = format!(
                    "SELECT m.id, m.group_id, m.created_ns, {data}, m.sender_hmac, m.should_push, m.is_commit \
                     FROM xmtp_groups g JOIN xmtp_group_messages m ON m.id = g.last_message_id WHERE g.group_id IN ({})",
                    placeholders(1, group_ids.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for group_id in group_ids {
                    query = query.bind(group_id);
                }
                let newest = fetch_all_within(&self.pool, query, max_bytes, |row| {
                    let mut message = StoredGroupMessage::from_row(row)?;
                    if !with_content {
                        message.data = Vec::new();
                    }
                    let size = message_size(&message);
                    Ok((message, size))
                })
                .await?;
                Ok(newest.into_iter().map(|message| (message.group_id.clone(), message)).collect())
            }

            async fn group_heads(&self, group_ids: &[Vec<u8>]) -> StoreResult<Vec<i64>> {
                self.heads("SELECT group_id AS topic, last_message_id AS head FROM xmtp_groups WHERE group_id IN", group_ids).await
            }

            async fn welcome_heads(&self, installation_keys: &[Vec<u8>]) -> StoreResult<Vec<i64>> {
                self.heads("SELECT installation_key AS topic, last_welcome_id AS head FROM xmtp_installations WHERE installation_key IN", installation_keys).await
            }

            async fn insert_welcomes(&self, welcomes: &[NewWelcome], created_ns: i64) -> StoreResult<Vec<Inserted<StoredWelcome>>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let mut last = BTreeMap::new();
                for key in welcomes.iter().map(|welcome| welcome.installation_key.clone()).collect::<std::collections::BTreeSet<_>>() {
                    sqlx::query("INSERT INTO xmtp_installations (installation_key) VALUES ($1) ON CONFLICT (installation_key) DO NOTHING")
                        .bind(&key)
                        .execute(&mut *tx)
                        .await?;
                    let last_id: i64 = sqlx::query_scalar(concat!("SELECT last_welcome_id FROM xmtp_installations WHERE installation_key = $1 ", $for_update))
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                    last.insert(key, last_id);
                }
                let mut inserted = Vec::with_capacity(welcomes.len());
                for welcome in welcomes {
                    let id = next_id(&mut tx).await?;
                    let result = sqlx::query(
                        "INSERT INTO xmtp_welcomes (id, installation_key, created_ns, message, content_hash) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (content_hash) DO NOTHING",
                    )
                    .bind(id)
                    .bind(&welcome.installation_key)
                    .bind(created_ns)
                    .bind(&welcome.message)
                    .bind(content_hash(&welcome.installation_key, &welcome.message))
                    .execute(&mut *tx)
                    .await?;
                    if result.rows_affected() == 0 {
                        continue;
                    }
                    queue_push(&mut tx, "xmtp_welcome", id, &$crate::push::store::xmtp_topic('w', &welcome.installation_key), created_ns).await?;
                    let previous_id = std::mem::replace(last.get_mut(&welcome.installation_key).expect("locked above"), id);
                    inserted.push(Inserted {
                        item: StoredWelcome { id, installation_key: welcome.installation_key.clone(), created_ns, message: welcome.message.clone() },
                        previous_id,
                    });
                }
                for (key, last_id) in &last {
                    sqlx::query("UPDATE xmtp_installations SET last_welcome_id = $2 WHERE installation_key = $1 AND last_welcome_id < $2")
                        .bind(key)
                        .bind(last_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn welcomes(
                &self,
                installation_key: &[u8],
                cursor: i64,
                direction: Direction,
                limit: u32,
                max_bytes: usize,
            ) -> StoreResult<Budgeted<StoredWelcome>> {
                let statement = match direction {
                    Direction::Ascending => {
                        "SELECT id, installation_key, created_ns, message FROM xmtp_welcomes WHERE installation_key = $1 AND id > $2 ORDER BY id ASC LIMIT $3"
                    }
                    Direction::Descending => {
                        "SELECT id, installation_key, created_ns, message FROM xmtp_welcomes WHERE installation_key = $1 AND ($2 = 0 OR id < $2) \
                         ORDER BY id DESC LIMIT $3"
                    }
                };
                let query = sqlx::query(statement).bind(installation_key).bind(cursor).bind(i64::from(limit));
                fetch_within(&self.pool, query, max_bytes, |row| {
                    let welcome = StoredWelcome::from_row(row)?;
                    let size = welcome.message.len() + ENVELOPE_BYTES;
                    Ok((welcome, size))
                })
                .await
            }

            async fn identity_log(&self, inbox_id: &str) -> StoreResult<(Option<InboxPosition>, Vec<StoredIdentityUpdate>)> {
                let log = sqlx::query_as::<_, StoredIdentityUpdate>(
                    "SELECT sequence_id, inbox_id, server_timestamp_ns, update_bytes FROM xmtp_identity_updates WHERE inbox_id = $1 ORDER BY sequence_id",
                )
                .bind(inbox_id)
                .fetch_all(&self.pool)
                .await?;
                // The position is derived from the rows read, so the two always agree.
                let position = log
                    .last()
                    .map(|last| InboxPosition { last_sequence_id: last.sequence_id, update_count: log.len() as i64 });
                Ok((position, log))
            }

            async fn append_identity_update(
                &self,
                inbox_id: &str,
                expected: Option<InboxPosition>,
                update_bytes: &[u8],
                linked_addresses: &[String],
                unlinked_addresses: &[String],
                server_timestamp_ns: i64,
            ) -> StoreResult<StoredIdentityUpdate> {
                let mut tx = self.pool.begin_with($begin).await?;
                match expected {
                    None => {
                        let created = sqlx::query(
                            "INSERT INTO xmtp_inboxes (inbox_id, last_sequence_id, update_count) VALUES ($1, 0, 0) ON CONFLICT (inbox_id) DO NOTHING",
                        )
                        .bind(inbox_id)
                        .execute(&mut *tx)
                        .await?;
                        if created.rows_affected() == 0 {
                            return Err(StoreError::Conflict("the inbox log moved"));
                        }
                    }
                    Some(expected) => {
                        let current = sqlx::query_as::<_, InboxPosition>(concat!(
                            "SELECT last_sequence_id, update_count FROM xmtp_inboxes WHERE inbox_id = $1 ",
                            $for_update
                        ))
                        .bind(inbox_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if current != Some(expected) {
                            return Err(StoreError::Conflict("the inbox log moved"));
                        }
                    }
                }
                let sequence_id = next_id(&mut tx).await?;
                sqlx::query("INSERT INTO xmtp_identity_updates (sequence_id, inbox_id, server_timestamp_ns, update_bytes) VALUES ($1, $2, $3, $4)")
                    .bind(sequence_id)
                    .bind(inbox_id)
                    .bind(server_timestamp_ns)
                    .bind(update_bytes)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE xmtp_inboxes SET last_sequence_id = $2, update_count = update_count + 1 WHERE inbox_id = $1")
                    .bind(inbox_id)
                    .bind(sequence_id)
                    .execute(&mut *tx)
                    .await?;
                for address in unlinked_addresses {
                    sqlx::query(
                        "UPDATE xmtp_address_log SET revocation_sequence_id = $3 WHERE address = $1 AND inbox_id = $2 AND revocation_sequence_id IS NULL",
                    )
                    .bind(address)
                    .bind(inbox_id)
                    .bind(sequence_id)
                    .execute(&mut *tx)
                    .await?;
                }
                for address in linked_addresses {
                    sqlx::query("INSERT INTO xmtp_address_log (address, inbox_id, association_sequence_id) VALUES ($1, $2, $3)")
                        .bind(address)
                        .bind(inbox_id)
                        .bind(sequence_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(StoredIdentityUpdate { sequence_id, inbox_id: inbox_id.to_string(), server_timestamp_ns, update_bytes: update_bytes.to_vec() })
            }

            async fn identity_updates_after(&self, requests: &[(String, i64)], max_bytes: usize) -> StoreResult<Vec<Vec<StoredIdentityUpdate>>> {
                if requests.is_empty() {
                    return Ok(Vec::new());
                }
                // One query for every inbox asked for, each from its own cursor.
                let conditions: Vec<String> = (0..requests.len())
                    .map(|index| format!("(inbox_id = ${} AND sequence_id > ${})", 2 * index + 1, 2 * index + 2))
                    .collect();
                let statement = format!(
                    "SELECT sequence_id, inbox_id, server_timestamp_ns, update_bytes FROM xmtp_identity_updates WHERE {} ORDER BY sequence_id",
                    conditions.join(" OR ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for (inbox_id, after) in requests {
                    query = query.bind(inbox_id).bind(after);
                }
                let updates = fetch_all_within(&self.pool, query, max_bytes, |row| {
                    let update = StoredIdentityUpdate::from_row(row)?;
                    let size = update.update_bytes.len() + update.inbox_id.len() + ENVELOPE_BYTES;
                    Ok((update, size))
                })
                .await?;
                let mut by_inbox: std::collections::HashMap<String, Vec<StoredIdentityUpdate>> = std::collections::HashMap::new();
                for update in updates {
                    by_inbox.entry(update.inbox_id.clone()).or_default().push(update);
                }
                Ok(requests
                    .iter()
                    .map(|(inbox_id, _)| by_inbox.remove(inbox_id).unwrap_or_default())
                    .collect())
            }

            async fn inbox_ids(&self, addresses: &[String]) -> StoreResult<Vec<Option<String>>> {
                if addresses.is_empty() {
                    return Ok(Vec::new());
                }
                let statement = format!(
                    "SELECT address, inbox_id, association_sequence_id FROM xmtp_address_log \
                     WHERE revocation_sequence_id IS NULL AND address IN ({})",
                    placeholders(1, addresses.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for address in addresses {
                    query = query.bind(address);
                }
                // The newest unrevoked association of each address wins.
                let mut newest: std::collections::HashMap<String, (i64, String)> = std::collections::HashMap::new();
                for row in query.fetch_all(&self.pool).await? {
                    let address: String = row.try_get("address")?;
                    let sequence: i64 = row.try_get("association_sequence_id")?;
                    let inbox_id: String = row.try_get("inbox_id")?;
                    if newest.get(&address).is_none_or(|(best, _)| sequence > *best) {
                        newest.insert(address, (sequence, inbox_id));
                    }
                }
                Ok(addresses.iter().map(|address| newest.get(address).map(|(_, inbox_id)| inbox_id.clone())).collect())
            }

            async fn insert_commit_log(&self, entries: &[NewCommitLogEntry], max_per_group: i64) -> StoreResult<Vec<StoredCommitLogEntry>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let mut last = lock_groups(&mut tx, entries.iter().map(|entry| entry.group_id.clone())).await?;
                // Read under the group locks taken above, so concurrent appends agree on the
                // signer and cannot pass the cap.
                let mut groups: BTreeMap<Vec<u8>, (Option<Vec<u8>>, i64)> = BTreeMap::new();
                for group_id in last.keys() {
                    let row = sqlx::query("SELECT commit_log_public_key, commit_log_count FROM xmtp_groups WHERE group_id = $1")
                        .bind(group_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    groups.insert(group_id.clone(), (row.try_get("commit_log_public_key")?, row.try_get("commit_log_count")?));
                }
                let mut stored = Vec::with_capacity(entries.len());
                for entry in entries {
                    let (signer, count) = groups.get_mut(&entry.group_id).expect("locked above");
                    if signer.as_ref().is_some_and(|signer| *signer != entry.signer) {
                        continue;
                    }
                    if *count >= max_per_group {
                        return Err(StoreError::Full("the group's commit log is full"));
                    }
                    signer.get_or_insert_with(|| entry.signer.clone());
                    *count += 1;
                    let id = next_id(&mut tx).await?;
                    sqlx::query("INSERT INTO xmtp_commit_log (id, group_id, entry, signature) VALUES ($1, $2, $3, $4)")
                        .bind(id)
                        .bind(&entry.group_id)
                        .bind(&entry.entry)
                        .bind(&entry.signature)
                        .execute(&mut *tx)
                        .await?;
                    last.get_mut(&entry.group_id).expect("locked above").1 = id;
                    stored.push(StoredCommitLogEntry { id, group_id: entry.group_id.clone(), entry: entry.entry.clone(), signature: entry.signature.clone() });
                }
                for (group_id, (_, last_commit_log_id)) in &last {
                    let (signer, count) = &groups[group_id];
                    sqlx::query(
                        "UPDATE xmtp_groups SET last_commit_log_id = CASE WHEN last_commit_log_id < $2 THEN $2 ELSE last_commit_log_id END, \
                         commit_log_public_key = $3, commit_log_count = $4 WHERE group_id = $1",
                    )
                    .bind(group_id)
                    .bind(last_commit_log_id)
                    .bind(signer)
                    .bind(count)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(stored)
            }

            async fn commit_log(&self, group_id: &[u8], cursor: i64, limit: u32, max_bytes: usize) -> StoreResult<Budgeted<StoredCommitLogEntry>> {
                let query = sqlx::query("SELECT id, group_id, entry, signature FROM xmtp_commit_log WHERE group_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3")
                    .bind(group_id)
                    .bind(cursor)
                    .bind(i64::from(limit));
                fetch_within(&self.pool, query, max_bytes, |row| {
                    let entry = StoredCommitLogEntry::from_row(row)?;
                    let size = entry.entry.len() + entry.signature.as_ref().map_or(0, Vec::len) + ENVELOPE_BYTES;
                    Ok((entry, size))
                })
                .await
            }
        }
    };
}
pub(crate) use node_store;
