//! The verify service over gRPC, as the gateway calls it (internal tokens), against the real
//! identity and messaging services and a loopback stand-in for X: on SQLite + memory
//! (`name::sqlite`) and on PostgreSQL + Redis (`name::postgres`). Also the expiry sweep, run
//! by two sweepers at once on a clock the test moves.

use std::{collections::BTreeSet, time::Duration};

use clawx_common::{
    AuthMethod, Backends, Database, InternalAuth, Principal, Secret,
    crypto::{Keyring, generate_master_key},
    service::ServiceConfig,
    storage::Backend,
    testing::{TestDatabase, redis_backends, spawn_service},
    time::now_ms,
};
use clawx_proto::{
    identity::{self as identity_pb, identity_service_client::IdentityServiceClient},
    messaging::{self as messaging_pb, messaging_service_client::MessagingServiceClient, send_direct_message_request::To},
    verify::{self as pb, verify_service_client::VerifyServiceClient},
};
use clawx_verify::{
    Clock, Settings,
    accounts::Accounts,
    expiry::{LEASE, Sweeper},
    store::for_database,
    testing::FakeX,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, transport::Channel};

const DAY_MS: i64 = 24 * 3600 * 1000;

struct Harness {
    identity: IdentityServiceClient<Channel>,
    messaging: MessagingServiceClient<Channel>,
    verify: VerifyServiceClient<Channel>,
    identity_url: String,
    messaging_url: String,
    auth: InternalAuth,
    x: FakeX,
    clock: Clock,
    database: TestDatabase,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn on(database: TestDatabase) -> Harness {
        let shutdown = CancellationToken::new();
        let auth = InternalAuth::new(&Secret::new("verify-test-secret-verify-test-secret"));
        let backends = match database.backend {
            Backend::Sqlite => Backends::memory(),
            Backend::Postgres => redis_backends(&shutdown).expect("CLAWX_TEST_REDIS_URL is set with CLAWX_TEST_DATABASE_URL"),
        };
        let service = ServiceConfig { database: database.args.clone(), backends, auth: auth.clone() };
        let identity_config = clawx_identity::Config {
            service: service.clone(),
            keyring: Keyring::new(&Secret::new(generate_master_key()), None).unwrap(),
            settings: clawx_identity::Settings::default(),
        };
        let token = shutdown.clone();
        let identity = spawn_service(move |listener| clawx_identity::run(identity_config, listener, token)).await;
        let identity_url = format!("http://{}", identity.address);
        let messaging_config = clawx_messaging::Config {
            service: service.clone(),
            node: Default::default(),
            identity_url: identity_url.clone(),
            message_max_bytes: clawx_messaging::dm::DEFAULT_MAX_MESSAGE_BYTES,
            spam: Default::default(),
            push: Default::default(),
            agents: Default::default(),
        };
        let token = shutdown.clone();
        let messaging = spawn_service(move |listener| clawx_messaging::run(messaging_config, listener, token)).await;
        let messaging_url = format!("http://{}", messaging.address);
        let x = FakeX::start("test-bearer-token").await;
        let clock = Clock::manual(now_ms());
        let settings = Settings { sources: x.settings(true, false), clock: clock.clone(), require_verification: true, ..Settings::default() };
        let verify_config = clawx_verify::Config { service, settings, identity_url: identity_url.clone(), messaging_url: messaging_url.clone() };
        let token = shutdown.clone();
        let verify = spawn_service(move |listener| clawx_verify::run(verify_config, listener, token)).await;
        Harness {
            identity: IdentityServiceClient::new(identity.channel),
            messaging: MessagingServiceClient::new(messaging.channel),
            verify: VerifyServiceClient::new(verify.channel),
            identity_url,
            messaging_url,
            auth,
            x,
            clock,
            database,
            shutdown,
        }
    }

    fn request<T>(&self, audience: &str, principal: &Principal, message: T) -> Request<T> {
        let mut request = Request::new(message);
        self.auth.authorize(&mut request, audience, principal);
        request
    }

    fn as_account<T>(&self, audience: &str, account_id: i64, message: T) -> Request<T> {
        self.request(audience, &Principal::account(account_id, AuthMethod::ApiKey, None), message)
    }

    /// An account with a handle, created now (real time: the identity service's clock).
    async fn agent(&self, handle: &str) -> i64 {
        let message = identity_pb::CreateAgentRequest { handle: handle.into(), name: format!("{handle} agent") };
        let created = self.identity.clone().create_agent(self.request("identity", &Principal::anonymous(None), message)).await.unwrap();
        created.into_inner().account_id
    }

