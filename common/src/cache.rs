//! A small key-value cache and a GCRA rate limiter, in process memory (one replica, `clawx dev`)
//! or in Redis (shared by every replica). Both backends answer the same calls the same way.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::aio::ConnectionManager;

/// A Redis connection shared by the cache, the rate limiter and pub/sub publishing.
#[derive(Clone)]
pub struct RedisHandle {
    pub client: redis::Client,
    pub connection: ConnectionManager,
    pub prefix: String,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle").field("prefix", &self.prefix).finish()
    }
}

impl RedisHandle {
    /// Opens a lazily connecting, self-reconnecting handle; a Redis outage shows up as failed
    /// calls (and `redis: false` in status), not as a crash at start-up.
    pub fn open(url: &str, prefix: &str) -> anyhow::Result<RedisHandle> {
        let client = redis::Client::open(url).map_err(|error| anyhow::anyhow!("invalid CLAWX_REDIS_URL: {error}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(RedisHandle { client, connection, prefix: prefix.to_string() })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{}", self.prefix, key)
    }
}

/// Error of a cache or limiter call; callers decide whether to fail open or closed.
#[derive(Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(#[from] redis::RedisError);

#[derive(Default)]
pub struct MemoryEntries {
    values: HashMap<String, (Vec<u8>, Instant)>,
    writes_since_sweep: usize,
}

const MEMORY_SWEEP_EVERY: usize = 1024;
const MEMORY_MAX_ENTRIES: usize = 200_000;

impl MemoryEntries {
    fn get(&mut self, key: &str, now: Instant) -> Option<&Vec<u8>> {
        let expired = matches!(self.values.get(key), Some((_, expires)) if *expires <= now);
        if expired {
            self.values.remove(key);
        }
        self.values.get(key).map(|(value, _)| value)
    }

    fn insert(&mut self, key: &str, value: Vec<u8>, expires: Instant, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= MEMORY_SWEEP_EVERY || self.values.len() >= MEMORY_MAX_ENTRIES {
            self.writes_since_sweep = 0;
            self.values.retain(|_, (_, expires)| *expires > now);
            // Still full of live entries: drop an arbitrary tenth rather than grow without bound.
            if self.values.len() >= MEMORY_MAX_ENTRIES {
                let drop: Vec<String> = self.values.keys().take(MEMORY_MAX_ENTRIES / 10).cloned().collect();
                for key in drop {
                    self.values.remove(&key);
                }
            }
        }
        self.values.insert(key.to_string(), (value, expires));
    }
}

/// Cache backend.
#[derive(Clone)]
pub enum Cache {
    Memory(Arc<Mutex<MemoryEntries>>),
    Redis(RedisHandle),
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({})", self.backend_name())
    }
}

impl Cache {
    pub fn memory() -> Cache {
        Cache::Memory(Arc::default())
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Cache::Memory(_) => "memory",
            Cache::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match self {
            Cache::Memory(entries) => {
                let mut entries = entries.lock().expect("cache lock");
                Ok(entries.get(key, Instant::now()).cloned())
            }
            Cache::Redis(redis) => {
                let mut connection = redis.connection.clone();
                Ok(redis::cmd("GET").arg(redis.key(key)).query_async(&mut connection).await?)
            }
        }
    }

    /// Stores `value` under `key` for `ttl`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let ttl = ttl.max(Duration::from_millis(1));
        match self {
            Cache::Memory(entries) => {
                let now = Instant::now();
                entries.lock().expect("cache lock").insert(key, value.to_vec(), now + ttl, now);
                Ok(())
            }
            Cache::Redis(redis) => {
                let mut connection = redis.connection.clone();
                redis::cmd("SET").arg(redis.key(key)).arg(value).arg("PX").arg(ttl.as_millis() as u64).query_async::<()>(&mut connection).await?;
                Ok(())
            }
        }
    }

    /// Stores `value` only if `key` is absent; returns whether it was stored.
    pub async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let ttl = ttl.max(Duration::from_millis(1));
        match self {
            Cache::Memory(entries) => {
                let now = Instant::now();
                let mut entries = entries.lock().expect("cache lock");
                if entries.get(key, now).is_some() {
                    return Ok(false);
                }
                entries.insert(key, value.to_vec(), now + ttl, now);
                Ok(true)
            }
            Cache::Redis(redis) => {
                let mut connection = redis.connection.clone();
                let stored: Option<String> = redis::cmd("SET")
                    .arg(redis.key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut connection)
                    .await?;
                Ok(stored.is_some())
            }
        }
    }

    /// Removes and returns the value under `key` (for single-use tokens).
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match self {
            Cache::Memory(entries) => {
                let mut entries = entries.lock().expect("cache lock");
                let value = entries.get(key, Instant::now()).cloned();
                entries.values.remove(key);
                Ok(value)
            }
            Cache::Redis(redis) => {
                let mut connection = redis.connection.clone();
                Ok(redis::cmd("GETDEL").arg(redis.key(key)).query_async(&mut connection).await?)
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self {
            Cache::Memory(entries) => {
                entries.lock().expect("cache lock").values.remove(key);
                Ok(())
            }
            Cache::Redis(redis) => {
                let mut connection = redis.connection.clone();
                redis::cmd("DEL").arg(redis.key(key)).query_async::<()>(&mut connection).await?;
                Ok(())
            }
        }
    }

    /// Whether the backend answers within two seconds.
    pub async fn ping(&self) -> bool {
        match self {
            Cache::Memory(_) => true,
            Cache::Redis(redis) => {
                let mut connection = redis.connection.clone();
                let command = redis::cmd("PING");
                let ping = command.query_async::<String>(&mut connection);
                matches!(tokio::time::timeout(Duration::from_secs(2), ping).await, Ok(Ok(_)))
            }
        }
    }
}

