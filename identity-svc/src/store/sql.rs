//! The SQL of the identity store, shared by both dialects (sqlx binds `$N` the same way on
//! PostgreSQL and SQLite). [`sql_store!`] instantiates it for one database type with that
//! dialect's transaction start and row-locking clause.

/// Account columns (SQLite's RETURNING accepts only unqualified names).
macro_rules! account_columns {
    () => {
        "id, wallet_address, wallet_key, xmtp_inbox_id, handle, name, description, x_url, \
         github_url, website_url, verified, twitter_username, created_at, registered_at, updated_at"
    };
}
pub(crate) use account_columns;

/// Account columns read through the alias `a`, for joins.
macro_rules! account_columns_of_a {
    () => {
        "a.id, a.wallet_address, a.wallet_key, a.xmtp_inbox_id, a.handle, a.name, a.description, a.x_url, \
         a.github_url, a.website_url, a.verified, a.twitter_username, a.created_at, a.registered_at, a.updated_at"
    };
}
pub(crate) use account_columns_of_a;

/// API key columns read through the alias `k`, named apart from the account's.
macro_rules! key_columns_of_k {
    () => {
        "k.public_id, k.account_id, k.name AS key_name, k.prefix, k.created_at AS key_created_at, k.last_used_at"
    };
}
pub(crate) use key_columns_of_k;

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    escaped.push('%');
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped.push('%');
    escaped
}

/// Largest id/handle/address list accepted in one lookup.
pub const MAX_LOOKUP: usize = 500;

