//! Push notifications end to end (`POST /xmtp/topics/register`), on SQLite + memory and
//! PostgreSQL + Redis: a webhook receiver on loopback gets a notification for a direct message
//! to a registered account, signed per Standard Webhooks under the secret the registration
//! returned; a failing receiver is retried with backoff until it succeeds; a receiver answering
//! 410 is unregistered; a denied peer is not pushed. An FCM stand-in on loopback (token endpoint
//! and `messages:send`) verifies the service-account JWT and the bearer token of each send.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::IntoResponse,
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use clawx_tests::{Auth, FcmSettings, PushConfig, TestStack, test_push_config};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// One call a webhook receiver got.
#[derive(Clone, Debug)]
struct Call {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    at: Instant,
}

/// A webhook receiver on loopback answering `statuses` in turn, then 200.
struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Receiver {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(statuses.into_iter()));
        let recorded = Arc::clone(&calls);
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                let answers = Arc::clone(&answers);
                async move {
                    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
                    let call = Call {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body: body.to_vec(),
                        at: Instant::now(),
                    };
                    recorded.lock().unwrap().push(call);
                    StatusCode::from_u16(answers.lock().unwrap().next().unwrap_or(200)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, calls }
    }

    /// Waits until at least `count` calls arrived; all calls so far.
    async fn wait_for(&self, count: usize, context: &str) -> Vec<Call> {
        for _ in 0..200 {
            let calls = self.calls.lock().unwrap().clone();
            if calls.len() >= count {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{context}: {count} webhook calls expected, got {:?}", self.calls.lock().unwrap());
    }
}

/// Checks a call's Standard Webhooks signature under `secret` (`whsec_<base64>`); its body.
fn verified(call: &Call, secret: &str) -> Value {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", call.id, call.timestamp).as_bytes());
    mac.update(&call.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(call.signature, expected, "the webhook-signature verifies under the registration's secret");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let timestamp: i64 = call.timestamp.parse().expect("webhook-timestamp in seconds");
    assert!((now - timestamp).abs() < 300, "a current webhook-timestamp");
    serde_json::from_slice(&call.body).expect("a JSON body")
}

fn sign(wallet: &PrivateKeySigner, message: &str) -> String {
    format!("0x{}", hex::encode(wallet.sign_message_sync(message.as_bytes()).unwrap().as_bytes()))
}

async fn wallet_of(stack: &TestStack, key: &str) -> String {
    stack.get("/account/me", &Auth::Key(key.to_string())).await.expect_ok(stack.name)["wallet_address"].as_str().unwrap().to_string()
}

async fn dm(stack: &TestStack, key: &str, handle: &str, text: &str) -> Value {
    let reply = stack.post("/messages/dm", &Auth::Key(key.to_string()), json!({"handle": handle, "message": text})).await;
    reply.expect_ok(&format!("{}: dm to {handle}", stack.name))["message"].clone()
}

fn registration(owner: &str, registrations: Value, target: Value) -> Value {
    json!({"ownerAddress": owner, "signedPublicKey": "unused", "registrations": registrations, "target": target})
}

/// Links a fresh local wallet to the account; returns it.
async fn linked_wallet(stack: &TestStack, key: &str) -> PrivateKeySigner {
    let wallet = PrivateKeySigner::random();
    let address = format!("{:#x}", wallet.address());
    let auth = Auth::Key(key.to_string());
    let challenge = stack.get(&format!("/account/wallets/challenge?address={address}"), &auth).await.expect_ok(stack.name).clone();
    let message = challenge["message"].as_str().unwrap();
    let linked = stack.post("/account/wallets", &auth, json!({"address": address, "message": message, "signature": sign(&wallet, message)})).await;
    linked.expect_ok(stack.name);
    wallet
}

/// Registers until the answer names another target than `old` (the old one was unregistered).
async fn wait_unregistered(stack: &TestStack, key: &str, body: Value, old: &Value) -> Value {
    for _ in 0..100 {
        let reply = stack.post("/xmtp/topics/register", &Auth::Key(key.to_string()), body.clone()).await;
        let answer = reply.expect_ok(stack.name).clone();
        if &answer["targetId"] != old {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{}: the target was not unregistered", stack.name);
}

#[tokio::test]
async fn webhooks_get_signed_notifications_failures_are_retried_and_gone_receivers_unregistered() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let carol = stack.registered("carol").await;
        let dave = stack.registered("dave").await;
        let erin = stack.registered("erin").await;
        let key = |key: &str| Auth::Key(key.to_string());
        let (alice_wallet, carol_wallet) = (wallet_of(&stack, &alice).await, wallet_of(&stack, &carol).await);
        let hook = Receiver::start(vec![]).await;
        let webhook = json!({"platform": "webhook", "url": hook.url});
        let inbox = json!([{"topic": "/clawx/inbox/1"}]);

        // Refusals, each before anything is stored.
        let register = |auth: Auth, body: Value| {
            let stack = &stack;
            async move { stack.post("/xmtp/topics/register", &auth, body).await }
        };
        register(Auth::None, registration(&alice_wallet, inbox.clone(), webhook.clone())).await.expect_error(401, "UNAUTHORIZED", "no key");
        register(key(&alice), json!({"ownerAddress": alice_wallet, "registrations": inbox})).await.expect_error(
            400,
            "VALIDATION_FAILED",
            "no target",
        );
        let unknown_platform = registration(&alice_wallet, inbox.clone(), json!({"platform": "carrier-pigeon"}));
        register(key(&alice), unknown_platform).await.expect_error(400, "VALIDATION_FAILED", "an unknown platform");
        let fcm = registration(&alice_wallet, inbox.clone(), json!({"platform": "fcm", "token": "device"}));
        register(key(&alice), fcm).await.expect_error(400, "VALIDATION_FAILED", "FCM is not configured here");
        let bad_url = registration(&alice_wallet, inbox.clone(), json!({"platform": "webhook", "url": "ftp://127.0.0.1/x"}));
        register(key(&alice), bad_url).await.expect_error(400, "VALIDATION_FAILED", "not http(s)");
        register(key(&alice), registration(&carol_wallet, inbox.clone(), webhook.clone())).await.expect_error(
            403,
            "FORBIDDEN",
            "someone else's wallet",
        );
        let bad_topic = registration(&alice_wallet, json!([{"topic": "topic-123"}]), webhook.clone());
        register(key(&alice), bad_topic).await.expect_error(400, "VALIDATION_FAILED", "an unknown topic");
        let theirs = dm(&stack, &bob, "carol", "not alice's").await["topic"].clone();
        let not_mine = registration(&alice_wallet, json!([{"topic": theirs}]), webhook.clone());
        register(key(&alice), not_mine).await.expect_error(404, "NOT_FOUND", "someone else's conversation");

        // A wallet linked to alice may own the registration, and sign the topic; a signature by
        // anyone else is refused.
        let linked = linked_wallet(&stack, &alice).await;
        let linked_address = format!("{:#x}", linked.address());
        let forged = registration(
            &linked_address,
            json!([{"topic": "/clawx/inbox/1", "signature": sign(&PrivateKeySigner::random(), "/clawx/inbox/1")}]),
            webhook.clone(),
        );
        register(key(&alice), forged).await.expect_error(403, "FORBIDDEN", "a signature by another wallet");
        let signed =
            registration(&linked_address, json!([{"topic": "/clawx/inbox/1", "signature": sign(&linked, "/clawx/inbox/1")}]), webhook.clone());
        let registered = register(key(&alice), signed).await.expect_ok(name).clone();
        assert_eq!((registered["registered"].clone(), registered["newTopics"].clone()), (json!(1), json!(1)), "{name}: {registered}");
        // An XMTP topic needs the owner's signature: anyone can name a group's topic.
        let group = "/xmtp/mls/1/g-0a0b/proto";
        let unsigned = registration(&linked_address, json!([{"topic": group}]), webhook.clone());
        register(key(&alice), unsigned).await.expect_error(403, "FORBIDDEN", "an unsigned XMTP topic");
        let signed_group = registration(&linked_address, json!([{"topic": group, "signature": sign(&linked, group)}]), webhook.clone());
        register(key(&alice), signed_group).await.expect_ok(name);
        let secret = registered["webhookSecret"].as_str().expect("a webhook secret").to_string();
        assert!(secret.starts_with("whsec_"), "{name}");
        let again = register(key(&alice), registration(&alice_wallet, inbox.clone(), webhook.clone())).await.expect_ok(name).clone();
        assert_eq!(
            (again["targetId"].clone(), again["newTopics"].clone(), again["webhookSecret"].as_str()),
            (registered["targetId"].clone(), json!(0), Some(secret.as_str())),
            "{name}: the same target, the same secret"
        );

        // A DM to alice: one signed notification carrying the message.
        let sent = dm(&stack, &bob, "alice", "hello push").await;
        let calls = hook.wait_for(1, name).await;
        let body = verified(&calls[0], &secret);
        assert_eq!(body["type"], "message.created", "{name}: {body}");
        assert_eq!(body["data"]["topic"], sent["topic"], "{name}: {body}");
        assert_eq!(body["data"]["message"]["content"], "hello push", "{name}: {body}");
        assert_eq!(body["data"]["message"]["id"], sent["id"], "{name}: {body}");
        assert_eq!(body["data"]["message"]["sender_handle"], "bob", "{name}: {body}");
        assert!(calls[0].id.starts_with("push_"), "{name}");
        // Alice's own sends are not pushed to her.
        dm(&stack, &alice, "bob", "reply").await;

        // A denied peer is not pushed: carol's first message is, her next (after alice blocks
        // her) is not, bob's later one is.
        dm(&stack, &carol, "alice", "carol one").await;
        hook.wait_for(2, name).await;
        let block = json!({"ownerAddress": alice_wallet, "registrations": [{"topic": "/xmtp/mls/1/g-00/proto", "peerAddress": carol_wallet}]});
        stack.post("/xmtp/topics/block", &key(&alice), block).await.expect_ok(name);
        dm(&stack, &carol, "alice", "carol two").await;
        dm(&stack, &bob, "alice", "bob two").await;
        let calls = hook.wait_for(3, name).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let contents: Vec<String> = hook
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|call| verified(call, &secret)["data"]["message"]["content"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(contents, vec!["hello push", "carol one", "bob two"], "{name}: {calls:?}");

        // A failing receiver is retried with growing delays, under the same webhook-id, until it
        // takes the notification.
        let flaky = Receiver::start(vec![500, 500]).await;
        let dave_wallet = wallet_of(&stack, &dave).await;
        let dave_secret = register(key(&dave), registration(&dave_wallet, inbox.clone(), json!({"platform": "webhook", "url": flaky.url})))
            .await
            .expect_ok(name)["webhookSecret"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(dave_secret, secret, "{name}: one secret per account and URL");
        dm(&stack, &bob, "dave", "retried").await;
        let calls = flaky.wait_for(3, name).await;
        assert_eq!(calls.len(), 3, "{name}: delivered on the third attempt, then no more");
        assert!(calls.iter().all(|call| call.id == calls[0].id), "{name}: one webhook-id");
        assert_eq!(verified(&calls[2], &dave_secret)["data"]["message"]["content"], "retried");
        // test_push_config: a 200 ms base, half to all of it, doubled per attempt.
        let gaps: Vec<Duration> = calls.windows(2).map(|pair| pair[1].at - pair[0].at).collect();
        assert!(gaps[0] >= Duration::from_millis(100) && gaps[1] >= Duration::from_millis(200), "{name}: backoff {gaps:?}");

        // A receiver answering 410 is unregistered: registering again makes a new target.
        let gone = Receiver::start(vec![410]).await;
        let erin_wallet = wallet_of(&stack, &erin).await;
        let erin_body = registration(&erin_wallet, inbox.clone(), json!({"platform": "webhook", "url": gone.url}));
        let first = register(key(&erin), erin_body.clone()).await.expect_ok(name).clone();
        dm(&stack, &bob, "erin", "gone").await;
        gone.wait_for(1, name).await;
        let second = wait_unregistered(&stack, &erin, erin_body, &first["targetId"]).await;
        assert_eq!(second["newTopics"], 1, "{name}: {second}");
        stack.stop().await;
    }
}

/// An FCM stand-in: `POST /token` (the OAuth 2.0 JWT bearer grant, verifying the assertion with
/// the service account's public key) and `POST /v1/projects/{project}/messages:send` (checking
/// the bearer token; the token `gone-token` is reported `UNREGISTERED`).
#[derive(Clone)]
struct Fcm {
    public_key: Arc<jsonwebtoken::DecodingKey>,
    token_url: Arc<Mutex<String>>,
    issued: Arc<Mutex<Vec<String>>>,
    sends: Arc<Mutex<Vec<Value>>>,
}

async fn fcm_handler(State(fcm): State<Fcm>, uri: Uri, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let path = uri.path().to_string();
    if path == "/token" {
        let form = String::from_utf8_lossy(&body).to_string();
        let field = |name: &str| form.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string();
        if field("grant_type") != "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" {
            return (StatusCode::BAD_REQUEST, "unsupported grant").into_response();
        }
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[fcm.token_url.lock().unwrap().clone()]);
        validation.set_issuer(&["push@clawx-test.iam.gserviceaccount.com"]);
        let Ok(claims) = jsonwebtoken::decode::<Value>(&field("assertion"), &fcm.public_key, &validation) else {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))).into_response();
        };
        if claims.claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" || claims.header.kid.as_deref() != Some("key-1") {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_scope"}))).into_response();
        }
        let token = format!("ya29.test-{}", fcm.issued.lock().unwrap().len() + 1);
        fcm.issued.lock().unwrap().push(token.clone());
        return axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response();
    }
    if path == "/v1/projects/clawx-test/messages:send" {
        let bearer = headers.get("authorization").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
        if !fcm.issued.lock().unwrap().iter().any(|token| bearer == format!("Bearer {token}")) {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}))).into_response();
        }
        let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        fcm.sends.lock().unwrap().push(json!({"bearer": bearer, "body": message.clone()}));
        if message["message"]["token"] == "gone-token" {
            let error = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
            return (StatusCode::NOT_FOUND, axum::Json(error)).into_response();
        }
        if message["message"]["token"] == "lost-token" {
            // A bare 404 (a proxy, a wrong path): not FCM saying the token is unregistered.
            return StatusCode::NOT_FOUND.into_response();
        }
        return axum::Json(json!({"name": "projects/clawx-test/messages/1"})).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

