//! Subscriptions: replay everything after the client's cursor, then go live, with no gap and
//! no duplicate, across replicas.
//!
//! Writers publish `(id, previous id on the topic, message)` on the topic's pub/sub channel
//! after their transaction commits. A subscriber listens before it replays, remembers the last
//! id it delivered per topic, delivers a live message directly when nothing can be missing
//! before it (`previous id <= delivered`), and otherwise reads the missing ids from the
//! database. Lost notifications ([`Event::Gap`]: a Redis reconnect, a slow subscriber) make it
//! re-read every topic. A notice with id 0 is outside the topic's sequence (a group message on
//! an account's mailbox): delivered live to whoever listens, never replayed.

use std::{pin::Pin, sync::Arc};

use clawx_common::pubsub::{Event, PubSub};
use futures::{Stream, StreamExt, stream::SelectAll};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    MAX_PAGE, Node, NodeResult, group_message,
    store::{Budgeted, Direction},
    welcome_message,
};

/// Largest message carried inside a notification; bigger ones are read from the database.
const MAX_INLINE_BYTES: usize = 64 * 1024;
/// Items one replay page reads at most, and its byte budget (one item may exceed it).
const REPLAY_PAGE_ITEMS: u32 = MAX_PAGE * 5;
const REPLAY_PAGE_BYTES: usize = 1024 * 1024;
/// Bytes a subscription may have queued for its client; past it, the subscription waits for
/// the client to read, so a client that stops reading holds at most this much.
pub const QUEUED_BYTES: usize = 1024 * 1024;
/// Topics one subscription may watch.
pub const MAX_FILTERS: usize = 2_000;
/// How often a subscription compares its topics' heads with what it delivered, in case a
/// notification was lost.
const SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(20);

pub fn group_channel(group_id: &[u8]) -> String {
    format!("xmtp.g.{}", hex::encode(group_id))
}

pub fn welcome_channel(installation_key: &[u8]) -> String {
    format!("xmtp.w.{}", hex::encode(installation_key))
}

/// Channel on which the node announces every stored group message (`g` + group id) and
/// welcome (`w` + installation key): the agent engine wakes the accounts concerned.
pub const ACTIVITY_CHANNEL: &str = "xmtp.activity";

/// Announces activity on a group (`b'g'`) or an installation's welcomes (`b'w'`).
pub async fn announce_activity(pubsub: &PubSub, kind: u8, key: &[u8]) {
    let payload = [&[kind][..], key].concat();
    if let Err(error) = pubsub.publish(ACTIVITY_CHANNEL, &payload).await {
        tracing::debug!(%error, "could not announce XMTP activity");
    }
}

/// The notice of a stored item: its id, the id before it on its topic, and the item itself
/// when it is small enough to travel inline.
pub fn notice(id: i64, previous_id: i64, message: &impl Message) -> Vec<u8> {
    let mut payload = Vec::with_capacity(16 + message.encoded_len());
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(&previous_id.to_be_bytes());
    if message.encoded_len() <= MAX_INLINE_BYTES {
        message.encode(&mut payload).expect("a Vec grows as needed");
    }
    payload
}

/// Announces a stored item to the subscribers of its topic.
pub async fn notify(pubsub: &PubSub, channel: &str, id: i64, previous_id: i64, message: &impl Message) {
    let payload = notice(id, previous_id, message);
    if let Err(error) = pubsub.publish(channel, &payload).await {
        // Subscribers on other replicas catch up at their next notification or gap.
        tracing::warn!(%error, channel, "could not notify subscribers");
    }
}

/// A notification as received.
struct Notice<T> {
    id: i64,
    previous_id: i64,
    message: Option<T>,
}

fn decode_notice<T: Message + Default>(payload: &[u8]) -> Option<Notice<T>> {
    if payload.len() < 16 {
        return None;
    }
    let id = i64::from_be_bytes(payload[..8].try_into().ok()?);
    let previous_id = i64::from_be_bytes(payload[8..16].try_into().ok()?);
    let message = if payload.len() > 16 { T::decode(&payload[16..]).ok() } else { None };
    Some(Notice { id, previous_id, message })
}

/// What a feed reads from: its pub/sub and a replica-wide bound on concurrent replays. The
/// XMTP node is one; the direct-message service is another.
pub trait FeedContext: Send + Sync + 'static {
    fn pubsub(&self) -> &PubSub;

    /// A permit to read one replay page; waits while the replica replays enough already.
    fn catch_up_permit(&self) -> impl Future<Output = NodeResult<tokio::sync::SemaphorePermit<'_>>> + Send;
}

impl FeedContext for Node {
    fn pubsub(&self) -> &PubSub {
        Node::pubsub(self)
    }

