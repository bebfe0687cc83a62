//! Tweet lookup against a loopback stand-in for X: what each source's answers mean, the order
//! they are asked in, outages (connection refused, timeouts, 5xx, rate limits) and the cache.

use std::time::Duration;

use clawx_common::{Cache, ErrorCode, Secret, time::now_ms};
use clawx_verify::{
    testing::{Failure, FakeX, Source, Visibility},
    tweets::{Lookup, SourceSettings, TweetLookup},
};

fn found(lookup: Lookup) -> clawx_verify::tweets::Tweet {
    match lookup {
        Lookup::Found(tweet) => tweet,
        Lookup::Missing(reason) => panic!("expected a tweet, got: {reason}"),
    }
}

fn missing(lookup: Lookup) -> String {
    match lookup {
        Lookup::Missing(reason) => reason,
        Lookup::Found(tweet) => panic!("expected no tweet, got {tweet:?}"),
    }
}

/// A URL nothing listens on.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

#[tokio::test]
async fn each_source_reads_its_own_format() {
    let x = FakeX::start("bearer-1").await;
    let at = now_ms() - 3_000;
    let id = x.post("1001", "Alice_1", "hello @claw_mail & <friends>\nCLAW-ABC234", at);
    for (name, settings) in [
        ("x-api", x.settings(true, false)),
        ("syndication", x.settings(false, false)),
        ("oembed", SourceSettings { syndication_url: dead_url().await, ..x.settings(false, true) }),
    ] {
        let lookup = TweetLookup::new(&settings, Cache::memory()).unwrap();
        assert_eq!(lookup.source_names()[0], if name == "oembed" { "syndication" } else { name });
        let tweet = found(lookup.find(id).await.unwrap());
        assert_eq!(tweet.id, id.to_string(), "{name}");
        assert_eq!(tweet.text, "hello @claw_mail & <friends>\nCLAW-ABC234", "{name}");
        assert_eq!(tweet.username, "Alice_1", "{name}");
        assert_eq!(tweet.created_at_ms, at, "{name}: the time, to the millisecond");
        let expected_author = if name == "oembed" { None } else { Some("1001".to_string()) };
        assert_eq!(tweet.author_id, expected_author, "{name}");

        let reason = missing(lookup.find(id + 100_000).await.unwrap());
        assert!(reason.contains("not found"), "{name}: {reason}");
        let protected = x.post("1001", "Alice_1", "secret", at);
        x.set_visibility(protected, Visibility::Protected);
        let reason = missing(lookup.find(protected).await.unwrap());
        assert!(reason.contains("not public") || reason.contains("protected"), "{name}: {reason}");
        let deleted = x.post("1001", "Alice_1", "gone", at);
        x.set_visibility(deleted, Visibility::Deleted);
        missing(lookup.find(deleted).await.unwrap());
    }
}

#[tokio::test]
async fn only_outages_pass_the_question_on() {
    let x = FakeX::start("bearer-2").await;
    let id = x.post("2002", "bob", "@claw_mail CLAW-ABC234", now_ms());
    let lookup = TweetLookup::new(&x.settings(true, true), Cache::memory()).unwrap();
    assert_eq!(lookup.source_names(), vec!["x-api", "syndication", "oembed"]);

    for failure in [Failure::ServerError, Failure::RateLimited, Failure::Hang] {
        x.fail(Source::Api, Some(failure));
        let before = x.hits(Source::Syndication);
        let tweet = found(lookup.find(id).await.unwrap());
        assert_eq!(tweet.author_id.as_deref(), Some("2002"), "{failure:?}: syndication answered");
        assert_eq!(x.hits(Source::Syndication), before + 1, "{failure:?}");
    }
    x.fail(Source::Syndication, Some(Failure::ServerError));
    let tweet = found(lookup.find(id).await.unwrap());
    assert_eq!(tweet.author_id, None, "oEmbed answered last");
    x.fail(Source::OEmbed, Some(Failure::RateLimited));
    let error = lookup.find(id).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::TweetSourceUnavailable);
    assert!(!error.message.contains("127.0.0.1"), "no internals: {}", error.message);

    // A wrong bearer token is a failed source, not a missing tweet.
    x.fail(Source::Api, None);
    x.fail(Source::Syndication, None);
    let wrong_token = SourceSettings { bearer_token: Some(Secret::new("wrong")), ..x.settings(true, false) };
    let lookup = TweetLookup::new(&wrong_token, Cache::memory()).unwrap();
    assert_eq!(found(lookup.find(id).await.unwrap()).username, "bob");

    // Connection refused everywhere.
    let dead = dead_url().await;
    let nowhere = SourceSettings { api_url: dead.clone(), syndication_url: dead.clone(), oembed_url: dead, ..x.settings(true, true) };
    let error = TweetLookup::new(&nowhere, Cache::memory()).unwrap().find(id).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::TweetSourceUnavailable);
}

#[tokio::test]
async fn lookups_are_cached_briefly_by_tweet_id() {
    let x = FakeX::start("bearer-3").await;
    let id = x.post("3003", "carol", "first", now_ms());
    let settings = SourceSettings { cache_ttl: Duration::from_secs(60), ..x.settings(false, false) };
    let lookup = TweetLookup::new(&settings, Cache::memory()).unwrap();
    assert_eq!(found(lookup.find(id).await.unwrap()).text, "first");
    x.set_visibility(id, Visibility::Deleted);
    assert_eq!(found(lookup.find(id).await.unwrap()).text, "first", "answered from the cache");
    assert_eq!(x.hits(Source::Syndication), 1);
    missing(lookup.find(id + 7).await.unwrap());
    missing(lookup.find(id + 7).await.unwrap());
    assert_eq!(x.hits(Source::Syndication), 2, "not-found answers are cached too, briefly");
    assert!(TweetLookup::new(&SourceSettings { syndication_url: "ftp://x".into(), ..settings }, Cache::memory()).is_err(), "only http(s)");
}
