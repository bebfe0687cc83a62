//! Identity publication by the agent engine, against the real identity service (which signs
//! with the account's wallet) and the real XMTP node of the messaging service: on SQLite +
//! memory (`name::sqlite`) and on PostgreSQL + Redis (`name::postgres`).

use std::sync::Arc;

use clawx_common::{
    Backends, Database, InternalAuth, Principal, Secret,
    crypto::{Keyring, generate_master_key},
    service::ServiceConfig,
    storage::Backend,
    testing::{TestDatabase, redis_backends, spawn_service},
};
use clawx_messaging::{
    agent::{Engine, INBOX_NONCE, network::XmtpNetwork, state::MlsSession, store::for_database},
    dm::identity::Identity,
    node::validate::keypackage::validate_key_package,
};
use clawx_proto::{
    identity::{self as identity_pb, identity_service_client::IdentityServiceClient},
    xmtp::{
        identity::associations::{identity_action::Kind, member_identifier},
        mls::api::v1::{FetchKeyPackagesRequest, mls_api_client::MlsApiClient},
    },
};
use openmls::prelude::OpenMlsProvider;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

struct Harness {
    name: &'static str,
    identity: IdentityServiceClient<Channel>,
    mls: MlsApiClient<Channel>,
    auth: InternalAuth,
    identity_url: String,
    node_url: String,
    database: Database,
    keyring: Keyring,
    shutdown: CancellationToken,
    _test_db: TestDatabase,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn on(test_db: TestDatabase) -> Harness {
        let shutdown = CancellationToken::new();
        let auth = InternalAuth::new(&Secret::new("agent-test-secret-agent-test-secret"));
        let (name, backends) = match test_db.backend {
            Backend::Sqlite => ("sqlite+memory", Backends::memory()),
            Backend::Postgres => ("postgres+redis", redis_backends(&shutdown).expect("CLAWX_TEST_REDIS_URL is set with CLAWX_TEST_DATABASE_URL")),
        };
        let identity_config = clawx_identity::Config {
            service: ServiceConfig { database: test_db.args.clone(), backends: backends.clone(), auth: auth.clone() },
            keyring: Keyring::new(&Secret::new(generate_master_key()), None).unwrap(),
            settings: clawx_identity::Settings::default(),
        };
        let token = shutdown.clone();
        let identity = spawn_service(|listener| clawx_identity::run(identity_config, listener, token)).await;
        let config = clawx_messaging::Config {
            service: ServiceConfig { database: test_db.args.clone(), backends, auth: auth.clone() },
            node: clawx_messaging::node::NodeLimits::default(),
            identity_url: format!("http://{}", identity.address),
            message_max_bytes: 1024,
            spam: Default::default(),
            push: Default::default(),
            agents: Default::default(),
        };
        let token = shutdown.clone();
        let messaging = spawn_service(|listener| clawx_messaging::run(config, listener, token)).await;
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        Harness {
            name,
            identity: IdentityServiceClient::new(identity.channel),
            mls: MlsApiClient::new(messaging.channel),
            auth,
            identity_url: format!("http://{}", identity.address),
            node_url: format!("http://{}", messaging.address),
            database,
            keyring: Keyring::new(&Secret::new(generate_master_key()), None).unwrap(),
            shutdown,
            _test_db: test_db,
        }
    }

    /// The engine of one replica.
    fn engine(&self) -> Engine {
        let identity = Identity::connect_lazy(&self.identity_url, self.auth.clone()).unwrap();
        let network = XmtpNetwork::connect_lazy(&self.node_url).unwrap();
        Engine::new(for_database(&self.database), self.keyring.clone(), identity, network)
    }

    async fn account(&self) -> identity_pb::CreateAccountResponse {
        let mut request = Request::new(identity_pb::CreateAccountRequest {});
        self.auth.authorize(&mut request, "identity", &Principal::anonymous(None));
        self.identity.clone().create_account(request).await.unwrap().into_inner()
    }

    async fn key_packages(&self, installation_key: &[u8]) -> Vec<Vec<u8>> {
        let request = FetchKeyPackagesRequest { installation_keys: vec![installation_key.to_vec()] };
        let answer = self.mls.clone().fetch_key_packages(request).await.unwrap().into_inner();
        answer.key_packages.into_iter().map(|key_package| key_package.key_package_tls_serialized).filter(|bytes| !bytes.is_empty()).collect()
    }

    async fn execute(&self, statement: &'static str, account_id: i64) {
        match &self.database {
            Database::Postgres(pool) => sqlx::query(statement).bind(account_id).execute(pool).await.map(|_| ()).unwrap(),
            Database::Sqlite(pool) => sqlx::query(statement).bind(account_id).execute(pool).await.map(|_| ()).unwrap(),
        }
    }
}

