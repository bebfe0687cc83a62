//! Badges, token-gated groups and partner notifications through the gateway, on a real local
//! chain: anvil (npm `@foundry-rs/anvil`, installed into `tests/contracts/node_modules` by
//! `scripts/test.sh`) runs the ERC-20, ERC-721 and ERC-1155 contracts of
//! `tests/contracts/Tokens.sol`, compiled with solc-js into `tests/contracts/build/`, deployed
//! and driven with alloy. Every test runs on SQLite + memory and on PostgreSQL + Redis.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, Bytes, U256};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, sol};
use clawx::{Stack, StackConfig};
use clawx_common::{
    AuthMethod, Backends, InternalAuth, Principal, Secret,
    config::DatabaseArgs,
    crypto::{Keyring, generate_master_key},
    testing::{TestDatabase, redis_backends},
    time::now_ms,
};
use clawx_groups::BadgeSettings;
use clawx_proto::messaging::{SendDirectMessageRequest, messaging_service_client::MessagingServiceClient, send_direct_message_request::To};
use clawx_tests::{Auth, Reply};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

sol! {
    function mint(address to, uint256 amount) external;
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 tokenId) external;
}

mod erc1155 {
    alloy_sol_types::sol! {
        function mint(address to, uint256 id, uint256 amount) external;
    }
}

/// anvil's first three default accounts (funded with 10,000 ETH each).
const ANVIL_KEYS: [&str; 3] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];
const CHAIN_ID: u64 = 31337;

fn contracts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

