//! Direct messages carried over XMTP by the agent engine, through the gateway's REST face: two
//! accounts here DM each other (each message stored once, `delivery` reaching `sent`, the welcome
//! wrapped with X-Wing as the recipient's key package asks, also to each of an inbox's ten
//! installations), a wallet with no XMTP inbox is refused at once, and `/messages/xmtp/sync`
//! counts only new messages; on SQLite + memory and PostgreSQL + Redis.

use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use clawx_messaging::agent::{network::XmtpNetwork, publish_external_inbox};
use clawx_proto::xmtp::{
    identity::{
        api::v1::{GetIdentityUpdatesRequest, get_identity_updates_request, identity_api_client::IdentityApiClient},
        associations::{identity_action, member_identifier},
    },
    mls::{
        api::v1::{QueryWelcomeMessagesRequest, mls_api_client::MlsApiClient, welcome_message},
        message_contents::WelcomeWrapperAlgorithm,
    },
};
use clawx_tests::{Auth, TestStack};
use serde_json::{Value, json};

/// Long enough for identity publication, a DM group and a welcome on a loaded 2-core machine.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);

async fn conversation(stack: &TestStack, key: &str, peer: &str) -> Vec<Value> {
    let reply = stack.get(&format!("/messages/{peer}"), &Auth::Key(key.to_string())).await;
    reply.expect_ok(stack.name)["messages"].as_array().expect("messages").clone()
}

