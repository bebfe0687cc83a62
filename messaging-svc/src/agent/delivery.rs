//! Carrying direct messages over XMTP. The outbox worker sends what accounts stored (opening
//! the DM group with the peer's inbox when needed) and records `sent` or `failed`; the receiver
//! pulls each installation when the node announces activity for it, when the identity service
//! announces a new account (which publishes its XMTP identity), and every `sync_interval`
//! for all of them, storing what arrives in the recipients' mailboxes once; [`Delivery::sync`]
//! is the same pull on demand.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use clawx_common::{
    ErrorCode, PubSub, ServiceError, ServiceResult,
    auth::{ACCOUNT_CREATED_CHANNEL, AccountCreated},
    pubsub::Event,
    time::now_ms,
};
use clawx_proto::xmtp::identity::associations::{IdentifierKind, MemberIdentifier, identity_action, member_identifier};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{AgentConfig, AgentError, Engine, receive::ReceivedMessage};
use crate::{
    dm::{
        DirectMessages,
        store::{InboundMessage, OutboxEntry, OutboxResult, Party, StoredMessage},
    },
    node::feed::ACTIVITY_CHANNEL,
};

/// Messages claimed from the outbox at once.
const OUTBOX_BATCH: u32 = 32;
/// Senders whose messages go out at once (each sender's in order).
const OUTBOX_CONCURRENCY: usize = 4;
/// How long a claimed message is this replica's before another may try it.
const OUTBOX_LEASE_MS: i64 = 120_000;
/// How often an idle outbox looks for due messages another replica stored.
const OUTBOX_POLL: Duration = Duration::from_millis(500);
/// Retry delays double from this, up to [`MAX_RETRY_DELAY_MS`].
const FIRST_RETRY_DELAY_MS: i64 = 2_000;
const MAX_RETRY_DELAY_MS: i64 = 300_000;
/// Accounts pulled at once.
const RECEIVE_CONCURRENCY: usize = 4;
/// Installations read per page of the periodic sweep.
const SWEEP_PAGE: u32 = 500;
/// Inbox addresses (an inbox's first wallet never changes) and accounts seen, remembered.
const MAX_REMEMBERED_ADDRESSES: usize = 10_000;

/// The `delivery_error` of a message to a wallet with no XMTP inbox.
pub const RECIPIENT_NOT_ON_XMTP: &str = "RECIPIENT_NOT_ON_XMTP";
/// The `delivery_error` of a message the network did not take after every attempt.
pub const XMTP_UNAVAILABLE: &str = "XMTP_UNAVAILABLE";

/// The XMTP side of direct messages, for one replica.
#[derive(Debug)]
pub struct Delivery {
    engine: Engine,
    messages: Arc<DirectMessages>,
    config: AgentConfig,
    /// Accounts waiting for a pull, and the signal that there are some.
    pending: Mutex<BTreeSet<i64>>,
    pending_signal: Notify,
    /// The wallet of each external inbox seen.
    addresses: Mutex<HashMap<String, String>>,
    /// Accounts seen acting on this replica (see [`Delivery::first_use`]).
    seen: Mutex<std::collections::HashSet<i64>>,
    operations: tokio::sync::Semaphore,
}

fn unavailable(error: AgentError) -> ServiceError {
    match error {
        AgentError::NoAccount => ServiceError::not_found("the account does not exist"),
        other => {
            tracing::warn!(error = %other, "XMTP sync failed");
            ServiceError::new(ErrorCode::Unavailable, "the XMTP network could not be reached; try again")
        }
    }
}

impl Delivery {
    /// `operations` bounds the engine's operations at once, outbox and pulls together: on
    /// PostgreSQL each holds a connection for its lock and briefly needs another, so it must
    /// stay well under the pool's size.
    pub fn new(engine: Engine, messages: Arc<DirectMessages>, config: AgentConfig, operations: usize) -> Arc<Delivery> {
        Arc::new(Delivery {
            engine,
            messages,
            config,
            pending: Mutex::default(),
            pending_signal: Notify::new(),
            addresses: Mutex::default(),
            seen: Mutex::default(),
            operations: tokio::sync::Semaphore::new(operations.max(1)),
        })
    }

