//! Prints the throughput and latency of authenticated REST calls through the whole stack
//! (gateway → identity service → SQLite), with the API key served from the gateway's cache.
//!
//!     cargo bench -p clawx-tests --bench gateway

use std::time::{Duration, Instant};

use clawx_tests::{Auth, TestStack};

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

#[tokio::main]
async fn main() {
    let stack = TestStack::embedded_with(|config| {
        config.limits.per_account_per_minute = 0;
        config.limits.per_ip_per_minute = 0;
    })
    .await;
    let key = stack.registered("bench").await;
    let url = stack.url("/account/me");
    for _ in 0..200 {
        stack.get("/account/me", &Auth::Key(key.clone())).await.expect_ok("warm-up");
    }

    for concurrency in [1usize, 16, 64] {
        let requests_per_worker = 4000 / concurrency;
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let http = stack.http.clone();
                let url = url.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(requests_per_worker);
                    for _ in 0..requests_per_worker {
                        let sent = Instant::now();
                        let response = http.get(&url).header("x-api-key", &key).send().await.unwrap();
                        assert_eq!(response.status(), 200);
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
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "GET /account/me, {concurrency:>2} concurrent: {:>7.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests)",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.len()
        );
    }
    stack.stop().await;
}
