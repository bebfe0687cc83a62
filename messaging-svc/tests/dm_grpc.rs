//! Direct messages over gRPC, as the gateway calls them (internal tokens), against the real
//! messaging service and the real identity service it resolves accounts with: on SQLite +
//! memory (`name::sqlite`) and on PostgreSQL + Redis (`name::postgres`).

use std::{collections::BTreeSet, time::Duration};

use clawx_common::{
    AuthMethod, Backends, Database, InternalAuth, Principal, Secret,
    crypto::{Keyring, generate_master_key},
    service::ServiceConfig,
    storage::Backend,
    testing::{TestDatabase, redis_backends, spawn_service},
};
use clawx_proto::{
    identity::{self as identity_pb, identity_service_client::IdentityServiceClient},
    messaging::{self as pb, list_conversation_request::Peer, messaging_service_client::MessagingServiceClient, send_direct_message_request::To},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, transport::Channel};

/// A small limit, so the oversized case is cheap.
const MAX_MESSAGE_BYTES: usize = 64;
const UNKNOWN_WALLET: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

struct Harness {
    name: &'static str,
    identity: IdentityServiceClient<Channel>,
    /// One client per messaging replica (all share the database and backends).
    replicas: Vec<MessagingServiceClient<Channel>>,
    auth: InternalAuth,
    shutdown: CancellationToken,
    /// Stops the identity service alone.
    identity_shutdown: CancellationToken,
    database: TestDatabase,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Account {
    id: i64,
    wallet: String,
}

impl Harness {
    /// Identity and `replicas` messaging replicas on `database`: SQLite with memory backends, or
    /// PostgreSQL with Redis (each replica its own Redis connection, as separate processes).
    async fn on(database: TestDatabase, replicas: usize) -> Harness {
        let shutdown = CancellationToken::new();
        let auth = InternalAuth::new(&Secret::new("messaging-test-secret-messaging-test"));
        let memory = Backends::memory();
        let backends = |shutdown: &CancellationToken| -> Backends {
            match database.backend {
                Backend::Sqlite => memory.clone(),
                Backend::Postgres => redis_backends(shutdown).expect("CLAWX_TEST_REDIS_URL is set with CLAWX_TEST_DATABASE_URL"),
            }
        };
        let identity_backends = backends(&shutdown);
        let identity_config = clawx_identity::Config {
            service: ServiceConfig { database: database.args.clone(), backends: identity_backends, auth: auth.clone() },
            keyring: Keyring::new(&Secret::new(generate_master_key()), None).unwrap(),
            settings: clawx_identity::Settings::default(),
        };
        let identity_shutdown = shutdown.child_token();
        let token = identity_shutdown.clone();
        let identity = spawn_service(|listener| clawx_identity::run(identity_config, listener, token)).await;
        let mut clients = Vec::new();
        // Replicas share one installation's Redis key prefix, each with its own connection, as
        // separate processes would.
        let redis_prefix = format!("clawx-test-dm-{}", rand::random::<u64>());
        for _ in 0..replicas {
            let replica_backends = match database.backend {
                Backend::Sqlite => memory.clone(),
                Backend::Postgres => {
                    let url = std::env::var("CLAWX_TEST_REDIS_URL").expect("CLAWX_TEST_REDIS_URL is set with CLAWX_TEST_DATABASE_URL");
                    Backends::redis(&url, &redis_prefix, shutdown.clone()).unwrap()
                }
            };
            assert!(replica_backends.pubsub.wait_connected(Duration::from_secs(5)).await);
            let config = clawx_messaging::Config {
                service: ServiceConfig { database: database.args.clone(), backends: replica_backends, auth: auth.clone() },
                node: clawx_messaging::node::NodeLimits::default(),
                identity_url: format!("http://{}", identity.address),
                message_max_bytes: MAX_MESSAGE_BYTES,
                spam: Default::default(),
                push: Default::default(),
                agents: Default::default(),
            };
            let token = shutdown.clone();
            let service = spawn_service(|listener| clawx_messaging::run(config, listener, token)).await;
            clients.push(MessagingServiceClient::new(service.channel));
        }
        let name = match database.backend {
            Backend::Sqlite => "sqlite+memory",
            Backend::Postgres => "postgres+redis",
        };
        Harness { name, identity: IdentityServiceClient::new(identity.channel), replicas: clients, auth, shutdown, identity_shutdown, database }
    }

