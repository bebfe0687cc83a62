//! The Clawx messaging service. It also serves an XMTP v3-compatible node
//! (`xmtp.mls.api.v1.MlsApi`, `xmtp.identity.api.v1.IdentityApi`) that unmodified XMTP clients
//! use as their network.

mod grpc;
pub mod node;

use std::sync::Arc;

use clawx_common::{Backends, InternalAuth, ServiceContext, config::DatabaseArgs, storage::Migrations};
use clawx_proto::{
    messaging::messaging_service_server::MessagingServiceServer,
    xmtp::{identity::api::v1::identity_api_server::IdentityApiServer, mls::api::v1::mls_api_server::MlsApiServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "messaging";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_xmtp_node", 3 => "0003_node_bounds");

/// XMTP messages can be large (group commits with many members, key packages with post-quantum
/// keys); this bounds one request.
const MAX_XMTP_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// What the messaging service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: DatabaseArgs,
    pub backends: Backends,
    pub auth: InternalAuth,
    /// Bounds of the XMTP node.
    pub node: node::NodeLimits,
}

/// Serves the messaging service and the XMTP node on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let context = ServiceContext::open(SERVICE, &config.database, &MIGRATIONS, config.backends.clone(), config.auth.clone()).await?;
    let server = MessagingServiceServer::new(grpc::MessagingGrpc::new(context.clone()))
        .max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES);
    let node = Arc::new(node::Node::new(node::store::for_database(&context.database), config.backends.pubsub.clone(), config.node.clone()));
    let xmtp = node::grpc::XmtpNode::new(node, shutdown.clone());
    let mls = MlsApiServer::new(xmtp.clone())
        .max_decoding_message_size(MAX_XMTP_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_XMTP_MESSAGE_BYTES);
    let identity = IdentityApiServer::new(xmtp).max_decoding_message_size(MAX_XMTP_MESSAGE_BYTES).max_encoding_message_size(MAX_XMTP_MESSAGE_BYTES);
    let router = clawx_common::grpc::base_router(&[
        clawx_proto::messaging::messaging_service_server::SERVICE_NAME,
        clawx_proto::xmtp::mls::api::v1::mls_api_server::SERVICE_NAME,
        clawx_proto::xmtp::identity::api::v1::identity_api_server::SERVICE_NAME,
    ])
    .await?
    .add_service(InterceptedService::new(server, config.auth.interceptor(SERVICE)))
    .add_service(mls)
    .add_service(identity);
    tracing::info!(service = SERVICE, address = %listener.local_addr()?, "serving (with the XMTP node)");
    let result = clawx_common::grpc::serve(router, listener, shutdown).await;
    context.database.close().await;
    result
}