/// The outcome of one rate-limit check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Time until the limit is fully replenished.
    pub reset_after: Duration,
    /// Time to wait before retrying, when refused.
    pub retry_after: Duration,
}

/// GCRA state update shared by both backends: `tat` is the theoretical arrival time (ms).
/// Returns the decision and the new `tat` to store when allowed.
fn gcra(now_ms: u64, stored_tat_ms: Option<u64>, limit: u32, window: Duration) -> (RateDecision, Option<u64>) {
    let limit = limit.max(1);
    let window_ms = window.as_millis().max(1) as u64;
    let interval_ms = (window_ms / u64::from(limit)).max(1);
    let capacity_ms = interval_ms * u64::from(limit);
    let tat = stored_tat_ms.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat + interval_ms;
    if new_tat - now_ms > capacity_ms {
        let retry_after_ms = new_tat - now_ms - capacity_ms;
        let decision = RateDecision {
            allowed: false,
            limit,
            remaining: 0,
            reset_after: Duration::from_millis(tat - now_ms),
            retry_after: Duration::from_millis(retry_after_ms),
        };
        return (decision, None);
    }
    let remaining = ((capacity_ms - (new_tat - now_ms)) / interval_ms) as u32;
    let decision =
        RateDecision { allowed: true, limit, remaining, reset_after: Duration::from_millis(new_tat - now_ms), retry_after: Duration::ZERO };
    (decision, Some(new_tat))
}

const GCRA_SCRIPT: &str = r#"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_ms)
if tat < now_ms then tat = now_ms end
local new_tat = tat + interval
if new_tat - now_ms > capacity then
  return {0, tat - now_ms, new_tat - now_ms - capacity}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now_ms)
return {1, new_tat - now_ms, 0}
"#;

/// The in-memory limiter's state: each key's theoretical arrival time (TAT, ms), and a min-heap
/// of `(expiry, key)` holding one entry per key. A key whose TAT has passed holds no information
/// (its budget is whole again) and is dropped; the heap finds those at its top, so no call scans
/// every key under the lock. A key's heap entry may be older than its TAT (the TAT only grows);
/// such an entry is rescheduled when it surfaces.
#[derive(Debug)]
pub struct MemoryLimiter {
    tats: HashMap<Arc<str>, u64>,
    expiries: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    capacity: usize,
}

impl MemoryLimiter {
    fn with_capacity(capacity: usize) -> MemoryLimiter {
        MemoryLimiter { tats: HashMap::new(), expiries: BinaryHeap::new(), capacity: capacity.max(1) }
    }

    /// Pops the key whose heap entry is due first, rescheduling entries older than their key's
    /// TAT; returns the popped key if its TAT is at or before `now` (or at any time when
    /// `now` is `None`), `None` when nothing qualifies.
    fn pop_due(&mut self, now: Option<u64>) -> Option<Arc<str>> {
        loop {
            let Reverse((expiry, _)) = self.expiries.peek()?;
            if now.is_some_and(|now| *expiry > now) {
                return None;
            }
            let Reverse((expiry, key)) = self.expiries.pop()?;
            match self.tats.get(&key) {
                Some(&tat) if tat > expiry => self.expiries.push(Reverse((tat, key))),
                Some(_) => return Some(key),
                None => {}
            }
        }
    }

    /// One GCRA check of `key` at `now_ms`.
    fn check(&mut self, key: &str, now_ms: u64, limit: u32, window: Duration) -> RateDecision {
        while let Some(expired) = self.pop_due(Some(now_ms)) {
            self.tats.remove(&expired);
        }
        let (decision, new_tat) = gcra(now_ms, self.tats.get(key).copied(), limit, window);
        let Some(new_tat) = new_tat else {
            return decision;
        };
        if let Some(tat) = self.tats.get_mut(key) {
            *tat = new_tat;
            return decision;
        }
        // Full of live keys: forget the one closest to a whole budget rather than grow.
        if self.tats.len() >= self.capacity
            && let Some(soonest) = self.pop_due(None)
        {
            self.tats.remove(&soonest);
        }
        let key: Arc<str> = Arc::from(key);
        self.tats.insert(Arc::clone(&key), new_tat);
        self.expiries.push(Reverse((new_tat, key)));
        decision
    }

