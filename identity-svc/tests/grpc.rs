//! Every identity rule over gRPC, as the gateway calls it (with internal tokens), on SQLite +
//! memory (`name::sqlite`) and on PostgreSQL + Redis (`name::postgres`).

use std::time::Duration;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use clawx_common::{
    AuthMethod, Backends, InternalAuth, Principal, Secret,
    auth::{CREDENTIALS_REVOKED_CHANNEL, CredentialsRevoked},
    crypto::{Keyring, generate_master_key},
    pubsub::Event,
    service::ServiceConfig,
    storage::Backend,
    testing::{TestDatabase, redis_backends, spawn_service},
};
use clawx_identity::{Config, Settings};
use clawx_proto::identity::{self as pb, identity_service_client::IdentityServiceClient};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, transport::Channel};

struct Harness {
    name: &'static str,
    client: IdentityServiceClient<Channel>,
    auth: InternalAuth,
    backends: Backends,
    shutdown: CancellationToken,
    _database: TestDatabase,
}

impl Harness {
    /// The service on `database`: SQLite with memory backends, or PostgreSQL with Redis (`None`
    /// when Redis is not configured).
    async fn on(database: TestDatabase) -> Option<Harness> {
        match database.backend {
            Backend::Sqlite => Some(Harness::start("sqlite+memory", database, Backends::memory(), CancellationToken::new()).await),
            Backend::Postgres => {
                let shutdown = CancellationToken::new();
                let backends = redis_backends(&shutdown)?;
                assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await);
                Some(Harness::start("postgres+redis", database, backends, shutdown).await)
            }
        }
    }

    async fn start(name: &'static str, database: TestDatabase, backends: Backends, shutdown: CancellationToken) -> Harness {
        let auth = InternalAuth::new(&Secret::new("identity-test-secret-identity-test"));
        let config = Config {
            service: ServiceConfig { database: database.args.clone(), backends: backends.clone(), auth: auth.clone() },
            keyring: Keyring::new(&Secret::new(generate_master_key()), None).unwrap(),
            settings: Settings { public_url: "https://clawx.example:8443".into(), challenge_ttl: Duration::from_millis(1500), ..Settings::default() },
        };
        let token = shutdown.clone();
        let service = spawn_service(|listener| clawx_identity::run(config, listener, token)).await;
        let client = IdentityServiceClient::new(service.channel);
        Harness { name, client, auth, backends, shutdown, _database: database }
    }

    fn request<T>(&self, principal: &Principal, message: T) -> Request<T> {
        let mut request = Request::new(message);
        self.auth.authorize(&mut request, "identity", principal);
        request
    }

    fn as_account<T>(&self, account_id: i64, message: T) -> Request<T> {
        self.request(&Principal::account(account_id, AuthMethod::ApiKey, None), message)
    }

    fn as_service<T>(&self, message: T) -> Request<T> {
        self.request(&Principal::service(), message)
    }

    fn anonymous<T>(&self, message: T) -> Request<T> {
        self.request(&Principal::anonymous(None), message)
    }

    async fn create(&self) -> pb::CreateAccountResponse {
        self.client.clone().create_account(self.anonymous(pb::CreateAccountRequest {})).await.unwrap().into_inner()
    }

    async fn registered(&self, handle: &str) -> pb::CreateAccountResponse {
        let account = self.create().await;
        let request = pb::RegisterHandleRequest { handle: handle.into(), name: format!("{handle} name"), ..Default::default() };
        self.client.clone().register_handle(self.as_account(account.account_id, request)).await.unwrap();
        account
    }
}

/// Asserts a call failed with `code` and Clawx error code `clawx_code`.
fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, clawx_code: &str, context: &str) -> Status {
    let status = result.expect_err(context);
    assert_eq!(status.code(), code, "{context}: {status:?}");
    assert_eq!(status.metadata().get("clawx-error-code").map(|v| v.to_str().unwrap()), Some(clawx_code), "{context}: {status:?}");
    status
}

fn sign(signer: &PrivateKeySigner, message: &str) -> String {
    format!("0x{}", hex::encode(signer.sign_message_sync(message.as_bytes()).unwrap().as_bytes()))
}

