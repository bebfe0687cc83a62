//! The XMTP v3 node served by the messaging service: what unmodified XMTP clients use as their
//! network. Writes are validated (see [`validate`]); every stored item gets one global,
//! monotonically increasing id that clients page and subscribe by.

pub mod feed;
pub mod grpc;
pub mod store;
pub mod validate;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use clawx_common::PubSub;
use clawx_proto::xmtp::{
    identity::associations::IdentityUpdate,
    mls::api::v1::{
        GroupMessage, GroupMessageInput, PagingInfo, SortDirection, WelcomeMessage, WelcomeMessageInput, group_message, group_message_input,
        welcome_message, welcome_message_input,
    },
    mls::message_contents::{WelcomePointerWrapperAlgorithm, WelcomeWrapperAlgorithm},
};
use prost::Message;
use sha2::{Digest, Sha256};

use self::{
    store::{
        Budgeted, Direction, ENVELOPE_BYTES, InboxPosition, NewCommitLogEntry, NewGroupMessage, NewWelcome, NodeStore, StoreError,
        StoredCommitLogEntry, StoredGroupMessage, StoredIdentityUpdate, StoredWelcome,
    },
    validate::assoc::{self, AssocError, AssociationState, MemberId, Policy},
};

/// Largest page a query returns (and what 0 means), as XMTP nodes do: clients page while a
/// page is full, so it must never be smaller.
pub const MAX_PAGE: u32 = 100;
/// Items and keys one request may carry, a little above what libxmtp (node-sdk 5.5.0) sends:
/// one group message per send, welcomes in batches of at most 50, commit-log entries in
/// batches of 10 and queries of 20 groups, identity updates asked 50 inboxes at a time,
/// newest messages 1,000 groups at a time, and key packages of every installation a commit
/// adds (about 2,500 for a 250-member group). Repeated keys are read once.
pub const MAX_GROUP_MESSAGES_PER_CALL: usize = 100;
pub const MAX_WELCOMES_PER_CALL: usize = 100;
pub const MAX_COMMIT_LOG_PUBLISHES_PER_CALL: usize = 10;
pub const MAX_COMMIT_LOG_QUERIES_PER_CALL: usize = 20;
pub const MAX_IDENTITY_QUERIES_PER_CALL: usize = 100;
pub const MAX_NEWEST_MESSAGE_QUERIES_PER_CALL: usize = 1_000;
pub const MAX_INBOX_ID_QUERIES_PER_CALL: usize = 1_000;
pub const MAX_KEY_PACKAGE_QUERIES_PER_CALL: usize = 5_000;
pub const MAX_TOPIC_BYTES: usize = 256;
/// Updates an inbox may accumulate (each one carries signatures; clients replay them all).
pub const MAX_UPDATES_PER_INBOX: i64 = 256;
/// Bytes of one encoded identity update, and of an inbox's whole log.
pub const MAX_IDENTITY_UPDATE_BYTES: usize = 16 * 1024;
pub const MAX_INBOX_LOG_BYTES: usize = 256 * 1024;
/// Signatures an inbox's whole log may carry: what one replay of it verifies at most.
pub const MAX_SIGNATURES_PER_INBOX: usize = 1_024;
/// Bytes of one commit-log entry and of its signature.
pub const MAX_COMMIT_LOG_ENTRY_BYTES: usize = 16 * 1024;
pub(crate) const IN_LIST_CHUNK: usize = 500;
const APPEND_ATTEMPTS: usize = 5;