    /// Starts the outbox worker and the receiver; they stop with `shutdown`.
    pub fn start(self: &Arc<Self>, pubsub: &PubSub, shutdown: CancellationToken) {
        tokio::spawn(Arc::clone(self).run_outbox(shutdown.clone()));
        for _ in 0..RECEIVE_CONCURRENCY {
            tokio::spawn(Arc::clone(self).run_puller(shutdown.clone()));
        }
        tokio::spawn(Arc::clone(self).listen(pubsub.subscribe(ACTIVITY_CHANNEL), pubsub.subscribe(ACCOUNT_CREATED_CHANNEL), shutdown.clone()));
        tokio::spawn(Arc::clone(self).sweep(shutdown));
    }

    /// Pulls the account's new XMTP messages into its mailbox now; how many were new.
    pub async fn sync(&self, account_id: i64) -> ServiceResult<usize> {
        self.pull(account_id).await.map_err(unavailable)
    }

    /// Queues a pull of the account the first time this replica sees it act: an account that
    /// existed before the engine (or whose announcement was missed) becomes an XMTP client.
    pub fn first_use(&self, account_id: i64) {
        let new = {
            let mut seen = self.seen.lock().expect("accounts seen");
            if seen.len() >= MAX_REMEMBERED_ADDRESSES {
                seen.clear();
            }
            seen.insert(account_id)
        };
        if new {
            self.wake(account_id);
        }
    }

    /// Queues a pull of the account (the account is made an XMTP client if it is not one yet).
    pub fn wake(&self, account_id: i64) {
        if self.pending.lock().expect("pending pulls").insert(account_id) {
            self.pending_signal.notify_one();
        }
    }

    async fn pull(&self, account_id: i64) -> Result<usize, AgentError> {
        let _permit = self.operations.acquire().await.map_err(|_| AgentError::Network("shutting down".into()))?;
        self.engine
            .receive_with(account_id, |received| async move {
                let inbound = self.inbound(account_id, received).await?;
                self.messages.store_received(&inbound).await.map_err(|error| AgentError::Network(format!("storing received messages: {error}")))
            })
            .await
    }

    /// The mailbox form of what the account's installation decrypted: text, or the fallback
    /// text of other content types with their content type (content with neither, such as read
    /// receipts, is not kept).
    async fn inbound(&self, account_id: i64, received: Vec<ReceivedMessage>) -> Result<Vec<InboundMessage>, AgentError> {
        let mut inbound = Vec::with_capacity(received.len());
        // A pull usually holds many messages of few senders: each sender is looked up once.
        let mut senders: HashMap<String, Option<i64>> = HashMap::new();
        for message in received {
            // Text is kept as text; anything else as its fallback, with its content type.
            let content_type = message.text.is_none().then(|| message.content_type.clone());
            let Some(mut content) = message.text.or(message.fallback).filter(|content| !content.is_empty()) else {
                continue;
            };
            // Kept within what a send here may hold: NULs cannot be stored, and an oversized
            // text is cut at a character boundary.
            content.retain(|character| character != '\0');
            if content.is_empty() {
                continue;
            }
            if content.len() > self.messages.max_message_bytes() {
                let mut end = self.messages.max_message_bytes();
                while !content.is_char_boundary(end) {
                    end -= 1;
                }
                content.truncate(end);
            }
            let sender_account = match senders.get(&message.sender_inbox_id) {
                Some(account) => *account,
                None => {
                    let account = self.engine.store.account_of_inbox(&message.sender_inbox_id).await?;
                    senders.insert(message.sender_inbox_id.clone(), account);
                    account
                }
            };
            let (sender, echo_of) = match sender_account {
                Some(sender) if sender == account_id => continue,
                Some(sender) => (Party::Account(sender), message.idempotency_key.parse().ok()),
                None => match self.address_of(&message.sender_inbox_id).await? {
                    Some(address) => (Party::Wallet(address), None),
                    None => {
                        tracing::warn!(inbox.id = %message.sender_inbox_id, "message from an inbox with no Ethereum wallet; not kept");
                        continue;
                    }
                },
            };
            inbound.push(InboundMessage {
                recipient_account_id: account_id,
                sender,
                content,
                content_type,
                sent_at: i64::try_from(message.sent_at_ns / 1_000_000).unwrap_or(i64::MAX),
                // The network's id as this recipient saw it: another account here in the same
                // group keeps its own copy.
                xmtp_message_id: format!("{account_id}/{}", message.xmtp_message_id),
                echo_of,
            });
        }
        Ok(inbound)
    }

