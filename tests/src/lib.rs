//! Harness for end-to-end tests: the whole suite in-process on loopback, on the embedded
//! backends (SQLite + memory) and, when configured, on PostgreSQL + Redis.

pub mod bench;

use std::time::Duration;

pub use clawx::{FcmSettings, PushConfig};
use clawx::{Stack, StackConfig};
use clawx_common::{
    Backends, InternalAuth, Secret,
    config::DatabaseArgs,
    crypto::{Keyring, generate_master_key},
    testing::{TestDatabase, redis_backends},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Push settings for tests: webhook targets on loopback allowed, a fixed master secret, fast
/// polling and retries.
pub fn test_push_config() -> PushConfig {
    PushConfig {
        allow_private_targets: true,
        webhook_secret: b"test-push-webhook-master-secret-0123456789".to_vec(),
        poll_interval: Duration::from_millis(50),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        ..PushConfig::default()
    }
}

/// Wallet-link challenges expire this fast in tests, so expiry is observable.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(3);

/// A running suite and clients for it.
pub struct TestStack {
    /// "sqlite+memory" or "postgres+redis".
    pub name: &'static str,
    pub base_url: String,
    pub http: reqwest::Client,
    pub auth: InternalAuth,
    stack: Option<Stack>,
    shutdown: CancellationToken,
    /// `None` for a replica on another stack's database.
    _database: Option<TestDatabase>,
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
        verify: clawx_verify::Settings,
        adjust: impl FnOnce(&mut clawx_gateway::Config),
        push: PushConfig,
    ) -> TestStack {
        TestStack::start_with_agents(name, database, backends, shutdown, verify, adjust, push, false).await
    }

    /// As [`TestStack::start`], with the XMTP agent engine on when `agents` (every account an
    /// XMTP client, messages carried over XMTP).
    #[allow(clippy::too_many_arguments)]
    async fn start_with_agents(
        name: &'static str,
        database: TestDatabase,
        backends: Backends,
        shutdown: CancellationToken,
        verify: clawx_verify::Settings,
        adjust: impl FnOnce(&mut clawx_gateway::Config),
        push: PushConfig,
        agents: bool,
    ) -> TestStack {
        let keyring = Keyring::new(&Secret::new(generate_master_key()), None).expect("keyring");
        let args = database.args.clone();
        TestStack::start_on(name, args, Some(database), keyring, backends, shutdown, verify, adjust, push, agents).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_on(
        name: &'static str,
        args: DatabaseArgs,
        database: Option<TestDatabase>,
        keyring: Keyring,
        backends: Backends,
        shutdown: CancellationToken,
        verify: clawx_verify::Settings,
        adjust: impl FnOnce(&mut clawx_gateway::Config),
        push: PushConfig,
        agents: bool,
    ) -> TestStack {
        install_crypto_provider();
        let auth = InternalAuth::new(&Secret::new("test-secret-test-secret-test-secret"));
        let config = StackConfig {
            database: args,
            backends,
            auth: auth.clone(),
            keyring: keyring.clone(),
            listen: "127.0.0.1:0".parse().expect("address"),
            public_url: None,
            signature_horizon: Duration::from_secs(30 * 86_400),
            challenge_ttl: CHALLENGE_TTL,
            xmtp_node: clawx::XmtpNodeLimits::default(),
            message_max_bytes: clawx::DEFAULT_MESSAGE_MAX_BYTES,
            spam: Default::default(),
            agents: clawx::AgentConfig { keyring: agents.then_some(keyring), sync_interval: Duration::from_secs(5), ..Default::default() },
            verify,
            push,
            badges: Default::default(),
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
        TestStack::start(
            "sqlite+memory",
            TestDatabase::sqlite(),
            Backends::memory(),
            CancellationToken::new(),
            Default::default(),
            adjust,
            test_push_config(),
        )
        .await
    }

    /// The suite on PostgreSQL and Redis, if `CLAWX_TEST_DATABASE_URL` and
    /// `CLAWX_TEST_REDIS_URL` are set.
    pub async fn external_with(adjust: impl FnOnce(&mut clawx_gateway::Config)) -> Option<TestStack> {
        let shutdown = CancellationToken::new();
        let database = TestDatabase::postgres()?;
        let backends = redis_backends(&shutdown)?;
        assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
        Some(TestStack::start("postgres+redis", database, backends, shutdown, Default::default(), adjust, test_push_config()).await)
    }

    /// Every configured flavour of the suite, with these verification settings.
    pub async fn all_with_verify(verify: clawx_verify::Settings, adjust: impl Fn(&mut clawx_gateway::Config)) -> Vec<TestStack> {
        let embedded = TestStack::start(
            "sqlite+memory",
            TestDatabase::sqlite(),
            Backends::memory(),
            CancellationToken::new(),
            verify.clone(),
            &adjust,
            test_push_config(),
        )
        .await;
        let mut stacks = vec![embedded];
        let shutdown = CancellationToken::new();
        if let (Some(database), Some(backends)) = (TestDatabase::postgres(), redis_backends(&shutdown)) {
            assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
            stacks.push(TestStack::start("postgres+redis", database, backends, shutdown, verify, &adjust, test_push_config()).await);
        }
        stacks
    }

    /// Every configured flavour of the suite with push settings `push` (see [`test_push_config`]).
    pub async fn all_with_push(push: PushConfig) -> Vec<TestStack> {
        let mut stacks = vec![
            TestStack::start(
                "sqlite+memory",
                TestDatabase::sqlite(),
                Backends::memory(),
                CancellationToken::new(),
                Default::default(),
                |_| {},
                push.clone(),
            )
            .await,
        ];
        let shutdown = CancellationToken::new();
        if let Some(database) = TestDatabase::postgres() {
            let backends = redis_backends(&shutdown).expect("CLAWX_TEST_REDIS_URL is set with CLAWX_TEST_DATABASE_URL");
            assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
            stacks.push(TestStack::start("postgres+redis", database, backends, shutdown, Default::default(), |_| {}, push).await);
        }
        stacks
    }

    /// Like [`TestStack::external_with`], with every service reaching PostgreSQL at
    /// `database_url` (a proxy in front of `CLAWX_TEST_DATABASE_URL`'s server, say) instead.
    pub async fn external_through(database_url: String, adjust: impl FnOnce(&mut clawx_gateway::Config)) -> Option<TestStack> {
        let shutdown = CancellationToken::new();
        let mut database = TestDatabase::postgres()?;
        database.args.database_url = Some(database_url);
        let backends = redis_backends(&shutdown)?;
        assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
        Some(TestStack::start("postgres+redis", database, backends, shutdown, Default::default(), adjust, test_push_config()).await)
    }

    /// Two whole stacks on PostgreSQL and Redis sharing the same schemas, key prefix and
    /// keyring, each with its own database pools and Redis connections, as two replicas of every
    /// role would; `None` when the backends are not configured.
    pub async fn external_replicas(adjust: impl Fn(&mut clawx_gateway::Config)) -> Option<(TestStack, TestStack)> {
        TestStack::external_replicas_with_agents(adjust, false).await
    }

    /// As [`TestStack::external_replicas`], with the XMTP agent engine on when `agents`.
    pub async fn external_replicas_with_agents(adjust: impl Fn(&mut clawx_gateway::Config), agents: bool) -> Option<(TestStack, TestStack)> {
        let database = TestDatabase::postgres()?;
        let redis_url = match std::env::var("CLAWX_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let required = std::env::var("CLAWX_TEST_REQUIRE_BACKENDS").is_ok_and(|value| value == "1");
                assert!(!required, "CLAWX_TEST_REDIS_URL is required (CLAWX_TEST_REQUIRE_BACKENDS=1)");
                return None;
            }
        };
        let prefix = format!("clawx-test-{}", database.args.database_schema_prefix);
        let keyring = Keyring::new(&Secret::new(generate_master_key()), None).expect("keyring");
        let args = database.args.clone();
        let mut replicas = Vec::new();
        for owned in [Some(database), None] {
            let shutdown = CancellationToken::new();
            let backends = Backends::redis(&redis_url, &prefix, shutdown.clone()).expect("CLAWX_TEST_REDIS_URL is valid");
            assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
            replicas.push(
                TestStack::start_on(
                    "postgres+redis",
                    args.clone(),
                    owned,
                    keyring.clone(),
                    backends,
                    shutdown,
                    Default::default(),
                    &adjust,
                    test_push_config(),
                    agents,
                )
                .await,
            );
        }
        let second = replicas.pop().expect("two replicas");
        let first = replicas.pop().expect("two replicas");
        Some((first, second))
    }

    /// Every configured flavour of the suite, with the XMTP agent engine on.
    pub async fn all_with_agents() -> Vec<TestStack> {
        let embedded = TestStack::start_with_agents(
            "sqlite+memory",
            TestDatabase::sqlite(),
            Backends::memory(),
            CancellationToken::new(),
            Default::default(),
            |_| {},
            test_push_config(),
            true,
        )
        .await;
        let mut stacks = vec![embedded];
        let shutdown = CancellationToken::new();
        if let (Some(database), Some(backends)) = (TestDatabase::postgres(), redis_backends(&shutdown)) {
            assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
            stacks.push(
                TestStack::start_with_agents("postgres+redis", database, backends, shutdown, Default::default(), |_| {}, test_push_config(), true)
                    .await,
            );
        }
        stacks
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

/// A REST call's status, headers and JSON body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    /// Asserts an error reply: status, machine code, a human message, and the family shape.
    pub fn expect_error(&self, status: u16, code: &str, context: &str) -> &Reply {
        assert_eq!(self.status, status, "{context}: {}", self.body);
        assert_eq!(self.body["code"], code, "{context}: {}", self.body);
        assert!(self.body["error"].as_str().is_some_and(|text| !text.is_empty()), "{context}: {}", self.body);
        self
    }

    pub fn expect_ok(&self, context: &str) -> &serde_json::Value {
        assert_eq!(self.status, 200, "{context}: {}", self.body);
        &self.body
    }
}

/// Credentials for a REST call.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Key(String),
    Bearer(String),
    Signed { domain: String, expires: String, signature: String },
}

/// Sends a request to `url` with optional credentials and JSON body (any stack's gateway).
pub async fn send(http: &reqwest::Client, method: reqwest::Method, url: String, auth: &Auth, body: Option<serde_json::Value>) -> Reply {
    let mut request = http.request(method, url);
    request = match auth {
        Auth::None => request,
        Auth::Key(key) => request.header("x-api-key", key),
        Auth::Bearer(key) => request.header("authorization", format!("Bearer {key}")),
        Auth::Signed { domain, expires, signature } => {
            request.header("x-auth-domain", domain).header("x-auth-expires", expires).header("x-auth-signature", signature)
        }
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("gateway reachable");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply { status, headers, body }
}

impl TestStack {
    /// Sends a request with optional credentials and JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str, auth: &Auth, body: Option<serde_json::Value>) -> Reply {
        send(&self.http, method, self.url(path), auth, body).await
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.call(reqwest::Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: serde_json::Value) -> Reply {
        self.call(reqwest::Method::POST, path, auth, Some(body)).await
    }

    /// Creates an account; returns its API key and the create reply's body.
    pub async fn create_account(&self) -> (String, serde_json::Value) {
        let reply = self.call(reqwest::Method::POST, "/account/create", &Auth::None, None).await;
        let body = reply.expect_ok("create account").clone();
        (body["api_key"].as_str().expect("api_key").to_string(), body)
    }

    /// Creates an account and registers `handle`; returns its API key.
    pub async fn registered(&self, handle: &str) -> String {
        let (key, _) = self.create_account().await;
        let reply =
            self.post("/account/register", &Auth::Key(key.clone()), serde_json::json!({"handle": handle, "name": format!("{handle} name")})).await;
        reply.expect_ok("register");
        key
    }
}

impl TestStack {
    /// Starts another gateway replica in front of the same services and backends; returns its
    /// base URL.
    pub async fn second_gateway(&self) -> String {
        let stack = self.stack.as_ref().expect("running");
        let url = |name: &str| self.service_address(name);
        let upstreams =
            clawx_gateway::UpstreamUrls { identity: url("identity"), messaging: url("messaging"), groups: url("groups"), verify: url("verify") };
        let config = clawx_gateway::Config::new(upstreams, stack.backends.clone(), self.auth.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { clawx_gateway::run(config, listener, shutdown).await.expect("second gateway") });
        format!("http://{address}")
    }
}