#[tokio::test]
async fn fcm_sends_use_a_service_account_token_and_unregistered_tokens_are_dropped() {
    use rsa::{
        pkcs1::EncodeRsaPublicKey,
        pkcs8::{EncodePrivateKey, LineEnding},
    };
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("an RSA key");
    let private_pem = private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public_der = rsa::RsaPublicKey::from(&private).to_pkcs1_der().unwrap();
    let fcm = Fcm {
        public_key: Arc::new(jsonwebtoken::DecodingKey::from_rsa_der(public_der.as_bytes())),
        token_url: Arc::new(Mutex::new(String::new())),
        issued: Arc::new(Mutex::new(Vec::new())),
        sends: Arc::new(Mutex::new(Vec::new())),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *fcm.token_url.lock().unwrap() = format!("{base}/token");
    let app = Router::new().fallback(fcm_handler).with_state(fcm.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let service_account = json!({
        "type": "service_account",
        "project_id": "clawx-test",
        "private_key_id": "key-1",
        "private_key": private_pem,
        "client_email": "push@clawx-test.iam.gserviceaccount.com",
        "token_uri": format!("{base}/token"),
    });
    let push = PushConfig {
        // FCM is the operator's endpoint; webhooks of users stay on public addresses.
        allow_private_targets: false,
        fcm: Some(FcmSettings { service_account_json: service_account.to_string(), project_id: None, base_url: Some(base.clone()), token_url: None }),
        ..test_push_config()
    };
    for stack in TestStack::all_with_push(push).await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let alice_wallet = wallet_of(&stack, &alice).await;
        let auth = Auth::Key(alice.clone());
        let inbox = json!([{"topic": "/clawx/inbox/1"}]);

        let private = registration(&alice_wallet, inbox.clone(), json!({"platform": "webhook", "url": "http://127.0.0.1:9/hook"}));
        stack.post("/xmtp/topics/register", &auth, private).await.expect_error(400, "VALIDATION_FAILED", "a loopback webhook");
        let metadata = registration(&alice_wallet, inbox.clone(), json!({"platform": "webhook", "url": "http://169.254.169.254/latest/meta-data"}));
        stack.post("/xmtp/topics/register", &auth, metadata).await.expect_error(400, "VALIDATION_FAILED", "a link-local webhook");

        let registered = stack
            .post("/xmtp/topics/register", &auth, registration(&alice_wallet, inbox.clone(), json!({"platform": "fcm", "token": "device-token-1"})))
            .await;
        let registered = registered.expect_ok(name).clone();
        assert!(registered.get("webhookSecret").is_none(), "{name}: no secret for FCM: {registered}");

        let issued_before = fcm.issued.lock().unwrap().len();
        let sends_before = fcm.sends.lock().unwrap().len();
        let sent = dm(&stack, &bob, "alice", "hello from bob").await;
        dm(&stack, &bob, "alice", "and again").await;
        let mut sends = Vec::new();
        for _ in 0..200 {
            sends = fcm.sends.lock().unwrap()[sends_before..].to_vec();
            if sends.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(sends.len(), 2, "{name}: {sends:?}");
        let first = sends
            .iter()
            .find(|send| send["body"]["message"]["data"]["message_id"].as_str() == Some(sent["id"].to_string().as_str()))
            .expect("the first message's send");
        assert_eq!(first["body"]["message"]["token"], "device-token-1", "{name}");
        assert_eq!(first["body"]["message"]["data"]["type"], "message.created", "{name}");
        assert_eq!(first["body"]["message"]["data"]["topic"], sent["topic"], "{name}");
        assert_eq!(first["body"]["message"]["notification"], json!({"title": "bob", "body": "hello from bob"}), "{name}");
        assert_eq!(fcm.issued.lock().unwrap().len(), issued_before + 1, "{name}: one access token, cached for both sends");

        // A token FCM reports UNREGISTERED is unregistered here.
        let gone_body = registration(&alice_wallet, inbox.clone(), json!({"platform": "fcm", "token": "gone-token"}));
        let gone = stack.post("/xmtp/topics/register", &auth, gone_body.clone()).await.expect_ok(name).clone();
        let before = fcm.sends.lock().unwrap().len();
        dm(&stack, &bob, "alice", "to a gone device").await;
        for _ in 0..200 {
            if fcm.sends.lock().unwrap()[before..].iter().any(|send| send["body"]["message"]["token"] == "gone-token") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let again = wait_unregistered(&stack, &alice, gone_body, &gone["targetId"]).await;
        assert_eq!(again["newTopics"], 1, "{name}");

        // A bare 404 is retried: the token stays registered.
        let lost_body = registration(&alice_wallet, inbox.clone(), json!({"platform": "fcm", "token": "lost-token"}));
        let lost = stack.post("/xmtp/topics/register", &auth, lost_body.clone()).await.expect_ok(name).clone();
        let before = fcm.sends.lock().unwrap().len();
        dm(&stack, &bob, "alice", "to a device behind a 404").await;
        for _ in 0..200 {
            if fcm.sends.lock().unwrap()[before..].iter().any(|send| send["body"]["message"]["token"] == "lost-token") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let still = stack.post("/xmtp/topics/register", &auth, lost_body).await.expect_ok(name).clone();
        assert_eq!(still["targetId"], lost["targetId"], "{name}: a bare 404 does not unregister the token");
        stack.stop().await;
    }
}
