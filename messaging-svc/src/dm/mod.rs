//! Direct messages: between accounts here, and between an account and any wallet address.
//! Sends are durable when acknowledged and group-committed ([`batch`]); reads come from the
//! caller's side of a conversation only; streams replay an account's mailbox, then go live
//! through the XMTP node's feed machinery.

pub mod address;
pub mod batch;
pub mod consent;
pub mod identity;
pub mod store;

use std::{collections::HashMap, pin::Pin, sync::Arc};

use clawx_common::{ErrorCode, PubSub, ServiceError, ServiceResult};
use clawx_proto::{identity::Profile, messaging as pb};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use self::{
    batch::Batcher,
    identity::Identity,
    store::{Consent, DmStore, InboundMessage, NewMessage, Party, ReceiveOutcome, SendOutcome, StoredMessage},
};
use crate::agent::network::XmtpNetwork;
use crate::node::{
    NodeError, NodeResult,
    feed::{self, FeedContext, Topic},
    store::Budgeted,
};

/// Default and largest page of the inbox and of a conversation.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;
/// Largest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// Default largest message content (`CLAWX_MESSAGE_MAX_BYTES`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages one stream replay page reads.
const REPLAY_PAGE: u32 = 200;
/// Stream replays read at once per replica.
const CONCURRENT_CATCH_UPS: usize = 8;

/// Handles of the accounts a message names, by account id (`None`: no handle yet).
pub type Handles = HashMap<i64, Option<String>>;

/// The pub/sub channel of an account's mailbox.
pub fn mailbox_channel(account_id: i64) -> String {
    format!("msg.a.{account_id}")
}

/// Whom a call names: an account by handle, or a wallet address.
#[derive(Clone, Debug)]
pub enum Peer {
    Handle(String),
    WalletAddress(String),
}

/// The direct-message service of one replica.
#[derive(Debug)]
pub struct DirectMessages {
    store: Arc<dyn DmStore>,
    pubsub: PubSub,
    identity: Identity,
    batcher: Batcher,
    max_message_bytes: usize,
    catch_ups: tokio::sync::Semaphore,
    spam: consent::SpamPolicy,
    /// Told when a batch stored messages (the XMTP outbox waits on it).
    stored: Arc<tokio::sync::Notify>,
    /// The XMTP network, when the agent engine runs: a wallet with no inbox there cannot be
    /// written to.
    xmtp: Option<XmtpNetwork>,
}

/// The API form of a stored message.
pub fn to_proto(message: &StoredMessage, handles: &Handles) -> pb::Message {
    let handle = |account: Option<i64>| account.and_then(|id| handles.get(&id).cloned().flatten());
    let delivery = match message.delivery.as_str() {
        "sent" => pb::Delivery::Sent,
        "failed" => pb::Delivery::Failed,
        _ => pb::Delivery::Stored,
    };
    pb::Message {
        id: message.id,
        sender_id: message.sender_account_id,
        recipient_id: message.recipient_account_id,
        content: message.content.clone(),
        sent_at_ms: message.sent_at,
        sender_handle: handle(message.sender_account_id),
        recipient_handle: handle(message.recipient_account_id),
        sender_address: message.sender_address.clone(),
        recipient_address: message.recipient_address.clone(),
        delivery: delivery as i32,
        delivery_error: message.delivery_error.clone(),
        topic: format!("/clawx/dm/1/{}", message.conversation_id),
        group_id: None,
        content_type: message.content_type.clone(),
    }
}

/// Tells the stream subscribers on every replica of stored messages (each with, per account
/// mailbox it entered, the id before it there), in the background; a lost notice is caught up
/// by the feed (the next notice, a gap or its safety net).
pub(crate) fn announce(pubsub: &PubSub, stored: Vec<(pb::Message, Vec<(i64, i64)>)>) {
    if stored.is_empty() {
        return;
    }
    let pubsub = pubsub.clone();
    tokio::spawn(async move {
        // A batch's notices go out together: one round trip to Redis, in order.
        let notices: Vec<(String, Vec<u8>)> = stored
            .iter()
            .flat_map(|(message, previous)| {
                previous.iter().map(move |(account_id, previous_id)| (mailbox_channel(*account_id), feed::notice(message.id, *previous_id, message)))
            })
            .collect();
        if let Err(error) = pubsub.publish_all(&notices).await {
            // Subscribers on other replicas catch up at their next notification or gap.
            tracing::warn!(%error, notices = notices.len(), "could not notify subscribers");
        }
    });
}