    async fn start(&self, account_id: i64) -> Result<pb::StartVerificationResponse, Status> {
        let request = self.as_account("verify", account_id, pb::StartVerificationRequest {});
        self.verify.clone().start_verification(request).await.map(tonic::Response::into_inner)
    }

    async fn complete(&self, account_id: i64, url: &str) -> Result<pb::CompleteVerificationResponse, Status> {
        let request = self.as_account("verify", account_id, pb::CompleteVerificationRequest { tweet_url: url.into() });
        self.verify.clone().complete_verification(request).await.map(tonic::Response::into_inner)
    }

    async fn me(&self, account_id: i64) -> identity_pb::Profile {
        self.identity.clone().get_me(self.as_account("identity", account_id, identity_pb::GetMeRequest {})).await.unwrap().into_inner()
    }

    async fn send(&self, from: i64, to_handle: &str) {
        let message = messaging_pb::SendDirectMessageRequest {
            to: Some(To::Handle(to_handle.into())),
            content: format!("hello {to_handle}"),
            ..Default::default()
        };
        self.messaging.clone().send_direct_message(self.as_account("messaging", from, message)).await.unwrap();
    }

    /// Messages stored with the account on either side.
    async fn messages_of(&self, account_id: i64) -> i64 {
        let database = Database::connect(&self.database.args, "messaging").await.unwrap();
        let sql = "SELECT COUNT(*) FROM dm_messages WHERE sender_account_id = $1 OR recipient_account_id = $1";
        let count = match &database {
            Database::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).bind(account_id).fetch_one(pool).await.unwrap(),
            Database::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).bind(account_id).fetch_one(pool).await.unwrap(),
        };
        database.close().await;
        count
    }

    async fn sweeper(&self) -> Sweeper {
        let database = Database::connect(&self.database.args, "verify").await.unwrap();
        let accounts = Accounts::connect_lazy(&self.identity_url, &self.messaging_url, self.auth.clone()).unwrap();
        Sweeper::new(for_database(&database), accounts, self.clock.clone(), Duration::from_secs(24 * 3600))
    }
}

fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, clawx_code: &str, context: &str) -> String {
    let status = result.expect_err(context);
    assert_eq!(status.code(), code, "{context}: {status:?}");
    assert_eq!(status.metadata().get("clawx-error-code").and_then(|value| value.to_str().ok()), Some(clawx_code), "{context}: {status:?}");
    status.message().to_string()
}

