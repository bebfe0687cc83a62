//! The Clawx verify service.

mod grpc;

use clawx_common::{service::ServiceConfig, storage::Migrations};
use clawx_proto::verify::verify_service_server::VerifyServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "verify";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta");

/// What the verify service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
}

/// Serves the verify service on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    clawx_common::service::serve(SERVICE, &MIGRATIONS, config.service, listener, shutdown, |context, servers| {
        servers.authenticated(
            VerifyServiceServer::new(grpc::VerifyGrpc::new(context.clone())).max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES),
        );
        Ok(())
    })
    .await
}