fn handles_of(profiles: &[Profile]) -> Handles {
    profiles.iter().map(|profile| (profile.id, profile.handle.clone())).collect()
}

fn unavailable() -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, "the message could not be stored; nothing was saved, retry")
}

fn internal(error: sqlx::Error) -> ServiceError {
    ServiceError::internal(format!("direct-message store: {error}"))
}

/// What a send's idempotency key stands for: the recipient and the content.
fn request_hash(recipient: &Party, content: &str) -> Vec<u8> {
    let key = recipient.key();
    let mut hasher = Sha256::new();
    hasher.update((key.len() as u64).to_be_bytes());
    hasher.update(key.as_bytes());
    hasher.update(content.as_bytes());
    hasher.finalize().to_vec()
}

fn page_limit(limit: u32) -> u32 {
    if limit == 0 { DEFAULT_PAGE } else { limit.min(MAX_PAGE) }
}

impl DirectMessages {
    /// The service on `store`; starts the replica's batcher task.
    pub fn new(store: Arc<dyn DmStore>, pubsub: PubSub, identity: Identity, max_message_bytes: usize, spam: consent::SpamPolicy) -> DirectMessages {
        let stored = Arc::new(tokio::sync::Notify::new());
        let batcher = Batcher::start(Arc::clone(&store), pubsub.clone(), Arc::clone(&stored));
        let catch_ups = tokio::sync::Semaphore::new(CONCURRENT_CATCH_UPS);
        DirectMessages { store, pubsub, identity, batcher, max_message_bytes, catch_ups, spam, stored, xmtp: None }
    }

    /// Refuses sends to wallets with no inbox on `network` (the agent engine carries messages
    /// there).
    pub fn with_xmtp(mut self, network: XmtpNetwork) -> DirectMessages {
        self.xmtp = Some(network);
        self
    }

