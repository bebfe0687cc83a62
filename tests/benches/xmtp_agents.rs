//! Prints what carrying direct messages over XMTP costs, with the roles as separate
//! `clawx serve` processes on PostgreSQL and Redis:
//!
//! 1. the time from `POST /messages/dm` to `delivery: "sent"` between two accounts here: the
//!    first message of a pair (both identities published, the DM group opened and welcomed) and
//!    then messages in the existing group (one peer installation), `PAIRS` pairs at once, each
//!    sending its next message once the previous one is sent: sends/s, p50, p99;
//! 2. the same from `POST /messages/dm/address` to an XMTP inbox that is not an account here,
//!    with 1 and with 10 installations (each with its key package; no engine reads them), so
//!    the DM group has 1 or 10 peer installations and its opening sends 1 or 10 welcomes;
//! 3. the resident memory of the messaging process with 1,000 agents holding one DM group each.
//!
//! Needs `target/release/clawx` (`cargo build --release -p clawx`), `CLAWX_TEST_DATABASE_URL` and
//! `CLAWX_TEST_REDIS_URL`.
//!
//!     cargo build --release -p clawx && cargo bench -p clawx-tests --bench xmtp_agents

use std::time::{Duration, Instant};

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use clawx_messaging::agent::{network::XmtpNetwork, publish_external_inbox};
use clawx_tests::bench::{Figures, ServeRoles, rss_kb};
use futures::{StreamExt, stream};
use serde_json::{Value, json};

const PAIRS: usize = 16;
const MESSAGES_PER_PAIR: usize = 25;
const AGENTS: usize = 1_000;
/// Installations of the peer inbox in the many-installations case.
const PEER_INSTALLATIONS: usize = 10;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

struct Pair {
    /// The sender's API key.
    sender: String,
    /// The recipient's API key (empty for an inbox elsewhere).
    recipient: String,
    to: Recipient,
}

/// Whom a pair's sender writes to.
enum Recipient {
    /// An account here, by handle (`POST /messages/dm`).
    Handle(String),
    /// A wallet's XMTP inbox (`POST /messages/dm/address`).
    Address(String),
}

impl Recipient {
    fn body(&self, text: &str) -> Value {
        match self {
            Recipient::Handle(handle) => json!({"handle": handle, "message": text}),
            Recipient::Address(address) => json!({"wallet_address": address, "message": text}),
        }
    }

    fn send_path(&self) -> &'static str {
        match self {
            Recipient::Handle(_) => "/messages/dm",
            Recipient::Address(_) => "/messages/dm/address",
        }
    }

    fn history_path(&self) -> String {
        match self {
            Recipient::Handle(handle) => format!("/messages/{handle}?limit=5"),
            Recipient::Address(address) => format!("/messages/address/{address}?limit=5"),
        }
    }
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
        .post(format!("{}{}", roles.base_url, pair.to.send_path()))
        .header("x-api-key", &pair.sender)
        .json(&pair.to.body(text))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "send");
    let sent: Value = response.json().await.unwrap();
    let id = sent["message"]["id"].clone();
    loop {
        let url = format!("{}{}", roles.base_url, pair.to.history_path());
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
                to: Recipient::Handle(recipient_handle),
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// `count` accounts here, each writing to its own XMTP inbox with `installations`
/// installations (published on the messaging role's node with a fresh wallet).
async fn pairs_with_external_inboxes(roles: &ServeRoles, http: &reqwest::Client, prefix: &str, count: usize, installations: usize) -> Vec<Pair> {
    let network = XmtpNetwork::connect_lazy(&roles.messaging_url).unwrap();
    let network = &network;
    stream::iter(0..count)
        .map(|index| async move {
            let wallet = PrivateKeySigner::random();
            let address = wallet.address().to_checksum(None);
            publish_external_inbox(network, &address, installations, |text| {
                let mut signature = SignerSync::sign_message_sync(&wallet, text.as_bytes()).unwrap().as_bytes().to_vec();
                if signature[64] < 27 {
                    signature[64] += 27;
                }
                signature
            })
            .await
            .unwrap();
            Pair { sender: register(roles, http, &format!("{prefix}s{index}")).await, recipient: String::new(), to: Recipient::Address(address) }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Each pair's first message (which opens the DM), then `MESSAGES_PER_PAIR` more in the
/// existing DM, all pairs at once; both figures printed, labelled with `peer` (whom to).
async fn first_then_existing(roles: &ServeRoles, http: &reqwest::Client, measured: &[Pair], peer: &str) {
    let started = Instant::now();
    let firsts: Vec<Duration> =
        stream::iter(measured).map(|pair| send_until_sent(roles, http, pair, "first")).buffer_unordered(measured.len()).collect().await;
    Figures::of(firsts, started.elapsed()).print(&format!("first message to sent (opens the DM), {peer}"));
    let started = Instant::now();
    let latencies: Vec<Duration> = stream::iter(measured)
        .map(|pair| async {
            let mut latencies = Vec::with_capacity(MESSAGES_PER_PAIR);
            for index in 0..MESSAGES_PER_PAIR {
                latencies.push(send_until_sent(roles, http, pair, &format!("message {index}")).await);
            }
            latencies
        })
        .buffer_unordered(measured.len())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    Figures::of(latencies, started.elapsed()).print(&format!("POST to sent, existing DM, {} pairs at once, {peer}", measured.len()));
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
    first_then_existing(&roles, &http, &measured, "account here").await;

    // 2. The same to inboxes elsewhere with 1 and with 10 installations.
    for installations in [1, PEER_INSTALLATIONS] {
        let measured = pairs_with_external_inboxes(&roles, &http, &format!("ext{installations}"), PAIRS, installations).await;
        first_then_existing(&roles, &http, &measured, &format!("{installations} peer inst.")).await;
    }
    drop(roles);

    // 3. Resident memory with AGENTS agents holding one DM group each.
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