/// The anvil binary: `CLAWX_TEST_ANVIL`, or the platform package npm installed under
/// `tests/contracts/node_modules`. `None` (the test is skipped) unless the backends are required.
fn anvil_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CLAWX_TEST_ANVIL")
        && !path.is_empty()
    {
        return Some(PathBuf::from(path));
    }
    let packages = contracts_dir().join("node_modules/@foundry-rs");
    let found = std::fs::read_dir(&packages).ok().and_then(|entries| {
        entries.filter_map(Result::ok).map(|entry| entry.path().join("bin/anvil")).find(|candidate| {
            candidate.is_file() && candidate.parent().and_then(|bin| bin.parent()).is_some_and(|package| package.to_string_lossy().contains("anvil-"))
        })
    });
    if found.is_none() {
        let required = std::env::var("CLAWX_TEST_REQUIRE_BACKENDS").is_ok_and(|value| value == "1");
        assert!(!required, "anvil is missing: run `npm ci` in tests/contracts (scripts/test.sh does), or set CLAWX_TEST_ANVIL");
        eprintln!("skipped: anvil is not installed (npm ci in tests/contracts)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running anvil, stopped on drop.
struct Anvil {
    child: Option<Child>,
    url: String,
}

impl Anvil {
    async fn start(binary: &PathBuf) -> Anvil {
        let port = free_port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", &CHAIN_ID.to_string(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start anvil at {}: {error}", binary.display()));
        let anvil = Anvil { child: Some(child), url: format!("http://127.0.0.1:{port}") };
        let provider = ProviderBuilder::new().connect_http(anvil.url.parse().unwrap());
        for _ in 0..200 {
            if provider.get_chain_id().await.is_ok() {
                return anvil;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("anvil did not answer on {}", anvil.url);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signer(index: usize) -> PrivateKeySigner {
    ANVIL_KEYS[index].parse().unwrap()
}

fn bytecode(contract: &str) -> Bytes {
    let path = contracts_dir().join(format!("build/Tokens_sol_{contract}.bin"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error} (npm run build in tests/contracts)", path.display()));
    Bytes::from(hex::decode(text.trim()).unwrap())
}

/// Sends a transaction from anvil account `from` (signed here) and waits for its receipt;
/// the deployed contract's address when it deploys one.
async fn transact(url: &str, from: usize, request: TransactionRequest) -> Option<Address> {
    let provider = ProviderBuilder::new().wallet(signer(from)).connect_http(url.parse().unwrap());
    let receipt = provider.send_transaction(request).await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status(), "transaction reverted");
    receipt.contract_address
}

async fn deploy(url: &str, contract: &str) -> Address {
    transact(url, 0, TransactionRequest::default().with_deploy_code(bytecode(contract))).await.expect("a contract address")
}

async fn call(url: &str, from: usize, contract: Address, input: Vec<u8>) {
    transact(url, from, TransactionRequest::default().with_to(contract).with_input(Bytes::from(input))).await;
}

/// The three token contracts on a fresh anvil.
struct Tokens {
    erc20: Address,
    erc721: Address,
    erc1155: Address,
}

async fn deploy_tokens(url: &str) -> Tokens {
    Tokens { erc20: deploy(url, "TestERC20").await, erc721: deploy(url, "TestERC721").await, erc1155: deploy(url, "TestERC1155").await }
}

fn sign(wallet: &PrivateKeySigner, text: &str) -> String {
    format!("0x{}", hex::encode(wallet.sign_message_sync(text.as_bytes()).unwrap().as_bytes()))
}

fn lower(address: Address) -> String {
    format!("{address:#x}")
}

/// The whole suite with badge settings of its own, restartable on the same database.
struct BadgeStack {
    name: &'static str,
    base_url: String,
    http: reqwest::Client,
    auth: InternalAuth,
    stack: Option<Stack>,
    args: DatabaseArgs,
    backends: Backends,
    keyring: Keyring,
    _database: Option<TestDatabase>,
    _shutdown: CancellationToken,
}

fn test_auth() -> InternalAuth {
    InternalAuth::new(&Secret::new("test-secret-test-secret-test-secret"))
}

impl BadgeStack {
    /// Every configured flavour of the suite with these badge settings.
    async fn all(badges: &BadgeSettings) -> Vec<BadgeStack> {
        let mut stacks = vec![BadgeStack::start("sqlite+memory", TestDatabase::sqlite(), Backends::memory(), CancellationToken::new(), badges).await];
        let shutdown = CancellationToken::new();
        if let Some(database) = TestDatabase::postgres() {
            let backends = redis_backends(&shutdown).expect("CLAWX_TEST_REDIS_URL is set with CLAWX_TEST_DATABASE_URL");
            assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await, "redis pub/sub connects");
            stacks.push(BadgeStack::start("postgres+redis", database, backends, shutdown, badges).await);
        }
        stacks
    }

    async fn start(
        name: &'static str,
        database: TestDatabase,
        backends: Backends,
        shutdown: CancellationToken,
        badges: &BadgeSettings,
    ) -> BadgeStack {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let keyring = Keyring::new(&Secret::new(generate_master_key()), None).expect("keyring");
        let args = database.args.clone();
        let mut stack = BadgeStack {
            name,
            base_url: String::new(),
            http: reqwest::Client::new(),
            auth: test_auth(),
            stack: None,
            args,
            backends,
            keyring,
            _database: Some(database),
            _shutdown: shutdown,
        };
        stack.launch(badges).await;
        stack
    }

    async fn launch(&mut self, badges: &BadgeSettings) {
        let config = StackConfig {
            database: self.args.clone(),
            backends: self.backends.clone(),
            auth: self.auth.clone(),
            keyring: self.keyring.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: None,
            signature_horizon: Duration::from_secs(30 * 86_400),
            challenge_ttl: Duration::from_secs(300),
            xmtp_node: clawx::XmtpNodeLimits::default(),
            message_max_bytes: clawx::DEFAULT_MESSAGE_MAX_BYTES,
            spam: Default::default(),
            agents: Default::default(),
            verify: Default::default(),
            push: clawx_tests::test_push_config(),
            badges: badges.clone(),
        };
        let mut stack = Stack::start(config).await.expect("stack starts");
        stack.ready(Duration::from_secs(60)).await.expect("stack ready");
        self.base_url = format!("http://{}", stack.gateway_address);
        self.stack = Some(stack);
    }

    /// Stops every role and starts them again on the same database with `badges`.
    async fn restart(&mut self, badges: &BadgeSettings) {
        if let Some(stack) = self.stack.take() {
            stack.stop().await;
        }
        self.launch(badges).await;
    }

    async fn stop(mut self) {
        if let Some(stack) = self.stack.take() {
            stack.stop().await;
        }
    }

    fn service_address(&self, name: &str) -> String {
        let stack = self.stack.as_ref().expect("running");
        let (_, address) = stack.service_addresses.iter().find(|(service, _)| *service == name).expect("known service");
        format!("http://{address}")
    }

    async fn call(&self, method: reqwest::Method, path: &str, auth: &Auth, body: Option<Value>) -> Reply {
        clawx_tests::send(&self.http, method, format!("{}{path}", self.base_url), auth, body).await
    }

    async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.call(reqwest::Method::GET, path, auth, None).await
    }

    async fn post(&self, path: &str, auth: &Auth, body: Value) -> Reply {
        self.call(reqwest::Method::POST, path, auth, Some(body)).await
    }

    /// An account with `handle`; its API key.
    async fn registered(&self, handle: &str) -> String {
        let created = self.call(reqwest::Method::POST, "/account/create", &Auth::None, None).await;
        let key = created.expect_ok("create account")["api_key"].as_str().unwrap().to_string();
        self.post("/account/register", &Auth::Key(key.clone()), json!({"handle": handle, "name": handle})).await.expect_ok("register");
        key
    }

    /// Links `wallet` to the account of `key` and answers signed-expiry credentials for the
    /// account's handle `domain`.
    async fn signed_auth(&self, key: &str, wallet: &PrivateKeySigner, domain: &str) -> Auth {
        let address = wallet.address().to_checksum(None);
        let auth = Auth::Key(key.to_string());
        let challenge = self.get(&format!("/account/wallets/challenge?address={address}"), &auth).await;
        let message = challenge.expect_ok("challenge")["message"].as_str().unwrap().to_string();
        let linked = self.post("/account/wallets", &auth, json!({"address": address, "message": message, "signature": sign(wallet, &message)})).await;
        linked.expect_ok("link wallet");
        let expiry = now_ms() + 3_600_000;
        let reply = self.get(&format!("/api/user/{domain}/signature?device=true&expiry={expiry}"), &Auth::None).await;
        let text = reply.expect_ok("signature message")["message"].as_str().unwrap().to_string();
        Auth::Signed { domain: domain.to_string(), expires: expiry.to_string(), signature: sign(wallet, &text) }
    }
}

fn fast_settings(rpc_url: &str) -> BadgeSettings {
    BadgeSettings {
        chains: [(CHAIN_ID, rpc_url.to_string())].into_iter().collect(),
        chain_timeout: Duration::from_secs(2),
        balance_cache_ttl: Duration::ZERO,
        recheck_interval: Duration::from_millis(500),
        delivery_poll_interval: Duration::from_millis(50),
        delivery_retry_base: Duration::from_millis(100),
        ..BadgeSettings::default()
    }
}

/// Polls `check` until it holds; generous, so a loaded machine does not fail the test.
async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn badge_gated_groups_follow_holdings_on_a_real_chain() {
    let Some(binary) = anvil_binary() else { return };
    for stack in BadgeStack::all(&BadgeSettings::default()).await {
        let name = stack.name;
        let mut anvil = Anvil::start(&binary).await;
        let tokens = deploy_tokens(&anvil.url).await;
        let mut stack = stack;
        stack.restart(&fast_settings(&anvil.url)).await;
        let holder = signer(1);
        let other_holder = signer(2);
        let outsider = PrivateKeySigner::random();
        call(&anvil.url, 0, tokens.erc20, mintCall { to: holder.address(), amount: U256::from(150) }.abi_encode()).await;
        call(&anvil.url, 0, tokens.erc721, mintCall { to: holder.address(), amount: U256::from(7) }.abi_encode()).await;
        call(&anvil.url, 0, tokens.erc1155, erc1155::mintCall { to: holder.address(), id: U256::from(3), amount: U256::from(2) }.abi_encode()).await;

        let partner = stack.registered("partner").await;
        let key = Auth::Key(partner.clone());
        let create = |code: &str, contract: Address, standard: &str, extra: Value| {
            let mut body =
                json!({"code": code, "name": format!("{code} holders"), "chainId": CHAIN_ID, "contract": lower(contract), "standard": standard});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        // Creating badges, and what is refused.
        let erc20 = stack.post("/badges", &key, create("coin-100", tokens.erc20, "erc20", json!({"minBalance": "100"}))).await;
        let body = erc20.expect_ok(name).clone();
        assert_eq!(body["minBalance"], "100", "{name}");
        assert_eq!(body["chainId"], CHAIN_ID, "{name}");
        assert_eq!(body["groupChatId"], Value::Null, "{name}");
        assert!(body.get("ok").is_none(), "{name}: the messaging family has no ok field");
        stack.post("/badges", &key, create("nft-7", tokens.erc721, "erc721", json!({"tokenId": "7"}))).await.expect_ok(name);
        stack.post("/badges", &key, create("nft-any", tokens.erc721, "erc721", json!({}))).await.expect_ok(name);
        stack.post("/badges", &key, create("multi-3", tokens.erc1155, "erc1155", json!({"tokenId": "3", "minBalance": "2"}))).await.expect_ok(name);
        stack.post("/badges", &key, create("coin-100", tokens.erc20, "erc20", json!({}))).await.expect_error(409, "CONFLICT", name);
        stack.post("/badges", &Auth::None, create("anon", tokens.erc20, "erc20", json!({}))).await.expect_error(401, "UNAUTHORIZED", name);
        let unconfigured = stack
            .post("/badges", &key, json!({"code": "other-chain", "name": "x", "chainId": 999, "contract": lower(tokens.erc20), "standard": "erc20"}))
            .await;
        assert_eq!(unconfigured.expect_error(400, "VALIDATION_FAILED", name).body["field"], "chainId", "{name}");
        let bad_standard = stack.post("/badges", &key, create("bad", tokens.erc20, "erc777", json!({}))).await;
        assert_eq!(bad_standard.expect_error(400, "VALIDATION_FAILED", name).body["field"], "standard", "{name}");
        let no_token = stack.post("/badges", &key, create("bad", tokens.erc1155, "erc1155", json!({}))).await;
        assert_eq!(no_token.expect_error(400, "VALIDATION_FAILED", name).body["field"], "tokenId", "{name}");
        let huge = stack.post("/badges", &key, create("bad", tokens.erc20, "erc20", json!({"minBalance": "1".repeat(79)}))).await;
        assert_eq!(huge.expect_error(400, "VALIDATION_FAILED", name).body["field"], "minBalance", "{name}");
        stack.post("/badges", &key, create("bad code", tokens.erc20, "erc20", json!({}))).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get("/badges/nope", &Auth::None).await.expect_error(404, "NOT_FOUND", name);
        let read = stack.get("/badges/multi-3", &Auth::None).await;
        assert_eq!((read.expect_ok(name)["tokenId"].clone(), read.body["standard"].clone()), (json!("3"), json!("erc1155")), "{name}");

        // Dry runs.
        let dry = stack.get(&format!("/badges/coin-100/eligibility/{}", holder.address()), &Auth::None).await;
        let body = dry.expect_ok(name).clone();
        assert_eq!((body["balance"].clone(), body["eligible"].clone()), (json!("150"), json!(true)), "{name}: {body}");
        assert_eq!(body["address"], lower(holder.address()), "{name}");
        assert_eq!(body["rule"]["minBalance"], "100", "{name}");
        let dry = stack.get(&format!("/badges/nft-7/eligibility/{}", outsider.address()), &Auth::None).await;
        assert_eq!((dry.expect_ok(name)["balance"].clone(), dry.body["eligible"].clone()), (json!("0"), json!(false)), "{name}");
        stack.get("/badges/coin-100/eligibility/0x12", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get(&format!("/badges/nope/eligibility/{}", holder.address()), &Auth::None).await.expect_error(404, "NOT_FOUND", name);

        // Groups: one per badge, the same id every time.
        let join_body = |wallet: &PrivateKeySigner, code: &str, text: &str| json!({"address": wallet.address().to_checksum(None), "badgeCode": code, "signature": sign(wallet, text)});
        stack.post("/push/group/join", &Auth::None, join_body(&holder, "coin-100", "coin-100")).await.expect_error(404, "NOT_FOUND", name);
        stack.post("/push/group", &Auth::None, json!({"badgeCode": "nope"})).await.expect_error(404, "NOT_FOUND", name);
        let mut group_ids = Vec::new();
        for code in ["coin-100", "nft-7", "nft-any", "multi-3"] {
            let first = stack.post("/push/group", &Auth::None, json!({"badgeCode": code})).await.expect_ok(name).clone();
            let again = stack.post("/push/group", &Auth::None, json!({"badgeCode": code})).await.expect_ok(name).clone();
            assert_eq!(first, again, "{name}: {code}");
            assert_eq!(first.as_object().unwrap().len(), 1, "{name}: only groupChatId");
            group_ids.push(first["groupChatId"].as_str().unwrap().to_string());
        }
        group_ids.dedup();
        assert_eq!(group_ids.len(), 4, "{name}: a group per badge");

        // Holders join (with the plain code or `Join <code>`), others are refused with the reason.
        for (code, text) in [("coin-100", "coin-100"), ("nft-7", "Join nft-7"), ("nft-any", "nft-any"), ("multi-3", "multi-3")] {
            let joined = stack.post("/push/group/join", &Auth::None, join_body(&holder, code, text)).await;
            assert_eq!(joined.expect_ok(name)["member"], true, "{name}: {code}");
            assert_eq!(joined.body["address"], lower(holder.address()), "{name}");
        }
        stack.post("/push/group/join", &Auth::None, join_body(&holder, "coin-100", "coin-100")).await.expect_ok(name);
        let refused = stack.post("/push/group/join", &Auth::None, join_body(&outsider, "coin-100", "coin-100")).await;
        let message = refused.expect_error(403, "FORBIDDEN", name).body["error"].as_str().unwrap().to_string();
        assert!(message.contains("holds 0") && message.contains("at least 100"), "{name}: says which condition failed: {message}");
        let refused = stack.post("/push/group/join", &Auth::None, join_body(&other_holder, "nft-7", "nft-7")).await;
        assert!(refused.expect_error(403, "FORBIDDEN", name).body["error"].as_str().unwrap().contains("does not own token 7"), "{name}");
        // A signature by another wallet, of another code, or malformed.
        let forged = json!({"address": outsider.address().to_checksum(None), "badgeCode": "coin-100", "signature": sign(&holder, "coin-100")});
        assert!(
            stack.post("/push/group/join", &Auth::None, forged).await.expect_error(403, "FORBIDDEN", name).body["error"]
                .as_str()
                .unwrap()
                .contains("signature")
        );
        stack.post("/push/group/join", &Auth::None, join_body(&holder, "coin-100", "nft-7")).await.expect_error(403, "FORBIDDEN", name);
        let malformed = json!({"address": lower(holder.address()), "badgeCode": "coin-100", "signature": "0x1234"});
        assert_eq!(
            stack.post("/push/group/join", &Auth::None, malformed).await.expect_error(400, "VALIDATION_FAILED", name).body["field"],
            "signature"
        );
        stack.post("/push/group/join", &Auth::None, join_body(&holder, "nope", "nope")).await.expect_error(404, "NOT_FOUND", name);
        // An API key is neither needed nor read: a wrong one does not matter.
        stack.post("/push/group/join", &Auth::Key("clx_nonsense".into()), join_body(&holder, "multi-3", "multi-3")).await.expect_ok(name);
        assert_eq!(stack.get("/badges/coin-100", &Auth::None).await.expect_ok(name)["memberCount"], 1, "{name}");

        // A join signature cannot be replayed as a leave; `Leave <code>` leaves.
        stack.post("/push/group/leave", &Auth::None, join_body(&holder, "nft-any", "nft-any")).await.expect_error(403, "FORBIDDEN", name);
        stack.post("/push/group/leave", &Auth::None, join_body(&holder, "nft-any", "Join nft-any")).await.expect_error(403, "FORBIDDEN", name);
        let left = stack.post("/push/group/leave", &Auth::None, join_body(&holder, "nft-any", "Leave nft-any")).await;
        assert_eq!(left.expect_ok(name)["member"], false, "{name}");
        assert_eq!(stack.get("/badges/nft-any", &Auth::None).await.expect_ok(name)["memberCount"], 0, "{name}");
        // Nor a leave signature as a join.
        stack.post("/push/group/join", &Auth::None, join_body(&holder, "nft-any", "Leave nft-any")).await.expect_error(403, "FORBIDDEN", name);
        stack.post("/push/group/leave", &Auth::None, join_body(&holder, "nope", "Leave nope")).await.expect_error(404, "NOT_FOUND", name);

        // The holder transfers away: the re-check removes it from those groups only.
        call(&anvil.url, 1, tokens.erc20, transferCall { to: other_holder.address(), amount: U256::from(60) }.abi_encode()).await;
        call(
            &anvil.url,
            1,
            tokens.erc721,
            transferFromCall { from: holder.address(), to: other_holder.address(), tokenId: U256::from(7) }.abi_encode(),
        )
        .await;
        wait_for("the re-check removes the holder who transferred away", async || {
            let coin = stack.get("/badges/coin-100", &Auth::None).await.body["memberCount"].clone();
            let nft = stack.get("/badges/nft-7", &Auth::None).await.body["memberCount"].clone();
            coin == json!(0) && nft == json!(0)
        })
        .await;
        assert_eq!(stack.get("/badges/multi-3", &Auth::None).await.expect_ok(name)["memberCount"], 1, "{name}: still holds the ERC-1155");
        // The new owner of token 7 may join.
        stack.post("/push/group/join", &Auth::None, join_body(&other_holder, "nft-7", "nft-7")).await.expect_ok(name);

        // A stopped chain answers 503, never a yes or a no, and removes nobody.
        anvil.stop();
        stack.get(&format!("/badges/coin-100/eligibility/{}", holder.address()), &Auth::None).await.expect_error(503, "CHAIN_UNAVAILABLE", name);
        stack.post("/push/group/join", &Auth::None, join_body(&holder, "nft-any", "nft-any")).await.expect_error(503, "CHAIN_UNAVAILABLE", name);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(stack.get("/badges/multi-3", &Auth::None).await.expect_ok(name)["memberCount"], 1, "{name}: kept while the chain is down");
        assert_eq!(stack.get("/badges/nft-7", &Auth::None).await.expect_ok(name)["memberCount"], 1, "{name}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn partner_notifications_reach_each_member_once_across_a_restart() {
    let Some(binary) = anvil_binary() else { return };
    for stack in BadgeStack::all(&BadgeSettings::default()).await {
        let name = stack.name;
        let anvil = Anvil::start(&binary).await;
        let tokens = deploy_tokens(&anvil.url).await;
        // First without a delivery worker that gets to run: everything stays queued.
        let paused = BadgeSettings { delivery_poll_interval: Duration::from_secs(3600), ..fast_settings(&anvil.url) };
        let mut stack = stack;
        stack.restart(&paused).await;

        let partner_key = stack.registered("brand").await;
        let partner_wallet = PrivateKeySigner::random();
        let signed = stack.signed_auth(&partner_key, &partner_wallet, "brand").await;
        let key = Auth::Key(partner_key.clone());
        let badge = json!({"code": "fans", "name": "Fans", "chainId": CHAIN_ID, "contract": lower(tokens.erc20), "standard": "erc20"});
        stack.post("/badges", &key, badge).await.expect_ok(name);
        stack.post("/push/group", &Auth::None, json!({"badgeCode": "fans"})).await.expect_ok(name);
        let members: Vec<PrivateKeySigner> = (0..5).map(|_| PrivateKeySigner::random()).collect();
        for member in &members {
            call(&anvil.url, 0, tokens.erc20, mintCall { to: member.address(), amount: U256::from(1) }.abi_encode()).await;
            let body = json!({"address": lower(member.address()), "badgeCode": "fans", "signature": sign(member, "fans")});
            stack.post("/push/group/join", &Auth::None, body).await.expect_ok(name);
        }
        // One member leaves: it opted out.
        let gone = &members[4];
        stack
            .post(
                "/push/group/leave",
                &Auth::None,
                json!({"address": lower(gone.address()), "badgeCode": "fans", "signature": sign(gone, "Leave fans")}),
            )
            .await
            .expect_ok(name);

        // Who may send.
        let notification = |domain: &str| json!({"badgeCode": "fans", "subject": "Drop", "message": "Claim yours", "ctaUrl": "https://brand.example/drop", "sender": {"domain": domain}});
        stack.post("/push/notification/badge", &key, notification("brand")).await.expect_error(401, "UNAUTHORIZED", name);
        stack.post("/push/notification/badge", &Auth::None, notification("brand")).await.expect_error(401, "UNAUTHORIZED", name);
        stack.post("/push/notification/badge", &signed, notification("nobody-here")).await.expect_error(404, "NOT_FOUND", name);
        let stranger_key = stack.registered("stranger").await;
        stack.post("/push/notification/badge", &signed, notification("stranger")).await.expect_error(403, "FORBIDDEN", name);
        let stranger = stack.signed_auth(&stranger_key, &PrivateKeySigner::random(), "stranger").await;
        stack.post("/push/notification/badge", &stranger, notification("stranger")).await.expect_error(403, "FORBIDDEN", name);
        let mut unknown = notification("brand");
        unknown["badgeCode"] = json!("nope");
        stack.post("/push/notification/badge", &signed, unknown).await.expect_error(404, "NOT_FOUND", name);
        let mut bad_link = notification("brand");
        bad_link["ctaUrl"] = json!("javascript:alert(1)");
        assert_eq!(
            stack.post("/push/notification/badge", &signed, bad_link).await.expect_error(400, "VALIDATION_FAILED", name).body["field"],
            "ctaUrl"
        );

        let sent = stack.post("/push/notification/badge", &signed, notification("brand")).await;
        let body = sent.expect_ok(name).clone();
        let id = body["notificationId"].as_str().unwrap().to_string();
        assert_eq!(
            (body["recipients"].clone(), body["pending"].clone(), body["delivered"].clone()),
            (json!(4), json!(4), json!(0)),
            "{name}: {body}"
        );
        stack.get(&format!("/push/notification/{id}"), &Auth::Key(stranger_key.clone())).await.expect_error(404, "NOT_FOUND", name);
        stack.get("/push/notification/nope", &key).await.expect_error(404, "NOT_FOUND", name);
        stack.get(&format!("/push/notification/{id}"), &Auth::None).await.expect_error(401, "UNAUTHORIZED", name);

        // A worker that sent to two members and stopped before recording it: the messages exist,
        // the deliveries are still pending.
        let partner_id = stack.get("/account/me", &key).await.expect_ok(name)["id"].as_i64().unwrap();
        let content = "Drop\n\nClaim yours\n\nhttps://brand.example/drop";
        let channel = tonic::transport::Channel::from_shared(stack.service_address("messaging")).unwrap().connect().await.unwrap();
        let mut messaging = MessagingServiceClient::new(channel);
        for member in &members[..2] {
            let address = lower(member.address());
            let mut request = tonic::Request::new(SendDirectMessageRequest {
                to: Some(To::WalletAddress(address.clone())),
                content: content.to_string(),
                idempotency_key: format!("badge-notification:{id}:{address}"),
            });
            let principal =
                Principal { account_id: Some(partner_id), method: AuthMethod::Service, client_ip: None, caller_service: Some("groups".into()) };
            stack.auth.authorize(&mut request, "messaging", &principal);
            messaging.send_direct_message(request).await.unwrap();
        }
        let status = stack.get(&format!("/push/notification/{id}"), &key).await;
        assert_eq!(status.expect_ok(name)["pending"], 4, "{name}");

        // Restart with a worker that runs: every member gets it, once.
        stack.restart(&fast_settings(&anvil.url)).await;
        wait_for("every delivery is made", async || stack.get(&format!("/push/notification/{id}"), &key).await.body["delivered"] == json!(4)).await;
        let status = stack.get(&format!("/push/notification/{id}"), &key).await.expect_ok(name).clone();
        assert_eq!((status["pending"].clone(), status["failed"].clone(), status["recipients"].clone()), (json!(0), json!(0), json!(4)), "{name}");
        for member in &members[..4] {
            let conversation = stack.get(&format!("/messages/address/{}", lower(member.address())), &key).await;
            let messages = conversation.expect_ok(name)["messages"].as_array().unwrap().clone();
            assert_eq!(messages.len(), 1, "{name}: exactly once: {messages:?}");
            assert_eq!(messages[0]["content"], content, "{name}");
        }
        let left_out = stack.get(&format!("/messages/address/{}", lower(gone.address())), &key).await;
        assert_eq!(left_out.expect_ok(name)["messages"].as_array().unwrap().len(), 0, "{name}: who left is not notified");
        stack.stop().await;
    }
}

#[tokio::test]
async fn badge_routes_are_documented_and_reachable_over_grpc() {
    let stack =
        BadgeStack::start("sqlite+memory", TestDatabase::sqlite(), Backends::memory(), CancellationToken::new(), &BadgeSettings::default()).await;
    let document = stack.get("/openapi.json", &Auth::None).await.expect_ok("openapi").clone();
    for (path, method, statuses) in [
        ("/badges", "post", &["200", "400", "401", "409"][..]),
        ("/badges/{code}", "get", &["200", "404"][..]),
        ("/badges/{code}/eligibility/{address}", "get", &["200", "400", "404", "503"][..]),
        ("/push/group", "post", &["200", "404"][..]),
        ("/push/group/join", "post", &["200", "400", "403", "404", "503"][..]),
        ("/push/group/leave", "post", &["200", "400", "403", "404"][..]),
        ("/push/notification/badge", "post", &["200", "400", "401", "403", "404"][..]),
        ("/push/notification/{id}", "get", &["200", "401", "404"][..]),
    ] {
        let operation = &document["paths"][path][method];
        for status in statuses {
            assert!(operation["responses"].get(*status).is_some(), "{method} {path} documents {status}");
        }
        let error = &operation["responses"]["404"]["content"]["application/json"]["schema"]["$ref"];
        assert!(error.is_null() || error == "#/components/schemas/MessagingError", "{method} {path}: {error}");
    }
    let join_security = document["paths"]["/push/group/join"]["post"]["security"].to_string();
    assert!(!join_security.contains("ApiKey"), "joining needs no API key: {join_security}");
    let notify_security = document["paths"]["/push/notification/badge"]["post"]["security"].to_string();
    assert!(notify_security.contains("SignedSignature") && !notify_security.contains("ApiKey"), "{notify_security}");
    let body = &document["components"]["schemas"]["MembershipBody"]["properties"]["signature"]["description"];
    assert!(body.as_str().unwrap().contains("Leave <badgeCode>"), "the signed texts are documented");

    // The messaging family's error shape.
    let missing = stack.get("/badges/nope", &Auth::None).await;
    missing.expect_error(404, "NOT_FOUND", "unknown badge");
    assert!(missing.body.get("ok").is_none() && missing.body.get("statusCode").is_none(), "{}", missing.body);
    stack.post("/push/group", &Auth::None, json!({})).await.expect_error(400, "VALIDATION_FAILED", "no badgeCode");
    let malformed = json!({"address": "0x12", "badgeCode": "x", "signature": "0x00"});
    assert_eq!(
        stack.post("/push/group/leave", &Auth::None, malformed).await.expect_error(400, "VALIDATION_FAILED", "bad address").body["field"],
        "address"
    );

    // gRPC clients reach BadgesService through the gateway; joining needs no credentials there
    // either.
    use clawx_proto::groups::{GetBadgeRequest, JoinGatedGroupRequest, badges_service_client::BadgesServiceClient};
    let channel = tonic::transport::Channel::from_shared(stack.base_url.clone()).unwrap().connect().await.unwrap();
    let mut badges = BadgesServiceClient::new(channel);
    let status = badges.get_badge(GetBadgeRequest { code: "nope".into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let wallet = PrivateKeySigner::random();
    let join = JoinGatedGroupRequest { badge_code: "nope".into(), address: lower(wallet.address()), signature: sign(&wallet, "nope") };
    let status = badges.join_gated_group(join).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    stack.stop().await;
}
