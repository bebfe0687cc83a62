//! A stand-in for X at the network boundary: one loopback HTTP server that speaks the three
//! formats the tweet sources read, under three prefixes — the X API v2 (`/api/2/tweets/{id}`,
//! bearer token required), the public syndication endpoint (`/syndication/tweet-result`, token
//! derived from the id) and oEmbed (`/oembed/oembed`) — with their not-found, protected,
//! deleted and error answers. A test posts tweets into it and makes a source fail on demand.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use clawx_common::Secret;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tweets::{SourceSettings, syndication_token};

/// Which of the three sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Api,
    Syndication,
    OEmbed,
}

/// How a source misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `503 Service Unavailable`.
    ServerError,
    /// `429 Too Many Requests`, as X rate limits.
    RateLimited,
    /// No answer for a minute: the client's timeout fires.
    Hang,
}

/// A tweet's visibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    Public,
    /// Its account is protected.
    Protected,
    /// Deleted by its author.
    Deleted,
}

#[derive(Clone, Debug)]
struct FakeTweet {
    text: String,
    author_id: String,
    username: String,
    created_at_ms: i64,
    visibility: Visibility,
    /// The tweet this one retweets.
    retweet_of: Option<u64>,
}

#[derive(Default)]
struct World {
    tweets: HashMap<u64, FakeTweet>,
    failures: HashMap<Source, Failure>,
    hits: HashMap<Source, usize>,
    sequence: u64,
}

#[derive(Clone)]
struct Shared {
    world: Arc<Mutex<World>>,
    bearer: String,
}

/// The running stand-in. Stops when dropped.
pub struct FakeX {
    pub base_url: String,
    pub bearer: String,
    shared: Shared,
    shutdown: CancellationToken,
}

impl Drop for FakeX {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

fn iso_time(ms: i64) -> String {
    format!("{}.{:03}Z", clawx_common::time::format_iso_datetime(ms), ms.rem_euclid(1000))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;").replace('\n', "<br>")
}

/// The oEmbed blockquote: mentions become links, as X renders them.
fn oembed_html(tweet: &FakeTweet, id: u64) -> String {
    let mut paragraph = String::new();
    for (index, word) in escape_html(&tweet.text).split(' ').enumerate() {
        if index > 0 {
            paragraph.push(' ');
        }
        match word.strip_prefix('@') {
            Some(handle) if !handle.is_empty() && handle.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                paragraph.push_str(&format!("<a href=\"https://twitter.com/{handle}?ref_src=twsrc%5Etfw\">@{handle}</a>"));
            }
            _ => paragraph.push_str(word),
        }
    }
    format!(
        "<blockquote class=\"twitter-tweet\"><p lang=\"en\" dir=\"ltr\">{paragraph}</p>&mdash; {name} (@{user}) \
         <a href=\"https://twitter.com/{user}/status/{id}?ref_src=twsrc%5Etfw\">{date}</a></blockquote>\n",
        name = tweet.username,
        user = tweet.username,
        date = clawx_common::time::format_sql_datetime(tweet.created_at_ms),
    )
}