clawx_common::backend_tests! {
    async fn accounts_are_created_with_wallet_inbox_and_hashed_key(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let mut client = harness.client.clone();
        let first = harness.create().await;
        let second = harness.create().await;
        assert!(first.api_key.starts_with("clx_") && first.api_key.len() == 52, "{name}: {}", first.api_key);
        assert_ne!(first.api_key, second.api_key);
        assert_ne!(first.wallet_address, second.wallet_address);
        let parsed: alloy_primitives::Address = first.wallet_address.parse().unwrap();
        assert_eq!(parsed.to_checksum(None), first.wallet_address, "{name}: EIP-55");
        let expected_inbox = hex::encode(Sha256::digest(format!("{}1", first.wallet_address.to_lowercase()).as_bytes()));
        assert_eq!(first.xmtp_inbox_id, expected_inbox, "{name}: XMTP inbox id");

        // The key authenticates (for services only); junk and unknown keys do not.
        let authenticated = client.authenticate(harness.as_service(pb::AuthenticateRequest { api_key: first.api_key.clone() })).await.unwrap().into_inner();
        assert_eq!(authenticated.account_id, first.account_id, "{name}");
        assert_eq!(authenticated.wallet_address, first.wallet_address);
        let forged = format!("clx_{}", "0".repeat(48));
        for bad in ["", "nope", forged.as_str()] {
            let result = client.authenticate(harness.as_service(pb::AuthenticateRequest { api_key: bad.into() })).await;
            expect_error(result, Code::Unauthenticated, "UNAUTHORIZED", &format!("{name}: key {bad:?}"));
        }
        let result = client.authenticate(harness.as_account(first.account_id, pb::AuthenticateRequest { api_key: first.api_key.clone() })).await;
        expect_error(result, Code::PermissionDenied, "FORBIDDEN", &format!("{name}: Authenticate is for services"));

        // Account calls need an account.
        let result = client.get_me(harness.anonymous(pb::GetMeRequest {})).await;
        expect_error(result, Code::Unauthenticated, "UNAUTHORIZED", name);
        let me = client.get_me(harness.as_account(first.account_id, pb::GetMeRequest {})).await.unwrap().into_inner();
        assert_eq!((me.id, me.handle.clone(), me.verified), (first.account_id, None, false), "{name}");
        assert_eq!(me.xmtp_inbox_id, first.xmtp_inbox_id);
        harness.shutdown.cancel();
    }
}

#[tokio::test]
async fn sqlite_files_hold_no_key_or_wallet_secret_in_clear() {
    let database = TestDatabase::sqlite();
    let directory = database.args.database_url.clone().unwrap();
    let harness = Harness::start("sqlite+memory", database, Backends::memory(), CancellationToken::new()).await;
    let created = harness.create().await;
    harness.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = directory.trim_start_matches("sqlite://").replace("{service}", "identity");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    let haystack = String::from_utf8_lossy(&bytes);
    assert!(!haystack.contains(&created.api_key), "the API key is stored only as a hash");
    assert!(haystack.contains(&created.wallet_address), "sanity: the file was read");
}

