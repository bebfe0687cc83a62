//! The Clawx identity service: accounts with server-held wallets and XMTP identities, API keys,
//! handles and profiles, the user directory, linked wallets, domains and signed-expiry auth.

pub mod domain;
mod grpc;
pub mod store;

use clawx_common::{crypto::Keyring, service::ServiceConfig, storage::Migrations};
use clawx_proto::identity::identity_service_server::IdentityServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use domain::Settings;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "identity";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_accounts", 3 => "0003_unverified_accounts");

/// What the identity service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// Encrypts the server-held wallet keys.
    pub keyring: Keyring,
    pub settings: Settings,
}

/// Serves the identity service on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Config { service, keyring, settings } = config;
    clawx_common::service::serve(SERVICE, &MIGRATIONS, service, listener, shutdown, |context, servers| {
        let identity = domain::Identity::new(store::for_database(&context.database), keyring, context.backends.clone(), settings);
        let server = IdentityServiceServer::new(grpc::IdentityGrpc::new(context.clone(), identity));
        servers.authenticated(server.max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES));
        Ok(())
    })
    .await
}