/// Bounds on what one caller can make a node replica store, verify, hold or answer. Every
/// one is a setting; the defaults fit real MLS traffic with room to spare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// Largest group message, its MLS framing included (`CLAWX_XMTP_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Largest welcome, as sent (`CLAWX_XMTP_MAX_WELCOME_BYTES`).
    pub max_welcome_bytes: usize,
    /// Most bytes one reply carries: a page stops short of it (the client reads on from its
    /// cursor), a batch answer that cannot fit is refused with `RESOURCE_EXHAUSTED`
    /// (`CLAWX_XMTP_MAX_REPLY_BYTES`).
    pub max_reply_bytes: usize,
    /// Commit-log entries one group may hold (`CLAWX_XMTP_COMMIT_LOG_PER_GROUP`).
    pub commit_log_entries_per_group: i64,
    /// Subscriptions one replica serves at once (`CLAWX_XMTP_MAX_SUBSCRIPTIONS`).
    pub max_subscriptions: usize,
    /// Topics (groups and installations) one replica watches at once, over all its
    /// subscriptions (`CLAWX_XMTP_MAX_TOPICS`).
    pub max_topics: usize,
    /// Topics one client address watches at once, over all its subscriptions
    /// (`CLAWX_XMTP_TOPICS_PER_CLIENT`).
    pub topics_per_client: usize,
    /// Replay pages read at once by starting subscriptions on one replica; others wait.
    pub concurrent_catch_ups: usize,
    /// Inbox states kept replayed (least recently used evicted first).
    pub inbox_cache_entries: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_message_bytes: 4 * 1024 * 1024,
            max_welcome_bytes: 2 * 1024 * 1024,
            max_reply_bytes: 8 * 1024 * 1024,
            commit_log_entries_per_group: 10_000,
            max_subscriptions: 20_000,
            max_topics: 400_000,
            topics_per_client: 10_000,
            concurrent_catch_ups: 8,
            inbox_cache_entries: 10_000,
        }
    }
}

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
        match error {
            StoreError::OverBudget(bytes) => NodeError::Exhausted(format!("the reply would exceed {bytes} bytes; ask for fewer keys at a time")),
            StoreError::Full(what) => NodeError::Exhausted(what.to_string()),
            StoreError::Conflict(_) | StoreError::Database(_) => {
                tracing::error!(%error, "XMTP node store failed");
                NodeError::Internal
            }
        }
    }
}