clawx_common::backend_tests! {
    async fn handles_profiles_and_the_directory(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let mut client = harness.client.clone();
        let alice = harness.create().await;
        let bob = harness.create().await;
        let register = |handle: &str| pb::RegisterHandleRequest {
            handle: handle.into(),
            name: "Alice Liddell".into(),
            description: Some("Curious".into()),
            x_url: Some("https://x.com/alice".into()),
            ..Default::default()
        };

        // Invalid input names its field.
        for (request, field) in [
            (pb::RegisterHandleRequest { handle: "a".into(), name: "A".into(), ..Default::default() }, "handle"),
            (pb::RegisterHandleRequest { handle: "has space".into(), name: "A".into(), ..Default::default() }, "handle"),
            (pb::RegisterHandleRequest { handle: "alice".into(), name: " ".into(), ..Default::default() }, "name"),
            (pb::RegisterHandleRequest { handle: "alice".into(), name: "A".into(), x_url: Some("ftp://x".into()), ..Default::default() }, "x_url"),
            (pb::RegisterHandleRequest { handle: "alice".into(), name: "A".into(), website_url: Some("not a url".into()), ..Default::default() }, "website_url"),
            (pb::RegisterHandleRequest { handle: "alice".into(), name: "x".repeat(101), ..Default::default() }, "name"),
        ] {
            let status = expect_error(client.register_handle(harness.as_account(alice.account_id, request)).await, Code::InvalidArgument, "VALIDATION_FAILED", name);
            assert_eq!(status.metadata().get("clawx-error-field").unwrap(), field, "{name}");
        }

        let registered = client.register_handle(harness.as_account(alice.account_id, register("Alice"))).await.unwrap().into_inner();
        assert_eq!(registered.handle, "alice", "{name}: stored lower-case");
        assert_eq!(registered.wallet_address, alice.wallet_address);
        let result = client.register_handle(harness.as_account(bob.account_id, register("ALICE"))).await;
        expect_error(result, Code::AlreadyExists, "HANDLE_TAKEN", &format!("{name}: case-insensitive uniqueness"));
        let result = client.register_handle(harness.as_account(alice.account_id, register("alice2"))).await;
        expect_error(result, Code::AlreadyExists, "ALREADY_REGISTERED", name);
        let result = client.register_handle(harness.anonymous(register("carol"))).await;
        expect_error(result, Code::Unauthenticated, "UNAUTHORIZED", name);

        // Profile updates: partial, "" clears, unregistered accounts must register first.
        let update = pb::UpdateMeRequest { x_url: Some(String::new()), github_url: Some("https://github.com/alice".into()), ..Default::default() };
        let me = client.update_me(harness.as_account(alice.account_id, update)).await.unwrap().into_inner();
        assert_eq!(me.name.as_deref(), Some("Alice Liddell"), "{name}: untouched");
        assert_eq!(me.x_url, None, "{name}: cleared");
        assert_eq!(me.github_url.as_deref(), Some("https://github.com/alice"));
        assert_eq!(me.description.as_deref(), Some("Curious"));
        let update = pb::UpdateMeRequest { website_url: Some("javascript:alert(1)".into()), ..Default::default() };
        expect_error(client.update_me(harness.as_account(alice.account_id, update)).await, Code::InvalidArgument, "VALIDATION_FAILED", name);
        let update = pb::UpdateMeRequest { name: Some("Bob".into()), ..Default::default() };
        expect_error(client.update_me(harness.as_account(bob.account_id, update)).await, Code::FailedPrecondition, "NOT_REGISTERED", name);

        // Directory: registered users only, searchable, capped, stable.
        client.register_handle(harness.as_account(bob.account_id, pb::RegisterHandleRequest { handle: "bob".into(), name: "Robert".into(), ..Default::default() })).await.unwrap();
        let _unregistered = harness.create().await;
        let users = client.list_users(harness.anonymous(pb::ListUsersRequest::default())).await.unwrap().into_inner().users;
        assert_eq!(users.iter().map(|u| u.handle.clone().unwrap()).collect::<Vec<_>>(), vec!["alice", "bob"], "{name}");
        let search = |text: &str| pb::ListUsersRequest { search: text.into(), ..Default::default() };
        let found = client.list_users(harness.anonymous(search("LIDDELL"))).await.unwrap().into_inner().users;
        assert_eq!(found.len(), 1, "{name}: name, case-insensitive");
        let found = client.list_users(harness.anonymous(search("ob"))).await.unwrap().into_inner().users;
        assert_eq!(found[0].handle.as_deref(), Some("bob"), "{name}: handle substring");
        let page = client.list_users(harness.anonymous(pb::ListUsersRequest { limit: Some(1), offset: 1, ..Default::default() })).await.unwrap().into_inner().users;
        assert_eq!(page[0].handle.as_deref(), Some("bob"), "{name}: paging");
        let capped = client.list_users(harness.anonymous(pb::ListUsersRequest { limit: Some(10_000), ..Default::default() })).await.unwrap().into_inner().users;
        assert_eq!(capped.len(), 2);

        let user = client.get_user(harness.anonymous(pb::GetUserRequest { handle: "Alice".into() })).await.unwrap().into_inner();
        assert_eq!(user.id, alice.account_id, "{name}");
        expect_error(client.get_user(harness.anonymous(pb::GetUserRequest { handle: "nobody".into() })).await, Code::NotFound, "NOT_FOUND", name);
        expect_error(client.get_user(harness.anonymous(pb::GetUserRequest { handle: "../etc".into() })).await, Code::NotFound, "NOT_FOUND", name);
        harness.shutdown.cancel();
    }
}

