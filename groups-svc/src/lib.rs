//! The Clawx groups service: open groups any account with a handle creates and any account
//! joins, and their chat, whose new messages reach every member's message stream through the
//! messaging service; badges and token-gated groups checked on chain, and partner notifications
//! to their members (`badges`).

pub mod accounts;
pub mod badges;
pub mod domain;
mod grpc;
pub mod store;

use std::sync::Arc;

use clawx_common::{service::ServiceConfig, storage::Migrations};
use clawx_proto::groups::{badges_service_server::BadgesServiceServer, groups_service_server::GroupsServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use badges::BadgeSettings;
pub use domain::Settings;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "groups";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_groups", 3 => "0003_badges");

/// What the groups service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// Open groups and their chat.
    pub settings: Settings,
    /// Chains, the re-check and partner-notification delivery.
    pub badges: BadgeSettings,
    /// Where the identity service listens (owners', members' and senders' handles, names and
    /// wallets; who owns a domain).
    pub identity_url: String,
    /// Where the messaging service listens (new group messages go to members' streams there;
    /// partner notifications are direct messages).
    pub messaging_url: String,
}

/// Serves the groups service on `listener` until `shutdown` fires, with the gated groups'
/// re-check and the partner-notification worker running beside it.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Config { service, settings, badges: badge_settings, identity_url, messaging_url } = config;
    let accounts = accounts::Accounts::connect_lazy(&identity_url, &messaging_url, service.auth.clone())?;
    let settings = Settings { message_max_bytes: settings.message_max_bytes.max(1) };
    let services = accounts.clone();
    let chains = badges::chain::Chains::new(&badge_settings.chains, badge_settings.chain_timeout, badge_settings.balance_cache_ttl)?;
    let workers_shutdown = shutdown.clone();
    clawx_common::service::serve(SERVICE, &MIGRATIONS, service, listener, shutdown, move |context, servers| {
        let groups = Arc::new(domain::Groups::new(store::for_database(&context.database), accounts, settings));
        servers.authenticated(
            GroupsServiceServer::new(grpc::GroupsGrpc::new(context.clone(), groups)).max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES),
        );
        let store = badges::store::for_database(&context.database);
        tracing::info!(chains = ?badge_settings.chains.keys().collect::<Vec<_>>(), "badges ready");
        badges::recheck::Rechecker::new(store.clone(), chains.clone(), badge_settings.recheck_interval, badge_settings.recheck_batch)
            .spawn(workers_shutdown.clone());
        badges::notify::Deliverer::new(store.clone(), services.clone(), badge_settings.clone()).spawn(workers_shutdown);
        let service = badges::Badges::new(store, chains, services);
        servers.authenticated(
            BadgesServiceServer::new(badges::grpc::BadgesGrpc::new(service)).max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES),
        );
        Ok(())
    })
    .await
}
