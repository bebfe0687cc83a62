//! Publish/subscribe between replicas: an in-process hub, fed either by local publishers only
//! (memory) or by one Redis pattern subscription per process (every replica sees every message
//! published by any replica). Subscribers learn about possibly missed messages through
//! [`Event::Gap`] (Redis reconnects, or a subscriber too slow to keep up), so they can re-read
//! what they need from the database.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cache::{CacheError, RedisHandle};

/// A published message body, cheap to clone to many subscribers.
pub type Payload = Arc<[u8]>;

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(Payload),
    /// Messages may have been missed; re-read state from the source of truth.
    Gap,
}

/// Events buffered per channel for its slowest subscriber; one that falls further behind gets
/// [`Event::Gap`] and re-reads from the source of truth. Small, because every watched channel
/// allocates it up front (XMTP clients watch thousands).
const SUBSCRIBER_BUFFER: usize = 16;

pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Event>>>,
    /// Whether the Redis listener is subscribed (always true in memory).
    connected: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    fn new(connected: bool) -> Hub {
        Hub { channels: Mutex::default(), connected: tokio::sync::watch::Sender::new(connected) }
    }
}

impl Hub {
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<Event> {
        let mut channels = self.channels.lock().expect("hub lock");
        channels.entry(channel.to_string()).or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0).subscribe()
    }

    fn deliver(&self, channel: &str, event: Event) {
        let mut channels = self.channels.lock().expect("hub lock");
        let Some(sender) = channels.get(channel) else { return };
        if sender.send(event).is_err() {
            // Nobody listens any more.
            channels.remove(channel);
        }
    }

    fn deliver_gap_to_all(&self) {
        let mut channels = self.channels.lock().expect("hub lock");
        channels.retain(|_, sender| sender.send(Event::Gap).is_ok());
    }
}

/// A live subscription to one channel. Dropping the last subscription of a channel frees it.
pub struct Subscription {
    receiver: broadcast::Receiver<Event>,
    channel: String,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.hub.channels.lock().expect("hub lock");
        // This receiver still counts until the end of this function.
        if channels.get(&self.channel).is_some_and(|sender| sender.receiver_count() <= 1) {
            channels.remove(&self.channel);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

impl Subscription {
    /// The next event; `None` once the pub/sub is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Event::Gap),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Pub/sub backend.
#[derive(Clone)]
pub enum PubSub {
    Memory(Arc<Hub>),
    Redis(Arc<Hub>, RedisHandle),
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PubSub::Memory(_) => f.write_str("PubSub(memory)"),
            PubSub::Redis(..) => f.write_str("PubSub(redis)"),
        }
    }
}

impl PubSub {
    pub fn memory() -> PubSub {
        PubSub::Memory(Arc::new(Hub::new(true)))
    }

    /// Waits up to `timeout` for the Redis listener to be subscribed; true when it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let hub = match self {
            PubSub::Memory(_) => return true,
            PubSub::Redis(hub, _) => hub,
        };
        let mut connected = hub.connected.subscribe();
        matches!(tokio::time::timeout(timeout, connected.wait_for(|up| *up)).await, Ok(Ok(_)))
    }

    /// Starts the Redis listener task; it reconnects until `shutdown` fires.
    pub fn redis(handle: RedisHandle, shutdown: CancellationToken) -> PubSub {
        let hub = Arc::new(Hub::new(false));
        tokio::spawn(listen(handle.clone(), Arc::clone(&hub), shutdown));
        PubSub::Redis(hub, handle)
    }

    /// Subscribes to `channel`. Messages published after this call returns are delivered.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        let hub = match self {
            PubSub::Memory(hub) | PubSub::Redis(hub, _) => hub,
        };
        Subscription { receiver: hub.subscribe(channel), channel: channel.to_string(), hub: Arc::clone(hub) }
    }

    /// How many channels have live subscribers in this process.
    pub fn channel_count(&self) -> usize {
        let hub = match self {
            PubSub::Memory(hub) | PubSub::Redis(hub, _) => hub,
        };
        hub.channels.lock().expect("hub lock").len()
    }

    /// Publishes several `(channel, payload)` messages at once, in order: on Redis, one
    /// pipelined round trip.
    pub async fn publish_all(&self, messages: &[(String, Vec<u8>)]) -> Result<(), CacheError> {
        match self {
            PubSub::Memory(hub) => {
                for (channel, payload) in messages {
                    hub.deliver(channel, Event::Message(Arc::from(payload.as_slice())));
                }
                Ok(())
            }
            PubSub::Redis(_, redis) => {
                if messages.is_empty() {
                    return Ok(());
                }
                let mut pipeline = redis::pipe();
                for (channel, payload) in messages {
                    pipeline.cmd("PUBLISH").arg(redis_channel(redis, channel)).arg(payload.as_slice()).ignore();
                }
                let mut connection = redis.connection.clone();
                pipeline.query_async::<()>(&mut connection).await?;
                Ok(())
            }
        }
    }

    /// Publishes `payload` to every subscriber of `channel` on every replica.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), CacheError> {
        match self {
            PubSub::Memory(hub) => {
                hub.deliver(channel, Event::Message(Arc::from(payload)));
                Ok(())
            }
            PubSub::Redis(_, redis) => {
                let mut connection = redis.connection.clone();
                redis::cmd("PUBLISH").arg(redis_channel(redis, channel)).arg(payload).query_async::<()>(&mut connection).await?;
                Ok(())
            }
        }
    }
}

/// The Redis channel of `channel`: under the deployment's prefix, which [`listen`] strips.
fn redis_channel(redis: &RedisHandle, channel: &str) -> String {
    format!("{}:ps:{channel}", redis.prefix)
}

async fn listen(redis: RedisHandle, hub: Arc<Hub>, shutdown: CancellationToken) {
    let prefix = format!("{}:ps:", redis.prefix);
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let session = async {
            let mut pubsub = redis.client.get_async_pubsub().await?;
            pubsub.psubscribe(format!("{prefix}*")).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            result = tokio::time::timeout(Duration::from_secs(5), session) => result,
            () = shutdown.cancelled() => return,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                // Whatever was published before we were subscribed is lost to us.
                hub.deliver_gap_to_all();
                hub.connected.send_replace(true);
                tracing::debug!("redis pub/sub listener connected");
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        () = shutdown.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    if let Some(channel) = message.get_channel_name().strip_prefix(&prefix) {
                        hub.deliver(channel, Event::Message(Arc::from(message.get_payload_bytes())));
                    }
                }
                tracing::warn!("redis pub/sub connection lost; reconnecting");
                hub.connected.send_replace(false);
                hub.deliver_gap_to_all();
            }
            Ok(Err(error)) => tracing::warn!(%error, "redis pub/sub connect failed"),
            Err(_) => tracing::warn!("redis pub/sub connect timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
