//! Harness for end-to-end tests: the whole suite in-process on loopback, on the embedded
//! backends (SQLite + memory) and, when configured, on PostgreSQL + Redis.

use std::time::Duration;

use clawx::{Stack, StackConfig};
use clawx_common::{
    Backends, InternalAuth, Secret,
    crypto::{Keyring, generate_master_key},
    testing::{TestDatabase, redis_backends},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A running suite and clients for it.
pub struct TestStack {
    /// "sqlite+memory" or "postgres+redis".
    pub name: &'static str,
    pub base_url: String,
    pub http: reqwest::Client,
    pub auth: InternalAuth,
    stack: Option<Stack>,
    shutdown: CancellationToken,
    _database: TestDatabase,
}

fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestStack {
    async fn start(
        name: &'static str,
        database: TestDatabase,
        backends: Backends,
        shutdown: CancellationToken,
        adjust: impl FnOnce(&mut clawx_gateway::Config),
    ) -> TestStack {
        install_crypto_provider();
        let auth = InternalAuth::new(&Secret::new("test-secret-test-secret-test-secret"));
        let config = StackConfig {
            database: database.args.clone(),
            backends,
            auth: auth.clone(),
            keyring: Keyring::new(&Secret::new(generate_master_key()), None).expect("keyring"),
            listen: "127.0.0.1:0".parse().expect("address"),
            public_url: None,
            signature_horizon: Duration::from_secs(30 * 86_400),
        };
        let mut stack = Stack::start_with(config, adjust).await.expect("stack starts");
        stack.ready(Duration::from_secs(60)).await.expect("stack ready");
        let base_url = format!("http://{}", stack.gateway_address);
        TestStack { name, base_url, http: reqwest::Client::new(), auth, stack: Some(stack), shutdown, _database: database }
    }

    /// The suite on SQLite files and in-memory backends.
    pub async fn embedded() -> TestStack {
        TestStack::embedded_with(|_| {}).await
    }

    pub async fn embedded_with(adjust: impl FnOnce(&mut clawx_gateway::Config)) -> TestStack {
        TestStack::start("sqlite+memory", TestDatabase::sqlite(), Backends::memory(), CancellationToken::new(), adjust).await
    }

    /// The suite on PostgreSQL and Redis, if `CLAWX_TEST_DATABASE_URL` and
    /// `CLAWX_TEST_REDIS_URL` are set.
    pub async fn external_with(adjust: impl FnOnce(&mut clawx_gateway::Config)) -> Option<TestStack> {
        let shutdown = CancellationToken::new();
        let database = TestDatabase::postgres()?;
        let backends = redis_backends(&shutdown)?;
        assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
        Some(TestStack::start("postgres+redis", database, backends, shutdown, adjust).await)
    }

    /// Every configured flavour of the suite.
    pub async fn all() -> Vec<TestStack> {
        TestStack::all_with(|_| {}).await
    }

    pub async fn all_with(adjust: impl Fn(&mut clawx_gateway::Config)) -> Vec<TestStack> {
        let mut stacks = vec![TestStack::embedded_with(&adjust).await];
        stacks.extend(TestStack::external_with(&adjust).await);
        stacks
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A gRPC channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.base_url.clone()).expect("url").connect().await.expect("gateway reachable")
    }

    /// Addresses of the services behind the gateway.
    pub fn service_address(&self, name: &str) -> String {
        let stack = self.stack.as_ref().expect("running");
        let (_, address) = stack.service_addresses.iter().find(|(service, _)| *service == name).expect("known service");
        format!("http://{address}")
    }

    pub async fn stop(mut self) {
        if let Some(stack) = self.stack.take() {
            stack.stop().await;
        }
        self.shutdown.cancel();
    }
}
