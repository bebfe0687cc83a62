//! Looking tweets up. X cannot be asked one way only: the X API v2 needs a paid bearer token,
//! the public syndication endpoint (what embedded tweets use) needs none, and oEmbed gives
//! neither the author's stable id nor the time. [`TweetLookup`] asks each configured source in
//! turn until one answers, and caches answers briefly by tweet id.
//!
//! A source that answers "no such tweet" (or "not public") has answered: that is final. Only a
//! source that could not answer (connection error, timeout, 5xx, rate limit, unreadable reply)
//! passes the question on; when every source fails so, the lookup is unavailable.

mod http;
mod oembed;
mod syndication;
mod x_api;

use std::{sync::Arc, time::Duration};

use clawx_common::{Cache, ErrorCode, Secret, ServiceError, ServiceResult};
use serde::{Deserialize, Serialize};

pub use self::syndication::syndication_token;

/// Milliseconds since the Unix epoch of X's id epoch (2010-11-04): a tweet id carries its
/// creation time in its upper bits.
const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

/// When a tweet with this id was created, from the id itself.
pub fn snowflake_time_ms(tweet_id: u64) -> i64 {
    ((tweet_id >> 22) as i64) + SNOWFLAKE_EPOCH_MS
}

/// Unix milliseconds of an RFC 3339 time, as X writes `created_at`.
fn parse_time_ms(text: &str) -> Option<i64> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A public tweet as the verification rules need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tweet {
    pub id: String,
    pub text: String,
    /// The author's stable X user id; `None` from oEmbed.
    pub author_id: Option<String>,
    /// The author's username (without `@`), as it is now.
    pub username: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// X says it is a retweet (`referenced_tweets` of type `retweeted`; the X API only).
    #[serde(default)]
    pub retweet: bool,
}

/// What a source answered about a tweet id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lookup {
    Found(Tweet),
    /// No public tweet with that id; the reason is shown to the user.
    Missing(String),
}

/// A source that could not answer (connection error, timeout, 5xx, rate limit, unreadable
/// reply); the detail is logged, never shown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceFailure(pub String);

/// One way of looking tweets up.
#[async_trait::async_trait]
pub trait TweetSource: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    async fn fetch(&self, tweet_id: u64) -> Result<Lookup, SourceFailure>;
}

/// Where and how the tweet sources are reached.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Base URL of the X API v2 (`CLAWX_TWITTER_API_URL`).
    pub api_url: String,
    /// Bearer token of the X API; without it the API is not asked (`CLAWX_TWITTER_BEARER_TOKEN`).
    pub bearer_token: Option<Secret>,
    /// Base URL of the public syndication endpoint (`CLAWX_TWITTER_SYNDICATION_URL`).
    pub syndication_url: String,
    /// Base URL of oEmbed (`CLAWX_TWITTER_OEMBED_URL`).
    pub oembed_url: String,
    /// Whether oEmbed is asked last (`CLAWX_TWITTER_OEMBED_ENABLED`).
    pub oembed_enabled: bool,
    /// Deadline of one request to a source.
    pub timeout: Duration,
    /// How long an answer about a tweet is reused.
    pub cache_ttl: Duration,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            api_url: "https://api.twitter.com".to_string(),
            bearer_token: None,
            syndication_url: "https://cdn.syndication.twimg.com".to_string(),
            oembed_url: "https://publish.twitter.com".to_string(),
            oembed_enabled: false,
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// "No such tweet" answers are reused for at most this long, so a user who posts the tweet
/// just after a first try does not wait for the whole cache time.
const MISSING_CACHE_TTL: Duration = Duration::from_secs(10);

/// The configured sources, asked in order, with a brief cache in front.
#[derive(Clone, Debug)]
pub struct TweetLookup {
    sources: Vec<Arc<dyn TweetSource>>,
    cache: Cache,
    cache_ttl: Duration,
}

impl TweetLookup {
    /// The sources `settings` configure: the X API (with a token), syndication, oEmbed (when
    /// enabled).
    pub fn new(settings: &SourceSettings, cache: Cache) -> anyhow::Result<TweetLookup> {
        let client = http::client(settings.timeout)?;
        let mut sources: Vec<Arc<dyn TweetSource>> = Vec::new();
        if let Some(token) = &settings.bearer_token {
            sources.push(Arc::new(x_api::XApi::new(client.clone(), &settings.api_url, token.clone())?));
        }
        sources.push(Arc::new(syndication::Syndication::new(client.clone(), &settings.syndication_url)?));
        if settings.oembed_enabled {
            sources.push(Arc::new(oembed::OEmbed::new(client, &settings.oembed_url)?));
        }
        Ok(TweetLookup { sources, cache, cache_ttl: settings.cache_ttl })
    }

    /// The names of the sources asked, in order.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|source| source.name()).collect()
    }

    /// What the first source able to answer says about the tweet; `TWEET_SOURCE_UNAVAILABLE`
    /// when none could.
    pub async fn find(&self, tweet_id: u64) -> ServiceResult<Lookup> {
        let cache_key = format!("verify:tweet:{tweet_id}");
        if let Ok(Some(bytes)) = self.cache.get(&cache_key).await
            && let Ok(lookup) = serde_json::from_slice::<Lookup>(&bytes)
        {
            return Ok(lookup);
        }
        for source in &self.sources {
            match source.fetch(tweet_id).await {
                Ok(lookup) => {
                    let ttl = match lookup {
                        Lookup::Found(_) => self.cache_ttl,
                        Lookup::Missing(_) => self.cache_ttl.min(MISSING_CACHE_TTL),
                    };
                    if !ttl.is_zero() {
                        let bytes = serde_json::to_vec(&lookup).expect("plain enum");
                        if let Err(error) = self.cache.set(&cache_key, &bytes, ttl).await {
                            tracing::warn!(%error, "could not cache a tweet lookup");
                        }
                    }
                    return Ok(lookup);
                }
                Err(failure) => tracing::warn!(source = source.name(), tweet.id = tweet_id, error = %failure, "tweet source failed"),
            }
        }
        Err(ServiceError::new(ErrorCode::TweetSourceUnavailable, "X could not be reached to check the tweet; try again in a moment"))
    }
}
