//! Prints what direct messages cost, against the figures the messaging service must reach:
//!
//! 1. (a) raw single-row `INSERT`s from 32 concurrent PostgreSQL connections, against (b)
//!    `POST /messages/dm` through the gateway from 32 concurrent HTTP/1.1 keep-alive clients, on
//!    the same PostgreSQL: sends/s, p50, p99 and the ratio (b)/(a); then (b) paced at half its
//!    peak rate, and the same REST figure on SQLite (`clawx dev`'s store);
//! 2. `GET /messages/inbox` p50 for an account with 100 and with 100,000 stored messages;
//! 3. the resident memory of a `clawx serve messaging` process while 10,000 idle SSE
//!    subscribers are connected through a `clawx serve gateway` process (needs
//!    `target/release/clawx`: `cargo build --release -p clawx` first; skipped otherwise).
//!
//! Parts 1 (PostgreSQL half), 2 and 3 need `CLAWX_TEST_DATABASE_URL` and `CLAWX_TEST_REDIS_URL`
//! (as `scripts/test.sh` sets them).
//!
//!     cargo build --release -p clawx && cargo bench -p clawx-tests --bench messaging

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clawx_tests::{
    Auth, TestStack,
    bench::{Figures, ServeRoles, percentile, rss_kb},
};
use serde_json::json;

const CONCURRENCY: usize = 32;
const SENDS: usize = 6_400;