clawx_common::backend_tests! {
    async fn a_tweet_verifies_the_account_and_its_profile(test_db) {
        let harness = Harness::on(test_db).await;
        let account = harness.agent("grpc-agent").await;
        let status = harness.verify.clone().get_verification(harness.as_account("verify", account, pb::GetVerificationRequest {})).await.unwrap().into_inner();
        assert_eq!((status.verified, status.has_active_code), (false, false));

        let started = harness.start(account).await.unwrap();
        assert!(started.tweet_text.contains("@claw_mail") && started.tweet_text.contains(&started.verification_code));
        assert_eq!(started.expires_at_ms, harness.clock.now_ms() + 15 * 60 * 1000);
        let status = harness.verify.clone().get_verification(harness.as_account("verify", account, pb::GetVerificationRequest {})).await.unwrap().into_inner();
        assert_eq!((status.has_active_code, status.code_expires_at_ms), (true, Some(started.expires_at_ms)));

        let id = harness.x.post("4242", "operator", &started.tweet_text, harness.clock.now_ms() + 1_000);
        let completed = harness.complete(account, &format!("https://x.com/operator/status/{id}")).await.unwrap();
        assert_eq!(completed.twitter_username, "operator");
        assert_eq!(completed.verified_at_ms, harness.clock.now_ms());
        let profile = harness.me(account).await;
        assert!(profile.verified);
        assert_eq!(profile.twitter_username.as_deref(), Some("operator"));
        let status = harness.verify.clone().get_verification(harness.as_account("verify", account, pb::GetVerificationRequest {})).await.unwrap().into_inner();
        assert_eq!((status.verified, status.verified_at_ms, status.has_active_code), (true, Some(completed.verified_at_ms), false));
        expect_error(harness.start(account).await, Code::FailedPrecondition, "ALREADY_VERIFIED", "start once verified");

        // The same X account (renamed since) cannot verify another agent.
        let other = harness.agent("grpc-other").await;
        let started = harness.start(other).await.unwrap();
        harness.x.rename("4242", "operator_2");
        let id = harness.x.post("4242", "operator_2", &started.tweet_text, harness.clock.now_ms() + 1_000);
        expect_error(harness.complete(other, &format!("https://x.com/i/status/{id}")).await, Code::AlreadyExists, "TWITTER_ALREADY_USED", "reused X account");
        assert!(!harness.me(other).await.verified);

        // Calls without an account are refused.
        let anonymous = harness.request("verify", &Principal::anonymous(None), pb::StartVerificationRequest {});
        expect_error(harness.verify.clone().start_verification(anonymous).await, Code::Unauthenticated, "UNAUTHORIZED", "anonymous start");
    }

    async fn only_the_verify_service_may_set_verification_or_delete_accounts(test_db) {
        let harness = Harness::on(test_db).await;
        let account = harness.agent("reserved").await;
        let set = || identity_pb::SetVerificationRequest { account_id: account, verified: true, twitter_username: Some("mallory".into()) };
        for principal in [Principal::account(account, AuthMethod::ApiKey, None), Principal::service(), Principal::from_service("messaging")] {
            let request = harness.request("identity", &principal, set());
            expect_error(harness.identity.clone().set_verification(request).await, Code::PermissionDenied, "FORBIDDEN", "set by another");
            let delete = identity_pb::DeleteUnverifiedAccountRequest { account_id: account, created_before_ms: i64::MAX };
            let request = harness.request("identity", &principal, delete);
            expect_error(harness.identity.clone().delete_unverified_account(request).await, Code::PermissionDenied, "FORBIDDEN", "delete by another");
            let list = identity_pb::ListUnverifiedAccountsRequest { created_before_ms: i64::MAX, after_id: 0, limit: 10 };
            let request = harness.request("identity", &principal, list);
            expect_error(harness.identity.clone().list_unverified_accounts(request).await, Code::PermissionDenied, "FORBIDDEN", "list by another");
        }
        for principal in [Principal::account(account, AuthMethod::ApiKey, None), Principal::service(), Principal::from_service("groups")] {
            let request = harness.request("messaging", &principal, messaging_pb::PurgeAccountRequest { account_id: account });
            expect_error(harness.messaging.clone().purge_account(request).await, Code::PermissionDenied, "FORBIDDEN", "purge by another");
        }
        assert!(!harness.me(account).await.verified, "nothing changed");

        let request = harness.request("identity", &Principal::from_service("verify"), set());
        let profile = harness.identity.clone().set_verification(request).await.unwrap().into_inner();
        assert!(profile.verified);
        assert_eq!(profile.twitter_username.as_deref(), Some("mallory"));
        // Verified accounts are not the sweep's.
        let delete = identity_pb::DeleteUnverifiedAccountRequest { account_id: account, created_before_ms: i64::MAX };
        let request = harness.request("identity", &Principal::from_service("verify"), delete);
        assert!(!harness.identity.clone().delete_unverified_account(request).await.unwrap().into_inner().deleted);
    }

    async fn two_sweepers_delete_each_expired_account_once_and_nothing_else(test_db) {
        let harness = Harness::on(test_db).await;
        let expired: Vec<i64> = agents(&harness, &["old-1", "old-2", "old-3", "old-4", "old-5"]).await;
        let verified_old = harness.agent("old-verified").await;
        let request = harness.request(
            "identity",
            &Principal::from_service("verify"),
            identity_pb::SetVerificationRequest { account_id: verified_old, verified: true, twitter_username: Some("kept".into()) },
        );
        harness.identity.clone().set_verification(request).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cutoff = now_ms();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let young = harness.agent("young").await;
        harness.send(expired[0], "young").await;
        harness.send(young, "old-verified").await;
        harness.send(verified_old, "old-2").await;
        assert_eq!(harness.messages_of(expired[0]).await, 1);
        let started = harness.start(expired[1]).await.unwrap();
        assert!(started.verification_code.starts_with("CLAW-"));

        // A day after the cutoff: the five are past their window, the young one is not.
        harness.clock.set(cutoff + DAY_MS);
        let (first, second) = (harness.sweeper().await, harness.sweeper().await);
        let (by_first, by_second) = tokio::join!(first.sweep(), second.sweep());
        let (by_first, by_second) = (by_first.unwrap(), by_second.unwrap());
        let mut all: Vec<i64> = by_first.iter().chain(&by_second).copied().collect();
        all.sort_unstable();
        assert_eq!(all, expired, "each expired account deleted once: {by_first:?} {by_second:?}");

        let resolve = identity_pb::ResolveAccountsRequest { ids: expired.iter().copied().chain([verified_old, young]).collect(), ..Default::default() };
        let left = harness.identity.clone().resolve_accounts(harness.request("identity", &Principal::service(), resolve)).await.unwrap().into_inner();
        let left: BTreeSet<i64> = left.accounts.iter().map(|profile| profile.id).collect();
        assert_eq!(left, BTreeSet::from([verified_old, young]), "nothing else touched");
        for &account in &expired {
            assert_eq!(harness.messages_of(account).await, 0, "messages of {account} purged");
        }
        assert_eq!(harness.messages_of(young).await, 1, "the young account keeps its other conversation");
        let start = harness.start(expired[1]).await;
        expect_error(start, Code::Unauthenticated, "UNAUTHORIZED", "a deleted account");
        // Messaging remembered old-2 (a DM went to it): it forgets the deleted account on the
        // identity service's announcement, so a DM to its handle is refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let message =
                messaging_pb::SendDirectMessageRequest { to: Some(To::Handle("old-2".into())), content: "still there?".into(), ..Default::default() };
            match harness.messaging.clone().send_direct_message(harness.as_account("messaging", young, message)).await {
                Err(status) if status.code() == Code::NotFound => break,
                other => assert!(std::time::Instant::now() < deadline, "a DM to a deleted account is refused: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(first.sweep().await.unwrap().is_empty() && second.sweep().await.unwrap().is_empty(), "nothing left to delete");

        // The young account's window ends a day after its creation: it cannot verify any more,
        // and goes too.
        harness.clock.set(now_ms() + DAY_MS + 1_000);
        expect_error(harness.start(young).await, Code::FailedPrecondition, "VERIFICATION_EXPIRED", "past the window");
        assert_eq!(first.sweep().await.unwrap(), vec![young]);
        assert_eq!(harness.messages_of(young).await, 0);
    }

    async fn a_sweep_resumes_what_a_stopped_sweeper_left(test_db) {
        let harness = Harness::on(test_db).await;
        let half_done = harness.agent("half-done").await;
        let claimed = harness.agent("claimed").await;
        let peer = harness.agent("peer").await;
        let verified = identity_pb::SetVerificationRequest { account_id: peer, verified: true, twitter_username: Some("peer".into()) };
        harness.identity.clone().set_verification(harness.request("identity", &Principal::from_service("verify"), verified)).await.unwrap();
        harness.send(half_done, "peer").await;
        harness.send(claimed, "peer").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = now_ms() + DAY_MS;
        harness.clock.set(now);
        let created_before = now - DAY_MS;
        // A sweeper that stopped after deleting `half-done` (its messages still there), and one
        // that stopped right after claiming `claimed`.
        let database = Database::connect(&harness.database.args, "verify").await.unwrap();
        let store = for_database(&database);
        let accounts = Accounts::connect_lazy(&harness.identity_url, &harness.messaging_url, harness.auth.clone()).unwrap();
        let lease = LEASE.as_millis() as i64;
        assert!(store.claim_expiry(half_done, "stopped", now, now + lease).await.unwrap());
        assert!(accounts.delete_unverified(half_done, created_before).await.unwrap());
        assert!(store.claim_expiry(claimed, "stopped", now, now + lease).await.unwrap());

        let sweeper = harness.sweeper().await;
        assert_eq!(sweeper.sweep().await.unwrap(), Vec::<i64>::new(), "leased accounts wait for their lease");
        assert_eq!(harness.messages_of(half_done).await, 1);

        harness.clock.set(now + lease + 1);
        let deleted = sweeper.sweep().await.unwrap();
        assert_eq!(deleted, vec![claimed], "the stale leases are taken over: `half-done` was already deleted");
        assert_eq!(harness.messages_of(half_done).await, 0, "and its messages are purged on resuming");
        assert_eq!(harness.messages_of(claimed).await, 0);
        assert!(store.stale_expiry_claims(i64::MAX, 10).await.unwrap().is_empty(), "no lease left behind");
    }
}

/// Creates agents one after another; their ids in order.
async fn agents(harness: &Harness, handles: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(harness.agent(handle).await);
    }
    ids
}
