//! The shared kit of every Clawx role: configuration blocks, the error-code table, telemetry,
//! internal JWTs, storage, cache / rate limiter / pub-sub, gRPC helpers and shutdown.

pub mod auth;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod error;
pub mod grpc;
pub mod pubsub;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use crate::{
    auth::{AuthMethod, InternalAuth, Principal},
    cache::{Cache, RateLimiter},
    config::Secret,
    error::{ErrorCode, ServiceError, ServiceResult},
    pubsub::PubSub,
    storage::Database,
};

/// The Clawx version, as reported by status endpoints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Cache, rate limiter and pub/sub of one process: all in memory, or all on one Redis.
#[derive(Clone, Debug)]
pub struct Backends {
    pub cache: Cache,
    pub limiter: RateLimiter,
    pub pubsub: PubSub,
}

impl Backends {
    /// In-process backends, correct for a single replica (`clawx dev`, tests).
    pub fn memory() -> Backends {
        Backends { cache: Cache::memory(), limiter: RateLimiter::memory(), pubsub: PubSub::memory() }
    }

    /// Redis-backed backends, shared by every replica; the pub/sub listener runs until
    /// `shutdown`.
    pub fn redis(url: &str, prefix: &str, shutdown: CancellationToken) -> anyhow::Result<Backends> {
        let handle = cache::RedisHandle::open(url, prefix)?;
        Ok(Backends { cache: Cache::Redis(handle.clone()), limiter: RateLimiter::redis(handle.clone()), pubsub: PubSub::redis(handle, shutdown) })
    }

    /// Redis when `CLAWX_REDIS_URL` is set, memory otherwise.
    pub fn from_args(args: &config::CacheArgs, shutdown: CancellationToken) -> anyhow::Result<Backends> {
        match &args.redis_url {
            Some(url) => Backends::redis(url, &args.redis_prefix, shutdown),
            None => Ok(Backends::memory()),
        }
    }
}

/// What every service holds: its name, database, backends and token verifier.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    pub service: &'static str,
    pub database: Database,
    pub backends: Backends,
    pub auth: InternalAuth,
    pub started: Instant,
}

impl ServiceContext {
    /// The service's status, from live checks of its database and cache.
    pub async fn status(&self) -> clawx_proto::common::ServiceStatus {
        let (database_ok, cache_ok) = tokio::join!(self.database.ping(), self.backends.cache.ping());
        clawx_proto::common::ServiceStatus {
            service: self.service.to_string(),
            version: VERSION.to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            database_backend: self.database.backend().name().to_string(),
            database_ok,
            cache_backend: self.backends.cache.backend_name().to_string(),
            cache_ok,
        }
    }
}

/// How long servers get to finish requests in flight after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl ServiceContext {
    /// Connects and migrates the database of `service` and assembles its context.
    pub async fn open(
        service: &'static str,
        database: &config::DatabaseArgs,
        migrations: &storage::Migrations,
        backends: Backends,
        auth: InternalAuth,
    ) -> anyhow::Result<ServiceContext> {
        let database = Database::connect(database, service).await?;
        database.migrate(migrations).await.map_err(|error| anyhow::anyhow!("{service} migrations failed: {error}"))?;
        Ok(ServiceContext { service, database, backends, auth, started: Instant::now() })
    }
}