/// The installation keys an inbox's history adds, and how many updates it has.
async fn published(network: &XmtpNetwork, inbox_id: &str) -> (Vec<Vec<u8>>, usize) {
    let history = network.inbox_history(inbox_id).await.unwrap();
    let mut keys = Vec::new();
    for (_, update) in &history.updates {
        for action in &update.actions {
            if let Some(Kind::Add(add)) = &action.kind
                && let Some(member_identifier::Kind::InstallationPublicKey(key)) =
                    add.new_member_identifier.as_ref().and_then(|member| member.kind.clone())
            {
                keys.push(key);
            }
        }
    }
    (keys, history.updates.len())
}

clawx_common::backend_tests! {
    async fn accounts_publish_their_xmtp_identity_once(test_db) {
        let harness = Harness::on(test_db).await;
        let name = harness.name;
        let engine = harness.engine();
        let account = harness.account().await;
        let wallet = account.wallet_address.to_lowercase();

        let installation = engine.ensure_ready(account.account_id).await.unwrap();
        assert_eq!(installation.inbox_id, account.xmtp_inbox_id, "{name}: the inbox XMTP clients compute (nonce {INBOX_NONCE})");
        assert_eq!(installation.wallet_address, wallet);
        assert!(installation.identity_published_at.is_some() && installation.key_package_expires_at.is_some(), "{name}");

        // The network maps the wallet to the account's inbox, whose history grants the installation.
        let network = engine.network();
        assert_eq!(network.inbox_id_of(&wallet).await.unwrap().as_deref(), Some(account.xmtp_inbox_id.as_str()), "{name}");
        let (keys, updates) = published(network, &account.xmtp_inbox_id).await;
        assert_eq!((keys, updates), (vec![installation.installation_key.clone()], 1), "{name}");
        let history = network.inbox_history(&account.xmtp_inbox_id).await.unwrap();
        let first_action = &history.updates[0].1.actions[0];
        assert!(matches!(&first_action.kind, Some(Kind::CreateInbox(create)) if create.initial_identifier == wallet && create.nonce == 1), "{name}");

        // Its key package is one the node accepts, for that inbox and installation.
        let key_packages = harness.key_packages(&installation.installation_key).await;
        assert_eq!(key_packages.len(), 1, "{name}");
        let validated = validate_key_package(&key_packages[0]).unwrap();
        assert_eq!((validated.inbox_id.as_str(), validated.installation_key.as_slice()), (account.xmtp_inbox_id.as_str(), installation.installation_key.as_slice()));
        assert!(validated.last_resort, "{name}");
        let expires_at = installation.key_package_expires_at.unwrap();
        assert_eq!(expires_at, validated.not_after as i64 * 1000, "{name}");

        // Again: nothing new is published.
        let again = engine.ensure_ready(account.account_id).await.unwrap();
        assert_eq!(again, installation, "{name}");
        assert_eq!(published(network, &account.xmtp_inbox_id).await.1, 1, "{name}");

        // A replica that crashed after publishing, before recording it: recognised, not republished.
        harness.execute("UPDATE agent_installations SET identity_published_at = NULL WHERE account_id = $1", account.account_id).await;
        let other_replica = harness.engine();
        let recovered = other_replica.ensure_ready(account.account_id).await.unwrap();
        assert!(recovered.identity_published_at.is_some(), "{name}");
        assert_eq!(published(network, &account.xmtp_inbox_id).await.1, 1, "{name}: no second update");

        // A key package close to expiry is replaced, its private keys kept in the MLS state.
        harness.execute("UPDATE agent_installations SET key_package_expires_at = 0 WHERE account_id = $1", account.account_id).await;
        let session = MlsSession::open(for_database(&harness.database).as_ref(), &harness.keyring, account.account_id).await.unwrap();
        let values_before = session.provider().storage().values.read().unwrap().len();
        drop(session);
        let refreshed = other_replica.ensure_ready(account.account_id).await.unwrap();
        assert!(refreshed.key_package_expires_at.unwrap() > 0, "{name}");
        let newest = harness.key_packages(&installation.installation_key).await;
        assert_eq!(newest.len(), 1);
        assert_ne!(newest[0], key_packages[0], "{name}: a new key package is served");
        let session = MlsSession::open(for_database(&harness.database).as_ref(), &harness.keyring, account.account_id).await.unwrap();
        assert!(session.provider().storage().values.read().unwrap().len() > values_before, "{name}: its keys are stored");
    }
}