    fn len(&self) -> usize {
        self.tats.len()
    }
}

/// A GCRA rate limiter: `limit` requests per `window`, with bursts up to `limit`.
#[derive(Clone)]
pub enum RateLimiter {
    Memory(Arc<Mutex<MemoryLimiter>>, Instant),
    Redis(RedisHandle, Arc<redis::Script>),
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateLimiter::Memory(..) => f.write_str("RateLimiter(memory)"),
            RateLimiter::Redis(..) => f.write_str("RateLimiter(redis)"),
        }
    }
}

impl RateLimiter {
    pub fn memory() -> RateLimiter {
        RateLimiter::Memory(Arc::new(Mutex::new(MemoryLimiter::with_capacity(MEMORY_MAX_ENTRIES))), Instant::now())
    }

    pub fn redis(handle: RedisHandle) -> RateLimiter {
        RateLimiter::Redis(handle, Arc::new(redis::Script::new(GCRA_SCRIPT)))
    }

    /// How many keys the in-memory limiter holds state for (`None` for Redis).
    pub fn memory_entries(&self) -> Option<usize> {
        match self {
            RateLimiter::Memory(state, _) => Some(state.lock().expect("limiter lock").len()),
            RateLimiter::Redis(..) => None,
        }
    }

    /// Counts one request against `key` and says whether it may proceed.
    pub async fn check(&self, key: &str, limit: u32, window: Duration) -> Result<RateDecision, CacheError> {
        let limit = limit.max(1);
        match self {
            RateLimiter::Memory(state, epoch) => {
                let now_ms = epoch.elapsed().as_millis() as u64 + 1;
                Ok(state.lock().expect("limiter lock").check(key, now_ms, limit, window))
            }
            RateLimiter::Redis(redis, script) => {
                let window_ms = window.as_millis().max(1) as u64;
                let interval_ms = (window_ms / u64::from(limit)).max(1);
                let capacity_ms = interval_ms * u64::from(limit);
                let mut connection = redis.connection.clone();
                let (allowed, reset_ms, retry_ms): (i64, i64, i64) =
                    script.key(redis.key(&format!("rl:{key}"))).arg(interval_ms).arg(capacity_ms).invoke_async(&mut connection).await?;
                let reset_ms = reset_ms.max(0) as u64;
                let remaining = if allowed == 1 { (capacity_ms.saturating_sub(reset_ms) / interval_ms) as u32 } else { 0 };
                Ok(RateDecision {
                    allowed: allowed == 1,
                    limit,
                    remaining,
                    reset_after: Duration::from_millis(reset_ms),
                    retry_after: Duration::from_millis(retry_ms.max(0) as u64),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_refuses_until_one_interval_passes() {
        let window = Duration::from_secs(60);
        let mut tat = None;
        for expected_remaining in (0..3).rev() {
            let (decision, new_tat) = gcra(1_000, tat, 3, window);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = new_tat;
        }
        let (refused, none) = gcra(1_000, tat, 3, window);
        assert!(!refused.allowed && none.is_none());
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        let (later, _) = gcra(21_000, tat, 3, window);
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
    }

    #[test]
    fn memory_limiter_drops_replenished_keys_and_stays_within_capacity() {
        let window = Duration::from_secs(60);
        let mut limiter = MemoryLimiter::with_capacity(3);
        // a: TAT 20s then 40s (its heap entry still says 20s); b: TAT 30s.
        assert!(limiter.check("a", 0, 3, window).allowed);
        assert!(limiter.check("a", 0, 3, window).allowed);
        assert!(limiter.check("b", 10_000, 3, window).allowed);
        assert_eq!(limiter.len(), 2);
        // At 35s b is whole again and goes; a's early entry is rescheduled, a stays.
        assert!(limiter.check("c", 35_000, 3, window).allowed);
        assert_eq!(limiter.len(), 2);
        assert_eq!(limiter.tats.get("a"), Some(&40_000));
        assert!(!limiter.tats.contains_key("b"));
        // Full of live keys: the one due soonest (a, 40s) makes room for e.
        assert!(limiter.check("d", 36_000, 3, window).allowed);
        assert!(limiter.check("e", 37_000, 3, window).allowed);
        assert_eq!(limiter.len(), 3);
        assert!(!limiter.tats.contains_key("a"));
        assert_eq!(limiter.expiries.len(), 3, "one heap entry per key");
        // Much later everything is whole again.
        assert!(limiter.check("f", 1_000_000, 3, window).allowed);
        assert_eq!(limiter.len(), 1);
        assert_eq!(limiter.expiries.len(), 1);
    }
}