    async fn catch_up_permit(&self) -> NodeResult<tokio::sync::SemaphorePermit<'_>> {
        Node::catch_up_permit(self).await
    }
}

/// What a subscription streams: group messages by group id, welcomes by installation key, or
/// an account's direct messages by account id.
pub trait Topic: Send + Sync + 'static {
    type Context: FeedContext;
    type Item: Message + Default + Clone + Send + 'static;

    fn channel(key: &[u8]) -> String;

    /// A replay page of the items after `cursor`, oldest first, with their ids; `cut` when
    /// more may follow.
    fn after(context: &Self::Context, key: &[u8], cursor: i64) -> impl Future<Output = NodeResult<Budgeted<(i64, Self::Item)>>> + Send;

    /// The last stored id of each topic (0 when none), in order.
    fn heads(context: &Self::Context, keys: &[Vec<u8>]) -> impl Future<Output = NodeResult<Vec<i64>>> + Send;
}

/// Group messages by group id.
pub struct GroupTopic;

impl Topic for GroupTopic {
    type Context = Node;
    type Item = clawx_proto::xmtp::mls::api::v1::GroupMessage;

    fn channel(key: &[u8]) -> String {
        group_channel(key)
    }

    async fn after(node: &Node, key: &[u8], cursor: i64) -> NodeResult<Budgeted<(i64, Self::Item)>> {
        let page = node.store().group_messages(key, cursor, Direction::Ascending, REPLAY_PAGE_ITEMS, REPLAY_PAGE_BYTES).await?;
        let cut = page.cut || page.items.len() as u32 >= REPLAY_PAGE_ITEMS;
        Ok(Budgeted { items: page.items.iter().map(|message| (message.id, group_message(message, true))).collect(), cut })
    }

    async fn heads(node: &Node, keys: &[Vec<u8>]) -> NodeResult<Vec<i64>> {
        Ok(node.store().group_heads(keys).await?)
    }
}

/// Welcomes by installation key.
pub struct WelcomeTopic;

impl Topic for WelcomeTopic {
    type Context = Node;
    type Item = clawx_proto::xmtp::mls::api::v1::WelcomeMessage;

    fn channel(key: &[u8]) -> String {
        welcome_channel(key)
    }

    async fn after(node: &Node, key: &[u8], cursor: i64) -> NodeResult<Budgeted<(i64, Self::Item)>> {
        let page = node.store().welcomes(key, cursor, Direction::Ascending, REPLAY_PAGE_ITEMS, REPLAY_PAGE_BYTES).await?;
        let cut = page.cut || page.items.len() as u32 >= REPLAY_PAGE_ITEMS;
        let items = page.items.iter().map(|welcome| Ok((welcome.id, welcome_message(welcome)?))).collect::<NodeResult<_>>()?;
        Ok(Budgeted { items, cut })
    }

    async fn heads(node: &Node, keys: &[Vec<u8>]) -> NodeResult<Vec<i64>> {
        Ok(node.store().welcome_heads(keys).await?)
    }
}

type Tagged = Pin<Box<dyn Stream<Item = (usize, Event)> + Send>>;

/// The sending half of a subscription: a queue bounded in items and in bytes.
pub struct Sink<T> {
    queue: mpsc::Sender<(Result<T, tonic::Status>, u32)>,
    window: Arc<tokio::sync::Semaphore>,
}

/// A subscription's queue: the sink its task writes to and the stream its client reads.
pub fn queue<T: Message + Send + 'static>() -> (Sink<T>, impl Stream<Item = Result<T, tonic::Status>> + Send + 'static) {
    let (queue, receiver) = mpsc::channel(256);
    let window = Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES));
    let released = Arc::clone(&window);
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(move |(item, bytes)| {
        released.add_permits(bytes as usize);
        item
    });
    (Sink { queue, window }, stream)
}

impl<T: Message> Sink<T> {
    /// Queues an item once the client has read enough of what was queued before; `Err` when
    /// the client is gone.
    async fn send(&self, item: Result<T, tonic::Status>) -> Result<(), ()> {
        let bytes = match &item {
            Ok(message) => message.encoded_len().clamp(1, QUEUED_BYTES) as u32,
            Err(_) => 1,
        };
        let permits = tokio::select! {
            permits = self.window.acquire_many(bytes) => permits.map_err(|_| ())?,
            () = self.queue.closed() => return Err(()),
        };
        permits.forget();
        self.queue.send((item, bytes)).await.map_err(|_| ())
    }

    async fn closed(&self) {
        self.queue.closed().await;
    }
}

/// One watched topic and the last id delivered on it.
struct Watched {
    key: Vec<u8>,
    delivered: i64,
}

