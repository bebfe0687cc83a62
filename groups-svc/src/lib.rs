//! The Clawx groups service: open groups any account with a handle creates and any account
//! joins, and their chat, whose new messages reach every member's message stream through the
//! messaging service.

pub mod accounts;
pub mod domain;
mod grpc;
pub mod store;

use std::sync::Arc;

use clawx_common::{service::ServiceConfig, storage::Migrations};
use clawx_proto::groups::groups_service_server::GroupsServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use domain::Settings;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "groups";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_groups");

/// What the groups service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    pub settings: Settings,
    /// Where the identity service listens (owners', members' and senders' handles, names and
    /// wallets are read there).
    pub identity_url: String,
    /// Where the messaging service listens (new group messages go to members' streams there).
    pub messaging_url: String,
}

/// Serves the groups service on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Config { service, settings, identity_url, messaging_url } = config;
    let accounts = accounts::Accounts::connect_lazy(&identity_url, &messaging_url, service.auth.clone())?;
    let settings = Settings { message_max_bytes: settings.message_max_bytes.max(1) };
    clawx_common::service::serve(SERVICE, &MIGRATIONS, service, listener, shutdown, move |context, servers| {
        let groups = Arc::new(domain::Groups::new(store::for_database(&context.database), accounts, settings));
        servers.authenticated(
            GroupsServiceServer::new(grpc::GroupsGrpc::new(context.clone(), groups)).max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES),
        );
        Ok(())
    })
    .await
}