clawx_common::backend_tests! {
    async fn api_keys_are_listed_without_secrets_and_revoked_at_once(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let mut client = harness.client.clone();
        let alice = harness.create().await;
        let mut revocations = harness.backends.pubsub.subscribe(CREDENTIALS_REVOKED_CHANNEL);

        let created = client.create_api_key(harness.as_account(alice.account_id, pb::CreateApiKeyRequest { name: "ci".into() })).await.unwrap().into_inner();
        let key = created.key.unwrap();
        assert!(created.api_key.starts_with(&key.prefix), "{name}: prefix identifies the key");
        assert_eq!(key.name, "ci");
        let result = client.create_api_key(harness.as_account(alice.account_id, pb::CreateApiKeyRequest { name: String::new() })).await;
        expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", name);

        // Using the key records its use.
        client.authenticate(harness.as_service(pb::AuthenticateRequest { api_key: created.api_key.clone() })).await.unwrap();
        let keys = client.list_api_keys(harness.as_account(alice.account_id, pb::ListApiKeysRequest {})).await.unwrap().into_inner().keys;
        assert_eq!(keys.len(), 2, "{name}");
        assert_eq!(keys[0].id, alice.api_key_id);
        assert!(keys[1].last_used_at_ms.is_some(), "{name}: last used");
        assert!(keys.iter().all(|k| k.prefix.len() == 12), "{name}");

        let result = client.revoke_api_key(harness.as_account(alice.account_id, pb::RevokeApiKeyRequest { id: "key_nope".into() })).await;
        expect_error(result, Code::NotFound, "NOT_FOUND", name);
        let other = harness.create().await;
        let result = client.revoke_api_key(harness.as_account(other.account_id, pb::RevokeApiKeyRequest { id: key.id.clone() })).await;
        expect_error(result, Code::NotFound, "NOT_FOUND", &format!("{name}: not someone else's key"));

        client.revoke_api_key(harness.as_account(alice.account_id, pb::RevokeApiKeyRequest { id: key.id.clone() })).await.unwrap();
        let result = client.authenticate(harness.as_service(pb::AuthenticateRequest { api_key: created.api_key.clone() })).await;
        expect_error(result, Code::Unauthenticated, "UNAUTHORIZED", &format!("{name}: revoked key"));
        let announcement = loop {
            match tokio::time::timeout(Duration::from_secs(5), revocations.recv()).await.unwrap().unwrap() {
                Event::Message(payload) => break serde_json::from_slice::<CredentialsRevoked>(&payload).unwrap(),
                Event::Gap => continue,
            }
        };
        assert_eq!(announcement.account_id, alice.account_id, "{name}: gateways are told");

        let result = client.revoke_api_key(harness.as_account(alice.account_id, pb::RevokeApiKeyRequest { id: alice.api_key_id.clone() })).await;
        expect_error(result, Code::FailedPrecondition, "LAST_KEY", name);
        harness.shutdown.cancel();
    }
}

clawx_common::backend_tests! {
    async fn wallets_are_linked_by_signed_single_use_challenges(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let mut client = harness.client.clone();
        let alice = harness.registered("alice").await;
        let bob = harness.registered("bob").await;
        let wallet = PrivateKeySigner::random();
        let address = wallet.address().to_checksum(None);

        let challenge = client
            .get_wallet_challenge(harness.as_account(alice.account_id, pb::GetWalletChallengeRequest { address: address.to_lowercase() }))
            .await
            .unwrap()
            .into_inner();
        assert!(challenge.message.starts_with("clawx.example:8443 wants you to sign in with your Ethereum account:\n"), "{name}: {}", challenge.message);
        assert!(challenge.message.contains(&address), "{name}: EIP-55 address in the message");
        assert!(challenge.message.contains(&format!("Nonce: {}", challenge.nonce)));
        assert!(challenge.expires_at_ms > clawx_common::time::now_ms());
        let result = client.get_wallet_challenge(harness.as_account(alice.account_id, pb::GetWalletChallengeRequest { address: "0x123".into() })).await;
        expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", name);

        // A signature by another key fails (and uses up the challenge).
        let impostor = PrivateKeySigner::random();
        let link = |signature: String, message: &str| pb::LinkWalletRequest { address: address.clone(), message: message.into(), signature };
        let result = client.link_wallet(harness.as_account(alice.account_id, link(sign(&impostor, &challenge.message), &challenge.message))).await;
        let status = expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", name);
        assert_eq!(status.metadata().get("clawx-error-field").unwrap(), "signature");
        let result = client.link_wallet(harness.as_account(alice.account_id, link(sign(&wallet, &challenge.message), &challenge.message))).await;
        expect_error(result, Code::InvalidArgument, "CHALLENGE_INVALID", &format!("{name}: single use"));

        // Bob cannot use Alice's challenge; a made-up message is not a challenge.
        let challenge = client.get_wallet_challenge(harness.as_account(alice.account_id, pb::GetWalletChallengeRequest { address: address.clone() })).await.unwrap().into_inner();
        let result = client.link_wallet(harness.as_account(bob.account_id, link(sign(&wallet, &challenge.message), &challenge.message))).await;
        expect_error(result, Code::InvalidArgument, "CHALLENGE_INVALID", name);
        let result = client.link_wallet(harness.as_account(alice.account_id, link(sign(&wallet, "hello"), "hello"))).await;
        expect_error(result, Code::InvalidArgument, "CHALLENGE_INVALID", name);
        let result = client.link_wallet(harness.as_account(alice.account_id, link("0xzz".into(), "hello"))).await;
        expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", name);

        // The right signature links it; the same wallet cannot be linked elsewhere.
        let challenge = client.get_wallet_challenge(harness.as_account(alice.account_id, pb::GetWalletChallengeRequest { address: address.clone() })).await.unwrap().into_inner();
        let linked = client.link_wallet(harness.as_account(alice.account_id, link(sign(&wallet, &challenge.message), &challenge.message))).await.unwrap().into_inner();
        assert_eq!(linked.address, address, "{name}");
        let challenge = client.get_wallet_challenge(harness.as_account(bob.account_id, pb::GetWalletChallengeRequest { address: address.clone() })).await.unwrap().into_inner();
        let result = client.link_wallet(harness.as_account(bob.account_id, link(sign(&wallet, &challenge.message), &challenge.message))).await;
        expect_error(result, Code::AlreadyExists, "WALLET_ALREADY_LINKED", name);

        // Challenges expire.
        let late = PrivateKeySigner::random();
        let late_address = late.address().to_checksum(None);
        let challenge = client.get_wallet_challenge(harness.as_account(bob.account_id, pb::GetWalletChallengeRequest { address: late_address.clone() })).await.unwrap().into_inner();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let request = pb::LinkWalletRequest { address: late_address, message: challenge.message.clone(), signature: sign(&late, &challenge.message) };
        expect_error(client.link_wallet(harness.as_account(bob.account_id, request)).await, Code::FailedPrecondition, "CHALLENGE_EXPIRED", name);

        let wallets = client.list_wallets(harness.as_account(alice.account_id, pb::ListWalletsRequest {})).await.unwrap().into_inner().wallets;
        assert_eq!(wallets.iter().map(|w| w.address.clone()).collect::<Vec<_>>(), vec![address.clone()], "{name}");
        let result = client.unlink_wallet(harness.as_account(bob.account_id, pb::UnlinkWalletRequest { address: address.clone() })).await;
        expect_error(result, Code::NotFound, "NOT_FOUND", name);
        client.unlink_wallet(harness.as_account(alice.account_id, pb::UnlinkWalletRequest { address: address.to_lowercase() })).await.unwrap();
        assert!(client.list_wallets(harness.as_account(alice.account_id, pb::ListWalletsRequest {})).await.unwrap().into_inner().wallets.is_empty());
        harness.shutdown.cancel();
    }
}

