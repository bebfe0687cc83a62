//! What the benchmarks share: latency figures, and Clawx roles as separate `clawx serve`
//! processes (so a role's resident memory can be read) on PostgreSQL and Redis.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The value at `fraction` (0 to 1) of sorted latencies.
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

/// Throughput and latency of a run.
pub struct Figures {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    pub fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
        latencies.sort();
        Figures { per_second: latencies.len() as f64 / elapsed.as_secs_f64(), p50: percentile(&latencies, 0.5), p99: percentile(&latencies, 0.99) }
    }

    pub fn print(&self, what: &str) {
        println!(
            "{what:<58} {:>7.0} /s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.per_second,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        );
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `clawx serve` process, killed when dropped.
pub struct Role(pub Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The identity and messaging roles and a gateway as separate processes on fresh schemas, with
/// every rate limit off.
pub struct ServeRoles {
    pub base_url: String,
    /// The messaging role, whose port also serves the XMTP node API.
    pub messaging_url: String,
    pub messaging: Role,
    _identity: Role,
    _gateway: Role,
}

impl ServeRoles {
    /// Migrates, starts the roles and waits until an account can be created; `extra` adds
    /// settings (`CLAWX_*`) to every role.
    pub async fn start(binary: &std::path::Path, database_url: &str, redis_url: &str, extra: &[(&str, &str)]) -> ServeRoles {
        let (identity, messaging, gateway) = (free_port(), free_port(), free_port());
        let mut common: Vec<(String, String)> = [
            ("CLAWX_DATABASE_URL", database_url.to_string()),
            ("CLAWX_DATABASE_SCHEMA_PREFIX", format!("bench{}_{identity}_", std::process::id())),
            ("CLAWX_REDIS_URL", redis_url.to_string()),
            ("CLAWX_REDIS_PREFIX", format!("clawx-bench-{}-{identity}", std::process::id())),
            ("CLAWX_JWT_SECRET", "benchmark-secret-benchmark-secret-0123".to_string()),
            ("CLAWX_MASTER_KEY", "11".repeat(32)),
            ("CLAWX_IDENTITY_URL", format!("http://127.0.0.1:{identity}")),
            ("CLAWX_MESSAGING_URL", format!("http://127.0.0.1:{messaging}")),
            ("CLAWX_LOG", "warn".to_string()),
            ("CLAWX_RATE_LIMIT_PER_MINUTE", "0".to_string()),
            ("CLAWX_RATE_LIMIT_IP_PER_MINUTE", "0".to_string()),
            ("CLAWX_RATE_LIMIT_CREATE_PER_MINUTE", "0".to_string()),
            ("CLAWX_RATE_LIMIT_AUTH_PER_MINUTE", "0".to_string()),
            ("CLAWX_XMTP_STREAMS_PER_IP", "0".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        common.extend(extra.iter().map(|(name, value)| (name.to_string(), value.to_string())));
        let spawn = |role: &str, port: u16| {
            let mut command = Command::new(binary);
            command.args(["serve", role, "--listen", &format!("127.0.0.1:{port}")]).stdout(Stdio::null()).stderr(Stdio::null());
            command.envs(common.iter().map(|(name, value)| (name, value)));
            Role(command.spawn().expect("clawx serve starts"))
        };
        let migrate = Command::new(binary).arg("migrate").envs(common.iter().map(|(name, value)| (name, value))).status().unwrap();
        assert!(migrate.success(), "clawx migrate");
        let roles = ServeRoles {
            _identity: spawn("identity", identity),
            messaging: spawn("messaging", messaging),
            _gateway: spawn("gateway", gateway),
            base_url: format!("http://127.0.0.1:{gateway}"),
            messaging_url: format!("http://127.0.0.1:{messaging}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http.get(format!("{}/health", roles.base_url)).send().await.is_ok_and(|response| response.status() == 200) {
            assert!(Instant::now() < deadline, "the roles did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        roles
    }

    /// Creates an account; its API key.
    pub async fn create_account(&self, http: &reqwest::Client) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.post(format!("{}/account/create", self.base_url)).send().await
                && response.status() == 200
            {
                let body: serde_json::Value = response.json().await.unwrap();
                return body["api_key"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "accounts cannot be created");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
