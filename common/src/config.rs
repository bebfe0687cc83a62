//! Command-line and environment configuration blocks shared by every role. Each option has a
//! `CLAWX_*` environment variable, which is how Helm values reach the services.

use std::{fmt, net::SocketAddr};

use clap::{Args, ValueEnum};

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_string()))
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging options.
#[derive(Args, Clone, Debug)]
pub struct TelemetryArgs {
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,clawx_gateway=debug`).
    #[arg(long = "log", env = "CLAWX_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// Log line format.
    #[arg(long, env = "CLAWX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

/// Where a server listens.
#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(long, env = "CLAWX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Database options.
#[derive(Args, Clone, Debug, Default)]
pub struct DatabaseArgs {
    /// `postgres://...` or `sqlite://path/to/file.db`. With SQLite each service keeps its own file:
    /// `{service}` in the path is replaced by the service name, otherwise `-<service>` is added
    /// before the extension. With PostgreSQL each service uses its own schema.
    #[arg(long, env = "CLAWX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Largest number of pooled connections per service.
    #[arg(long, env = "CLAWX_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Prefix of the PostgreSQL schema names (`<prefix><service>`), to run several Clawx
    /// installations in one database.
    #[arg(long, env = "CLAWX_DATABASE_SCHEMA_PREFIX", default_value = "")]
    pub database_schema_prefix: String,
}

/// Cache, rate-limiter and pub/sub options.
#[derive(Args, Clone, Debug)]
pub struct CacheArgs {
    /// `redis://host:port/db`. Without it, the cache, rate limits and pub/sub live in process
    /// memory, which is only correct for a single replica.
    #[arg(long, env = "CLAWX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel this installation uses.
    #[arg(long, env = "CLAWX_REDIS_PREFIX", default_value = "clawx")]
    pub redis_prefix: String,
}

impl Default for CacheArgs {
    fn default() -> Self {
        CacheArgs { redis_url: None, redis_prefix: "clawx".to_string() }
    }
}

/// Secrets every production role needs. `clawx dev` generates and keeps them in its data
/// directory; `clawx serve` refuses to start without them.
#[derive(Args, Clone, Debug, Default)]
pub struct SecretArgs {
    /// Key that signs and verifies the short-lived internal JWTs between the gateway and the
    /// services (at least 32 characters; the same value on every role).
    #[arg(long, env = "CLAWX_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Master key that encrypts secret key material at rest (AES-256-GCM): 64 hex characters,
    /// optionally prefixed by a key id, as `<kid>:<hex>`.
    #[arg(long, env = "CLAWX_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret>,
    /// Earlier master keys, comma-separated `<kid>:<hex>`, still accepted for decryption after a
    /// rotation.
    #[arg(long, env = "CLAWX_MASTER_KEYS_RETIRED", hide_env_values = true)]
    pub master_keys_retired: Option<Secret>,
}

impl SecretArgs {
    /// The JWT secret, or a message telling the operator how to set it.
    pub fn require_jwt_secret(&self) -> anyhow::Result<&Secret> {
        let secret = self.jwt_secret.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "CLAWX_JWT_SECRET is not set: every role needs the same internal JWT signing key \
                 (at least 32 characters; e.g. `openssl rand -hex 32`)"
            )
        })?;
        if secret.expose().len() < 32 {
            anyhow::bail!("CLAWX_JWT_SECRET is too short: use at least 32 characters");
        }
        Ok(secret)
    }
}