async fn link(harness: &Harness, account_id: i64, wallet: &PrivateKeySigner) {
    let mut client = harness.client.clone();
    let address = wallet.address().to_checksum(None);
    let challenge = client
        .get_wallet_challenge(harness.as_account(account_id, pb::GetWalletChallengeRequest { address: address.clone() }))
        .await
        .unwrap()
        .into_inner();
    let request = pb::LinkWalletRequest { address, message: challenge.message.clone(), signature: sign(wallet, &challenge.message) };
    client.link_wallet(harness.as_account(account_id, request)).await.unwrap();
}

clawx_common::backend_tests! {
    async fn signed_expiry_requests_authenticate_the_domain_owner(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let mut client = harness.client.clone();
        let alice = harness.registered("alice").await;
        let wallet = PrivateKeySigner::random();
        link(&harness, alice.account_id, &wallet).await;
        let expiry = clawx_common::time::now_ms() + 3_600_000;

        let message_for = |domain: &str, expiry: i64, device: bool| pb::GetSignatureMessageRequest { domain: domain.into(), expiry, device };
        let mut messages = client.clone();
        let message = messages.get_signature_message(harness.anonymous(message_for("Alice", expiry, true))).await.unwrap().into_inner();
        assert_eq!(message.domain, "alice", "{name}");
        assert_eq!(message.message.len(), 64, "{name}: a hash");
        let again = messages.get_signature_message(harness.anonymous(message_for("alice", expiry, true))).await.unwrap().into_inner();
        assert_eq!(again.message, message.message, "{name}: deterministic");
        let other = messages.get_signature_message(harness.anonymous(message_for("alice", expiry, false))).await.unwrap().into_inner();
        assert_ne!(other.message, message.message, "{name}: device flag is part of the message");
        expect_error(messages.get_signature_message(harness.anonymous(message_for("nobody", expiry, true))).await, Code::NotFound, "NOT_FOUND", name);
        expect_error(messages.get_signature_message(harness.anonymous(message_for("alice", 1_000, true))).await, Code::InvalidArgument, "VALIDATION_FAILED", name);

        let authenticate = |domain: &str, expires: String, signature: String| pb::AuthenticateSignatureRequest { domain: domain.into(), expires, signature };
        let good = sign(&wallet, &message.message);
        let result = client.authenticate_signature(harness.as_service(authenticate("alice", expiry.to_string(), good.clone()))).await.unwrap().into_inner();
        assert_eq!(result.account_id, alice.account_id, "{name}");
        assert_eq!(result.valid_until_ms, expiry);
        // The device=false message works as well, and 0x is optional.
        let plain = sign(&wallet, &other.message).trim_start_matches("0x").to_string();
        assert_eq!(client.authenticate_signature(harness.as_service(authenticate("ALICE", expiry.to_string(), plain))).await.unwrap().into_inner().account_id, alice.account_id);

        let cases = [
            (authenticate("alice", (clawx_common::time::now_ms() - 1).to_string(), good.clone()), "SIGNATURE_EXPIRED"),
            (authenticate("alice", "tomorrow".into(), good.clone()), "SIGNATURE_MALFORMED"),
            (authenticate("alice", (clawx_common::time::now_ms() + 40 * 86_400_000).to_string(), good.clone()), "SIGNATURE_MALFORMED"),
            (authenticate("alice", expiry.to_string(), "0x1234".into()), "SIGNATURE_MALFORMED"),
            (authenticate("alice", expiry.to_string(), high_s_twin(&good)), "SIGNATURE_NOT_CANONICAL"),
            (authenticate("alice", expiry.to_string(), sign(&PrivateKeySigner::random(), &message.message)), "SIGNATURE_MISMATCH"),
            (authenticate("alice", (expiry + 1).to_string(), good.clone()), "SIGNATURE_MISMATCH"),
            (authenticate("nobody", expiry.to_string(), good.clone()), "DOMAIN_NOT_FOUND"),
        ];
        for (request, code) in cases {
            let result = client.authenticate_signature(harness.as_service(request)).await;
            expect_error(result, Code::Unauthenticated, code, &format!("{name}: {code}"));
        }
        let result = client.authenticate_signature(harness.as_account(alice.account_id, authenticate("alice", expiry.to_string(), good.clone()))).await;
        expect_error(result, Code::PermissionDenied, "FORBIDDEN", name);

        // Claimed domains work like handles.
        let claimed = client.claim_domain(harness.as_account(alice.account_id, pb::ClaimDomainRequest { name: "Alice.Crypto".into() })).await.unwrap().into_inner();
        assert_eq!(claimed.name, "alice.crypto");
        let bob = harness.registered("bob").await;
        let result = client.claim_domain(harness.as_account(bob.account_id, pb::ClaimDomainRequest { name: "alice.crypto".into() })).await;
        expect_error(result, Code::AlreadyExists, "CONFLICT", name);
        expect_error(client.claim_domain(harness.as_account(bob.account_id, pb::ClaimDomainRequest { name: "nodot".into() })).await, Code::InvalidArgument, "VALIDATION_FAILED", name);
        let domain_message = messages.get_signature_message(harness.anonymous(message_for("alice.crypto", expiry, true))).await.unwrap().into_inner();
        let result = client.authenticate_signature(harness.as_service(authenticate("alice.crypto", expiry.to_string(), sign(&wallet, &domain_message.message)))).await.unwrap().into_inner();
        assert_eq!(result.account_id, alice.account_id, "{name}");

        // Unlinking the wallet ends it at once, cached recoveries included.
        client.unlink_wallet(harness.as_account(alice.account_id, pb::UnlinkWalletRequest { address: wallet.address().to_string() })).await.unwrap();
        let result = client.authenticate_signature(harness.as_service(authenticate("alice", expiry.to_string(), good.clone()))).await;
        expect_error(result, Code::Unauthenticated, "SIGNATURE_MISMATCH", &format!("{name}: after unlink"));
        harness.shutdown.cancel();
    }
}