/// Sends every item after the watched cursor, page by page; false when the client is gone.
/// Each page is read under a replica-wide replay permit, released before the page is sent,
/// so clients that read slowly cannot hold the database.
async fn catch_up<T: Topic>(node: &T::Context, watched: &mut Watched, sink: &Sink<T::Item>) -> NodeResult<bool> {
    loop {
        let permit = FeedContext::catch_up_permit(node).await?;
        let page = T::after(node, &watched.key, watched.delivered).await?;
        drop(permit);
        for (id, item) in page.items {
            if sink.send(Ok(item)).await.is_err() {
                return Ok(false);
            }
            watched.delivered = id;
        }
        if !page.cut {
            return Ok(true);
        }
    }
}

/// Catches up the topics whose stored head is past what was delivered (one query per chunk of
/// topics, so a subscription to many quiet topics costs a few queries); false when the client
/// is gone.
async fn catch_up_behind<T: Topic>(node: &T::Context, watched: &mut [Watched], sink: &Sink<T::Item>) -> NodeResult<bool> {
    for chunk in watched.chunks_mut(super::IN_LIST_CHUNK) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|topic| topic.key.clone()).collect();
        let permit = FeedContext::catch_up_permit(node).await?;
        let heads = T::heads(node, &keys).await?;
        drop(permit);
        for (topic, head) in chunk.iter_mut().zip(heads) {
            if head > topic.delivered && !catch_up::<T>(node, topic, sink).await? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Runs one subscription until the client goes away or the service shuts down.
pub async fn run<T: Topic>(node: Arc<T::Context>, filters: Vec<(Vec<u8>, u64)>, sink: Sink<T::Item>, shutdown: CancellationToken) {
    if let Err(error) = serve::<T>(&node, filters, &sink, shutdown).await {
        let _ = sink.send(Err(error.into())).await;
    }
}

async fn serve<T: Topic>(node: &T::Context, filters: Vec<(Vec<u8>, u64)>, sink: &Sink<T::Item>, shutdown: CancellationToken) -> NodeResult<()> {
    // One entry per topic, from the smallest cursor asked for it.
    let mut by_key: std::collections::BTreeMap<Vec<u8>, i64> = std::collections::BTreeMap::new();
    for (key, cursor) in filters {
        let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
        by_key.entry(key).and_modify(|existing| *existing = (*existing).min(cursor)).or_insert(cursor);
    }
    let mut watched: Vec<Watched> = by_key.into_iter().map(|(key, delivered)| Watched { key, delivered }).collect();

    // Listen first, then replay: anything stored meanwhile is seen by one or the other.
    let mut events: SelectAll<Tagged> = SelectAll::new();
    for (index, topic) in watched.iter().enumerate() {
        let subscription = FeedContext::pubsub(node).subscribe(&T::channel(&topic.key));
        let stream =
            futures::stream::unfold(subscription, |mut subscription| async move { subscription.recv().await.map(|event| (event, subscription)) });
        events.push(Box::pin(stream.map(move |event| (index, event))));
    }
    if !catch_up_behind::<T>(node, &mut watched, sink).await? {
        return Ok(());
    }

    let mut safety_net = tokio::time::interval_at(tokio::time::Instant::now() + SAFETY_NET, SAFETY_NET);
    safety_net.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            () = sink.closed() => return Ok(()),
            () = shutdown.cancelled() => return Ok(()),
            _ = safety_net.tick() => {
                if !catch_up_behind::<T>(node, &mut watched, sink).await? {
                    return Ok(());
                }
                continue;
            }
            event = events.next(), if !events.is_empty() => event,
        };
        let Some((index, event)) = event else {
            // No topics, or pub/sub is gone: wait for the client or shutdown.
            tokio::select! {
                () = sink.closed() => return Ok(()),
                () = shutdown.cancelled() => return Ok(()),
            }
        };
        match event {
            Event::Message(payload) => {
                let Some(notice) = decode_notice::<T::Item>(&payload) else { continue };
                if notice.id == 0 {
                    // Outside the topic's sequence (a group message on a mailbox): delivered
                    // live, moving no cursor.
                    if let Some(message) = notice.message
                        && sink.send(Ok(message)).await.is_err()
                    {
                        return Ok(());
                    }
                    continue;
                }
                let topic = &mut watched[index];
                if notice.id <= topic.delivered {
                    continue;
                }
                match notice.message {
                    Some(message) if notice.previous_id <= topic.delivered => {
                        if sink.send(Ok(message)).await.is_err() {
                            return Ok(());
                        }
                        topic.delivered = notice.id;
                    }
                    _ => {
                        if !catch_up::<T>(node, topic, sink).await? {
                            return Ok(());
                        }
                    }
                }
            }
            Event::Gap => {
                if !catch_up_behind::<T>(node, &mut watched, sink).await? {
                    return Ok(());
                }
            }
        }
    }
}