clawx_common::backend_tests! {
    async fn replicas_racing_for_one_account_publish_one_installation(test_db) {
        let harness = Harness::on(test_db).await;
        let name = harness.name;
        let account = harness.account().await;
        let engines: Vec<Arc<Engine>> = (0..3).map(|_| Arc::new(harness.engine())).collect();
        let tasks: Vec<_> = engines
            .iter()
            .map(|engine| {
                let engine = Arc::clone(engine);
                tokio::spawn(async move { engine.ensure_ready(account.account_id).await })
            })
            .collect();
        let mut installations = Vec::new();
        for task in tasks {
            installations.push(task.await.unwrap().unwrap());
        }
        assert!(installations.windows(2).all(|pair| pair[0].installation_key == pair[1].installation_key), "{name}: one installation");
        let (keys, updates) = published(engines[0].network(), &account.xmtp_inbox_id).await;
        assert_eq!((keys.len(), updates), (1, 1), "{name}: published once");
        // An account the identity service does not know gets no installation.
        let missing = engines[0].ensure_ready(987_654_321).await.unwrap_err();
        assert!(matches!(missing, clawx_messaging::agent::AgentError::NoAccount), "{name}: {missing:?}");
    }
}

/// `tests/interop`, where `@xmtp/node-sdk` 5.5.0 is installed (`npm ci`), if it is. With
/// `CLAWX_TEST_REQUIRE_BACKENDS=1` (`scripts/test.sh`, which installs it) it must be.
fn node_sdk_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop");
    let installed = dir.join("node_modules/@xmtp/node-sdk/package.json").exists();
    if !installed && std::env::var("CLAWX_TEST_REQUIRE_BACKENDS").is_ok_and(|value| value == "1") {
        panic!("@xmtp/node-sdk is not installed: run `npm ci` in tests/interop (scripts/test.sh does)");
    }
    installed.then_some(dir)
}

clawx_common::backend_tests! {
    async fn node_sdk_users_and_an_agent_exchange_direct_messages(test_db) {
        let Some(interop) = node_sdk_dir() else {
            eprintln!("skipped: @xmtp/node-sdk is not installed (run `npm ci` in tests/interop)");
            return;
        };
        let harness = Harness::on(test_db).await;
        let name = harness.name;
        let engine = harness.engine();
        let account = harness.account().await;
        let installation = engine.ensure_ready(account.account_id).await.unwrap();
        let wallet = account.wallet_address.to_lowercase();
        // A real node-sdk user: canMessage, the inbox id lookup, then a DM with a text, for which
        // node-sdk verifies the inbox's signatures and the installation's key package; it then
        // waits for the agent's reply.
        let reply = "hello node-sdk user";
        let mut child = tokio::process::Command::new("node")
            .current_dir(&interop)
            .args(["agent-identity.mjs", "--url", &harness.node_url, "--address", &wallet, "--inbox", &account.xmtp_inbox_id, "--await-reply", reply])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
        let mut printed = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line == "SENT" || line.starts_with("FAIL");
            printed.push(line);
            if done {
                break;
            }
        }
        assert_eq!(printed.last().map(String::as_str), Some("SENT"), "{name}: node-sdk: {printed:?}");
        let stdout = printed.join("\n");
        // The DM's welcome reached the installation.
        let welcomes = harness
            .mls
            .clone()
            .query_welcome_messages(clawx_proto::xmtp::mls::api::v1::QueryWelcomeMessagesRequest {
                installation_key: installation.installation_key.clone(),
                paging_info: None,
            })
            .await
            .unwrap()
            .into_inner()
            .messages;
        assert_eq!(welcomes.len(), 1, "{name}: node-sdk sent the agent a welcome");

        // The agent joins from the welcome, merges the sender's commits and decrypts the text.
        let sender = stdout.lines().find_map(|line| line.strip_prefix("SENDER ")).expect("the script names its inbox").to_string();
        let received = engine.receive(account.account_id).await.unwrap();
        assert_eq!(received.len(), 1, "{name}: {received:?}");
        let message = &received[0];
        assert_eq!(message.text.as_deref(), Some("hello agent"), "{name}");
        assert_eq!((message.sender_inbox_id.as_str(), message.content_type.as_str()), (sender.as_str(), "xmtp.org/text:1.0"), "{name}");
        assert!(!message.idempotency_key.is_empty() && message.xmtp_message_id > 0, "{name}");
        // A second pull, from another replica, finds nothing new.
        assert_eq!(harness.engine().receive(account.account_id).await.unwrap(), Vec::new(), "{name}: cursors are kept");

        // The agent answers in that DM, from another replica; the node-sdk user reads it once.
        harness.engine().send_text(account.account_id, &message.group_id, reply, "clawx-message-1").await.unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line);
        }
        let status = child.wait().await.unwrap();
        assert!(status.success() && printed.last().is_some_and(|line| line.starts_with("PASS") && line.ends_with("reply read")), "{name}: {printed:?}");
    }
}