impl FakeX {
    /// Starts the server on a loopback port; the X API answers only `bearer`.
    pub async fn start(bearer: &str) -> FakeX {
        let shared = Shared { world: Arc::new(Mutex::new(World::default())), bearer: bearer.to_string() };
        let router = Router::new()
            .route("/api/2/tweets/{id}", get(api_tweet))
            .route("/syndication/tweet-result", get(syndication_tweet))
            .route("/oembed/oembed", get(oembed_tweet))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        });
        FakeX { base_url: format!("http://{address}"), bearer: bearer.to_string(), shared, shutdown }
    }

    /// Source settings pointing at this server: the X API (with the right token) when `api`,
    /// syndication always, oEmbed when `oembed`. One-second timeouts, no cache.
    pub fn settings(&self, api: bool, oembed: bool) -> SourceSettings {
        SourceSettings {
            api_url: format!("{}/api", self.base_url),
            bearer_token: api.then(|| Secret::new(self.bearer.clone())),
            syndication_url: format!("{}/syndication", self.base_url),
            oembed_url: format!("{}/oembed", self.base_url),
            oembed_enabled: oembed,
            timeout: Duration::from_secs(1),
            cache_ttl: Duration::ZERO,
        }
    }

    /// Posts a public tweet at `at_ms`; returns its id (whose upper bits are its time, as on X).
    pub fn post(&self, author_id: &str, username: &str, text: &str, at_ms: i64) -> u64 {
        let mut world = self.shared.world.lock().expect("world");
        world.sequence += 1;
        let id = (((at_ms - SNOWFLAKE_EPOCH_MS) as u64) << 22) | (world.sequence & 0x3f_ffff);
        let tweet = FakeTweet {
            text: text.to_string(),
            author_id: author_id.to_string(),
            username: username.to_string(),
            created_at_ms: at_ms,
            visibility: Visibility::Public,
            retweet_of: None,
        };
        world.tweets.insert(id, tweet);
        id
    }

    /// Retweets `original` as `username` at `at_ms`: its text is `RT @<author>: <text>`, unless
    /// `text` says otherwise, and the X API marks it `retweeted`; returns its id.
    pub fn retweet(&self, original: u64, author_id: &str, username: &str, text: Option<&str>, at_ms: i64) -> u64 {
        let original_tweet = self.shared.world.lock().expect("world").tweets.get(&original).cloned().expect("the original tweet");
        let text = text.map(str::to_string).unwrap_or_else(|| format!("RT @{}: {}", original_tweet.username, original_tweet.text));
        let id = self.post(author_id, username, &text, at_ms);
        if let Some(tweet) = self.shared.world.lock().expect("world").tweets.get_mut(&id) {
            tweet.retweet_of = Some(original);
        }
        id
    }

    /// Protects or deletes a posted tweet.
    pub fn set_visibility(&self, id: u64, visibility: Visibility) {
        if let Some(tweet) = self.shared.world.lock().expect("world").tweets.get_mut(&id) {
            tweet.visibility = visibility;
        }
    }

    /// Renames the author of every tweet of `author_id` (the user id stays).
    pub fn rename(&self, author_id: &str, username: &str) {
        for tweet in self.shared.world.lock().expect("world").tweets.values_mut() {
            if tweet.author_id == author_id {
                tweet.username = username.to_string();
            }
        }
    }

    /// Makes a source fail (or heals it with `None`).
    pub fn fail(&self, source: Source, failure: Option<Failure>) {
        let mut world = self.shared.world.lock().expect("world");
        match failure {
            Some(failure) => world.failures.insert(source, failure),
            None => world.failures.remove(&source),
        };
    }

    /// Requests a source has received.
    pub fn hits(&self, source: Source) -> usize {
        self.shared.world.lock().expect("world").hits.get(&source).copied().unwrap_or(0)
    }
}

impl Shared {
    /// Counts the hit; the injected failure's answer, if any.
    async fn enter(&self, source: Source) -> Option<Response> {
        let failure = {
            let mut world = self.world.lock().expect("world");
            *world.hits.entry(source).or_default() += 1;
            world.failures.get(&source).copied()
        };
        match failure? {
            Failure::ServerError => Some((StatusCode::SERVICE_UNAVAILABLE, "Over capacity").into_response()),
            Failure::RateLimited => {
                let body = json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429});
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert("x-rate-limit-remaining", "0".parse().expect("header"));
                Some(response)
            }
            Failure::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Some(StatusCode::GATEWAY_TIMEOUT.into_response())
            }
        }
    }

    fn tweet(&self, id: u64) -> Option<FakeTweet> {
        self.world.lock().expect("world").tweets.get(&id).cloned()
    }
}

fn api_problem(id: &str, title: &str, kind: &str, detail: String) -> Value {
    json!({"errors": [{"value": id, "detail": detail, "title": title, "resource_type": "tweet", "parameter": "id", "resource_id": id,
        "type": format!("https://api.twitter.com/2/problems/{kind}")}]})
}