    /// The wallet that created an inbox (lowercase), from the network's history of it.
    async fn address_of(&self, inbox_id: &str) -> Result<Option<String>, AgentError> {
        if let Some(address) = self.addresses.lock().expect("inbox addresses").get(inbox_id) {
            return Ok(Some(address.clone()));
        }
        let history = self.engine.network.inbox_history(inbox_id).await?;
        let address = history.updates.iter().flat_map(|(_, update)| &update.actions).find_map(|action| match &action.kind {
            Some(identity_action::Kind::CreateInbox(create)) if create.initial_identifier_kind == IdentifierKind::Ethereum as i32 => {
                Some(create.initial_identifier.to_ascii_lowercase())
            }
            Some(identity_action::Kind::Add(add)) => match &add.new_member_identifier {
                Some(MemberIdentifier { kind: Some(member_identifier::Kind::EthereumAddress(address)) }) => Some(address.to_ascii_lowercase()),
                _ => None,
            },
            _ => None,
        });
        if let Some(address) = &address {
            let mut addresses = self.addresses.lock().expect("inbox addresses");
            if addresses.len() >= MAX_REMEMBERED_ADDRESSES {
                addresses.clear();
            }
            addresses.insert(inbox_id.to_string(), address.clone());
        }
        Ok(address)
    }

