//! The Clawx messaging service. It also serves an XMTP v3-compatible node
//! (`xmtp.mls.api.v1.MlsApi`, `xmtp.identity.api.v1.IdentityApi`) that unmodified XMTP clients
//! use as their network.

pub mod agent;
pub mod dm;
mod groups;
mod grpc;
pub mod node;
mod purge;
pub mod push;

use std::sync::Arc;

use clawx_common::{service::ServiceConfig, storage::Migrations};
use clawx_proto::{
    messaging::messaging_service_server::MessagingServiceServer,
    xmtp::{identity::api::v1::identity_api_server::IdentityApiServer, mls::api::v1::mls_api_server::MlsApiServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The service name: its JWT audience, PostgreSQL schema and SQLite file name.
pub const SERVICE: &str = "messaging";

/// The service's migrations, per dialect.
pub const MIGRATIONS: Migrations = clawx_common::migrations!(1 => "0001_meta", 2 => "0002_xmtp_node", 3 => "0003_node_bounds", 4 => "0004_direct_messages", 5 => "0005_consent_spam", 6 => "0006_push", 7 => "0007_xmtp_agents", 8 => "0008_agent_delivery", 9 => "0009_content_type");

/// XMTP messages can be large (group commits with many members, key packages with post-quantum
/// keys); this bounds one request.
const MAX_XMTP_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// What the messaging service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// Bounds of the XMTP node.
    pub node: node::NodeLimits,
    /// Where the identity service listens (accounts, handles and wallets are resolved there).
    pub identity_url: String,
    /// Largest direct message, in bytes of content.
    pub message_max_bytes: usize,
    /// Thresholds of the spam check.
    pub spam: dm::consent::SpamPolicy,
    /// Push notifications: providers, retries, bounds.
    pub push: push::PushConfig,
    /// The XMTP agent engine (off without a keyring).
    pub agents: agent::AgentConfig,
}

/// Serves the messaging service and the XMTP node on `listener` until `shutdown` fires. The
/// node's servers take no internal token: unmodified XMTP clients call them through the gateway.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Config { service, node: limits, identity_url, message_max_bytes, spam, push: push_config, agents } = config;
    let identity = dm::identity::Identity::connect_lazy(&identity_url, service.auth.clone())?;
    // The engine talks to this service's own node over its listener unless told otherwise.
    let own_node = listener.local_addr().map(|address| format!("http://127.0.0.1:{}", address.port()))?;
    let network = match &agents.keyring {
        Some(_) => Some(
            agent::network::XmtpNetwork::connect_lazy(agents.api_url.as_deref().unwrap_or(&own_node)).map_err(|error| anyhow::anyhow!("{error}"))?,
        ),
        None => None,
    };
    let mut push_config = push_config.bounded();
    if push_config.webhook_secret.is_empty() {
        // Secrets derived from a per-process key change on restart and differ between
        // replicas: fine for a trial, not for production.
        tracing::warn!("CLAWX_PUSH_WEBHOOK_SECRET is not set: webhook signing secrets will change when this process restarts");
        push_config.webhook_secret = rand::random::<[u8; 32]>().to_vec();
    }
    let providers = push::Providers::from_config(&push_config)?;
    let node_shutdown = shutdown.clone();
    let messaging_shutdown = shutdown.clone();
    let worker_shutdown = shutdown.clone();
    let identity_shutdown = shutdown.clone();
    let agents_shutdown = shutdown.clone();
    clawx_common::service::serve(SERVICE, &MIGRATIONS, service, listener, shutdown, move |context, servers| {
        identity.forget_announced(&context.backends.pubsub, identity_shutdown);
        let mut messages = dm::DirectMessages::new(
            dm::store::for_database(&context.database),
            context.backends.pubsub.clone(),
            identity.clone(),
            message_max_bytes.max(1),
            spam.bounded(),
        );
        if let Some(network) = &network {
            messages = messages.with_xmtp(network.clone());
        }
        let messages = Arc::new(messages);
        let delivery = match (&agents.keyring, &network) {
            (Some(keyring), Some(network)) => {
                let engine = agent::Engine::new(agent::store::for_database(&context.database), keyring.clone(), identity.clone(), network.clone());
                let operations = (context.database.max_connections() as usize / 2).saturating_sub(1);
                let delivery = agent::delivery::Delivery::new(engine, Arc::clone(&messages), agents.clone(), operations);
                delivery.start(&context.backends.pubsub, agents_shutdown);
                Some(delivery)
            }
            _ => None,
        };
        let push_store = push::store::for_database(&context.database);
        let worker = push::worker::Worker::new(Arc::clone(&push_store), providers.clone(), Some(identity.clone()), push_config.clone());
        tokio::spawn(worker.run(worker_shutdown));
        let push = Arc::new(push::Push::new(push_store, identity, providers, push_config));
        let messaging = MessagingServiceServer::new(grpc::MessagingGrpc::new(context.clone(), messages, push, delivery, messaging_shutdown));
        servers.authenticated(messaging.max_decoding_message_size(clawx_common::grpc::MAX_MESSAGE_BYTES));
        let node = Arc::new(node::Node::new(node::store::for_database(&context.database), context.backends.pubsub.clone(), limits));
        let xmtp = node::grpc::XmtpNode::new(node, node_shutdown);
        servers.open(
            MlsApiServer::new(xmtp.clone()).max_decoding_message_size(MAX_XMTP_MESSAGE_BYTES).max_encoding_message_size(MAX_XMTP_MESSAGE_BYTES),
        );
        servers
            .open(IdentityApiServer::new(xmtp).max_decoding_message_size(MAX_XMTP_MESSAGE_BYTES).max_encoding_message_size(MAX_XMTP_MESSAGE_BYTES));
        Ok(())
    })
    .await
}
