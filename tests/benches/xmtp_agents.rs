//! Prints what carrying direct messages over XMTP costs, with the roles as separate
//! `clawx serve` processes on PostgreSQL and Redis:
//!
//! 1. the time from `POST /messages/dm` to `delivery: "sent"` between two accounts here: the
//!    first message of a pair (both identities published, the DM group opened and welcomed) and
//!    then messages in the existing group (one peer installation), `PAIRS` pairs at once, each
//!    sending its next message once the previous one is sent: sends/s, p50, p99;
//! 2. the resident memory of the messaging process with 1,000 agents holding one DM group each.
//!
//! Needs `target/release/clawx` (`cargo build --release -p clawx`), `CLAWX_TEST_DATABASE_URL` and
//! `CLAWX_TEST_REDIS_URL`.
//!
//!     cargo build --release -p clawx && cargo bench -p clawx-tests --bench xmtp_agents

use std::time::{Duration, Instant};

use clawx_tests::bench::{Figures, ServeRoles, rss_kb};
use futures::{StreamExt, stream};
use serde_json::{Value, json};

const PAIRS: usize = 16;
const MESSAGES_PER_PAIR: usize = 25;
const AGENTS: usize = 1_000;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

struct Pair {
    sender: String,
    recipient: String,
    recipient_handle: String,
}

async fn register(roles: &ServeRoles, http: &reqwest::Client, handle: &str) -> String {
    let key = roles.create_account(http).await;
    let response = http
        .post(format!("{}/account/register", roles.base_url))
        .header("x-api-key", &key)
        .json(&json!({"handle": handle, "name": handle}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "register {handle}");
    key
}

/// Sends one message and waits until it is sent; the time that took.
async fn send_until_sent(roles: &ServeRoles, http: &reqwest::Client, pair: &Pair, text: &str) -> Duration {
    let started = Instant::now();
    let response = http
        .post(format!("{}/messages/dm", roles.base_url))
        .header("x-api-key", &pair.sender)
        .json(&json!({"handle": pair.recipient_handle, "message": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "send");
    let sent: Value = response.json().await.unwrap();
    let id = sent["message"]["id"].clone();
    loop {
        let url = format!("{}/messages/{}?limit=5", roles.base_url, pair.recipient_handle);
        let history: Value = http.get(url).header("x-api-key", &pair.sender).send().await.unwrap().json().await.unwrap();
        let delivery = history["messages"]
            .as_array()
            .and_then(|messages| messages.iter().find(|message| message["id"] == id))
            .map(|message| message["delivery"].clone());
        match delivery.as_ref().and_then(Value::as_str) {
            Some("sent") => return started.elapsed(),
            Some("failed") => panic!("delivery failed: {history}"),
            _ => {}
        }
        assert!(started.elapsed() < DELIVERY_TIMEOUT, "not sent within {DELIVERY_TIMEOUT:?}: {history}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn pairs(roles: &ServeRoles, http: &reqwest::Client, prefix: &str, count: usize) -> Vec<Pair> {
    stream::iter(0..count)
        .map(|index| async move {
            let recipient_handle = format!("{prefix}r{index}");
            Pair {
                sender: register(roles, http, &format!("{prefix}s{index}")).await,
                recipient: register(roles, http, &recipient_handle).await,
                recipient_handle,
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::main]
async fn main() {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/clawx");
    let (Ok(database_url), Ok(redis_url)) = (std::env::var("CLAWX_TEST_DATABASE_URL"), std::env::var("CLAWX_TEST_REDIS_URL")) else {
        println!("skipped: needs CLAWX_TEST_DATABASE_URL and CLAWX_TEST_REDIS_URL");
        return;
    };
    if !binary.exists() {
        println!("skipped: needs target/release/clawx (cargo build --release -p clawx)");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();

    // 1. Latency to `sent` between accounts here.
    let roles = ServeRoles::start(&binary, &database_url, &redis_url, &[]).await;
    let measured = pairs(&roles, &http, "lat", PAIRS).await;
    let started = Instant::now();
    let firsts: Vec<Duration> =
        stream::iter(&measured).map(|pair| send_until_sent(&roles, &http, pair, "first")).buffer_unordered(PAIRS).collect().await;
    Figures::of(firsts, started.elapsed()).print("first message of a pair to sent (opens the DM)");
    let started = Instant::now();
    let latencies: Vec<Duration> = stream::iter(&measured)
        .map(|pair| async {
            let mut latencies = Vec::with_capacity(MESSAGES_PER_PAIR);
            for index in 0..MESSAGES_PER_PAIR {
                latencies.push(send_until_sent(&roles, &http, pair, &format!("message {index}")).await);
            }
            latencies
        })
        .buffer_unordered(PAIRS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    Figures::of(latencies, started.elapsed()).print(&format!("POST to sent in an existing DM, {PAIRS} pairs at once"));
    drop(roles);

    // 2. Resident memory with AGENTS agents holding one DM group each.
    let roles = ServeRoles::start(&binary, &database_url, &redis_url, &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kb(roles.messaging.0.id());
    let started = Instant::now();
    let agents = pairs(&roles, &http, "mem", AGENTS / 2).await;
    stream::iter(&agents)
        .map(|pair| async {
            send_until_sent(&roles, &http, pair, "hello").await;
            // The recipient joins from its welcome (at once, or on this pull).
            let url = format!("{}/messages/xmtp/sync", roles.base_url);
            let response = http.get(url).header("x-api-key", &pair.recipient).send().await.unwrap();
            assert_eq!(response.status(), 200, "sync");
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(roles.messaging.0.id());
    println!(
        "{:<58} {:>7} MB (before: {} MB; {} agents set up in {:.0} s)",
        "messaging process RSS, agents with one DM group each",
        after / 1024,
        before / 1024,
        agents.len() * 2,
        elapsed.as_secs_f64()
    );
}
