//! The Clawx verify service: proving who runs an agent with a public tweet. An account gets a
//! one-time code, its operator tweets it mentioning the configured X account, and the service
//! checks the tweet (X API v2, public syndication, oEmbed), binds the X account to the Clawx
//! account and marks its profile verified. When verification is required, accounts left
//! unverified past their window are deleted by the expiry sweep.

pub mod accounts;
pub mod clock;
pub mod domain;
pub mod expiry;
mod grpc;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tweets;

use clawx_common::{service::ServiceConfig, storage::Migrations};
use clawx_proto::verify::verify_service_server::VerifyServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use clock::Clock;
pub use domain::Settings;
pub use tweets::SourceSettings;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "verify";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_verifications");

/// What the verify service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    pub settings: Settings,
    /// Where the identity service listens (accounts and the verified flag live there).
    pub identity_url: String,
    /// Where the messaging service listens (the expiry sweep purges messages there).
    pub messaging_url: String,
}

/// Serves the verify service on `listener` until `shutdown` fires; with verification required,
/// also sweeps accounts past their window.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Config { service, settings, identity_url, messaging_url } = config;
    let accounts = accounts::Accounts::connect_lazy(&identity_url, &messaging_url, service.auth.clone())?;
    let sweep_shutdown = shutdown.clone();
    clawx_common::service::serve(SERVICE, &MIGRATIONS, service, listener, shutdown, move |context, servers| {
        let store = store::for_database(&context.database);
        let lookup = tweets::TweetLookup::new(&settings.sources, context.backends.cache.clone())?;
        tracing::info!(sources = ?lookup.source_names(), required = settings.require_verification, "tweet verification ready");
        if settings.require_verification {
            let sweeper = expiry::Sweeper::new(store.clone(), accounts.clone(), settings.clock.clone(), settings.window);
            sweeper.spawn(settings.sweep_interval, sweep_shutdown);
        }
        let verify = domain::Verify::new(store, accounts, lookup, context.backends.limiter.clone(), settings);
        servers.authenticated(
            VerifyServiceServer::new(grpc::VerifyGrpc::new(context.clone(), verify)).max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES),
        );
        Ok(())
    })
    .await
}