/// Waits until `key`'s conversation with `peer` satisfies `done`; the conversation then.
async fn wait_for(stack: &TestStack, key: &str, peer: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let messages = conversation(stack, key, peer).await;
        if done(&messages) {
            return messages;
        }
        assert!(started.elapsed() < DELIVERY_WAIT, "{}: {what}: still {messages:?}", stack.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn delivered(messages: &[Value], id: &Value) -> bool {
    messages.iter().any(|message| &message["id"] == id && message["delivery"] == "sent")
}

/// The welcomes on the network for every installation of `inbox_id`.
async fn welcomes_of(stack: &TestStack, inbox_id: &str) -> Vec<welcome_message::V1> {
    let mut identity = IdentityApiClient::new(stack.channel().await);
    let request =
        GetIdentityUpdatesRequest { requests: vec![get_identity_updates_request::Request { inbox_id: inbox_id.to_string(), sequence_id: 0 }] };
    let logs = identity.get_identity_updates(request).await.expect("identity updates").into_inner().responses;
    let mut welcomes = Vec::new();
    for update in logs.iter().flat_map(|log| &log.updates).filter_map(|entry| entry.update.as_ref()) {
        for action in &update.actions {
            let Some(identity_action::Kind::Add(add)) = &action.kind else { continue };
            let Some(member_identifier::Kind::InstallationPublicKey(key)) = add.new_member_identifier.as_ref().and_then(|member| member.kind.clone())
            else {
                continue;
            };
            let mut mls = MlsApiClient::new(stack.channel().await);
            let request = QueryWelcomeMessagesRequest { installation_key: key, paging_info: None };
            let messages = mls.query_welcome_messages(request).await.expect("welcomes").into_inner().messages;
            welcomes.extend(messages.into_iter().filter_map(|message| match message.version {
                Some(welcome_message::Version::V1(v1)) => Some(v1),
                _ => None,
            }));
        }
    }
    welcomes
}

#[tokio::test]
async fn accounts_here_dm_each_other_over_xmtp_and_each_message_is_stored_once() {
    for stack in TestStack::all_with_agents().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let (bob, bob_account) = stack.create_account().await;
        stack.post("/account/register", &Auth::Key(bob.clone()), json!({"handle": "bob", "name": "bob"})).await.expect_ok(name);

        let sent = stack.post("/messages/dm", &Auth::Key(alice.clone()), json!({"handle": "bob", "message": "over xmtp"})).await;
        let sent = sent.expect_ok(name)["message"].clone();
        assert_eq!(sent["delivery"], "stored", "{name}: answered before XMTP carries it");
        let history = wait_for(&stack, &alice, "bob", "alice's message sent", |messages| delivered(messages, &sent["id"])).await;
        assert_eq!(history.len(), 1, "{name}: {history:?}");
        assert!(history[0].get("delivery_error").is_none(), "{name}: {history:?}");
        // Bob's key package asks for X-Wing welcomes, and that is how the welcome reached him.
        let welcomes = welcomes_of(&stack, bob_account["xmtp_inbox_id"].as_str().expect("xmtp_inbox_id")).await;
        let wrappers: Vec<(i32, usize)> = welcomes.iter().map(|welcome| (welcome.wrapper_algorithm, welcome.hpke_public_key.len())).collect();
        assert_eq!(wrappers, vec![(WelcomeWrapperAlgorithm::XwingMlkem768Draft6 as i32, 1216)], "{name}: X-Wing to a 1,216-byte key");

        // Bob's installation joined the DM and decrypted the XMTP copy: it is the message
        // already stored, so nothing new arrives, now or on a manual sync.
        let synced = stack.get("/messages/xmtp/sync", &Auth::Key(bob.clone())).await;
        assert_eq!(synced.expect_ok(name)["message"], format!("{} messages synced from XMTP", synced.body["synced"]), "{name}");
        assert_eq!(synced.body["synced"], 0, "{name}: {}", synced.body);
        let bobs_view = conversation(&stack, &bob, "alice").await;
        assert_eq!(bobs_view.len(), 1, "{name}: stored once: {bobs_view:?}");
        assert_eq!(bobs_view[0]["content"], "over xmtp");

        // Bob answers through the group his installation joined; alice sees it once, sent.
        let reply = stack.post("/messages/dm", &Auth::Key(bob.clone()), json!({"handle": "alice", "message": "got it"})).await;
        let reply = reply.expect_ok(name)["message"].clone();
        let history = wait_for(&stack, &bob, "alice", "bob's reply sent", |messages| delivered(messages, &reply["id"])).await;
        assert_eq!(history.len(), 2, "{name}: {history:?}");
        let synced = stack.get("/messages/xmtp/sync", &Auth::Key(alice.clone())).await;
        assert_eq!(synced.expect_ok(name)["synced"], 0, "{name}: {}", synced.body);
        let alices_view = conversation(&stack, &alice, "bob").await;
        let contents: Vec<&str> = alices_view.iter().filter_map(|message| message["content"].as_str()).collect();
        assert_eq!(contents, vec!["got it", "over xmtp"], "{name}: newest first, each once");
        stack.stop().await;
    }
}

#[tokio::test]
async fn a_wallet_with_no_xmtp_inbox_is_refused_at_once_and_nothing_is_stored() {
    for stack in TestStack::all_with_agents().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let stranger = PrivateKeySigner::random().address().to_checksum(None);
        let refused = stack.post("/messages/dm/address", &Auth::Key(alice.clone()), json!({"wallet_address": stranger, "message": "hello?"})).await;
        refused.expect_error(400, "RECIPIENT_NOT_ON_XMTP", name);
        let inbox = stack.get("/messages/inbox", &Auth::Key(alice.clone())).await;
        assert_eq!(inbox.expect_ok(name)["conversations"], json!([]), "{name}: nothing stored");

        // The wallet of an account here is always reachable (its identity is published when the
        // account is created, or before the first message to it), whether or not it has a handle.
        let (unregistered, account) = stack.create_account().await;
        let wallet = account["wallet_address"].as_str().expect("wallet_address").to_string();
        let sent = stack.post("/messages/dm/address", &Auth::Key(alice.clone()), json!({"wallet_address": wallet, "message": "welcome"})).await;
        let sent = sent.expect_ok(name)["message"].clone();
        let started = Instant::now();
        loop {
            let inbox = stack.get("/messages/inbox", &Auth::Key(unregistered.clone())).await;
            let latest = inbox.expect_ok(name)["conversations"][0].clone();
            if latest["delivery"] == "sent" {
                assert_eq!(latest["id"], sent["id"], "{name}");
                break;
            }
            assert!(started.elapsed() < DELIVERY_WAIT, "{name}: still {latest}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stack.stop().await;
    }
}

#[tokio::test]
async fn sync_without_the_agent_engine_says_it_is_unavailable() {
    let stack = TestStack::embedded().await;
    let key = stack.registered("carol").await;
    stack.get("/messages/xmtp/sync", &Auth::Key(key)).await.expect_error(503, "UNAVAILABLE", stack.name);
    stack.get("/messages/xmtp/sync", &Auth::None).await.expect_error(401, "UNAUTHORIZED", stack.name);
    stack.stop().await;
}

/// Publishes an XMTP inbox for `wallet` elsewhere (not an account here) with `installations`
/// installations whose key packages ask for X-Wing welcomes and whose private keys are dropped:
/// nobody reads what is sent to it. Its inbox id.
async fn publish_inbox_elsewhere(stack: &TestStack, wallet: &PrivateKeySigner, installations: usize) -> String {
    let network = XmtpNetwork::connect_lazy(&stack.base_url).expect("network");
    let address = wallet.address().to_checksum(None);
    publish_external_inbox(&network, &address, installations, |text| {
        let mut bytes = alloy_signer::SignerSync::sign_message_sync(wallet, text.as_bytes()).unwrap().as_bytes().to_vec();
        if bytes[64] < 27 {
            bytes[64] += 27;
        }
        bytes
    })
    .await
    .expect("inbox published")
}

#[tokio::test]
async fn a_message_to_an_inbox_no_installation_can_read_fails_with_its_reason() {
    for stack in TestStack::all_with_agents().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let wallet = PrivateKeySigner::random();
        publish_inbox_elsewhere(&stack, &wallet, 0).await;
        let address = wallet.address().to_checksum(None);
        let sent = stack.post("/messages/dm/address", &Auth::Key(alice.clone()), json!({"wallet_address": address, "message": "anyone?"})).await;
        let sent = sent.expect_ok(name)["message"].clone();
        assert_eq!(sent["delivery"], "stored", "{name}: the wallet has an inbox, so the message is accepted");
        let started = Instant::now();
        loop {
            let history = stack.get(&format!("/messages/address/{address}"), &Auth::Key(alice.clone())).await;
            let message = history.expect_ok(name)["messages"][0].clone();
            if message["delivery"] == "failed" {
                assert_eq!(message["delivery_error"], "RECIPIENT_NOT_ON_XMTP", "{name}: {message}");
                assert_eq!(message["id"], sent["id"], "{name}");
                break;
            }
            assert_eq!(message["delivery"], "stored", "{name}: {message}");
            assert!(started.elapsed() < DELIVERY_WAIT, "{name}: still {message}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stack.stop().await;
    }
}

#[tokio::test]
async fn a_dm_to_an_inbox_with_ten_installations_welcomes_each_with_x_wing() {
    for stack in TestStack::all_with_agents().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        // An XMTP inbox elsewhere with ten installations, each with a key package asking for
        // X-Wing welcomes (the benchmark's peer).
        let wallet = PrivateKeySigner::random();
        let address = wallet.address().to_checksum(None);
        let inbox_id = publish_inbox_elsewhere(&stack, &wallet, 10).await;
        let sent = stack.post("/messages/dm/address", &Auth::Key(alice.clone()), json!({"wallet_address": address, "message": "to all ten"})).await;
        let sent = sent.expect_ok(name)["message"].clone();
        wait_for(&stack, &alice, &format!("address/{address}"), "the message to all ten sent", |messages| {
            assert!(messages.iter().all(|message| message["delivery"] != "failed"), "{name}: {messages:?}");
            delivered(messages, &sent["id"])
        })
        .await;
        let welcomes = welcomes_of(&stack, &inbox_id).await;
        let mut installations: Vec<&[u8]> = welcomes.iter().map(|welcome| welcome.installation_key.as_slice()).collect();
        installations.dedup();
        assert_eq!(installations.len(), 10, "{name}: one welcome per installation");
        assert!(
            welcomes
                .iter()
                .all(|welcome| welcome.wrapper_algorithm == WelcomeWrapperAlgorithm::XwingMlkem768Draft6 as i32
                    && welcome.hpke_public_key.len() == 1216),
            "{name}: every welcome is X-Wing-wrapped"
        );
        stack.stop().await;
    }
}
