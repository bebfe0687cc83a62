//! The Clawx binary's library: the whole suite in one process ([`Stack`], used by `clawx dev`
//! and the end-to-end tests), and the role runners behind `clawx serve`.

pub mod cli;
pub mod secrets;

pub use clawx_messaging::{
    agent::AgentConfig,
    dm::DEFAULT_MAX_MESSAGE_BYTES as DEFAULT_MESSAGE_MAX_BYTES,
    node::NodeLimits as XmtpNodeLimits,
    push::{PushConfig, fcm::FcmSettings},
};

use std::{net::SocketAddr, time::Duration};

use clawx_common::{Backends, DRAIN_TIMEOUT, InternalAuth, config::DatabaseArgs, crypto::Keyring, service::ServiceConfig};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Everything a whole-suite process needs.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub database: DatabaseArgs,
    pub backends: Backends,
    pub auth: InternalAuth,
    pub keyring: Keyring,
    /// Where the gateway listens (port 0 for any free port).
    pub listen: SocketAddr,
    /// Public base URL; `None` means the gateway's own address.
    pub public_url: Option<String>,
    /// How far ahead a signed request's expiry may be.
    pub signature_horizon: Duration,
    /// How long a wallet-link challenge stays valid.
    pub challenge_ttl: Duration,
    /// Bounds of the XMTP node.
    pub xmtp_node: clawx_messaging::node::NodeLimits,
    /// Largest direct message, in bytes of content.
    pub message_max_bytes: usize,
    /// Thresholds of the spam check.
    pub spam: clawx_messaging::dm::consent::SpamPolicy,
    /// The XMTP agent engine (off when it has no keyring).
    pub agents: clawx_messaging::agent::AgentConfig,
    /// Tweet verification: sources, rules and whether it is required (the gateway enforces it
    /// too).
    pub verify: clawx_verify::Settings,
    /// Push notifications.
    pub push: clawx_messaging::push::PushConfig,
    /// Badges: chain RPCs, the gated groups' re-check, partner-notification delivery.
    pub badges: clawx_groups::BadgeSettings,
}

/// The four services and the gateway running in this process, each on its own listener and
/// talking to the others over gRPC as in production.
#[derive(Debug)]
pub struct Stack {
    pub gateway_address: SocketAddr,
    pub service_addresses: Vec<(&'static str, SocketAddr)>,
    pub backends: Backends,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

async fn loopback_listener() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

impl Stack {
    /// Starts the suite and returns once every listener is bound.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        Stack::start_with(config, |_| {}).await
    }

    /// Like [`Stack::start`], adjusting the gateway configuration (limits, timeouts) first.
    pub async fn start_with(config: StackConfig, adjust_gateway: impl FnOnce(&mut clawx_gateway::Config)) -> anyhow::Result<Stack> {
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut service_addresses = Vec::new();

        let identity = loopback_listener().await?;
        let messaging = loopback_listener().await?;
        let groups = loopback_listener().await?;
        let verify = loopback_listener().await?;
        let url = |listener: &TcpListener| -> anyhow::Result<String> { Ok(format!("http://{}", listener.local_addr()?)) };
        let upstreams =
            clawx_gateway::UpstreamUrls { identity: url(&identity)?, messaging: url(&messaging)?, groups: url(&groups)?, verify: url(&verify)? };
        for (name, listener) in [("identity", &identity), ("messaging", &messaging), ("groups", &groups), ("verify", &verify)] {
            service_addresses.push((name, listener.local_addr()?));
        }

        let gateway_listener =
            TcpListener::bind(config.listen).await.map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;
        let gateway_address = gateway_listener.local_addr()?;

        let service = ServiceConfig { database: config.database.clone(), backends: config.backends.clone(), auth: config.auth.clone() };
        let identity_config = clawx_identity::Config {
            service: service.clone(),
            keyring: config.keyring.clone(),
            settings: clawx_identity::Settings {
                public_url: config.public_url.clone().unwrap_or_else(|| format!("http://{gateway_address}")),
                signature_horizon: config.signature_horizon,
                challenge_ttl: config.challenge_ttl,
            },
        };
        let messaging_config = clawx_messaging::Config {
            service: service.clone(),
            node: config.xmtp_node.clone(),
            identity_url: upstreams.identity.clone(),
            message_max_bytes: config.message_max_bytes,
            spam: config.spam.clone(),
            push: config.push.clone(),
            agents: config.agents.clone(),
        };
        let groups_config = clawx_groups::Config {
            service: service.clone(),
            settings: clawx_groups::Settings { message_max_bytes: config.message_max_bytes },
            badges: config.badges.clone(),
            identity_url: upstreams.identity.clone(),
            messaging_url: upstreams.messaging.clone(),
        };
        let verify_config = clawx_verify::Config {
            service,
            settings: config.verify.clone(),
            identity_url: upstreams.identity.clone(),
            messaging_url: upstreams.messaging.clone(),
        };
        let mut gateway_config = clawx_gateway::Config::new(upstreams, config.backends.clone(), config.auth.clone());
        gateway_config.require_verification = config.verify.require_verification;
        adjust_gateway(&mut gateway_config);

        let token = shutdown.clone();
        tasks.spawn(async move { ("identity", clawx_identity::run(identity_config, identity, token).await) });
        let token = shutdown.clone();
        tasks.spawn(async move { ("messaging", clawx_messaging::run(messaging_config, messaging, token).await) });
        let token = shutdown.clone();
        tasks.spawn(async move { ("groups", clawx_groups::run(groups_config, groups, token).await) });
        let token = shutdown.clone();
        tasks.spawn(async move { ("verify", clawx_verify::run(verify_config, verify, token).await) });
        let token = shutdown.clone();
        tasks.spawn(async move { ("gateway", clawx_gateway::run(gateway_config, gateway_listener, token).await) });

        let stack = Stack { gateway_address, service_addresses, backends: config.backends, shutdown, tasks };
        Ok(stack)
    }

    /// Waits until every service answers its status call (migrations done), or fails with the
    /// error of a role that stopped.
    pub async fn ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(finished) = self.tasks.try_join_next() {
                let (role, result) = finished?;
                return Err(result.err().unwrap_or_else(|| anyhow::anyhow!("stopped")).context(format!("{role} failed to start")));
            }
            if self.all_serving().await {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the services did not become ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn all_serving(&self) -> bool {
        for (_, address) in &self.service_addresses {
            let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{address}")).expect("valid address").connect().await else {
                return false;
            };
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if health.check(request).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Runs until `stop` fires or a role fails, then shuts every role down.
    pub async fn run_until(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            () = stop.cancelled() => Ok(()),
            Some(finished) = self.tasks.join_next() => {
                let (role, result) = finished?;
                Err(result.err().unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly")).context(format!("{role} stopped")))
            }
        };
        self.stop().await;
        outcome
    }

    /// Stops every role, giving requests in flight [`DRAIN_TIMEOUT`] to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drain = async {
            while let Some(finished) = self.tasks.join_next().await {
                if let Ok((role, Err(error))) = finished {
                    tracing::warn!(role, error = format!("{error:#}"), "role ended with an error");
                }
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("requests still in flight after the drain timeout; stopping anyway");
            self.tasks.abort_all();
        }
    }
}
