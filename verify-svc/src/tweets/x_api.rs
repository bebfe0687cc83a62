//! The X API v2: `GET /2/tweets/{id}?expansions=author_id&tweet.fields=created_at,referenced_tweets&user.fields=username`
//! with a bearer token. A missing tweet is `200` with an `errors` entry of type
//! `.../resource-not-found` (or a `404`); a protected one `.../not-authorized-for-resource`.

use clawx_common::Secret;
use serde::Deserialize;

use super::{
    Lookup, SourceFailure, Tweet, TweetSource,
    http::{self, Answer},
    parse_time_ms, snowflake_time_ms,
};

#[derive(Debug)]
pub(super) struct XApi {
    client: reqwest::Client,
    base: url::Url,
    token: Secret,
}

impl XApi {
    pub fn new(client: reqwest::Client, base: &str, token: Secret) -> anyhow::Result<XApi> {
        Ok(XApi { client, base: http::base_url(base)?, token })
    }
}

#[derive(Deserialize)]
struct Reply {
    data: Option<Data>,
    includes: Option<Includes>,
    #[serde(default)]
    errors: Vec<Problem>,
}

#[derive(Deserialize)]
struct Data {
    id: String,
    text: String,
    author_id: Option<String>,
    created_at: Option<String>,
    #[serde(default)]
    referenced_tweets: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Includes {
    #[serde(default)]
    users: Vec<User>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: String,
}

#[derive(Deserialize)]
struct Problem {
    #[serde(default, rename = "type")]
    kind: String,
}

fn missing_reason(problems: &[Problem]) -> String {
    if problems.iter().any(|problem| problem.kind.ends_with("/not-authorized-for-resource")) {
        "the tweet is not public (its account is protected)".to_string()
    } else if problems.iter().any(|problem| problem.kind.ends_with("/resource-not-found")) {
        "the tweet was not found: it was deleted or never existed".to_string()
    } else {
        "the tweet is not available".to_string()
    }
}

fn read(answer: &Answer, tweet_id: u64) -> Result<Lookup, SourceFailure> {
    if let Some(failure) = answer.failed() {
        return Err(failure);
    }
    match answer.status {
        200 => {}
        404 => return Ok(Lookup::Missing("the tweet was not found: it was deleted or never existed".to_string())),
        400 => return Ok(Lookup::Missing("X does not know this tweet id".to_string())),
        401 | 403 => return Err(SourceFailure(format!("the X API refused the bearer token (HTTP {})", answer.status))),
        status => return Err(SourceFailure(format!("unexpected HTTP {status}"))),
    }
    let reply: Reply = serde_json::from_slice(&answer.body).map_err(|error| SourceFailure(format!("unreadable answer: {error}")))?;
    let Some(data) = reply.data else {
        if reply.errors.is_empty() {
            return Err(SourceFailure("answer with neither data nor errors".to_string()));
        }
        return Ok(Lookup::Missing(missing_reason(&reply.errors)));
    };
    let author_id = data.author_id.ok_or_else(|| SourceFailure("answer without author_id".to_string()))?;
    let users = reply.includes.map(|includes| includes.users).unwrap_or_default();
    let user = users.into_iter().find(|user| user.id == author_id).ok_or_else(|| SourceFailure("answer without the author".to_string()))?;
    let created_at_ms = data.created_at.as_deref().and_then(parse_time_ms).unwrap_or_else(|| snowflake_time_ms(tweet_id));
    let retweet = data.referenced_tweets.iter().any(|reference| reference.kind == "retweeted");
    Ok(Lookup::Found(Tweet { id: data.id, text: data.text, author_id: Some(author_id), username: user.username, created_at_ms, retweet }))
}

#[async_trait::async_trait]
impl TweetSource for XApi {
    fn name(&self) -> &'static str {
        "x-api"
    }

    async fn fetch(&self, tweet_id: u64) -> Result<Lookup, SourceFailure> {
        let mut url = http::join(&self.base, &format!("2/tweets/{tweet_id}"));
        url.query_pairs_mut()
            .append_pair("expansions", "author_id")
            .append_pair("tweet.fields", "created_at,referenced_tweets")
            .append_pair("user.fields", "username");
        let answer = http::get(&self.client, url, Some(self.token.expose())).await?;
        read(&answer, tweet_id)
    }
}