clawx_common::backend_tests! {
    async fn an_agent_opens_a_dm_with_a_node_sdk_user_who_replies(test_db) {
        let Some(interop) = node_sdk_dir() else {
            eprintln!("skipped: @xmtp/node-sdk is not installed (run `npm ci` in tests/interop)");
            return;
        };
        let harness = Harness::on(test_db).await;
        let name = harness.name;
        let engine = harness.engine();
        let account = harness.account().await;
        engine.ensure_ready(account.account_id).await.unwrap();
        let (text, reply) = ("gm from a Clawx agent", "gm, agent");
        let mut child = tokio::process::Command::new("node")
            .current_dir(&interop)
            .args(["agent-dm-user.mjs", "--url", &harness.node_url, "--from", &account.xmtp_inbox_id, "--expect", text, "--reply", reply])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
        let ready = lines.next_line().await.unwrap().unwrap_or_default();
        let mut words = ready.split(' ').skip(1);
        let (Some(address), Some(user_inbox)) = (words.next().map(str::to_string), words.next().map(str::to_string)) else {
            panic!("{name}: node-sdk: {ready}");
        };

        // The agent finds the user's inbox by address, opens the DM and writes.
        let network = engine.network();
        assert_eq!(network.inbox_id_of(&address).await.unwrap().as_deref(), Some(user_inbox.as_str()), "{name}");
        let group_id = engine.open_dm(account.account_id, &user_inbox).await.unwrap();
        engine.send_text(account.account_id, &group_id, text, "clawx-message-7").await.unwrap();

        // The user reads it and replies; the agent decrypts the reply.
        let mut printed = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line);
        }
        assert!(child.wait().await.unwrap().success() && printed.last().is_some_and(|line| line.starts_with("PASS")), "{name}: {printed:?}");
        let received = engine.receive(account.account_id).await.unwrap();
        let replies: Vec<_> = received.iter().filter(|message| message.text.as_deref() == Some(reply)).collect();
        assert_eq!(replies.len(), 1, "{name}: {received:?}");
        assert_eq!((replies[0].sender_inbox_id.as_str(), replies[0].group_id.as_slice()), (user_inbox.as_str(), group_id.as_slice()), "{name}");

        // A wallet with no inbox is not on XMTP.
        let unknown = engine.open_dm(account.account_id, &"0".repeat(64)).await.unwrap_err();
        assert!(matches!(unknown, clawx_messaging::agent::AgentError::RecipientNotOnXmtp), "{name}: {unknown:?}");
    }
}

clawx_common::backend_tests! {
    async fn two_accounts_dm_each_other_over_xmtp(test_db) {
        let harness = Harness::on(test_db).await;
        let name = harness.name;
        let (alice_engine, bob_engine) = (harness.engine(), harness.engine());
        let (alice, bob) = (harness.account().await, harness.account().await);
        bob_engine.ensure_ready(bob.account_id).await.unwrap();
        let group_id = alice_engine.open_dm(alice.account_id, &bob.xmtp_inbox_id).await.unwrap();
        alice_engine.send_text(alice.account_id, &group_id, "hi bob", "41").await.unwrap();
        let received = bob_engine.receive(bob.account_id).await.unwrap();
        assert_eq!(received.len(), 1, "{name}: {received:?}");
        assert_eq!((received[0].text.as_deref(), received[0].idempotency_key.as_str()), (Some("hi bob"), "41"), "{name}: the Clawx message id travels");
        assert_eq!((received[0].sender_inbox_id.as_str(), received[0].group_id.as_slice()), (alice.xmtp_inbox_id.as_str(), group_id.as_slice()));
        // Bob answers in the same group; Alice decrypts it (her own message is not returned to her).
        bob_engine.send_text(bob.account_id, &group_id, "hi alice", "42").await.unwrap();
        let received = alice_engine.receive(alice.account_id).await.unwrap();
        let texts: Vec<_> = received.iter().map(|message| (message.text.clone(), message.idempotency_key.clone())).collect();
        assert_eq!(texts, vec![(Some("hi alice".to_string()), "42".to_string())], "{name}");
        // Either side finds the same DM again rather than opening another.
        assert_eq!(alice_engine.open_dm(alice.account_id, &bob.xmtp_inbox_id).await.unwrap(), group_id, "{name}");
        assert_eq!(bob_engine.open_dm(bob.account_id, &alice.xmtp_inbox_id).await.unwrap(), group_id, "{name}: the joined DM is known by its peer");
    }
}
