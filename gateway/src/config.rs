//! What the gateway needs to run.

use std::time::Duration;

use clawx_common::{Backends, InternalAuth};

/// Where the services listen, e.g. `http://identity:50051`.
#[derive(Clone, Debug)]
pub struct UpstreamUrls {
    pub identity: String,
    pub messaging: String,
    pub groups: String,
    pub verify: String,
}

/// Rate limits, per minute; 0 disables a limit.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per account (`CLAWX_RATE_LIMIT_PER_MINUTE`).
    pub per_account_per_minute: u32,
    /// Account creations per client IP (`CLAWX_RATE_LIMIT_CREATE_PER_MINUTE`).
    pub create_per_minute: u32,
    /// Unauthenticated requests per client IP (`CLAWX_RATE_LIMIT_IP_PER_MINUTE`).
    pub per_ip_per_minute: u32,
    /// XMTP node calls per client IP (`CLAWX_RATE_LIMIT_XMTP_PER_MINUTE`).
    pub xmtp_per_minute: u32,
    /// Credentials per client IP that had to be checked with the identity service (cache
    /// misses, which is where bad credentials land) (`CLAWX_RATE_LIMIT_AUTH_PER_MINUTE`).
    pub auth_checks_per_minute: u32,
    /// Concurrent long-lived streams per client IP: XMTP subscriptions, health `Watch` and
    /// reflection (`CLAWX_XMTP_STREAMS_PER_IP`).
    pub xmtp_streams_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_account_per_minute: 600,
            create_per_minute: 30,
            per_ip_per_minute: 1200,
            xmtp_per_minute: 6000,
            auth_checks_per_minute: 300,
            xmtp_streams_per_ip: 200,
        }
    }
}

/// What the gateway needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub upstreams: UpstreamUrls,
    pub backends: Backends,
    pub auth: InternalAuth,
    pub limits: Limits,
    /// Largest accepted REST body.
    pub max_body_bytes: usize,
    /// Deadline of each upstream call made for a REST request.
    pub upstream_timeout: Duration,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Origins allowed by CORS; empty means any.
    pub cors_origins: Vec<String>,
    /// Only verified accounts may send messages and create groups (`CLAWX_REQUIRE_VERIFICATION`).
    pub require_verification: bool,
    /// How often an idle Server-Sent Events stream gets a heartbeat comment (15 s; shorter in
    /// tests).
    pub sse_heartbeat: Duration,
    /// Hosts `/mcp` answers (`Host` header, DNS-rebinding protection); empty means loopback only
    /// (`CLAWX_MCP_ALLOWED_HOSTS`).
    pub mcp_allowed_hosts: Vec<String>,
}

impl Config {
    pub fn new(upstreams: UpstreamUrls, backends: Backends, auth: InternalAuth) -> Config {
        Config {
            upstreams,
            backends,
            auth,
            limits: Limits::default(),
            max_body_bytes: 1024 * 1024,
            upstream_timeout: Duration::from_secs(15),
            trust_forwarded_for: false,
            cors_origins: Vec::new(),
            require_verification: false,
            sse_heartbeat: Duration::from_secs(15),
            mcp_allowed_hosts: Vec::new(),
        }
    }
}