/// (a): single-row inserts of a message-sized row, each its own transaction.
async fn raw_inserts(database_url: &str) -> Figures {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(CONCURRENCY as u32).connect(database_url).await.expect("PostgreSQL");
    sqlx::query("DROP TABLE IF EXISTS bench_raw_messages").execute(&pool).await.unwrap();
    sqlx::query("CREATE TABLE bench_raw_messages (id BIGSERIAL PRIMARY KEY, sender BIGINT NOT NULL, recipient BIGINT NOT NULL, content TEXT NOT NULL, sent_at BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    // All 32 connections open before the clock starts, as (b)'s clients are built before it.
    let mut warm = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        warm.push(pool.acquire().await.expect("a PostgreSQL connection"));
    }
    drop(warm);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(SENDS / CONCURRENCY);
                for index in 0..SENDS / CONCURRENCY {
                    let sent = Instant::now();
                    sqlx::query("INSERT INTO bench_raw_messages (sender, recipient, content, sent_at) VALUES ($1, $2, $3, $4)")
                        .bind(worker as i64)
                        .bind(index as i64)
                        .bind("hello from the benchmark, a message of ordinary length")
                        .bind(0i64)
                        .execute(&pool)
                        .await
                        .unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let figures = Figures::of(latencies, started.elapsed());
    sqlx::query("DROP TABLE bench_raw_messages").execute(&pool).await.unwrap();
    pool.close().await;
    figures
}

/// (b): `POST /messages/dm` from `CONCURRENCY` keep-alive clients; paced to `rate` sends/s in
/// total when given.
async fn rest_sends(base_url: &str, key: &str, to: &str, sends: usize, rate: Option<f64>) -> Figures {
    let url = Arc::new(format!("{base_url}/messages/dm"));
    // One client (one keep-alive connection) per worker, built before the clock starts: a
    // client loads the system's root certificates, which is no part of a send.
    let clients: Vec<reqwest::Client> =
        (0..CONCURRENCY).map(|_| reqwest::Client::builder().http1_only().pool_max_idle_per_host(1).build().unwrap()).collect();
    let started = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(worker, http)| {
            let url = Arc::clone(&url);
            let key = key.to_string();
            let to = to.to_string();
            tokio::spawn(async move {
                let mut pacing = rate.map(|rate| {
                    let mut interval = tokio::time::interval(Duration::from_secs_f64(CONCURRENCY as f64 / rate));
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    interval
                });
                let mut latencies = Vec::with_capacity(sends / CONCURRENCY);
                for index in 0..sends / CONCURRENCY {
                    if let Some(pacing) = pacing.as_mut() {
                        pacing.tick().await;
                    }
                    let sent = Instant::now();
                    let body = json!({"handle": to, "message": format!("benchmark message {worker}-{index}")});
                    let response = http.post(url.as_str()).header("x-api-key", &key).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
                    response.bytes().await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    Figures::of(latencies, started.elapsed())
}

fn unlimited(config: &mut clawx_gateway::Config) {
    config.limits.per_account_per_minute = 0;
    config.limits.per_ip_per_minute = 0;
    config.limits.create_per_minute = 0;
    config.limits.xmtp_streams_per_ip = 0;
}

async fn inbox_p50(stack: &TestStack, key: &str) -> Duration {
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        stack.get("/messages/inbox", &Auth::Key(key.to_string())).await.expect_ok("inbox");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    percentile(&latencies, 0.5)
}

/// Fills `key`'s conversation with `to` up to `count` messages through the REST API.
async fn fill(base_url: &str, key: &str, to: &str, count: usize) {
    rest_sends(base_url, key, to, count, None).await;
}

/// Part 3: 10,000 idle SSE subscribers through separate `clawx serve` processes.
async fn idle_subscribers(binary: &std::path::Path, database_url: &str, redis_url: &str) {
    let roles = ServeRoles::start(binary, database_url, redis_url, &[]).await;
    let http = reqwest::Client::new();
    let key = roles.create_account(&http).await;
    let base_url = roles.base_url.clone();
    let pid = roles.messaging.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kb(pid);
    let mut subscribers = Vec::with_capacity(10_000);
    for batch in 0..100 {
        let opened: Vec<_> = (0..100)
            .map(|_| {
                let http = reqwest::Client::builder().http1_only().build().unwrap();
                let url = format!("{base_url}/messages/stream");
                let key = key.clone();
                tokio::spawn(async move { http.get(url).header("x-api-key", key).send().await })
            })
            .collect();
        for subscriber in opened {
            let response = subscriber.await.unwrap().expect("subscribed");
            assert_eq!(response.status(), 200, "subscriber of batch {batch}");
            subscribers.push(response);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid);
    println!(
        "{:<58} {:>7} MB (before: {} MB, {} subscribers)",
        "messaging process RSS with idle SSE subscribers",
        after / 1024,
        before / 1024,
        subscribers.len()
    );
    drop(subscribers);
}

#[tokio::main]
async fn main() {
    let database_url = std::env::var("CLAWX_TEST_DATABASE_URL").ok();
    let redis_url = std::env::var("CLAWX_TEST_REDIS_URL").ok();

    // 1. Sends on PostgreSQL: raw inserts against REST through the whole stack.
    if let (Some(database_url), Some(stack)) = (database_url.as_deref(), TestStack::external_with(unlimited).await) {
        let raw = raw_inserts(database_url).await;
        raw.print("(a) raw single-row INSERT, 32 connections, PostgreSQL");
        let sender = stack.registered("bench-sender").await;
        stack.registered("bench-peer").await;
        rest_sends(&stack.base_url, &sender, "bench-peer", 640, None).await;
        let rest = rest_sends(&stack.base_url, &sender, "bench-peer", SENDS, None).await;
        rest.print("(b) POST /messages/dm, 32 keep-alive clients, PostgreSQL");
        println!("{:<58} {:>7.2}", "(b)/(a)", rest.per_second / raw.per_second);
        let half = rest_sends(&stack.base_url, &sender, "bench-peer", SENDS / 2, Some(rest.per_second / 2.0)).await;
        half.print("(b) at half its peak rate");

        // 2. The inbox stays an indexed read as conversations grow.
        let small = stack.registered("bench-small").await;
        stack.registered("bench-small-peer").await;
        fill(&stack.base_url, &small, "bench-small-peer", 96).await;
        let large = stack.registered("bench-large").await;
        stack.registered("bench-large-peer").await;
        fill(&stack.base_url, &large, "bench-large-peer", 100_000).await;
        let (small_p50, large_p50) = (inbox_p50(&stack, &small).await, inbox_p50(&stack, &large).await);
        println!(
            "{:<58} p50 {:>6.2} ms with 100 messages, {:>6.2} ms with 100,000",
            "GET /messages/inbox",
            small_p50.as_secs_f64() * 1e3,
            large_p50.as_secs_f64() * 1e3
        );
        stack.stop().await;
    } else {
        println!("PostgreSQL/Redis not configured (CLAWX_TEST_DATABASE_URL, CLAWX_TEST_REDIS_URL): parts 1 (PostgreSQL) and 2 skipped");
    }

    // 1'. The same REST figure on SQLite.
    let stack = TestStack::embedded_with(unlimited).await;
    let sender = stack.registered("bench-sender").await;
    stack.registered("bench-peer").await;
    rest_sends(&stack.base_url, &sender, "bench-peer", 640, None).await;
    rest_sends(&stack.base_url, &sender, "bench-peer", SENDS, None).await.print("(b) POST /messages/dm, 32 keep-alive clients, SQLite");
    stack.stop().await;

    // 3. Idle SSE subscribers.
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/clawx");
    match (database_url, redis_url) {
        (Some(database_url), Some(redis_url)) if binary.exists() => idle_subscribers(&binary, &database_url, &redis_url).await,
        _ => println!("idle SSE subscribers: skipped (needs target/release/clawx and PostgreSQL + Redis)"),
    }
}