    fn request<T>(&self, account_id: i64, message: T) -> Request<T> {
        let mut request = Request::new(message);
        self.auth.authorize(&mut request, "messaging", &Principal::account(account_id, AuthMethod::ApiKey, None));
        request
    }

    /// A new account, with `handle` registered when given.
    async fn account(&self, handle: Option<&str>) -> Account {
        let mut request = Request::new(identity_pb::CreateAccountRequest {});
        self.auth.authorize(&mut request, "identity", &Principal::anonymous(None));
        let created = self.identity.clone().create_account(request).await.unwrap().into_inner();
        if let Some(handle) = handle {
            let mut request = Request::new(identity_pb::RegisterHandleRequest { handle: handle.into(), name: handle.into(), ..Default::default() });
            self.auth.authorize(&mut request, "identity", &Principal::account(created.account_id, AuthMethod::ApiKey, None));
            self.identity.clone().register_handle(request).await.unwrap();
        }
        Account { id: created.account_id, wallet: created.wallet_address }
    }

    fn client(&self) -> MessagingServiceClient<Channel> {
        self.replicas[0].clone()
    }

    async fn send(&self, from: &Account, to: To, content: &str, key: &str) -> Result<pb::Message, Status> {
        let request = pb::SendDirectMessageRequest { to: Some(to), content: content.into(), idempotency_key: key.into() };
        Ok(self.client().send_direct_message(self.request(from.id, request)).await?.into_inner().message.expect("a message"))
    }

    async fn history(&self, of: &Account, peer: Peer) -> Vec<pb::Message> {
        let request = pb::ListConversationRequest { peer: Some(peer), ..Default::default() };
        self.client().list_conversation(self.request(of.id, request)).await.unwrap().into_inner().messages
    }

    async fn inbox(&self, of: &Account, consent: pb::Consent) -> Vec<pb::Message> {
        let request = pb::ListInboxRequest { consent: consent as i32, ..Default::default() };
        self.client().list_inbox(self.request(of.id, request)).await.unwrap().into_inner().conversations
    }
}

/// Asserts a call failed with `code`, Clawx error code `clawx_code` and (for validation
/// errors) the field at fault.
fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, clawx_code: &str, field: Option<&str>, context: &str) {
    let status = result.expect_err(context);
    assert_eq!(status.code(), code, "{context}: {status:?}");
    let metadata = |key: &str| status.metadata().get(key).map(|value| value.to_str().unwrap().to_string());
    assert_eq!(metadata("clawx-error-code").as_deref(), Some(clawx_code), "{context}: {status:?}");
    assert_eq!(metadata("clawx-error-field").as_deref(), field, "{context}: {status:?}");
}

fn account_request<T>(auth: &InternalAuth, message: T) -> Request<T> {
    let mut request = Request::new(message);
    auth.authorize(&mut request, "messaging", &Principal::account(1, AuthMethod::ApiKey, None));
    request
}