    /// Takes queued accounts one at a time and pulls them.
    async fn run_puller(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.pending.lock().expect("pending pulls").pop_first();
            let Some(account_id) = next else {
                tokio::select! {
                    () = self.pending_signal.notified() => continue,
                    () = shutdown.cancelled() => return,
                }
            };
            match self.pull(account_id).await {
                Ok(0) => {}
                Ok(stored) => tracing::info!(account.id = account_id, stored, "XMTP messages received"),
                Err(AgentError::NoAccount) => tracing::debug!(account.id = account_id, "no such account; nothing pulled"),
                Err(error) => tracing::warn!(account.id = account_id, %error, "XMTP pull failed; the next one retries"),
            }
        }
    }

    /// Wakes the accounts the node's activity concerns, and new accounts.
    async fn listen(
        self: Arc<Self>,
        mut activity: clawx_common::pubsub::Subscription,
        mut created: clawx_common::pubsub::Subscription,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                event = activity.recv() => event,
                event = created.recv() => match event {
                    Some(Event::Message(payload)) => {
                        match serde_json::from_slice::<AccountCreated>(&payload) {
                            Ok(announcement) => self.wake(announcement.account_id),
                            Err(error) => tracing::warn!(%error, "unreadable new-account announcement"),
                        }
                        continue;
                    }
                    Some(Event::Gap) => continue,
                    None => return,
                },
                () = shutdown.cancelled() => return,
            };
            let payload = match event {
                Some(Event::Message(payload)) => payload,
                // Missed activity is found by the periodic sweep.
                Some(Event::Gap) => continue,
                None => return,
            };
            let accounts = match payload.split_first() {
                Some((b'g', group_id)) => self.engine.store.accounts_in_group(group_id).await,
                Some((b'w', installation_key)) => self.engine.store.account_of_installation(installation_key).await.map(Vec::from_iter),
                _ => continue,
            };
            match accounts {
                Ok(accounts) => accounts.into_iter().for_each(|account_id| self.wake(account_id)),
                Err(error) => tracing::warn!(%error, "could not look up whom XMTP activity concerns"),
            }
        }
    }

    /// Every `sync_interval`, queues a pull of every installation: what the notices missed,
    /// messages from another network, and key packages due for renewal.
    async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.sync_interval.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let mut after = 0;
            loop {
                match self.engine.store.installed_accounts(after, SWEEP_PAGE).await {
                    Ok(accounts) => {
                        let Some(last) = accounts.last().copied() else { break };
                        accounts.into_iter().for_each(|account_id| self.wake(account_id));
                        after = last;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not list XMTP installations");
                        break;
                    }
                }
            }
        }
    }

    /// Claims due outbox messages and delivers them, each sender's in order.
    async fn run_outbox(self: Arc<Self>, shutdown: CancellationToken) {
        let stored = self.messages.stored_signal();
        loop {
            let now = now_ms();
            let claimed = match self.messages.store().claim_outbox(now, now + OUTBOX_LEASE_MS, OUTBOX_BATCH).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not read the XMTP outbox");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    () = stored.notified() => {}
                    () = tokio::time::sleep(OUTBOX_POLL) => {}
                    () = shutdown.cancelled() => return,
                }
                continue;
            }
            let mut by_sender: BTreeMap<i64, Vec<OutboxEntry>> = BTreeMap::new();
            for entry in claimed {
                by_sender.entry(entry.message.sender_account_id.unwrap_or_default()).or_default().push(entry);
            }
            futures::stream::iter(by_sender.into_values())
                .for_each_concurrent(OUTBOX_CONCURRENCY, |entries| async {
                    for entry in entries {
                        self.deliver(entry).await;
                    }
                })
                .await;
        }
    }

    async fn deliver(&self, entry: OutboxEntry) {
        let message_id = entry.message.id;
        let sent = match self.operations.acquire().await {
            Ok(_permit) => self.send(&entry.message).await,
            Err(_) => return,
        };
        let result = match sent {
            Ok(()) => OutboxResult::Sent,
            Err(AgentError::RecipientNotOnXmtp) => OutboxResult::Failed { error: RECIPIENT_NOT_ON_XMTP.into() },
            Err(AgentError::NoAccount) => OutboxResult::Failed { error: "SENDER_OR_RECIPIENT_DELETED".into() },
            Err(error) if entry.attempts >= self.config.max_attempts as i32 => {
                tracing::warn!(message.id = message_id, %error, attempts = entry.attempts, "XMTP delivery given up");
                OutboxResult::Failed { error: XMTP_UNAVAILABLE.into() }
            }
            Err(error) => {
                let delay = (FIRST_RETRY_DELAY_MS << (entry.attempts.clamp(1, 20) - 1)).min(MAX_RETRY_DELAY_MS);
                tracing::info!(message.id = message_id, %error, attempts = entry.attempts, delay_ms = delay, "XMTP delivery will be retried");
                OutboxResult::Retry { at_ms: now_ms() + delay, error: error.to_string() }
            }
        };
        match self.messages.store().finish_outbox(message_id, &result).await {
            Ok(()) if result == OutboxResult::Sent => tracing::debug!(message.id = message_id, "direct message sent over XMTP"),
            Ok(()) => {}
            // The lease runs out and the message is tried again: receivers drop the repeat by
            // its idempotency key.
            Err(error) => tracing::warn!(message.id = message_id, %error, "could not record an XMTP delivery"),
        }
    }

    async fn send(&self, message: &StoredMessage) -> Result<(), AgentError> {
        let sender = message.sender_account_id.ok_or(AgentError::NoAccount)?;
        let peer_inbox_id = match (message.recipient_account_id, &message.recipient_address) {
            (Some(recipient), _) => self.engine.ensure_ready(recipient).await?.inbox_id,
            (None, Some(address)) => self.engine.network.inbox_id_of(address).await?.ok_or(AgentError::RecipientNotOnXmtp)?,
            (None, None) => return Err(AgentError::NoAccount),
        };
        let group_id = self.engine.open_dm(sender, &peer_inbox_id).await?;
        self.engine.send_text(sender, &group_id, &message.content, &message.id.to_string()).await?;
        if let Some(recipient) = message.recipient_account_id {
            // The recipient here joins from its welcome and drops its copy as a repeat.
            self.wake(recipient);
        }
        Ok(())
    }
}