macro_rules! sql_store {
    ($name:ident, $db:ty, $begin:literal, $for_update:literal) => {
        use async_trait::async_trait;
        use clawx_common::storage::{is_unique_violation, placeholders};
        use sqlx::FromRow;

        use $crate::store::{
            AccountRecord, ApiKeyRecord, ChallengeRecord, DomainRecord, IdentityStore, LinkedWalletRecord, NewAccount, NewApiKey, ProfileFields,
            ProfilePatch, StoreError, StoreResult, UserQuery,
            sql::{MAX_LOOKUP, account_columns, account_columns_of_a, key_columns_of_k, like_pattern},
        };

        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                $name { pool }
            }
        }

        fn conflict(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
            move |error| if is_unique_violation(&error) { StoreError::Conflict(what) } else { StoreError::Database(error) }
        }

        impl $name {
            async fn accounts_where(&self, column: &str, values: Vec<AccountLookup>) -> StoreResult<Vec<AccountRecord>> {
                if values.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<AccountLookup> = values.into_iter().take(MAX_LOOKUP).collect();
                // Only placeholders and a fixed column name are formatted into the statement.
                let statement =
                    format!("SELECT {} FROM accounts WHERE {} IN ({}) ORDER BY id", account_columns!(), column, placeholders(1, values.len()));
                let mut query = sqlx::query_as::<_, AccountRecord>(sqlx::AssertSqlSafe(statement));
                for value in values {
                    query = match value {
                        AccountLookup::Id(id) => query.bind(id),
                        AccountLookup::Text(text) => query.bind(text),
                    };
                }
                Ok(query.fetch_all(&self.pool).await?)
            }
        }

        enum AccountLookup {
            Id(i64),
            Text(String),
        }

        #[async_trait]
        impl IdentityStore for $name {
            async fn create_account(&self, account: NewAccount) -> StoreResult<AccountRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                let record = sqlx::query_as::<_, AccountRecord>(concat!(
                    "INSERT INTO accounts (wallet_address, wallet_address_lower, wallet_key, xmtp_inbox_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
                    account_columns!()
                ))
                .bind(&account.wallet_address)
                .bind(account.wallet_address.to_lowercase())
                .bind(&account.wallet_key)
                .bind(&account.xmtp_inbox_id)
                .bind(account.created_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(conflict("wallet"))?;
                let record = match &account.registration {
                    None => record,
                    Some(registration) => {
                        let profile = &registration.profile;
                        sqlx::query_as::<_, AccountRecord>(concat!(
                            "UPDATE accounts SET handle = $2, name = $3, name_lower = $4, description = $5, x_url = $6, \
                             github_url = $7, website_url = $8, registered_at = $9 WHERE id = $1 RETURNING ",
                            account_columns!()
                        ))
                        .bind(record.id)
                        .bind(&registration.handle)
                        .bind(&profile.name)
                        .bind(profile.name.to_lowercase())
                        .bind(&profile.description)
                        .bind(&profile.x_url)
                        .bind(&profile.github_url)
                        .bind(&profile.website_url)
                        .bind(account.created_at)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(conflict("handle"))?
                    }
                };
                insert_key(&mut tx, record.id, &account.first_key, account.created_at).await?;
                tx.commit().await?;
                Ok(record)
            }

            async fn account(&self, id: i64) -> StoreResult<Option<AccountRecord>> {
                let row = sqlx::query_as::<_, AccountRecord>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row)
            }

            async fn account_by_handle(&self, handle: &str) -> StoreResult<Option<AccountRecord>> {
                let row = sqlx::query_as::<_, AccountRecord>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE handle = $1"))
                    .bind(handle)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row)
            }

            async fn accounts_by_wallet(&self, addresses_lower: &[String]) -> StoreResult<Vec<AccountRecord>> {
                let values = addresses_lower.iter().cloned().map(AccountLookup::Text).collect();
                self.accounts_where("wallet_address_lower", values).await
            }

            async fn accounts_by_id(&self, ids: &[i64]) -> StoreResult<Vec<AccountRecord>> {
                self.accounts_where("id", ids.iter().copied().map(AccountLookup::Id).collect()).await
            }

            async fn accounts_by_handle(&self, handles: &[String]) -> StoreResult<Vec<AccountRecord>> {
                self.accounts_where("handle", handles.iter().cloned().map(AccountLookup::Text).collect()).await
            }

            async fn register(&self, id: i64, handle: &str, profile: &ProfileFields, at: i64) -> StoreResult<AccountRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                let existing: Option<Option<String>> =
                    sqlx::query_scalar(concat!("SELECT handle FROM accounts WHERE id = $1 ", $for_update)).bind(id).fetch_optional(&mut *tx).await?;
                match existing {
                    None => return Err(StoreError::NotFound),
                    Some(Some(_)) => return Err(StoreError::AlreadyRegistered),
                    Some(None) => {}
                }
                let record = sqlx::query_as::<_, AccountRecord>(concat!(
                    "UPDATE accounts SET handle = $2, name = $3, name_lower = $4, description = $5, x_url = $6, \
                     github_url = $7, website_url = $8, registered_at = $9, updated_at = $9 WHERE id = $1 RETURNING ",
                    account_columns!()
                ))
                .bind(id)
                .bind(handle)
                .bind(&profile.name)
                .bind(profile.name.to_lowercase())
                .bind(&profile.description)
                .bind(&profile.x_url)
                .bind(&profile.github_url)
                .bind(&profile.website_url)
                .bind(at)
                .fetch_one(&mut *tx)
                .await
                .map_err(conflict("handle"))?;
                tx.commit().await?;
                Ok(record)
            }

            async fn update_profile(&self, id: i64, patch: &ProfilePatch, at: i64) -> StoreResult<AccountRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query_as::<_, AccountRecord>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1 ", $for_update))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let current = row.ok_or(StoreError::NotFound)?;
                let profile = patch.apply(&current);
                let record = sqlx::query_as::<_, AccountRecord>(concat!(
                    "UPDATE accounts SET name = $2, name_lower = $3, description = $4, x_url = $5, github_url = $6, \
                     website_url = $7, updated_at = $8 WHERE id = $1 RETURNING ",
                    account_columns!()
                ))
                .bind(id)
                .bind(&profile.name)
                .bind(profile.name.to_lowercase())
                .bind(&profile.description)
                .bind(&profile.x_url)
                .bind(&profile.github_url)
                .bind(&profile.website_url)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(record)
            }

            async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<AccountRecord>> {
                let pattern = query.search.as_deref().map(like_pattern);
                let rows = sqlx::query_as::<_, AccountRecord>(concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts WHERE handle IS NOT NULL \
                     AND ($1 IS NULL OR handle LIKE $1 ESCAPE '\\' OR name_lower LIKE $1 ESCAPE '\\') \
                     ORDER BY id LIMIT $2 OFFSET $3"
                ))
                .bind(pattern)
                .bind(i64::from(query.limit))
                .bind(i64::from(query.offset))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn account_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<(AccountRecord, ApiKeyRecord)>> {
                let statement = concat!(
                    "SELECT ",
                    account_columns_of_a!(),
                    ", ",
                    key_columns_of_k!(),
                    " FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = $1"
                );
                // One row holds both records, under column names apart.
                let row = sqlx::query(statement).bind(key_hash).fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => Ok(Some((AccountRecord::from_row(&row)?, ApiKeyRecord::from_row(&row)?))),
                    None => Ok(None),
                }
            }

            async fn touch_api_key(&self, key_id: &str, at: i64) -> StoreResult<()> {
                sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE public_id = $1").bind(key_id).bind(at).execute(&self.pool).await?;
                Ok(())
            }

            async fn create_api_key(&self, account_id: i64, key: &NewApiKey, at: i64, limit: i64) -> StoreResult<ApiKeyRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                lock_account(&mut tx, account_id).await?;
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1").bind(account_id).fetch_one(&mut *tx).await?;
                if count >= limit {
                    return Err(StoreError::LimitExceeded);
                }
                let record = insert_key(&mut tx, account_id, key, at).await?;
                tx.commit().await?;
                Ok(record)
            }

            async fn list_api_keys(&self, account_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
                let rows = sqlx::query_as::<_, ApiKeyRecord>(concat!(
                    "SELECT ",
                    key_columns_of_k!(),
                    " FROM api_keys k WHERE k.account_id = $1 ORDER BY k.id"
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn revoke_api_key(&self, account_id: i64, key_id: &str) -> StoreResult<String> {
                let mut tx = self.pool.begin_with($begin).await?;
                // Under the account's lock, two revocations cannot remove its last two keys together.
                lock_account(&mut tx, account_id).await?;
                let hash: Option<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE account_id = $1 AND public_id = $2")
                    .bind(account_id)
                    .bind(key_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let hash = hash.ok_or(StoreError::NotFound)?;
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1").bind(account_id).fetch_one(&mut *tx).await?;
                if count <= 1 {
                    return Err(StoreError::LastKey);
                }
                sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND public_id = $2").bind(account_id).bind(key_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(hash)
            }

            async fn count_api_keys(&self, account_id: i64) -> StoreResult<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1").bind(account_id).fetch_one(&self.pool).await?)
            }

            async fn create_challenge(&self, challenge: &ChallengeRecord, now: i64, keep: u32) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("DELETE FROM wallet_challenges WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
                sqlx::query(
                    "DELETE FROM wallet_challenges WHERE account_id = $1 AND nonce NOT IN \
                     (SELECT nonce FROM wallet_challenges WHERE account_id = $1 ORDER BY expires_at DESC LIMIT $2)",
                )
                .bind(challenge.account_id)
                .bind(i64::from(keep.saturating_sub(1)))
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO wallet_challenges (nonce, account_id, address_lower, message, expires_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&challenge.nonce)
                    .bind(challenge.account_id)
                    .bind(&challenge.address_lower)
                    .bind(&challenge.message)
                    .bind(challenge.expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict("nonce"))?;
                tx.commit().await?;
                Ok(())
            }

            async fn take_challenge(&self, nonce: &str) -> StoreResult<Option<ChallengeRecord>> {
                let row = sqlx::query_as::<_, ChallengeRecord>(
                    "DELETE FROM wallet_challenges WHERE nonce = $1 RETURNING nonce, account_id, address_lower, message, expires_at",
                )
                .bind(nonce)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row)
            }

            async fn link_wallet(&self, account_id: i64, address: &str, at: i64, limit: i64) -> StoreResult<LinkedWalletRecord> {
                let address_lower = address.to_lowercase();
                let mut tx = self.pool.begin_with($begin).await?;
                lock_account(&mut tx, account_id).await?;
                let existing =
                    sqlx::query_as::<_, LinkedWalletRecord>("SELECT address, account_id, linked_at FROM linked_wallets WHERE address_lower = $1")
                        .bind(&address_lower)
                        .fetch_optional(&mut *tx)
                        .await?;
                match existing {
                    Some(wallet) if wallet.account_id == account_id => return Ok(wallet),
                    Some(_) => return Err(StoreError::Conflict("wallet")),
                    None => {}
                }
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM linked_wallets WHERE account_id = $1").bind(account_id).fetch_one(&mut *tx).await?;
                if count >= limit {
                    return Err(StoreError::LimitExceeded);
                }
                // Another account may link the same wallet meanwhile (it holds another lock).
                let inserted = sqlx::query_as::<_, LinkedWalletRecord>(
                    "INSERT INTO linked_wallets (address_lower, address, account_id, linked_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (address_lower) DO NOTHING RETURNING address, account_id, linked_at",
                )
                .bind(&address_lower)
                .bind(address)
                .bind(account_id)
                .bind(at)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(wallet) = inserted else { return Err(StoreError::Conflict("wallet")) };
                tx.commit().await?;
                Ok(wallet)
            }

            async fn list_wallets(&self, account_id: i64) -> StoreResult<Vec<LinkedWalletRecord>> {
                let rows = sqlx::query_as::<_, LinkedWalletRecord>(
                    "SELECT address, account_id, linked_at FROM linked_wallets WHERE account_id = $1 ORDER BY linked_at, address_lower",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn unlink_wallet(&self, account_id: i64, address_lower: &str) -> StoreResult<()> {
                let result = sqlx::query("DELETE FROM linked_wallets WHERE account_id = $1 AND address_lower = $2")
                    .bind(account_id)
                    .bind(address_lower)
                    .execute(&self.pool)
                    .await?;
                if result.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            }

            async fn wallet_owner(&self, address_lower: &str) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT account_id FROM linked_wallets WHERE address_lower = $1")
                    .bind(address_lower)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn claim_domain(&self, account_id: i64, name: &str, at: i64, limit: i64) -> StoreResult<DomainRecord> {
                let mut tx = self.pool.begin_with($begin).await?;
                lock_account(&mut tx, account_id).await?;
                let existing = sqlx::query_as::<_, DomainRecord>("SELECT name, account_id, claimed_at FROM domains WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                match existing {
                    Some(domain) if domain.account_id == account_id => return Ok(domain),
                    Some(_) => return Err(StoreError::Conflict("domain")),
                    None => {}
                }
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE account_id = $1").bind(account_id).fetch_one(&mut *tx).await?;
                if count >= limit {
                    return Err(StoreError::LimitExceeded);
                }
                // Another account may claim the same name meanwhile (it holds another lock).
                let inserted = sqlx::query_as::<_, DomainRecord>(
                    "INSERT INTO domains (name, account_id, claimed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING RETURNING name, account_id, claimed_at",
                )
                .bind(name)
                .bind(account_id)
                .bind(at)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(domain) = inserted else { return Err(StoreError::Conflict("domain")) };
                tx.commit().await?;
                Ok(domain)
            }

            async fn list_domains(&self, account_id: i64) -> StoreResult<Vec<DomainRecord>> {
                let rows = sqlx::query_as::<_, DomainRecord>("SELECT name, account_id, claimed_at FROM domains WHERE account_id = $1 ORDER BY name")
                    .bind(account_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows)
            }

            async fn release_domain(&self, account_id: i64, name: &str) -> StoreResult<()> {
                let result =
                    sqlx::query("DELETE FROM domains WHERE account_id = $1 AND name = $2").bind(account_id).bind(name).execute(&self.pool).await?;
                if result.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            }

            async fn account_for_domain(&self, domain: &str) -> StoreResult<Option<i64>> {
                let statement =
                    if domain.contains('.') { "SELECT account_id FROM domains WHERE name = $1" } else { "SELECT id FROM accounts WHERE handle = $1" };
                Ok(sqlx::query_scalar(statement).bind(domain).fetch_optional(&self.pool).await?)
            }

            async fn set_verification(&self, id: i64, verified: bool, twitter_username: Option<&str>, at: i64) -> StoreResult<AccountRecord> {
                let row = sqlx::query_as::<_, AccountRecord>(concat!(
                    "UPDATE accounts SET verified = $2, twitter_username = $3, updated_at = $4 WHERE id = $1 RETURNING ",
                    account_columns!()
                ))
                .bind(id)
                .bind(verified)
                .bind(twitter_username)
                .bind(at)
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or(StoreError::NotFound)
            }

            async fn api_key_hashes(&self, account_id: i64) -> StoreResult<Vec<String>> {
                self.key_hashes_of(&self.pool, account_id).await
            }

            async fn unverified_accounts(&self, created_before: i64, after_id: i64, limit: u32) -> StoreResult<Vec<AccountRecord>> {
                let rows = sqlx::query_as::<_, AccountRecord>(concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts WHERE verified = FALSE AND created_at < $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(created_before)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows)
            }

            async fn delete_unverified_account(&self, id: i64, created_before: i64) -> StoreResult<Option<Vec<String>>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let hashes = self.key_hashes_of(&mut *tx, id).await?;
                let deleted = sqlx::query("DELETE FROM accounts WHERE id = $1 AND verified = FALSE AND created_at < $2")
                    .bind(id)
                    .bind(created_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                tx.commit().await?;
                Ok(Some(hashes))
            }
        }

        impl $name {
            async fn key_hashes_of(&self, executor: impl sqlx::Executor<'_, Database = $db>, account_id: i64) -> StoreResult<Vec<String>> {
                let hashes = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE account_id = $1 ORDER BY id")
                    .bind(account_id)
                    .fetch_all(executor)
                    .await?;
                Ok(hashes)
            }
        }

        /// Locks the account row for the rest of the transaction (`FOR UPDATE` on PostgreSQL;
        /// SQLite's `BEGIN IMMEDIATE` already holds the database's write lock), so the per-account
        /// counts checked after it cannot change until commit (`NotFound` without the account).
        async fn lock_account(tx: &mut sqlx::Transaction<'static, $db>, account_id: i64) -> StoreResult<()> {
            let locked: Option<i64> =
                sqlx::query_scalar(concat!("SELECT id FROM accounts WHERE id = $1 ", $for_update)).bind(account_id).fetch_optional(&mut **tx).await?;
            if locked.is_none() {
                return Err(StoreError::NotFound);
            }
            Ok(())
        }

        async fn insert_key(tx: &mut sqlx::Transaction<'static, $db>, account_id: i64, key: &NewApiKey, at: i64) -> StoreResult<ApiKeyRecord> {
            let row = sqlx::query_as::<_, ApiKeyRecord>(
                "INSERT INTO api_keys (public_id, account_id, key_hash, prefix, name, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING public_id, account_id, name AS key_name, prefix, created_at AS key_created_at, last_used_at",
            )
            .bind(&key.id)
            .bind(account_id)
            .bind(&key.key_hash)
            .bind(&key.prefix)
            .bind(&key.name)
            .bind(at)
            .fetch_one(&mut **tx)
            .await
            .map_err(conflict("api key"))?;
            Ok(row)
        }
    };
}
pub(crate) use sql_store;
