//! The Clawx messaging service.

mod grpc;
pub mod node;

use clawx_common::{Backends, InternalAuth, ServiceContext, config::DatabaseArgs, storage::Migrations};
use clawx_proto::messaging::messaging_service_server::MessagingServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "messaging";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta");

/// What the messaging service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: DatabaseArgs,
    pub backends: Backends,
    pub auth: InternalAuth,
}

/// Serves the messaging service on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let context = ServiceContext::open(SERVICE, &config.database, &MIGRATIONS, config.backends, config.auth.clone()).await?;
    let server = MessagingServiceServer::new(grpc::MessagingGrpc::new(context.clone()))
        .max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES);
    let router = clawx_common::grpc::base_router(&[clawx_proto::messaging::messaging_service_server::SERVICE_NAME])
        .await?
        .add_service(InterceptedService::new(server, config.auth.interceptor(SERVICE)));
    tracing::info!(service = SERVICE, address = %listener.local_addr()?, "serving");
    let result = clawx_common::grpc::serve(router, listener, shutdown).await;
    context.database.close().await;
    result
}
