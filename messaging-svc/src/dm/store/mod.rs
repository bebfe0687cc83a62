//! Persistence of direct messages: one trait, a PostgreSQL and a SQLite implementation sharing
//! their SQL, and one conformance suite run against both.

mod postgres;
mod sql;
mod sqlite;
mod writes;

use std::sync::Arc;

use async_trait::async_trait;
use clawx_common::Database;

pub use postgres::PostgresDmStore;
pub use sqlite::SqliteDmStore;

/// One side of a conversation: an account here, or a wallet with no account here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    Account(i64),
    /// Lowercase `0x` + 40 hex digits.
    Wallet(String),
}

impl Party {
    /// The party as stored: `a:<account id>` or `w:<lowercase address>`.
    pub fn key(&self) -> String {
        match self {
            Party::Account(id) => format!("a:{id}"),
            Party::Wallet(address) => format!("w:{address}"),
        }
    }

    pub fn account_id(&self) -> Option<i64> {
        match self {
            Party::Account(id) => Some(*id),
            Party::Wallet(_) => None,
        }
    }

    pub fn address(&self) -> Option<&str> {
        match self {
            Party::Account(_) => None,
            Party::Wallet(address) => Some(address),
        }
    }
}

/// A message about to be stored, from an account here.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub sender_account_id: i64,
    pub recipient: Party,
    pub content: String,
    /// The caller's idempotency key and the hash of what it sent with it.
    pub idempotency: Option<(String, Vec<u8>)>,
}

/// A stored message.
/// The columns of a [`StoredMessage`], of `dm_messages` aliased `m`.
pub const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.sender_account_id, m.sender_address, m.recipient_account_id, \
                                   m.recipient_address, m.content, m.sent_at, m.delivery, m.delivery_error, m.content_type";

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: i64,
    pub conversation_id: i64,
    pub sender_account_id: Option<i64>,
    pub sender_address: Option<String>,
    pub recipient_account_id: Option<i64>,
    pub recipient_address: Option<String>,
    pub content: String,
    pub sent_at: i64,
    /// `stored`, `sent` or `failed`.
    pub delivery: String,
    pub delivery_error: Option<String>,
    /// A received message that is not text: its XMTP content type (`content` is its fallback).
    pub content_type: Option<String>,
}

impl StoredMessage {
    /// The accounts whose mailboxes hold the message.
    pub fn accounts(&self) -> impl Iterator<Item = i64> {
        self.sender_account_id.into_iter().chain(self.recipient_account_id)
    }
}

/// What became of one message of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored; `previous` holds, per account mailbox it entered, the id before it there.
    Stored { message: StoredMessage, previous: Vec<(i64, i64)> },
    /// The idempotency key was used before with the same content: the first message, nothing
    /// stored.
    Repeated(StoredMessage),
    /// The idempotency key was used before with other content; nothing stored.
    KeyReused,
}

/// A message an account's installation received over XMTP.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    pub recipient_account_id: i64,
    /// An account here, or the sender's wallet.
    pub sender: Party,
    pub content: String,
    /// Not text: the XMTP content type (`authority/type:major.minor`); `content` is its fallback.
    pub content_type: Option<String>,
    /// When the network stored it (Unix ms).
    pub sent_at: i64,
    /// The network's id of the message, as the recipient saw it: it is stored once.
    pub xmtp_message_id: String,
    /// For a message from an account here: the Clawx message its idempotency key names (stored
    /// when it was sent, so not stored again).
    pub echo_of: Option<i64>,
}

/// What became of one received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// Stored; `previous` as in [`SendOutcome::Stored`].
    Stored { message: StoredMessage, previous: Vec<(i64, i64)> },
    /// Stored before (received earlier, or sent from here).
    Known,
}

/// A message claimed for XMTP delivery, and how many attempts (this one included) it had.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub message: StoredMessage,
    pub attempts: i32,
}

/// How a delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxResult {
    Sent,
    /// Try again at `at_ms`.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// Given up: the message's `delivery` becomes `failed` with `error`.
    Failed {
        error: String,
    },
}

/// An account's consent to a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    Unknown,
    Allowed,
    Denied,
}

impl Consent {
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::Unknown => "unknown",
            Consent::Allowed => "allowed",
            Consent::Denied => "denied",
        }
    }
}

