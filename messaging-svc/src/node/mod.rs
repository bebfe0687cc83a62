//! The XMTP v3 node served by the messaging service: what unmodified XMTP clients use as their
//! network. Writes are validated (see [`validate`]); every stored item gets one global,
//! monotonically increasing id that clients page and subscribe by.

pub mod feed;
pub mod grpc;
pub mod store;
pub mod validate;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use clawx_common::PubSub;
use clawx_proto::xmtp::{
    identity::associations::IdentityUpdate,
    mls::api::v1::{GroupMessage, GroupMessageInput, PagingInfo, SortDirection, WelcomeMessage, WelcomeMessageInput, group_message, group_message_input, welcome_message, welcome_message_input},
    mls::message_contents::{WelcomePointerWrapperAlgorithm, WelcomeWrapperAlgorithm},
};
use prost::Message;
use sha2::{Digest, Sha256};

use self::{
    store::{Direction, InboxPosition, NewCommitLogEntry, NewGroupMessage, NewWelcome, NodeStore, StoreError, StoredCommitLogEntry, StoredGroupMessage, StoredIdentityUpdate, StoredWelcome},
    validate::assoc::{self, AssocError, AssociationState, MemberId, Policy},
};

/// Largest page a query returns (and what 0 means), as XMTP nodes do: clients page while a
/// page is full, so it must never be smaller.
pub const MAX_PAGE: u32 = 100;
/// Bounds on one request, so a single call cannot hold the database for long.
pub const MAX_GROUP_MESSAGES_PER_CALL: usize = 1_000;
pub const MAX_WELCOMES_PER_CALL: usize = 5_000;
pub const MAX_KEYS_PER_CALL: usize = 5_000;
pub const MAX_TOPIC_BYTES: usize = 256;
/// Updates an inbox may accumulate (each one carries signatures; clients replay them all).
pub const MAX_UPDATES_PER_INBOX: i64 = 256;
pub(crate) const IN_LIST_CHUNK: usize = 500;
const INBOX_CACHE_ENTRIES: usize = 10_000;
const APPEND_ATTEMPTS: usize = 5;

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is malformed or breaks a rule; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// A bounded resource is full.
    #[error("{0}")]
    Exhausted(String),
    /// Logged where it happened.
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for NodeError {
    fn from(error: StoreError) -> NodeError {
        tracing::error!(%error, "XMTP node store failed");
        NodeError::Internal
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::Invalid(message.into())
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// A page request as XMTP clients send it.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub direction: Direction,
    pub limit: u32,
    pub cursor: i64,
}

impl Page {
    /// XMTP paging: ascending only when asked, limit 0 or above [`MAX_PAGE`] means the maximum.
    pub fn from_proto(paging: Option<&PagingInfo>) -> Page {
        let paging = paging.cloned().unwrap_or_default();
        let direction = if paging.direction == SortDirection::Ascending as i32 { Direction::Ascending } else { Direction::Descending };
        let limit = if paging.limit == 0 || paging.limit > MAX_PAGE { MAX_PAGE } else { paging.limit };
        Page { direction, limit, cursor: i64::try_from(paging.id_cursor).unwrap_or(i64::MAX) }
    }

    /// The paging info of a reply: the cursor of the next page when this one is full.
    pub fn reply(&self, last_id: Option<i64>, returned: usize) -> PagingInfo {
        let direction = match self.direction {
            Direction::Ascending => SortDirection::Ascending,
            Direction::Descending => SortDirection::Descending,
        };
        let id_cursor = match last_id {
            Some(id) if returned as u32 >= self.limit => id as u64,
            _ => 0,
        };
        PagingInfo { direction: direction as i32, limit: self.limit, id_cursor }
    }
}

/// The wire form of a stored group message.
pub fn group_message(stored: &StoredGroupMessage, include_data: bool) -> GroupMessage {
    GroupMessage {
        version: Some(group_message::Version::V1(group_message::V1 {
            id: stored.id as u64,
            created_ns: stored.created_ns as u64,
            group_id: stored.group_id.clone(),
            data: if include_data { stored.data.clone() } else { Vec::new() },
            sender_hmac: stored.sender_hmac.clone(),
            should_push: stored.should_push,
            is_commit: stored.is_commit,
        })),
    }
}

/// The wire form of a stored welcome.
pub fn welcome_message(stored: &StoredWelcome) -> NodeResult<WelcomeMessage> {
    let input = WelcomeMessageInput::decode(stored.message.as_slice()).map_err(|error| {
        tracing::error!(%error, id = stored.id, "stored welcome does not decode");
        NodeError::Internal
    })?;
    let version = match input.version {
        Some(welcome_message_input::Version::V1(v1)) => welcome_message::Version::V1(welcome_message::V1 {
            id: stored.id as u64,
            created_ns: stored.created_ns as u64,
            installation_key: v1.installation_key,
            data: v1.data,
            hpke_public_key: v1.hpke_public_key,
            wrapper_algorithm: v1.wrapper_algorithm,
            welcome_metadata: v1.welcome_metadata,
        }),
        Some(welcome_message_input::Version::WelcomePointer(pointer)) => welcome_message::Version::WelcomePointer(welcome_message::WelcomePointer {
            id: stored.id as u64,
            created_ns: stored.created_ns as u64,
            installation_key: pointer.installation_key,
            welcome_pointer: pointer.welcome_pointer,
            hpke_public_key: pointer.hpke_public_key,
            wrapper_algorithm: pointer.wrapper_algorithm,
        }),
        None => return Err(NodeError::Internal),
    };
    Ok(WelcomeMessage { version: Some(version) })
}

fn check_topic(what: &str, key: &[u8]) -> NodeResult<()> {
    if key.is_empty() || key.len() > MAX_TOPIC_BYTES {
        return Err(invalid(format!("{what} must be 1 to {MAX_TOPIC_BYTES} bytes")));
    }
    Ok(())
}

/// What the node knows about an inbox.
#[derive(Clone, Debug)]
struct InboxSnapshot {
    position: Option<InboxPosition>,
    state: Option<AssociationState>,
    /// SHA-256 of every stored update, to answer a retried publish with OK.
    update_hashes: HashSet<[u8; 32]>,
}

/// The XMTP node's rules over its store.
pub struct Node {
    store: Arc<dyn NodeStore>,
    pubsub: PubSub,
    policy: Policy,
    inboxes: Mutex<HashMap<String, InboxSnapshot>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Node {
    pub fn new(store: Arc<dyn NodeStore>, pubsub: PubSub) -> Node {
        Node { store, pubsub, policy: Policy::default(), inboxes: Mutex::default() }
    }

    pub fn store(&self) -> &Arc<dyn NodeStore> {
        &self.store
    }

    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    // ------------------------------------------------------------------ key packages

    /// Validates and stores a key package under its installation key (the latest wins).
    pub async fn upload_key_package(&self, key_package: Vec<u8>) -> NodeResult<()> {
        if key_package.is_empty() {
            return Err(invalid("no key package"));
        }
        let bytes = key_package.clone();
        let validated = tokio::task::spawn_blocking(move || validate::keypackage::validate_key_package(&bytes))
            .await
            .map_err(|_| NodeError::Internal)?
            .map_err(|error| invalid(format!("invalid key package: {error}")))?;
        let not_after = i64::try_from(validated.not_after).unwrap_or(i64::MAX);
        match self
            .store
            .upsert_key_package(&validated.installation_key, &validated.inbox_id, &key_package, not_after, clawx_common::time::now_ms())
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(reason)) => Err(invalid(format!("invalid key package: {reason}"))),
            Err(error) => Err(error.into()),
        }
    }

    /// The latest key package of each installation key, in request order (empty when unknown).
    pub async fn fetch_key_packages(&self, installation_keys: &[Vec<u8>]) -> NodeResult<Vec<Vec<u8>>> {
        if installation_keys.len() > MAX_KEYS_PER_CALL {
            return Err(invalid(format!("at most {MAX_KEYS_PER_CALL} installation keys per call")));
        }
        let mut found = HashMap::new();
        for chunk in installation_keys.chunks(IN_LIST_CHUNK) {
            found.extend(self.store.key_packages(chunk).await?);
        }
        Ok(installation_keys.iter().map(|key| found.get(key).cloned().unwrap_or_default()).collect())
    }

    // ------------------------------------------------------------------ group messages

    /// Validates every message (group id and commit flag come from the MLS framing), then
    /// stores them all or none, and notifies subscribers.
    pub async fn send_group_messages(&self, inputs: Vec<GroupMessageInput>) -> NodeResult<()> {
        if inputs.is_empty() {
            return Err(invalid("no group messages to send"));
        }
        if inputs.len() > MAX_GROUP_MESSAGES_PER_CALL {
            return Err(invalid(format!("at most {MAX_GROUP_MESSAGES_PER_CALL} group messages per call")));
        }
        let messages = tokio::task::spawn_blocking(move || {
            inputs
                .into_iter()
                .enumerate()
                .map(|(index, input)| {
                    let Some(group_message_input::Version::V1(v1)) = input.version else {
                        return Err(invalid(format!("invalid group message {index}: missing v1")));
                    };
                    let info = validate::mlsmsg::parse_group_message(&v1.data)
                        .map_err(|error| invalid(format!("invalid group message {index}: {error}")))?;
                    check_topic("group id", &info.group_id)?;
                    Ok(NewGroupMessage { group_id: info.group_id, data: v1.data, sender_hmac: v1.sender_hmac, should_push: v1.should_push, is_commit: info.is_commit })
                })
                .collect::<NodeResult<Vec<_>>>()
        })
        .await
        .map_err(|_| NodeError::Internal)??;
        let inserted = self.store.insert_group_messages(&messages, now_ns()).await?;
        // Detached, so a caller that goes away after the commit cannot silence the notification.
        let pubsub = self.pubsub.clone();
        tokio::spawn(async move {
            for stored in inserted {
                let message = group_message(&stored.item, true);
                feed::notify(&pubsub, &feed::group_channel(&stored.item.group_id), stored.item.id, stored.previous_id, &message).await;
            }
        });
        Ok(())
    }

    pub async fn query_group_messages(&self, group_id: &[u8], page: Page) -> NodeResult<(Vec<GroupMessage>, PagingInfo)> {
        check_topic("group id", group_id)?;
        let stored = self.store.group_messages(group_id, page.cursor, page.direction, page.limit).await?;
        let paging = page.reply(stored.last().map(|message| message.id), stored.len());
        Ok((stored.iter().map(|message| group_message(message, true)).collect(), paging))
    }

    /// The newest message of each group (without content unless asked), in request order.
    pub async fn newest_group_messages(&self, group_ids: &[Vec<u8>], include_content: bool) -> NodeResult<Vec<Option<GroupMessage>>> {
        if group_ids.len() > MAX_KEYS_PER_CALL {
            return Err(invalid(format!("at most {MAX_KEYS_PER_CALL} groups per call")));
        }
        let mut newest = Vec::with_capacity(group_ids.len());
        for chunk in group_ids.chunks(IN_LIST_CHUNK) {
            newest.extend(self.store.newest_group_messages(chunk).await?);
        }
        Ok(newest.into_iter().map(|stored| stored.map(|message| group_message(&message, include_content))).collect())
    }

    // ------------------------------------------------------------------ welcomes

    /// Checks each welcome's envelope (the content is encrypted to its installation), then
    /// stores them all or none, and notifies subscribers.
    pub async fn send_welcomes(&self, inputs: Vec<WelcomeMessageInput>) -> NodeResult<()> {
        if inputs.is_empty() {
            return Err(invalid("no welcome messages to send"));
        }
        if inputs.len() > MAX_WELCOMES_PER_CALL {
            return Err(invalid(format!("at most {MAX_WELCOMES_PER_CALL} welcome messages per call")));
        }
        let mut welcomes = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            let installation_key = match &input.version {
                Some(welcome_message_input::Version::V1(v1)) => {
                    if v1.data.is_empty() {
                        return Err(invalid(format!("invalid welcome {index}: data is empty")));
                    }
                    if v1.hpke_public_key.is_empty() && v1.wrapper_algorithm != WelcomeWrapperAlgorithm::SymmetricKey as i32 {
                        return Err(invalid(format!("invalid welcome {index}: hpke_public_key is empty")));
                    }
                    v1.installation_key.clone()
                }
                Some(welcome_message_input::Version::WelcomePointer(pointer)) => {
                    if pointer.welcome_pointer.is_empty() || pointer.hpke_public_key.is_empty() {
                        return Err(invalid(format!("invalid welcome {index}: welcome_pointer and hpke_public_key are required")));
                    }
                    if pointer.wrapper_algorithm != WelcomePointerWrapperAlgorithm::XwingMlkem768Draft6 as i32 {
                        return Err(invalid(format!("invalid welcome {index}: welcome pointers must use the X-Wing wrapper")));
                    }
                    pointer.installation_key.clone()
                }
                None => return Err(invalid(format!("invalid welcome {index}: missing version"))),
            };
            check_topic("installation key", &installation_key)?;
            welcomes.push(NewWelcome { installation_key, message: input.encode_to_vec() });
        }
        let inserted = self.store.insert_welcomes(&welcomes, now_ns()).await?;
        let pubsub = self.pubsub.clone();
        tokio::spawn(async move {
            for stored in inserted {
                let Ok(message) = welcome_message(&stored.item) else { continue };
                feed::notify(&pubsub, &feed::welcome_channel(&stored.item.installation_key), stored.item.id, stored.previous_id, &message).await;
            }
        });
        Ok(())
    }

    pub async fn query_welcomes(&self, installation_key: &[u8], page: Page) -> NodeResult<(Vec<WelcomeMessage>, PagingInfo)> {
        check_topic("installation key", installation_key)?;
        let stored = self.store.welcomes(installation_key, page.cursor, page.direction, page.limit).await?;
        let paging = page.reply(stored.last().map(|welcome| welcome.id), stored.len());
        Ok((stored.iter().map(welcome_message).collect::<NodeResult<_>>()?, paging))
    }

    // ------------------------------------------------------------------ identity

    fn cached_inbox(&self, inbox_id: &str) -> Option<InboxSnapshot> {
        self.inboxes.lock().expect("inbox cache lock").get(inbox_id).cloned()
    }

    fn cache_inbox(&self, inbox_id: &str, snapshot: InboxSnapshot) {
        let mut inboxes = self.inboxes.lock().expect("inbox cache lock");
        if inboxes.len() >= INBOX_CACHE_ENTRIES {
            inboxes.clear();
        }
        inboxes.insert(inbox_id.to_string(), snapshot);
    }

    fn forget_inbox(&self, inbox_id: &str) {
        self.inboxes.lock().expect("inbox cache lock").remove(inbox_id);
    }

    /// The inbox's state, rebuilt from its stored log (every signature re-verified) unless
    /// cached.
    async fn inbox(&self, inbox_id: &str) -> NodeResult<InboxSnapshot> {
        if let Some(snapshot) = self.cached_inbox(inbox_id) {
            return Ok(snapshot);
        }
        let (position, log) = self.store.identity_log(inbox_id).await?;
        let policy = self.policy;
        let (state, update_hashes) = tokio::task::spawn_blocking(move || replay(&log, &policy))
            .await
            .map_err(|_| NodeError::Internal)??;
        let snapshot = InboxSnapshot { position, state, update_hashes };
        self.cache_inbox(inbox_id, snapshot.clone());
        Ok(snapshot)
    }

    /// Verifies an identity update against the inbox's log and appends it.
    pub async fn publish_identity_update(&self, update: IdentityUpdate) -> NodeResult<()> {
        let bytes = update.encode_to_vec();
        let inbox_id = update.inbox_id.clone();
        let policy = self.policy;
        let verified = tokio::task::spawn_blocking(move || assoc::verify_update(&update, &policy))
            .await
            .map_err(|_| NodeError::Internal)?;
        let verified = match verified {
            Ok(verified) => verified,
            Err(AssocError::NoActions) => {
                // An update without actions carries no signature: never stored.
                let inbox = self.inbox(&inbox_id).await?;
                return if inbox.state.is_some() { Ok(()) } else { Err(invalid(AssocError::NotCreated.to_string())) };
            }
            Err(error) => return Err(invalid(error.to_string())),
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        for _ in 0..APPEND_ATTEMPTS {
            let inbox = self.inbox(&inbox_id).await?;
            if inbox.update_hashes.contains(&hash) {
                // A retried publish whose first answer was lost.
                return Ok(());
            }
            if inbox.position.is_some_and(|position| position.update_count >= MAX_UPDATES_PER_INBOX) {
                return Err(NodeError::Exhausted(format!("inbox log is full ({MAX_UPDATES_PER_INBOX} updates)")));
            }
            let new_state = assoc::apply_update(inbox.state.clone(), &verified).map_err(|error| invalid(error.to_string()))?;
            let (added, removed) = assoc::diff(inbox.state.as_ref(), &new_state);
            let linked = ethereum_addresses(&added);
            let unlinked = ethereum_addresses(&removed);
            match self.store.append_identity_update(&inbox_id, inbox.position, &bytes, &linked, &unlinked, now_ns()).await {
                Ok(stored) => {
                    let mut update_hashes = inbox.update_hashes;
                    update_hashes.insert(hash);
                    let position = InboxPosition {
                        last_sequence_id: stored.sequence_id,
                        update_count: inbox.position.map_or(0, |position| position.update_count) + 1,
                    };
                    self.cache_inbox(&inbox_id, InboxSnapshot { position: Some(position), state: Some(new_state), update_hashes });
                    tracing::debug!(inbox = %inbox_id, sequence_id = stored.sequence_id, "identity update stored");
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => self.forget_inbox(&inbox_id),
                Err(error) => return Err(error.into()),
            }
        }
        tracing::warn!(inbox = %inbox_id, "identity update kept racing with others");
        Err(NodeError::Exhausted("the inbox is busy; retry".to_string()))
    }

    /// For each `(inbox, sequence id)`, the updates after it.
    pub async fn identity_updates(&self, requests: &[(String, u64)]) -> NodeResult<Vec<Vec<StoredIdentityUpdate>>> {
        if requests.len() > MAX_KEYS_PER_CALL {
            return Err(invalid(format!("at most {MAX_KEYS_PER_CALL} inboxes per call")));
        }
        let requests: Vec<(String, i64)> =
            requests.iter().map(|(inbox, after)| (inbox.clone(), i64::try_from(*after).unwrap_or(i64::MAX))).collect();
        let mut found = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(IN_LIST_CHUNK) {
            found.extend(self.store.identity_updates_after(chunk).await?);
        }
        Ok(found)
    }

    /// The inbox of each Ethereum address (any case), in request order.
    pub async fn inbox_ids(&self, addresses: &[String]) -> NodeResult<Vec<Option<String>>> {
        if addresses.len() > MAX_KEYS_PER_CALL {
            return Err(invalid(format!("at most {MAX_KEYS_PER_CALL} identifiers per call")));
        }
        let lower: Vec<String> = addresses.iter().map(|address| address.to_ascii_lowercase()).collect();
        let mut found = Vec::with_capacity(lower.len());
        for chunk in lower.chunks(IN_LIST_CHUNK) {
            found.extend(self.store.inbox_ids(chunk).await?);
        }
        Ok(found)
    }

    // ------------------------------------------------------------------ commit log

    pub async fn publish_commit_log(&self, entries: Vec<NewCommitLogEntry>) -> NodeResult<Vec<StoredCommitLogEntry>> {
        if entries.len() > MAX_GROUP_MESSAGES_PER_CALL {
            return Err(invalid(format!("at most {MAX_GROUP_MESSAGES_PER_CALL} commit log entries per call")));
        }
        for (index, entry) in entries.iter().enumerate() {
            check_topic("group id", &entry.group_id)?;
            if entry.entry.is_empty() || entry.entry.len() > 64 * 1024 {
                return Err(invalid(format!("commit log entry {index} must be 1 byte to 64 KiB")));
            }
            if entry.signature.is_none() {
                return Err(invalid(format!("commit log entry {index} is not signed")));
            }
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.store.insert_commit_log(&entries).await?)
    }

    pub async fn query_commit_log(&self, group_id: &[u8], page: Page) -> NodeResult<(Vec<StoredCommitLogEntry>, PagingInfo)> {
        check_topic("group id", group_id)?;
        if page.direction == Direction::Descending && page.cursor != 0 {
            return Err(invalid("the commit log is read oldest first"));
        }
        let ascending = Page { direction: Direction::Ascending, ..page };
        let stored = self.store.commit_log(group_id, ascending.cursor, ascending.limit).await?;
        let paging = ascending.reply(stored.last().map(|entry| entry.id), stored.len());
        Ok((stored, paging))
    }
}

fn ethereum_addresses(members: &[MemberId]) -> Vec<String> {
    members
        .iter()
        .filter_map(|member| match member {
            MemberId::Ethereum(address) => Some(address.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Rebuilds an inbox's state from its stored log.
fn replay(log: &[StoredIdentityUpdate], policy: &Policy) -> NodeResult<(Option<AssociationState>, HashSet<[u8; 32]>)> {
    let mut state = None;
    let mut hashes = HashSet::with_capacity(log.len());
    for entry in log {
        let rebuilt = IdentityUpdate::decode(entry.update_bytes.as_slice())
            .map_err(|error| error.to_string())
            .and_then(|update| assoc::verify_update(&update, policy).map_err(|error| error.to_string()))
            .and_then(|verified| assoc::apply_update(state.take(), &verified).map_err(|error| error.to_string()));
        match rebuilt {
            Ok(next) => state = Some(next),
            Err(error) => {
                tracing::error!(inbox = %entry.inbox_id, sequence_id = entry.sequence_id, %error, "stored identity log does not replay");
                return Err(NodeError::Internal);
            }
        }
        hashes.insert(Sha256::digest(&entry.update_bytes).into());
    }
    Ok((state, hashes))
}