async fn api_tweet(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = shared.enter(Source::Api).await {
        return failure;
    }
    let authorized = headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(&format!("Bearer {}", shared.bearer));
    if !authorized {
        let body = json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let asked = |name: &str, value: &str| query.get(name).is_some_and(|values| values.split(',').any(|item| item == value));
    let Ok(numeric) = id.parse::<u64>() else {
        let body = json!({"errors": [{"parameters": {"id": [id]}, "message": "The `id` query parameter value is not valid"}],
            "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    match shared.tweet(numeric) {
        Some(tweet) if tweet.visibility == Visibility::Public => {
            let mut data = json!({"id": id, "text": tweet.text, "edit_history_tweet_ids": [id]});
            let mut body = json!({});
            if asked("expansions", "author_id") {
                data["author_id"] = json!(tweet.author_id);
                let mut user = json!({"id": tweet.author_id, "name": tweet.username});
                if asked("user.fields", "username") {
                    user["username"] = json!(tweet.username);
                }
                body["includes"] = json!({"users": [user]});
            }
            if asked("tweet.fields", "created_at") {
                data["created_at"] = json!(iso_time(tweet.created_at_ms));
            }
            if let Some(original) = tweet.retweet_of.filter(|_| asked("tweet.fields", "referenced_tweets")) {
                data["referenced_tweets"] = json!([{"type": "retweeted", "id": original.to_string()}]);
            }
            body["data"] = data;
            Json(body).into_response()
        }
        Some(tweet) if tweet.visibility == Visibility::Protected => Json(api_problem(
            &id,
            "Authorization Error",
            "not-authorized-for-resource",
            format!("Sorry, you are not authorized to see the Post with id: [{id}]."),
        ))
        .into_response(),
        _ => Json(api_problem(&id, "Not Found Error", "resource-not-found", format!("Could not find tweet with id: [{id}]."))).into_response(),
    }
}

async fn syndication_tweet(State(shared): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    if let Some(failure) = shared.enter(Source::Syndication).await {
        return failure;
    }
    let Some(id) = query.get("id").and_then(|id| id.parse::<u64>().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if query.get("token") != Some(&syndication_token(id)) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match shared.tweet(id) {
        Some(tweet) if tweet.visibility == Visibility::Public => Json(json!({
            "__typename": "Tweet",
            "lang": "en",
            "favorite_count": 0,
            "created_at": iso_time(tweet.created_at_ms),
            "id_str": id.to_string(),
            "text": tweet.text,
            "user": {"id_str": tweet.author_id, "name": tweet.username, "screen_name": tweet.username, "is_blue_verified": false},
            "edit_control": {"edit_tweet_ids": [id.to_string()], "is_edit_eligible": false, "edits_remaining": "5"},
            "conversation_count": 0,
        }))
        .into_response(),
        Some(_) => Json(json!({
            "__typename": "TweetTombstone",
            "tombstone": {"text": {"text": "You’re unable to view this Post because this account owner limits who can view their Posts.", "entities": [], "rtl": false}},
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn oembed_tweet(State(shared): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    if let Some(failure) = shared.enter(Source::OEmbed).await {
        return failure;
    }
    let id = query.get("url").and_then(|url| url.rsplit('/').next()).and_then(|id| id.parse::<u64>().ok());
    let Some(id) = id else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match shared.tweet(id) {
        Some(tweet) if tweet.visibility == Visibility::Public => Json(json!({
            "url": format!("https://twitter.com/{}/status/{id}", tweet.username),
            "author_name": tweet.username,
            "author_url": format!("https://twitter.com/{}", tweet.username),
            "html": oembed_html(&tweet, id),
            "width": 550,
            "height": null,
            "type": "rich",
            "cache_age": "3153600000",
            "provider_name": "Twitter",
            "provider_url": "https://twitter.com",
            "version": "1.0",
        }))
        .into_response(),
        Some(tweet) if tweet.visibility == Visibility::Protected => StatusCode::FORBIDDEN.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