impl Party {
    /// The party of a stored key (`a:<id>` or `w:<address>`).
    pub fn from_key(key: &str) -> Option<Party> {
        match key.split_once(':')? {
            ("a", id) => id.parse().ok().map(Party::Account),
            ("w", address) => Some(Party::Wallet(address.to_string())),
            _ => None,
        }
    }
}

/// How long an idempotency key is honoured.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// Everything the direct-message service keeps.
#[async_trait]
pub trait DmStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch in one transaction: each message with its conversation, the mailbox rows
    /// and conversation pointers of its accounts, its outbox row and its idempotency key. Any
    /// failure stores nothing. Idempotency keys older than [`IDEMPOTENCY_TTL_MS`] are ignored.
    async fn send_batch(&self, batch: &[NewMessage], now_ms: i64) -> StoreResult<Vec<SendOutcome>>;
    /// Stores messages received over XMTP, each once, in one transaction (with mailbox rows,
    /// conversation pointers and push jobs, as sends).
    async fn receive_batch(&self, batch: &[InboundMessage], now_ms: i64) -> StoreResult<Vec<ReceiveOutcome>>;
    /// Claims up to `limit` messages due for XMTP delivery, oldest first, until
    /// `lease_until_ms` (another replica takes them over after that).
    async fn claim_outbox(&self, now_ms: i64, lease_until_ms: i64, limit: u32) -> StoreResult<Vec<OutboxEntry>>;
    /// Records how a delivery attempt ended (and the message's `delivery` once final).
    async fn finish_outbox(&self, message_id: i64, result: &OutboxResult) -> StoreResult<()>;
    /// The newest message of each of the account's conversations, newest first.
    async fn inbox(&self, account_id: i64, consent: Option<Consent>, limit: u32, offset: u32) -> StoreResult<Vec<StoredMessage>>;
    /// The account's conversation with `peer`, newest first, ids strictly between `after_id`
    /// and `before_id`; empty when they never talked.
    async fn conversation(
        &self,
        account_id: i64,
        peer: &Party,
        before_id: i64,
        after_id: i64,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// The account's mailbox after `after_id`, oldest first.
    async fn mailbox_after(&self, account_id: i64, after_id: i64, limit: u32) -> StoreResult<Vec<StoredMessage>>;
    /// The newest mailbox id of each account (0 when none), in order.
    async fn mailbox_heads(&self, account_ids: &[i64]) -> StoreResult<Vec<i64>>;
    /// Deletes idempotency keys created before `before_ms`; how many.
    async fn delete_idempotency_keys_before(&self, before_ms: i64) -> StoreResult<u64>;
    /// Sets the account's consent to one of its conversations; its peer, or `None` when the
    /// account is not in that conversation.
    async fn set_conversation_consent(&self, account_id: i64, conversation_id: i64, consent: Consent) -> StoreResult<Option<Party>>;
    /// Sets the account's consent to `peer`: to their conversation if they have one (whether
    /// they do), and to any conversation they start later.
    async fn set_peer_consent(&self, account_id: i64, peer: &Party, consent: Consent) -> StoreResult<bool>;
    /// Sets the account's consent to an XMTP topic (`/xmtp/mls/1/...`, lowercase).
    async fn set_topic_consent(&self, account_id: i64, topic: &str, consent: Consent) -> StoreResult<()>;
    /// The account's consent to an XMTP topic (`Unknown` when never set).
    async fn topic_consent(&self, account_id: i64, topic: &str) -> StoreResult<Consent>;
    /// Whether the account denied `peer`.
    async fn is_denied(&self, account_id: i64, peer: &Party) -> StoreResult<bool>;
    /// Files the account's spam report against `address` (lowercase), owned by
    /// `reported_account_id` here if any; one per reporter and address (whether it is new).
    async fn report_spam(&self, reporter_account_id: i64, address: &str, reported_account_id: Option<i64>, now_ms: i64) -> StoreResult<bool>;
    /// Distinct accounts that reported `address` or the account owning it.
    async fn spam_reporters(&self, address: &str, account_id: Option<i64>) -> StoreResult<i64>;
    /// Conversations the account opened (sent their first message) since `since_ms`.
    async fn first_contacts_since(&self, account_id: i64, since_ms: i64) -> StoreResult<i64>;
}

/// The store of a connected database.
pub fn for_database(database: &Database) -> Arc<dyn DmStore> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresDmStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteDmStore::new(pool.clone())),
    }
}