/// The same signature with `s` replaced by `n - s` and `v` flipped: valid math, not canonical.
fn high_s_twin(signature: &str) -> String {
    let bytes = hex::decode(signature.trim_start_matches("0x")).unwrap();
    let order = alloy_primitives::U256::from_str_radix("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16).unwrap();
    let s = alloy_primitives::U256::from_be_slice(&bytes[32..64]);
    let mut twin = bytes.clone();
    twin[32..64].copy_from_slice(&(order - s).to_be_bytes::<32>());
    twin[64] = if bytes[64] == 27 { 28 } else { 27 };
    format!("0x{}", hex::encode(twin))
}

clawx_common::backend_tests! {
    async fn other_services_resolve_accounts(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let mut client = harness.client.clone();
        let alice = harness.registered("alice").await;
        let bob = harness.create().await;
        let request = pb::ResolveAccountsRequest {
            ids: vec![bob.account_id],
            handles: vec!["ALICE".into()],
            wallet_addresses: vec![bob.wallet_address.to_lowercase(), "0x0000000000000000000000000000000000000000".into()],
        };
        let accounts = client.resolve_accounts(harness.as_service(request.clone())).await.unwrap().into_inner().accounts;
        assert_eq!(accounts.iter().map(|a| a.id).collect::<Vec<_>>(), vec![alice.account_id, bob.account_id], "{name}: deduplicated");
        expect_error(client.resolve_accounts(harness.as_account(alice.account_id, request)).await, Code::PermissionDenied, "FORBIDDEN", name);
        harness.shutdown.cancel();
    }
}

clawx_common::backend_tests! {
    /// The per-account caps (20 keys, 20 wallets, 20 domains) hold when requests race: the count
    /// and the insert happen in one transaction.
    async fn account_caps_hold_under_concurrent_requests(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let alice = harness.create().await;
        let outcomes = |results: Vec<Result<(), Status>>| {
            let created = results.iter().filter(|result| result.is_ok()).count();
            for result in &results {
                if let Err(status) = result {
                    assert_eq!(status.metadata().get("clawx-error-code").map(|v| v.to_str().unwrap()), Some("LIMIT_EXCEEDED"), "{name}: {status:?}");
                }
            }
            created
        };

        // 60 key creations at once on an account holding one key: 19 succeed.
        let creations = (0..60).map(|index| {
            let mut client = harness.client.clone();
            let request = harness.as_account(alice.account_id, pb::CreateApiKeyRequest { name: format!("k{index}") });
            tokio::spawn(async move { client.create_api_key(request).await.map(|_| ()) })
        });
        let created = outcomes(futures::future::join_all(creations).await.into_iter().map(Result::unwrap).collect());
        let keys = harness.client.clone().list_api_keys(harness.as_account(alice.account_id, pb::ListApiKeysRequest {})).await.unwrap().into_inner().keys;
        assert_eq!((created, keys.len()), (19, 20), "{name}: keys");

        // 60 domain claims at once: 20 succeed.
        let claims = (0..60).map(|index| {
            let mut client = harness.client.clone();
            let request = harness.as_account(alice.account_id, pb::ClaimDomainRequest { name: format!("d{index}.crypto") });
            tokio::spawn(async move { client.claim_domain(request).await.map(|_| ()) })
        });
        let claimed = outcomes(futures::future::join_all(claims).await.into_iter().map(Result::unwrap).collect());
        let domains = harness.client.clone().list_domains(harness.as_account(alice.account_id, pb::ListDomainsRequest {})).await.unwrap().into_inner().domains;
        assert_eq!((claimed, domains.len()), (20, 20), "{name}: domains");
        // Claiming one it holds again is still fine at the cap (which 20 won the race varies).
        let held = domains[0].name.clone();
        harness.client.clone().claim_domain(harness.as_account(alice.account_id, pb::ClaimDomainRequest { name: held })).await.unwrap();

        // Wallets: 12 linked, then 10 signed challenges redeemed at once: 8 succeed.
        for _ in 0..12 {
            link(&harness, alice.account_id, &PrivateKeySigner::random()).await;
        }
        let mut requests = Vec::new();
        for _ in 0..10 {
            let wallet = PrivateKeySigner::random();
            let address = wallet.address().to_checksum(None);
            let challenge = harness
                .client
                .clone()
                .get_wallet_challenge(harness.as_account(alice.account_id, pb::GetWalletChallengeRequest { address: address.clone() }))
                .await
                .unwrap()
                .into_inner();
            requests.push(pb::LinkWalletRequest { address, message: challenge.message.clone(), signature: sign(&wallet, &challenge.message) });
        }
        let links = requests.into_iter().map(|request| {
            let mut client = harness.client.clone();
            let request = harness.as_account(alice.account_id, request);
            tokio::spawn(async move { client.link_wallet(request).await.map(|_| ()) })
        });
        let linked = outcomes(futures::future::join_all(links).await.into_iter().map(Result::unwrap).collect());
        let wallets = harness.client.clone().list_wallets(harness.as_account(alice.account_id, pb::ListWalletsRequest {})).await.unwrap().into_inner().wallets;
        assert_eq!((linked, wallets.len()), (8, 20), "{name}: wallets");
        harness.shutdown.cancel();
    }
}

/// An XMTP identity-update text for `inbox_id`, dated now, with `actions`.
fn xmtp_text(inbox_id: &str, actions: &[String]) -> String {
    let now = time::OffsetDateTime::now_utc();
    let time = format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", now.year(), now.month() as u8, now.day(), now.hour(), now.minute(), now.second());
    format!(
        "XMTP : Authenticate to inbox\n\nInbox ID: {inbox_id}\nCurrent time: {time}\n\n{}\n\nFor more info: https://xmtp.org/signatures",
        actions.join("\n")
    )
}

clawx_common::backend_tests! {
    async fn only_the_messaging_service_has_wallets_sign_their_own_xmtp_updates(test_db) {
        let Some(harness) = Harness::on(test_db).await else { return };
        let name = harness.name;
        let alice = harness.create().await;
        let bob = harness.create().await;
        let wallet = alice.wallet_address.to_lowercase();
        let installation = hex::encode([7u8; 32]);
        let actions = vec![format!("- Create inbox\n  (Owner: {wallet})"), format!("- Grant messaging access to app\n  (ID: {installation})")];
        let text = xmtp_text(&alice.xmtp_inbox_id, &actions);
        let messaging = Principal::from_service("messaging");
        let ask = |principal: &Principal, account_id: i64, text: &str| {
            let request = harness.request(principal, pb::SignXmtpIdentityUpdateRequest { account_id, signature_text: text.to_string() });
            let mut client = harness.client.clone();
            async move { client.sign_xmtp_identity_update(request).await.map(tonic::Response::into_inner) }
        };

        // The messaging service gets a signature the wallet made over exactly that text.
        let signed = ask(&messaging, alice.account_id, &text).await.unwrap();
        assert_eq!(signed.signature.len(), 65, "{name}");
        assert!(matches!(signed.signature[64], 27 | 28), "{name}: v is 27 or 28");
        assert_eq!(signed.wallet_address, wallet);
        assert_eq!(signed.xmtp_inbox_id, alice.xmtp_inbox_id);
        let signature = alloy_primitives::Signature::from_raw(&signed.signature).unwrap();
        let signer = signature.recover_address_from_msg(text.as_bytes()).unwrap();
        assert_eq!(signer.to_checksum(None), alice.wallet_address, "{name}: signed by the account's own wallet");
        let revoke = xmtp_text(&alice.xmtp_inbox_id, &[format!("- Revoke messaging access from app\n  (ID: {installation})")]);
        ask(&messaging, alice.account_id, &revoke).await.unwrap();

        // No other caller: not the gateway's service principal, not another named service,
        // not an account (even for its own inbox), not anonymous callers.
        for principal in [
            Principal::service(),
            Principal::from_service("groups"),
            Principal::account(alice.account_id, AuthMethod::ApiKey, None),
            Principal::anonymous(None),
        ] {
            let context = format!("{name}: {principal:?}");
            expect_error(ask(&principal, alice.account_id, &text).await, Code::PermissionDenied, "FORBIDDEN", &context);
        }

        // Nothing but the account's own identity updates.
        let refused = [
            ("another account's inbox", bob.account_id, text.clone()),
            ("arbitrary text", alice.account_id, "Transfer all funds".to_string()),
            ("a signed-request text", alice.account_id, hex::encode(Sha256::digest(b"clawx"))),
            (
                "linking another wallet",
                alice.account_id,
                xmtp_text(&alice.xmtp_inbox_id, &[format!("- Link address to inbox\n  (Address: {})", bob.wallet_address.to_lowercase())]),
            ),
            (
                "changing the recovery address",
                alice.account_id,
                xmtp_text(&alice.xmtp_inbox_id, &[format!("- Change inbox recovery address\n  (Address: {})", bob.wallet_address.to_lowercase())]),
            ),
            (
                "an inbox owned by another wallet",
                alice.account_id,
                xmtp_text(&alice.xmtp_inbox_id, &[format!("- Create inbox\n  (Owner: {})", bob.wallet_address.to_lowercase())]),
            ),
            ("a text dated long ago", alice.account_id, text.replace(&text[text.find("Current time: ").unwrap() + 14..][..20], "2020-01-01T00:00:00Z")),
        ];
        for (what, account_id, refused_text) in refused {
            let status = expect_error(ask(&messaging, account_id, &refused_text).await, Code::InvalidArgument, "VALIDATION_FAILED", &format!("{name}: {what}"));
            assert_eq!(status.metadata().get("clawx-error-field").map(|value| value.to_str().unwrap()), Some("signature_text"), "{name}: {what}");
        }
        expect_error(ask(&messaging, 987_654_321, &text).await, Code::NotFound, "NOT_FOUND", &format!("{name}: unknown account"));
        harness.shutdown.cancel();
    }
}