impl From<NodeError> for tonic::Status {
    fn from(error: NodeError) -> tonic::Status {
        match error {
            NodeError::Invalid(message) => tonic::Status::invalid_argument(message),
            NodeError::Exhausted(message) => tonic::Status::resource_exhausted(message),
            NodeError::Internal => tonic::Status::internal("internal error"),
        }
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

    /// The paging info of a reply: the cursor of the next page when this one is full or was
    /// cut short by the reply's byte budget.
    pub fn reply(&self, last_id: Option<i64>, returned: usize, cut: bool) -> PagingInfo {
        let direction = match self.direction {
            Direction::Ascending => SortDirection::Ascending,
            Direction::Descending => SortDirection::Descending,
        };
        let id_cursor = match last_id {
            Some(id) if cut || returned as u32 >= self.limit => id as u64,
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
    /// Encoded bytes and signatures of the stored log, against the per-inbox caps.
    log_bytes: usize,
    signatures: usize,
}

/// The XMTP node's rules over its store.
pub struct Node {
    store: Arc<dyn NodeStore>,
    pubsub: PubSub,
    policy: Policy,
    limits: NodeLimits,
    /// Replayed inbox states, least recently used evicted first, so a flood of lookups of
    /// fresh inboxes cannot force the replay of every busy one.
    inboxes: Mutex<hashlink::LruCache<String, InboxSnapshot>>,
    /// Subscriptions replaying history at once.
    catch_ups: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("store", &self.store).field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Distinct keys in first-seen order, with the smallest cursor asked for each.
fn distinct_keys<K: Clone + Ord>(requests: impl IntoIterator<Item = (K, u64)>) -> Vec<(K, u64)> {
    let mut order = Vec::new();
    let mut smallest: BTreeMap<K, u64> = BTreeMap::new();
    for (key, cursor) in requests {
        match smallest.get_mut(&key) {
            Some(existing) => *existing = (*existing).min(cursor),
            None => {
                order.push(key.clone());
                smallest.insert(key, cursor);
            }
        }
    }
    order
        .into_iter()
        .map(|key| {
            let cursor = smallest[&key];
            (key, cursor)
        })
        .collect()
}

fn check_key_count(count: usize, max: usize, what: &str) -> NodeResult<()> {
    if count > max {
        return Err(invalid(format!("at most {max} {what} per call")));
    }
    Ok(())
}

/// Refuses a positional answer (one entry per requested key, repeats included) that would
/// carry more than `max_bytes`.
fn check_reply_size(sizes: impl Iterator<Item = usize>, max_bytes: usize) -> NodeResult<()> {
    let total = sizes.fold(0usize, usize::saturating_add);
    if total > max_bytes {
        return Err(StoreError::OverBudget(max_bytes).into());
    }
    Ok(())
}

impl Node {
    pub fn new(store: Arc<dyn NodeStore>, pubsub: PubSub, limits: NodeLimits) -> Node {
        let catch_ups = tokio::sync::Semaphore::new(limits.concurrent_catch_ups.max(1));
        let inboxes = Mutex::new(hashlink::LruCache::new(limits.inbox_cache_entries.max(1)));
        Node { store, pubsub, policy: Policy::default(), limits, inboxes, catch_ups }
    }

    pub fn store(&self) -> &Arc<dyn NodeStore> {
        &self.store
    }

    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    pub fn limits(&self) -> &NodeLimits {
        &self.limits
    }

    /// A permit to replay history for a starting subscription; waits while the replica
    /// already replays `concurrent_catch_ups` of them.
    pub async fn catch_up_permit(&self) -> NodeResult<tokio::sync::SemaphorePermit<'_>> {
        self.catch_ups.acquire().await.map_err(|_| NodeError::Internal)
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
    /// Each distinct key is read once; the whole answer stays within the reply budget.
    pub async fn fetch_key_packages(&self, installation_keys: &[Vec<u8>]) -> NodeResult<Vec<Vec<u8>>> {
        check_key_count(installation_keys.len(), MAX_KEY_PACKAGE_QUERIES_PER_CALL, "installation keys")?;
        let distinct: Vec<Vec<u8>> = distinct_keys(installation_keys.iter().map(|key| (key.clone(), 0))).into_iter().map(|(key, _)| key).collect();
        let mut found = HashMap::new();
        let mut remaining = self.limits.max_reply_bytes;
        for chunk in distinct.chunks(IN_LIST_CHUNK) {
            let packages = self.store.key_packages(chunk, remaining).await?;
            remaining = remaining.saturating_sub(packages.iter().map(|(_, package)| package.len() + ENVELOPE_BYTES).sum());
            found.extend(packages);
        }
        check_reply_size(installation_keys.iter().map(|key| found.get(key).map_or(0, Vec::len) + 8), self.limits.max_reply_bytes)?;
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
        let max_message_bytes = self.limits.max_message_bytes;
        let messages = tokio::task::spawn_blocking(move || {
            inputs
                .into_iter()
                .enumerate()
                .map(|(index, input)| {
                    let Some(group_message_input::Version::V1(v1)) = input.version else {
                        return Err(invalid(format!("invalid group message {index}: missing v1")));
                    };
                    if v1.data.len() > max_message_bytes {
                        return Err(invalid(format!("invalid group message {index}: larger than {max_message_bytes} bytes")));
                    }
                    if v1.sender_hmac.len() > MAX_TOPIC_BYTES {
                        return Err(invalid(format!("invalid group message {index}: sender_hmac is longer than {MAX_TOPIC_BYTES} bytes")));
                    }
                    let info = validate::mlsmsg::parse_group_message(&v1.data)
                        .map_err(|error| invalid(format!("invalid group message {index}: {error}")))?;
                    check_topic("group id", &info.group_id)?;
                    Ok(NewGroupMessage {
                        group_id: info.group_id,
                        data: v1.data,
                        sender_hmac: v1.sender_hmac,
                        should_push: v1.should_push,
                        is_commit: info.is_commit,
                    })
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
                feed::announce_activity(&pubsub, b'g', &stored.item.group_id).await;
            }
        });
        Ok(())
    }

    /// A page of a group's messages, at most [`MAX_PAGE`] and at most the reply budget.
    pub async fn query_group_messages(&self, group_id: &[u8], page: Page) -> NodeResult<(Vec<GroupMessage>, PagingInfo)> {
        check_topic("group id", group_id)?;
        let Budgeted { items, cut } =
            self.store.group_messages(group_id, page.cursor, page.direction, page.limit, self.limits.max_reply_bytes).await?;
        let paging = page.reply(items.last().map(|message| message.id), items.len(), cut);
        Ok((items.iter().map(|message| group_message(message, true)).collect(), paging))
    }

    /// The newest message of each group (without content unless asked), in request order.
    /// Each distinct group is read once; the whole answer stays within the reply budget.
    pub async fn newest_group_messages(&self, group_ids: &[Vec<u8>], include_content: bool) -> NodeResult<Vec<Option<GroupMessage>>> {
        check_key_count(group_ids.len(), MAX_NEWEST_MESSAGE_QUERIES_PER_CALL, "groups")?;
        let distinct: Vec<Vec<u8>> = distinct_keys(group_ids.iter().map(|key| (key.clone(), 0))).into_iter().map(|(key, _)| key).collect();
        let mut newest = HashMap::new();
        let mut remaining = self.limits.max_reply_bytes;
        for chunk in distinct.chunks(IN_LIST_CHUNK) {
            let found = self.store.newest_group_messages(chunk, include_content, remaining).await?;
            remaining = remaining.saturating_sub(
                found.values().map(|message| message.data.len() + message.sender_hmac.len() + message.group_id.len() + ENVELOPE_BYTES).sum(),
            );
            newest.extend(found);
        }
        let size = |group_id: &Vec<u8>| {
            newest
                .get(group_id)
                .map_or(8, |message: &StoredGroupMessage| message.data.len() + message.sender_hmac.len() + group_id.len() + ENVELOPE_BYTES)
        };
        check_reply_size(group_ids.iter().map(size), self.limits.max_reply_bytes)?;
        Ok(group_ids.iter().map(|group_id| newest.get(group_id).map(|message| group_message(message, include_content))).collect())
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
        let max_welcome_bytes = self.limits.max_welcome_bytes;
        let mut welcomes = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            if input.encoded_len() > max_welcome_bytes {
                return Err(invalid(format!("invalid welcome {index}: larger than {max_welcome_bytes} bytes")));
            }
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
                feed::announce_activity(&pubsub, b'w', &stored.item.installation_key).await;
            }
        });
        Ok(())
    }

    /// A page of an installation's welcomes, at most [`MAX_PAGE`] and at most the reply budget.
    pub async fn query_welcomes(&self, installation_key: &[u8], page: Page) -> NodeResult<(Vec<WelcomeMessage>, PagingInfo)> {
        check_topic("installation key", installation_key)?;
        let Budgeted { items, cut } =
            self.store.welcomes(installation_key, page.cursor, page.direction, page.limit, self.limits.max_reply_bytes).await?;
        let paging = page.reply(items.last().map(|welcome| welcome.id), items.len(), cut);
        Ok((items.iter().map(welcome_message).collect::<NodeResult<_>>()?, paging))
    }

    // ------------------------------------------------------------------ identity

    fn cached_inbox(&self, inbox_id: &str) -> Option<InboxSnapshot> {
        self.inboxes.lock().expect("inbox cache lock").get(inbox_id).cloned()
    }

    fn cache_inbox(&self, inbox_id: &str, snapshot: InboxSnapshot) {
        // Evicts the least recently used inbox when full.
        self.inboxes.lock().expect("inbox cache lock").insert(inbox_id.to_string(), snapshot);
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
        let snapshot = tokio::task::spawn_blocking(move || replay(&log, &policy).map(|replayed| InboxSnapshot { position, ..replayed }))
            .await
            .map_err(|_| NodeError::Internal)??;
        self.cache_inbox(inbox_id, snapshot.clone());
        Ok(snapshot)
    }

    /// Verifies an identity update against the inbox's log and appends it.
    pub async fn publish_identity_update(&self, update: IdentityUpdate) -> NodeResult<()> {
        let bytes = update.encode_to_vec();
        if bytes.len() > MAX_IDENTITY_UPDATE_BYTES {
            return Err(invalid(format!("an identity update may be at most {MAX_IDENTITY_UPDATE_BYTES} bytes")));
        }
        assoc::check_free_form_fields(&update).map_err(|error| invalid(error.to_string()))?;
        let signatures = assoc::signature_count(&update);
        let inbox_id = update.inbox_id.clone();
        let policy = self.policy;
        let verified = tokio::task::spawn_blocking(move || assoc::verify_update(&update, &policy)).await.map_err(|_| NodeError::Internal)?;
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
            if inbox.log_bytes + bytes.len() > MAX_INBOX_LOG_BYTES {
                return Err(NodeError::Exhausted(format!("inbox log is full ({MAX_INBOX_LOG_BYTES} bytes)")));
            }
            if inbox.signatures + signatures > MAX_SIGNATURES_PER_INBOX {
                return Err(NodeError::Exhausted(format!("inbox log is full ({MAX_SIGNATURES_PER_INBOX} signatures)")));
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
                    self.cache_inbox(
                        &inbox_id,
                        InboxSnapshot {
                            position: Some(position),
                            state: Some(new_state),
                            update_hashes,
                            log_bytes: inbox.log_bytes + bytes.len(),
                            signatures: inbox.signatures + signatures,
                        },
                    );
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

    /// For each distinct inbox asked for (from the smallest sequence id asked for it), the
    /// updates after it; the whole answer stays within the reply budget.
    pub async fn identity_updates(&self, requests: &[(String, u64)]) -> NodeResult<Vec<(String, Vec<StoredIdentityUpdate>)>> {
        check_key_count(requests.len(), MAX_IDENTITY_QUERIES_PER_CALL, "inboxes")?;
        let distinct: Vec<(String, i64)> =
            distinct_keys(requests.iter().cloned()).into_iter().map(|(inbox, after)| (inbox, i64::try_from(after).unwrap_or(i64::MAX))).collect();
        let mut found = Vec::with_capacity(distinct.len());
        let mut remaining = self.limits.max_reply_bytes;
        for chunk in distinct.chunks(IN_LIST_CHUNK) {
            let logs = self.store.identity_updates_after(chunk, remaining).await?;
            let used: usize = logs.iter().flatten().map(|update| update.update_bytes.len() + update.inbox_id.len() + ENVELOPE_BYTES).sum();
            remaining = remaining.saturating_sub(used);
            found.extend(chunk.iter().map(|(inbox, _)| inbox.clone()).zip(logs));
        }
        Ok(found)
    }

    /// The inbox of each Ethereum address (any case), in request order.
    pub async fn inbox_ids(&self, addresses: &[String]) -> NodeResult<Vec<Option<String>>> {
        check_key_count(addresses.len(), MAX_INBOX_ID_QUERIES_PER_CALL, "identifiers")?;
        let lower: Vec<String> = addresses.iter().map(|address| address.to_ascii_lowercase()).collect();
        let distinct: Vec<String> = distinct_keys(lower.iter().map(|address| (address.clone(), 0))).into_iter().map(|(address, _)| address).collect();
        let mut found = HashMap::with_capacity(distinct.len());
        for chunk in distinct.chunks(IN_LIST_CHUNK) {
            let inboxes = self.store.inbox_ids(chunk).await?;
            found.extend(chunk.iter().cloned().zip(inboxes));
        }
        Ok(lower.iter().map(|address| found.get(address).cloned().flatten()).collect())
    }

    // ------------------------------------------------------------------ commit log

    /// Checks and appends commit-log entries (all or none): each must be a commit-log entry of
    /// its group with a valid Ed25519 signature. A group's log keeps the entries of the key
    /// that signed its first entry, as XMTP clients read it; others are skipped.
    pub async fn publish_commit_log(&self, entries: Vec<NewCommitLogEntry>) -> NodeResult<Vec<StoredCommitLogEntry>> {
        check_key_count(entries.len(), MAX_COMMIT_LOG_PUBLISHES_PER_CALL, "commit log entries")?;
        for (index, entry) in entries.iter().enumerate() {
            check_topic("group id", &entry.group_id)?;
            if entry.entry.is_empty() || entry.entry.len() > MAX_COMMIT_LOG_ENTRY_BYTES {
                return Err(invalid(format!("commit log entry {index} must be 1 to {MAX_COMMIT_LOG_ENTRY_BYTES} bytes")));
            }
            match &entry.signature {
                None => return Err(invalid(format!("commit log entry {index} is not signed"))),
                Some(signature) if signature.len() > MAX_TOPIC_BYTES => {
                    return Err(invalid(format!("commit log entry {index}: the signature is longer than {MAX_TOPIC_BYTES} bytes")));
                }
                Some(_) => {}
            }
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let entries = tokio::task::spawn_blocking(move || {
            let mut entries = entries;
            for (index, entry) in entries.iter_mut().enumerate() {
                let signature = entry.signature.clone().unwrap_or_default();
                entry.signer =
                    validate::commitlog::verify_entry(entry, &signature).map_err(|error| invalid(format!("commit log entry {index}: {error}")))?;
            }
            Ok::<_, NodeError>(entries)
        })
        .await
        .map_err(|_| NodeError::Internal)??;
        Ok(self.store.insert_commit_log(&entries, self.limits.commit_log_entries_per_group).await?)
    }

    /// A page of each distinct group's commit log (from the smallest cursor asked for it),
    /// oldest first; the whole answer stays within the reply budget.
    pub async fn query_commit_logs(&self, queries: Vec<(Vec<u8>, Page)>) -> NodeResult<Vec<(Vec<u8>, Vec<StoredCommitLogEntry>, PagingInfo)>> {
        check_key_count(queries.len(), MAX_COMMIT_LOG_QUERIES_PER_CALL, "groups")?;
        let mut pages: BTreeMap<Vec<u8>, Page> = BTreeMap::new();
        let mut order = Vec::new();
        for (group_id, page) in queries {
            check_topic("group id", &group_id)?;
            if page.direction == Direction::Descending && page.cursor != 0 {
                return Err(invalid("the commit log is read oldest first"));
            }
            let ascending = Page { direction: Direction::Ascending, ..page };
            match pages.get_mut(&group_id) {
                Some(existing) => existing.cursor = existing.cursor.min(ascending.cursor),
                None => {
                    order.push(group_id.clone());
                    pages.insert(group_id, ascending);
                }
            }
        }
        let mut remaining = self.limits.max_reply_bytes;
        let mut answers = Vec::with_capacity(order.len());
        for group_id in order {
            let page = pages[&group_id];
            let Budgeted { items, cut } = self.store.commit_log(&group_id, page.cursor, page.limit, remaining.max(1)).await?;
            let used: usize = items.iter().map(|entry| entry.entry.len() + entry.signature.as_ref().map_or(0, Vec::len) + ENVELOPE_BYTES).sum();
            if used > remaining {
                return Err(StoreError::OverBudget(self.limits.max_reply_bytes).into());
            }
            remaining -= used;
            let paging = page.reply(items.last().map(|entry| entry.id), items.len(), cut);
            answers.push((group_id, items, paging));
        }
        Ok(answers)
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

/// Rebuilds an inbox's state from its stored log (the position is left for the caller).
fn replay(log: &[StoredIdentityUpdate], policy: &Policy) -> NodeResult<InboxSnapshot> {
    let mut state = None;
    let mut hashes = HashSet::with_capacity(log.len());
    let mut log_bytes = 0;
    let mut signatures = 0;
    for entry in log {
        let rebuilt = IdentityUpdate::decode(entry.update_bytes.as_slice())
            .map_err(|error| error.to_string())
            .inspect(|update| signatures += assoc::signature_count(update))
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
        log_bytes += entry.update_bytes.len();
    }
    Ok(InboxSnapshot { position: None, state, update_hashes: hashes, log_bytes, signatures })
}
