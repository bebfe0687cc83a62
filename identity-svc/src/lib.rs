//! The Clawx identity service: accounts with server-held wallets and XMTP identities, API keys,
//! handles and profiles, the user directory, linked wallets, domains and signed-expiry auth.

pub mod domain;
mod grpc;
pub mod store;

use clawx_common::{Backends, InternalAuth, ServiceContext, config::DatabaseArgs, crypto::Keyring, storage::Migrations};
use clawx_proto::identity::identity_service_server::IdentityServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

pub use domain::Settings;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "identity";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_accounts");

/// What the identity service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: DatabaseArgs,
    pub backends: Backends,
    pub auth: InternalAuth,
    /// Encrypts the server-held wallet keys.
    pub keyring: Keyring,
    pub settings: Settings,
}

/// Serves the identity service on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let context = ServiceContext::open(SERVICE, &config.database, &MIGRATIONS, config.backends.clone(), config.auth.clone()).await?;
    let identity = domain::Identity::new(store::for_database(&context.database), config.keyring, config.backends, config.settings);
    let server = IdentityServiceServer::new(grpc::IdentityGrpc::new(context.clone(), identity))
        .max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES);
    let router = clawx_common::grpc::base_router(&[clawx_proto::identity::identity_service_server::SERVICE_NAME])
        .await?
        .add_service(InterceptedService::new(server, config.auth.interceptor(SERVICE)));
    tracing::info!(service = SERVICE, address = %listener.local_addr()?, "serving");
    let result = clawx_common::grpc::serve(router, listener, shutdown).await;
    context.database.close().await;
    result
}