/// A send that must be refused: recipient, content, gRPC code, Clawx code, field, what it shows.
type Refusal = (Option<To>, String, Code, &'static str, Option<&'static str>, &'static str);

async fn next(stream: &mut tonic::Streaming<pb::Message>) -> pb::Message {
    tokio::time::timeout(Duration::from_secs(20), stream.message()).await.expect("a message in time").unwrap().expect("the stream stays open")
}

fn contents(messages: &[pb::Message]) -> Vec<&str> {
    messages.iter().map(|message| message.content.as_str()).collect()
}

clawx_common::backend_tests! {
    async fn direct_messages_follow_every_rule(test_db) {
        let harness = Harness::on(test_db, 1).await;
        let name = harness.name;
        let alice = harness.account(Some("alice")).await;
        let bob = harness.account(Some("bob")).await;
        let carol = harness.account(None).await;

        // By handle (any case): both handles, stored, the conversation's topic.
        let first = harness.send(&alice, To::Handle("Bob".into()), "hi bob", "").await.unwrap();
        assert_eq!((first.sender_id, first.recipient_id), (Some(alice.id), Some(bob.id)), "{name}");
        assert_eq!((first.sender_handle.as_deref(), first.recipient_handle.as_deref()), (Some("alice"), Some("bob")));
        assert_eq!((first.sender_address.as_deref(), first.recipient_address.as_deref()), (None, None));
        assert_eq!((first.content.as_str(), first.delivery), ("hi bob", pb::Delivery::Stored as i32));
        assert!(first.topic.starts_with("/clawx/dm/1/") && first.sent_at_ms > 0, "{name}: {first:?}");

        // By address: bob's wallet (lowercase) lands in the same conversation.
        let by_wallet = harness.send(&alice, To::WalletAddress(bob.wallet.to_lowercase()), "by wallet", "").await.unwrap();
        assert_eq!((by_wallet.recipient_id, by_wallet.recipient_address.as_deref(), by_wallet.topic.as_str()), (Some(bob.id), None, first.topic.as_str()));
        // A wallet with no account here: its lowercase address, no handle.
        let outside = harness.send(&alice, To::WalletAddress(UNKNOWN_WALLET.into()), "to a wallet", "").await.unwrap();
        assert_eq!((outside.recipient_id, outside.recipient_handle.as_deref()), (None, None), "{name}");
        assert_eq!(outside.recipient_address.as_deref(), Some(UNKNOWN_WALLET.to_lowercase().as_str()));
        assert_ne!(outside.topic, first.topic);
        // An account without a handle sends; its handle is absent.
        let from_carol = harness.send(&carol, To::Handle("alice".into()), "from carol", "").await.unwrap();
        assert_eq!((from_carol.sender_id, from_carol.sender_handle.as_deref()), (Some(carol.id), None), "{name}");

        // Every refusal, with its code and field.
        let cases: Vec<Refusal> = vec![
            (Some(To::Handle("nobody".into())), "x".into(), Code::NotFound, "NOT_FOUND", None, "unknown handle"),
            (Some(To::Handle("alice".into())), "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("handle"), "to yourself"),
            (Some(To::WalletAddress(alice.wallet.clone())), "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("wallet_address"), "your own wallet"),
            (Some(To::WalletAddress(alice.wallet.to_lowercase())), "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("wallet_address"), "your own wallet, lowercase"),
            (None, "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("handle"), "no recipient"),
            (Some(To::Handle("bob".into())), String::new(), Code::InvalidArgument, "VALIDATION_FAILED", Some("message"), "empty"),
            (Some(To::Handle("bob".into())), "x".repeat(MAX_MESSAGE_BYTES + 1), Code::InvalidArgument, "VALIDATION_FAILED", Some("message"), "too big"),
            (Some(To::Handle("bob".into())), "a\u{0}b".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("message"), "a NUL character"),
            (Some(To::WalletAddress("0x1234".into())), "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("wallet_address"), "short address"),
            (Some(To::WalletAddress("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into())), "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("wallet_address"), "bad checksum"),
            (Some(To::WalletAddress("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".into())), "x".into(), Code::InvalidArgument, "VALIDATION_FAILED", Some("wallet_address"), "no 0x"),
        ];
        for (to, content, code, clawx_code, field, context) in cases {
            let request = pb::SendDirectMessageRequest { to, content, idempotency_key: String::new() };
            let result = harness.client().send_direct_message(harness.request(alice.id, request)).await;
            expect_error(result, code, clawx_code, field, &format!("{name}: {context}"));
        }
        assert!(harness.send(&alice, To::Handle("bob".into()), &"x".repeat(MAX_MESSAGE_BYTES), "").await.is_ok(), "{name}: at the limit");
        let request = pb::SendDirectMessageRequest { to: Some(To::Handle("bob".into())), content: "x".into(), idempotency_key: "key\u{0}".into() };
        let result = harness.client().send_direct_message(harness.request(alice.id, request)).await;
        expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", Some("idempotency_key"), &format!("{name}: a NUL in the key"));
        let mut anonymous = Request::new(pb::ListInboxRequest::default());
        harness.auth.authorize(&mut anonymous, "messaging", &Principal::anonymous(None));
        expect_error(harness.client().list_inbox(anonymous).await, Code::Unauthenticated, "UNAUTHORIZED", None, &format!("{name}: anonymous"));
        let bad_stream = harness.client().stream_messages(harness.request(alice.id, pb::StreamMessagesRequest { after_id: -1 })).await;
        expect_error(bad_stream.map(|_| ()), Code::InvalidArgument, "VALIDATION_FAILED", Some("after_id"), &format!("{name}: negative cursor"));

        // Inbox: the newest message of each conversation, newest first; consent filters.
        let inbox = harness.inbox(&alice, pb::Consent::Unspecified).await;
        assert_eq!(contents(&inbox), vec!["x".repeat(MAX_MESSAGE_BYTES).as_str(), "from carol", "to a wallet"], "{name}");
        assert_eq!(harness.inbox(&alice, pb::Consent::Unknown).await.len(), 3, "{name}: unknown by default");
        assert!(harness.inbox(&alice, pb::Consent::Allowed).await.is_empty(), "{name}");
        let limited = pb::ListInboxRequest { limit: 1, offset: 1, ..Default::default() };
        let page = harness.client().list_inbox(harness.request(alice.id, limited)).await.unwrap().into_inner().conversations;
        assert_eq!(contents(&page), vec!["from carol"], "{name}: limit and offset");
        assert_eq!(contents(&harness.inbox(&bob, pb::Consent::Unspecified).await)[0], "x".repeat(MAX_MESSAGE_BYTES), "{name}");

        // Conversations: newest first, by handle or by address, from either side only.
        let history = harness.history(&bob, Peer::Handle("alice".into())).await;
        assert_eq!(contents(&history)[1..], ["by wallet", "hi bob"], "{name}");
        assert_eq!(history, harness.history(&alice, Peer::WalletAddress(bob.wallet.clone())).await, "{name}: by address");
        assert!(harness.history(&carol, Peer::Handle("bob".into())).await.is_empty(), "{name}: carol is not in alice and bob's chat");
        assert_eq!(contents(&harness.history(&alice, Peer::WalletAddress(UNKNOWN_WALLET.to_lowercase())).await), vec!["to a wallet"], "{name}");
        let before = pb::ListConversationRequest { peer: Some(Peer::Handle("bob".into())), before_id: Some(by_wallet.id), ..Default::default() };
        let older = harness.client().list_conversation(harness.request(alice.id, before)).await.unwrap().into_inner().messages;
        assert_eq!(contents(&older), vec!["hi bob"], "{name}: before_id");
        let after = pb::ListConversationRequest { peer: Some(Peer::Handle("bob".into())), after_id: Some(first.id), limit: 1, ..Default::default() };
        let newer = harness.client().list_conversation(harness.request(alice.id, after)).await.unwrap().into_inner().messages;
        assert_eq!(newer.len(), 1, "{name}: after_id with a limit");
        assert!(newer[0].id > first.id);
        let offset = pb::ListConversationRequest { peer: Some(Peer::Handle("bob".into())), offset: 2, ..Default::default() };
        let skipped = harness.client().list_conversation(harness.request(alice.id, offset)).await.unwrap().into_inner().messages;
        assert_eq!(contents(&skipped), vec!["hi bob"], "{name}: offset");
        let unknown = pb::ListConversationRequest { peer: Some(Peer::Handle("nobody".into())), ..Default::default() };
        expect_error(harness.client().list_conversation(harness.request(alice.id, unknown)).await, Code::NotFound, "NOT_FOUND", None, name);
        let invalid = pb::ListConversationRequest { peer: Some(Peer::WalletAddress("0xnope".into())), ..Default::default() };
        let result = harness.client().list_conversation(harness.request(alice.id, invalid)).await;
        expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", Some("wallet_address"), name);
        let invalid = pb::ListInboxRequest { consent: 9, ..Default::default() };
        expect_error(harness.client().list_inbox(harness.request(alice.id, invalid)).await, Code::InvalidArgument, "VALIDATION_FAILED", Some("consent"), name);
    }

    async fn sends_are_idempotent_and_concurrent_sends_all_commit(test_db) {
        let harness = Harness::on(test_db, 1).await;
        let name = harness.name;
        let alice = harness.account(Some("alice")).await;
        let bob = harness.account(Some("bob")).await;

        // A retry answers the first message and stores nothing; other content is refused.
        let first = harness.send(&alice, To::Handle("bob".into()), "once", "key-1").await.unwrap();
        let retry = harness.send(&alice, To::Handle("bob".into()), "once", "key-1").await.unwrap();
        assert_eq!(retry, first, "{name}");
        let result = harness.send(&alice, To::Handle("bob".into()), "twice", "key-1").await;
        expect_error(result, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED", None, &format!("{name}: other content"));
        let result = harness.send(&alice, To::WalletAddress(UNKNOWN_WALLET.into()), "once", "key-1").await;
        expect_error(result, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED", None, &format!("{name}: other recipient"));
        // Keys belong to their account.
        let bobs = harness.send(&bob, To::Handle("alice".into()), "once", "key-1").await.unwrap();
        assert_ne!(bobs.id, first.id, "{name}");
        let result = harness.send(&alice, To::Handle("bob".into()), "x", &"k".repeat(256)).await;
        expect_error(result, Code::InvalidArgument, "VALIDATION_FAILED", Some("idempotency_key"), name);

        // Many concurrent sends: each acknowledged, each stored once; concurrent retries of one
        // key (likely in one batch) all answer the same message.
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..200 {
            let client = harness.client();
            let request = harness.request(alice.id, pb::SendDirectMessageRequest {
                to: Some(To::Handle("bob".into())),
                content: format!("message {index}"),
                idempotency_key: String::new(),
            });
            tasks.spawn(async move { client.clone().send_direct_message(request).await.map(|answer| answer.into_inner().message.unwrap()) });
        }
        for _ in 0..20 {
            let client = harness.client();
            let request = harness.request(alice.id, pb::SendDirectMessageRequest {
                to: Some(To::Handle("bob".into())),
                content: "retried".into(),
                idempotency_key: "key-2".into(),
            });
            tasks.spawn(async move { client.clone().send_direct_message(request).await.map(|answer| answer.into_inner().message.unwrap()) });
        }
        let mut ids = BTreeSet::new();
        let mut retried = BTreeSet::new();
        while let Some(answer) = tasks.join_next().await {
            let message = answer.unwrap().expect("every send is acknowledged");
            if message.content == "retried" { retried.insert(message.id); } else { ids.insert(message.id); }
        }
        assert_eq!((ids.len(), retried.len()), (200, 1), "{name}");
        let mut stored = Vec::new();
        let mut before_id = None;
        loop {
            let request = pb::ListConversationRequest { peer: Some(Peer::Handle("bob".into())), limit: 200, before_id, ..Default::default() };
            let page = harness.client().list_conversation(harness.request(alice.id, request)).await.unwrap().into_inner().messages;
            let Some(last) = page.last() else { break };
            before_id = Some(last.id);
            stored.extend(page);
        }
        assert_eq!(stored.len(), 200 + 1 + 1 + 1, "{name}: 200, the retried one, 'once' and bob's");
        assert!(stored.windows(2).all(|pair| pair[0].id > pair[1].id), "{name}: newest first, no duplicate");
        assert!(ids.iter().all(|id| stored.iter().any(|message| message.id == *id)), "{name}: every acknowledged message is stored");
    }

    async fn a_failed_batch_answers_unavailable_and_stores_nothing(test_db) {
        let harness = Harness::on(test_db, 1).await;
        let name = harness.name;
        let alice = harness.account(Some("alice")).await;
        let bob = harness.account(Some("bob")).await;
        let kept = harness.send(&alice, To::Handle("bob".into()), "kept", "").await.unwrap();

        // This test's own database loses the outbox table: every write transaction fails.
        let database = Database::connect(&harness.database.args, "messaging").await.unwrap();
        match &database {
            Database::Postgres(pool) => { sqlx::query("DROP TABLE dm_outbox").execute(pool).await.unwrap(); }
            Database::Sqlite(pool) => { sqlx::query("DROP TABLE dm_outbox").execute(pool).await.unwrap(); }
        }
        database.close().await;
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..10 {
            let client = harness.client();
            let request = harness.request(alice.id, pb::SendDirectMessageRequest {
                to: Some(To::Handle("bob".into())),
                content: format!("lost {index}"),
                idempotency_key: format!("lost-{index}"),
            });
            tasks.spawn(async move { client.clone().send_direct_message(request).await });
        }
        while let Some(answer) = tasks.join_next().await {
            expect_error(answer.unwrap(), Code::Unavailable, "UNAVAILABLE", None, &format!("{name}: the batch failed"));
        }
        let history = harness.history(&bob, Peer::Handle("alice".into())).await;
        assert_eq!(history, vec![kept.clone()], "{name}: nothing half-written");
        assert_eq!(harness.inbox(&bob, pb::Consent::Unspecified).await, vec![kept], "{name}: the conversation pointer did not move");
    }

    async fn streams_replay_then_go_live_across_replicas(test_db) {
        let harness = Harness::on(test_db, 2).await;
        let name = harness.name;
        let alice = harness.account(Some("alice")).await;
        let bob = harness.account(Some("bob")).await;
        let missed = harness.send(&alice, To::Handle("bob".into()), "before 1", "").await.unwrap();
        let replayed = harness.send(&bob, To::Handle("alice".into()), "before 2", "").await.unwrap();

        // Bob streams from the second replica from after `missed`; alice from the first, new only.
        let mut bob_stream = harness.replicas[1].clone()
            .stream_messages(harness.request(bob.id, pb::StreamMessagesRequest { after_id: missed.id }))
            .await
            .unwrap()
            .into_inner();
        let mut alice_stream = harness.replicas[0].clone()
            .stream_messages(harness.request(alice.id, pb::StreamMessagesRequest { after_id: 0 }))
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut bob_stream).await;
        assert_eq!(first, replayed, "{name}: replayed with handles");
        assert_eq!(first.sender_handle.as_deref(), Some("bob"));

        // Concurrent sends through both replicas while both stream.
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..40 {
            let client = harness.replicas[(index / 2) % 2].clone();
            let (from, to) = if index % 2 == 0 { (alice.id, "bob") } else { (bob.id, "alice") };
            let request = harness.request(from, pb::SendDirectMessageRequest { to: Some(To::Handle(to.into())), content: format!("live {index}"), idempotency_key: String::new() });
            tasks.spawn(async move { client.clone().send_direct_message(request).await.unwrap().into_inner().message.unwrap() });
        }
        let mut sent = BTreeSet::new();
        while let Some(message) = tasks.join_next().await {
            sent.insert(message.unwrap().id);
        }
        for (who, stream) in [("bob", &mut bob_stream), ("alice", &mut alice_stream)] {
            let mut received = Vec::new();
            while received.len() < sent.len() {
                let message = next(stream).await;
                assert!(message.content.starts_with("live "), "{name}: {who} got {message:?}");
                received.push(message.id);
            }
            assert!(received.windows(2).all(|pair| pair[0] < pair[1]), "{name}: {who}: in order, once each: {received:?}");
            assert_eq!(received.iter().copied().collect::<BTreeSet<_>>(), sent, "{name}: {who}: no gap");
        }
        // Nothing else arrives: no duplicate after the last one.
        let extra = tokio::time::timeout(Duration::from_millis(300), bob_stream.message()).await;
        assert!(extra.is_err(), "{name}: unexpected {extra:?}");
    }
}

clawx_common::backend_tests! {
    async fn an_unreachable_identity_service_answers_unavailable(test_db) {
        let auth = InternalAuth::new(&Secret::new("messaging-test-secret-messaging-test"));
        let shutdown = CancellationToken::new();
        let config = clawx_messaging::Config {
            service: ServiceConfig { database: test_db.args.clone(), backends: Backends::memory(), auth: auth.clone() },
            node: clawx_messaging::node::NodeLimits::default(),
            // Nothing listens on the discard port.
            identity_url: "http://127.0.0.1:9".into(),
            message_max_bytes: MAX_MESSAGE_BYTES,
            spam: Default::default(),
            push: Default::default(),
            agents: Default::default(),
        };
        let token = shutdown.clone();
        let service = spawn_service(|listener| clawx_messaging::run(config, listener, token)).await;
        let mut client = MessagingServiceClient::new(service.channel);
        let send = pb::SendDirectMessageRequest { to: Some(To::Handle("bob".into())), content: "hi".into(), idempotency_key: String::new() };
        expect_error(client.send_direct_message(account_request(&auth, send)).await, Code::Unavailable, "UNAVAILABLE", None, "send");
        let list = pb::ListConversationRequest { peer: Some(Peer::WalletAddress(UNKNOWN_WALLET.into())), ..Default::default() };
        expect_error(client.list_conversation(account_request(&auth, list)).await, Code::Unavailable, "UNAVAILABLE", None, "history");
        shutdown.cancel();
    }
}

clawx_common::backend_tests! {
    async fn consent_blocks_peers_files_reports_and_feeds_the_spam_check(test_db) {
        let harness = Harness::on(test_db, 1).await;
        let name = harness.name;
        let alice = harness.account(Some("alice")).await;
        let bob = harness.account(Some("bob")).await;
        let carol = harness.account(Some("carol")).await;
        let dave = harness.account(Some("dave")).await;
        let hello = harness.send(&bob, To::Handle("alice".into()), "hello", "").await.unwrap();
        harness.send(&carol, To::Handle("alice".into()), "buy now", "").await.unwrap();
        harness.send(&carol, To::Handle("dave".into()), "buy now too", "").await.unwrap();
        let consent = |of: &Account, consent: pb::Consent, targets: Vec<pb::ConsentTarget>| {
            harness.request(of.id, pb::SetConsentRequest { owner_address: of.wallet.clone(), consent: consent as i32, targets })
        };
        let topic = |topic: &str| pb::ConsentTarget { topic: topic.into(), ..Default::default() };
        let peer = |address: &str| pb::ConsentTarget { topic: "/xmtp/mls/1/g-00/proto".into(), peer_address: Some(address.into()), signature: None };

        // Accept by conversation topic.
        let accepted = harness.client().set_consent(consent(&alice, pb::Consent::Allowed, vec![topic(&hello.topic)])).await.unwrap().into_inner();
        assert_eq!((accepted.conversations, accepted.reports), (1, 0), "{name}");
        assert_eq!(contents(&harness.inbox(&alice, pb::Consent::Allowed).await), vec!["hello"], "{name}");
        assert_eq!(contents(&harness.inbox(&bob, pb::Consent::Allowed).await), Vec::<&str>::new(), "{name}: consent is per side");

        // Refusals: someone else's wallet, a signature that is not the owner's, a topic that is
        // not the caller's, no consent.
        let mut not_mine = pb::SetConsentRequest { owner_address: bob.wallet.clone(), consent: pb::Consent::Allowed as i32, targets: vec![topic(&hello.topic)] };
        expect_error(harness.client().set_consent(harness.request(alice.id, not_mine.clone())).await, Code::PermissionDenied, "FORBIDDEN", None, "owner");
        not_mine.owner_address = alice.wallet.clone();
        not_mine.targets[0].signature = Some(format!("0x{}1b", "11".repeat(64)));
        expect_error(harness.client().set_consent(harness.request(alice.id, not_mine)).await, Code::PermissionDenied, "FORBIDDEN", None, "signature");
        let strangers = consent(&dave, pb::Consent::Allowed, vec![topic(&hello.topic)]);
        expect_error(harness.client().set_consent(strangers).await, Code::NotFound, "NOT_FOUND", None, "someone else's conversation");
        // An XMTP topic without a peer sets consent to the topic itself; other topics without a
        // peer name nothing.
        let xmtp_topic = consent(&alice, pb::Consent::Allowed, vec![topic("/xmtp/mls/1/g-00/proto")]);
        let answer = harness.client().set_consent(xmtp_topic).await.expect("an XMTP topic without a peer").into_inner();
        assert_eq!((answer.conversations, answer.reports), (0, 0), "{name}");
        let unknown = consent(&alice, pb::Consent::Allowed, vec![topic("topic-123")]);
        expect_error(harness.client().set_consent(unknown).await, Code::NotFound, "NOT_FOUND", None, "neither a conversation nor an XMTP topic");
        let unset = consent(&alice, pb::Consent::Unspecified, vec![topic(&hello.topic)]);
        expect_error(harness.client().set_consent(unset).await, Code::InvalidArgument, "VALIDATION_FAILED", Some("consent"), "consent");
        let bad_peer = consent(&alice, pb::Consent::Denied, vec![peer("0x12")]);
        expect_error(harness.client().set_consent(bad_peer).await, Code::InvalidArgument, "VALIDATION_FAILED", Some("peerAddress"), "peer");

        // Block by peer: denied, one report however often.
        let mut stream = harness.client().stream_messages(harness.request(alice.id, pb::StreamMessagesRequest { after_id: 0 })).await.unwrap().into_inner();
        let blocked = harness.client().set_consent(consent(&alice, pb::Consent::Denied, vec![peer(&carol.wallet)])).await.unwrap().into_inner();
        assert_eq!((blocked.conversations, blocked.reports), (1, 1), "{name}");
        let again = harness.client().set_consent(consent(&alice, pb::Consent::Denied, vec![peer(&carol.wallet)])).await.unwrap().into_inner();
        assert_eq!((again.conversations, again.reports), (1, 0), "{name}: one report per reporter");
        assert_eq!(contents(&harness.inbox(&alice, pb::Consent::Denied).await), vec!["buy now"], "{name}");

        // A denied peer's messages are stored but not streamed.
        harness.send(&carol, To::Handle("alice".into()), "still buying?", "").await.unwrap();
        harness.send(&bob, To::Handle("alice".into()), "live", "").await.unwrap();
        assert_eq!(next(&mut stream).await.content, "live", "{name}: carol's message skipped");
        assert_eq!(contents(&harness.inbox(&alice, pb::Consent::Denied).await), vec!["still buying?"], "{name}: stored");

        // The spam check: one report is a reason, two make spam (default thresholds).
        let check = |address: &str| {
            let mut request = Request::new(pb::CheckSpamRequest { address: address.into() });
            harness.auth.authorize(&mut request, "messaging", &Principal::anonymous(None));
            let mut client = harness.client();
            async move { client.check_spam(request).await }
        };
        let once = check(&carol.wallet).await.unwrap().into_inner();
        assert!(!once.is_spam && once.score > 0.0, "{name}: {once:?}");
        assert!(once.reasons.iter().any(|reason| reason.contains("reported by 1 account")), "{name}: {once:?}");
        let blocked = harness.client().set_consent(consent(&dave, pb::Consent::Denied, vec![peer(&carol.wallet)])).await.unwrap().into_inner();
        assert_eq!(blocked.reports, 1, "{name}");
        let twice = check(&carol.wallet.to_ascii_uppercase().replacen("0X", "0x", 1).to_ascii_lowercase()).await.unwrap().into_inner();
        assert!(twice.is_spam && twice.score > once.score && twice.score <= 1.0, "{name}: {twice:?}");
        assert!(twice.reasons.iter().any(|reason| reason.contains("reported by 2 account")), "{name}: {twice:?}");
        let clean = check(UNKNOWN_WALLET).await.unwrap().into_inner();
        assert_eq!((clean.is_spam, clean.score, clean.reasons.len()), (false, 0.0, 0), "{name}");
        expect_error(check("not-an-address").await, Code::InvalidArgument, "VALIDATION_FAILED", Some("address"), "address");
    }
}

clawx_common::backend_tests! {
    async fn accounts_with_a_handle_are_remembered_so_sends_between_them_skip_the_identity_service(test_db) {
        let harness = Harness::on(test_db, 1).await;
        let name = harness.name;
        let alice = harness.account(Some("alice")).await;
        harness.account(Some("bob")).await;
        let nameless = harness.account(None).await;
        harness.send(&alice, To::Handle("bob".into()), "first", "").await.unwrap();
        harness.send(&nameless, To::Handle("bob".into()), "from an account without a handle", "").await.unwrap();

        // The identity service goes away: a handle never seen cannot be resolved any more.
        harness.identity_shutdown.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match harness.send(&alice, To::Handle("nobody".into()), "x", "").await {
                Err(status) if status.code() == Code::Unavailable => break,
                other => {
                    assert!(tokio::time::Instant::now() < deadline, "{name}: identity still answers: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Both accounts of the first send have a handle: remembered, the send needs no lookup.
        let again = harness.send(&alice, To::Handle("bob".into()), "second", "").await.unwrap();
        assert_eq!((again.sender_handle.as_deref(), again.recipient_handle.as_deref()), (Some("alice"), Some("bob")), "{name}");
        // An account without a handle may still claim one: it is asked for every time.
        let status = harness.send(&nameless, To::Handle("bob".into()), "again", "").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{name}: {status:?}");
    }
}