    /// Told when a batch stored messages.
    pub fn stored_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.stored)
    }

    /// Largest message content, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DmStore> {
        &self.store
    }

    /// Stores messages received over XMTP (each once) and tells the streams; how many were new.
    pub async fn store_received(&self, batch: &[InboundMessage]) -> ServiceResult<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        let outcomes = self.store.receive_batch(batch, clawx_common::time::now_ms()).await.map_err(internal)?;
        let stored: Vec<(StoredMessage, Vec<(i64, i64)>)> = outcomes
            .into_iter()
            .filter_map(|outcome| match outcome {
                ReceiveOutcome::Stored { message, previous } => Some((message, previous)),
                ReceiveOutcome::Known => None,
            })
            .collect();
        let count = stored.len();
        let (messages, previous): (Vec<StoredMessage>, Vec<Vec<(i64, i64)>>) = stored.into_iter().unzip();
        let protos = self.with_handles(messages).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "handles of received messages unknown; streamed without them");
            Vec::new()
        });
        announce(&self.pubsub, protos.into_iter().zip(previous).collect());
        Ok(count)
    }

    /// The party `peer` names, from `account_id`'s point of view (the field at fault is
    /// `handle` or `wallet_address`), and the handles of both accounts.
    async fn resolve_peer(&self, account_id: i64, peer: &Peer) -> ServiceResult<(Party, Handles, &'static str)> {
        match peer {
            Peer::Handle(handle) => {
                let handle = handle.trim().to_ascii_lowercase();
                if handle.is_empty() {
                    return Err(ServiceError::invalid("handle", "handle is required"));
                }
                let profiles = self.identity.resolve(&[account_id], std::slice::from_ref(&handle), &[]).await?;
                let found = profiles
                    .iter()
                    .find(|profile| profile.handle.as_deref() == Some(handle.as_str()))
                    .ok_or_else(|| ServiceError::not_found("user not found"))?;
                Ok((Party::Account(found.id), handles_of(&profiles), "handle"))
            }
            Peer::WalletAddress(text) => {
                let address = address::parse_wallet_address("wallet_address", text)?;
                let profiles = self.identity.resolve(&[account_id], &[], std::slice::from_ref(&address)).await?;
                let party = match profiles.iter().find(|profile| profile.wallet_address.to_ascii_lowercase() == address) {
                    Some(profile) => Party::Account(profile.id),
                    None => Party::Wallet(address),
                };
                Ok((party, handles_of(&profiles), "wallet_address"))
            }
        }
    }

    /// Stores a message from `account_id` to `to`, answered once it is committed.
    #[tracing::instrument(name = "dm.send", skip_all, fields(account.id = account_id))]
    pub async fn send(&self, account_id: i64, to: Option<Peer>, content: String, idempotency_key: String) -> ServiceResult<pb::Message> {
        let to = to.ok_or_else(|| ServiceError::invalid("handle", "handle or wallet_address is required"))?;
        if content.is_empty() {
            return Err(ServiceError::invalid("message", "message must not be empty"));
        }
        if content.len() > self.max_message_bytes {
            return Err(ServiceError::invalid("message", format!("message must be at most {} bytes", self.max_message_bytes)));
        }
        // A NUL cannot be stored in PostgreSQL text; refused here, it cannot fail a whole batch
        // of other users' messages.
        if content.contains('\0') {
            return Err(ServiceError::invalid("message", "message must not contain NUL characters"));
        }
        if !idempotency_key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(ServiceError::invalid("idempotency_key", "idempotency key must be printable ASCII without spaces"));
        }
        if idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(ServiceError::invalid("idempotency_key", format!("idempotency key must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes")));
        }
        let (recipient, handles, field) = self.resolve_peer(account_id, &to).await?;
        if recipient == Party::Account(account_id) {
            return Err(ServiceError::invalid(field, "you cannot send a direct message to yourself"));
        }
        if let (Party::Wallet(address), Some(network)) = (&recipient, &self.xmtp) {
            match network.inbox_id_of(address).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ServiceError::new(
                        ErrorCode::RecipientNotOnXmtp,
                        format!("{address} has no XMTP inbox: it cannot receive messages until its owner joins XMTP"),
                    ));
                }
                // Kept and retried by the outbox, which fails it for good if the wallet has no inbox.
                Err(error) => tracing::warn!(%error, "could not look the recipient's XMTP inbox up; the message is queued"),
            }
        }
        let idempotency = (!idempotency_key.is_empty()).then(|| (idempotency_key, request_hash(&recipient, &content)));
        let message = NewMessage { sender_account_id: account_id, recipient, content, idempotency };
        match self.batcher.send(message, handles.clone()).await.map_err(|()| unavailable())? {
            SendOutcome::Stored { message, .. } => {
                tracing::info!(message.id = message.id, "direct message stored");
                Ok(to_proto(&message, &handles))
            }
            SendOutcome::Repeated(message) => Ok(to_proto(&message, &handles)),
            SendOutcome::KeyReused => {
                Err(ServiceError::new(ErrorCode::IdempotencyKeyReused, "this idempotency key was already used with another message"))
            }
        }
    }

    /// Handles of every account in `messages`, in one lookup.
    async fn with_handles(&self, messages: Vec<StoredMessage>) -> ServiceResult<Vec<pb::Message>> {
        let ids: Vec<i64> = messages.iter().flat_map(StoredMessage::accounts).collect();
        let handles = if ids.is_empty() { Handles::new() } else { handles_of(&self.identity.resolve(&ids, &[], &[]).await?) };
        Ok(messages.iter().map(|message| to_proto(message, &handles)).collect())
    }

    /// The newest message of each of the account's conversations, newest first.
    pub async fn inbox(&self, account_id: i64, consent: Option<Consent>, limit: u32, offset: u32) -> ServiceResult<Vec<pb::Message>> {
        let messages = self.store.inbox(account_id, consent, page_limit(limit), offset).await.map_err(internal)?;
        self.with_handles(messages).await
    }

    /// The account's conversation with `peer`, newest first.
    pub async fn conversation(
        &self,
        account_id: i64,
        peer: Option<Peer>,
        limit: u32,
        offset: u32,
        before_id: Option<i64>,
        after_id: Option<i64>,
    ) -> ServiceResult<Vec<pb::Message>> {
        let peer = peer.ok_or_else(|| ServiceError::invalid("handle", "handle or wallet_address is required"))?;
        let (party, _, _) = self.resolve_peer(account_id, &peer).await?;
        let before_id = before_id.filter(|id| *id > 0).unwrap_or(i64::MAX);
        let after_id = after_id.unwrap_or(0).max(0);
        let messages = self.store.conversation(account_id, &party, before_id, after_id, page_limit(limit), offset).await.map_err(internal)?;
        self.with_handles(messages).await
    }

    /// The account's messages after `after_id` (0: only new ones), then each new one.
    pub async fn stream(
        self: &Arc<Self>,
        account_id: i64,
        after_id: i64,
        shutdown: CancellationToken,
    ) -> ServiceResult<Pin<Box<dyn Stream<Item = Result<pb::Message, tonic::Status>> + Send>>> {
        if after_id < 0 {
            return Err(ServiceError::invalid("after_id", "after_id must not be negative"));
        }
        let cursor = if after_id == 0 { self.store.mailbox_heads(&[account_id]).await.map_err(internal)?[0] } else { after_id };
        let (sink, stream) = feed::queue::<pb::Message>();
        let context = Arc::clone(self);
        let filters = vec![(account_id.to_be_bytes().to_vec(), cursor as u64)];
        tokio::spawn(feed::run::<MailboxTopic>(context, filters, sink, shutdown));
        // Messages from a peer the account denied stay stored (and in its inbox under
        // `denied`) but are not streamed to it.
        let store = Arc::clone(&self.store);
        let stream = stream.filter_map(move |item| {
            let store = Arc::clone(&store);
            async move {
                let Ok(message) = &item else { return Some(item) };
                if message.recipient_id != Some(account_id) {
                    return Some(item);
                }
                let sender = match (message.sender_id, &message.sender_address) {
                    (Some(id), _) => Party::Account(id),
                    (None, Some(address)) => Party::Wallet(address.clone()),
                    (None, None) => return Some(item),
                };
                match store.is_denied(account_id, &sender).await {
                    Ok(true) => None,
                    Ok(false) => Some(item),
                    Err(error) => {
                        tracing::warn!(%error, "consent lookup failed; message streamed");
                        Some(item)
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

impl FeedContext for DirectMessages {
    fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    async fn catch_up_permit(&self) -> NodeResult<tokio::sync::SemaphorePermit<'_>> {
        self.catch_ups.acquire().await.map_err(|_| NodeError::Internal)
    }
}

fn account_of(key: &[u8]) -> i64 {
    i64::from_be_bytes(key.try_into().unwrap_or([0; 8]))
}

/// An account's mailbox: every message it sent or received, by account id (8 bytes, big
/// endian).
pub struct MailboxTopic;

impl Topic for MailboxTopic {
    type Context = DirectMessages;
    type Item = pb::Message;

    fn channel(key: &[u8]) -> String {
        mailbox_channel(account_of(key))
    }

    async fn after(context: &DirectMessages, key: &[u8], cursor: i64) -> NodeResult<Budgeted<(i64, pb::Message)>> {
        let messages = context.store.mailbox_after(account_of(key), cursor, REPLAY_PAGE).await.map_err(|error| {
            tracing::error!(%error, "direct-message replay failed");
            NodeError::Internal
        })?;
        let cut = messages.len() as u32 >= REPLAY_PAGE;
        let ids: Vec<i64> = messages.iter().map(|message| message.id).collect();
        let items = context.with_handles(messages).await.map_err(|_| NodeError::Internal)?;
        Ok(Budgeted { items: ids.into_iter().zip(items).collect(), cut })
    }

    async fn heads(context: &DirectMessages, keys: &[Vec<u8>]) -> NodeResult<Vec<i64>> {
        let accounts: Vec<i64> = keys.iter().map(|key| account_of(key)).collect();
        context.store.mailbox_heads(&accounts).await.map_err(|error| {
            tracing::error!(%error, "direct-message heads failed");
            NodeError::Internal
        })
    }
}
