//! Consent and the spam check through the gateway's REST face (`/xmtp/topics/accept`,
//! `/xmtp/topics/block`, `/xmtp/spam/{address}`), on SQLite + memory and PostgreSQL + Redis.

use clawx_tests::{Auth, TestStack};
use serde_json::{Value, json};

async fn wallet(stack: &TestStack, key: &str) -> String {
    stack.get("/account/me", &Auth::Key(key.to_string())).await.expect_ok(stack.name)["wallet_address"].as_str().expect("a wallet").to_string()
}

async fn dm(stack: &TestStack, key: &str, handle: &str, text: &str) -> Value {
    let reply = stack.post("/messages/dm", &Auth::Key(key.to_string()), json!({"handle": handle, "message": text})).await;
    reply.expect_ok(&format!("{}: dm to {handle}", stack.name))["message"].clone()
}

async fn inbox(stack: &TestStack, key: &str, consent: &str) -> Vec<String> {
    let reply = stack.get(&format!("/messages/inbox?consent={consent}"), &Auth::Key(key.to_string())).await;
    let conversations = reply.expect_ok(stack.name)["conversations"].as_array().expect("a list").clone();
    conversations.iter().map(|message| message["content"].as_str().unwrap().to_string()).collect()
}

fn body(owner: &str, registrations: Value) -> Value {
    json!({"ownerAddress": owner, "signedPublicKey": "unused", "registrations": registrations})
}

#[tokio::test]
async fn users_accept_and_block_conversations_and_the_spam_check_reports_blocked_peers() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let carol = stack.registered("carol").await;
        let dave = stack.registered("dave").await;
        let (alice_wallet, carol_wallet) = (wallet(&stack, &alice).await, wallet(&stack, &carol).await);
        let hello = dm(&stack, &bob, "alice", "hello").await;
        dm(&stack, &carol, "alice", "buy now").await;
        dm(&stack, &carol, "dave", "buy now too").await;
        let key = |key: &str| Auth::Key(key.to_string());
        let topic = hello["topic"].as_str().unwrap().to_string();

        // Accept by conversation topic.
        let accepted = stack.post("/xmtp/topics/accept", &key(&alice), body(&alice_wallet, json!([{"topic": topic, "accept": true}]))).await;
        assert_eq!(accepted.expect_ok(name), &json!({"conversations": 1, "reports": 0}), "{name}");
        assert_eq!(inbox(&stack, &alice, "allowed").await, vec!["hello"], "{name}");
        assert_eq!(inbox(&stack, &alice, "unknown").await, vec!["buy now"], "{name}");

        // Refusals.
        let not_mine = stack.post("/xmtp/topics/accept", &key(&alice), body(&carol_wallet, json!([{"topic": topic}]))).await;
        not_mine.expect_error(403, "FORBIDDEN", "someone else's wallet");
        assert!(not_mine.body.get("ok").is_none(), "{name}: /xmtp errors are {{error, code}}: {}", not_mine.body);
        let forged = format!("0x{}1b", "11".repeat(64));
        let bad_signature =
            stack.post("/xmtp/topics/accept", &key(&alice), body(&alice_wallet, json!([{"topic": topic, "signature": forged}]))).await;
        bad_signature.expect_error(403, "FORBIDDEN", "a signature that is not the owner's");
        let strangers = stack.post("/xmtp/topics/accept", &key(&dave), body(&wallet(&stack, &dave).await, json!([{"topic": topic}]))).await;
        strangers.expect_error(404, "NOT_FOUND", "someone else's conversation");
        stack.post("/xmtp/topics/accept", &Auth::None, body(&alice_wallet, json!([{"topic": topic}]))).await.expect_error(
            401,
            "UNAUTHORIZED",
            "no key",
        );
        stack.post("/xmtp/topics/block", &key(&alice), json!({"registrations": [{"topic": topic}]})).await.expect_error(
            400,
            "VALIDATION_FAILED",
            "no owner",
        );
        let bad_peer = stack.post("/xmtp/topics/block", &key(&alice), body(&alice_wallet, json!([{"topic": "x", "peerAddress": "0x12"}]))).await;
        bad_peer.expect_error(400, "VALIDATION_FAILED", "a bad peer");

        // Block by peer (an XMTP topic with peerAddress): denied and reported once.
        let xmtp_topic = "/xmtp/mls/1/g-00/proto";
        let registrations = json!([{"topic": xmtp_topic, "peerAddress": carol_wallet, "block": true}]);
        let blocked = stack.post("/xmtp/topics/block", &key(&alice), body(&alice_wallet, registrations.clone())).await;
        assert_eq!(blocked.expect_ok(name), &json!({"conversations": 1, "reports": 1}), "{name}");
        let again = stack.post("/xmtp/topics/block", &key(&alice), body(&alice_wallet, registrations.clone())).await;
        assert_eq!(again.expect_ok(name), &json!({"conversations": 1, "reports": 0}), "{name}: one report per reporter");
        assert_eq!(inbox(&stack, &alice, "denied").await, vec!["buy now"], "{name}");
        assert!(inbox(&stack, &alice, "unknown").await.is_empty(), "{name}");

        // The spam check: no auth; one report is a reason, two make spam.
        let explained = stack.get(&format!("/xmtp/spam/{carol_wallet}?explain=true"), &Auth::None).await;
        let once = explained.expect_ok(name).clone();
        assert_eq!(once["isSpam"], false, "{name}: {once}");
        assert!(once["score"].as_f64().is_some_and(|score| score > 0.0 && score < 1.0), "{name}: {once}");
        assert!(
            once["reasons"].as_array().unwrap().iter().any(|reason| reason.as_str().unwrap().contains("reported by 1 account")),
            "{name}: {once}"
        );
        let dave_wallet = wallet(&stack, &dave).await;
        let dave_blocks = stack.post("/xmtp/topics/block", &key(&dave), body(&dave_wallet, registrations)).await;
        assert_eq!(dave_blocks.expect_ok(name)["reports"], 1, "{name}");
        let plain = stack.get(&format!("/xmtp/spam/{carol_wallet}"), &Auth::None).await;
        assert_eq!(plain.expect_ok(name), &json!({"isSpam": true}), "{name}");
        let twice = stack.get(&format!("/xmtp/spam/{carol_wallet}?explain=true"), &Auth::None).await.expect_ok(name).clone();
        assert!(twice["score"].as_f64().unwrap() > once["score"].as_f64().unwrap(), "{name}: {twice}");
        assert!(
            twice["reasons"].as_array().unwrap().iter().any(|reason| reason.as_str().unwrap().contains("reported by 2 account")),
            "{name}: {twice}"
        );
        let clean = stack.get("/xmtp/spam/0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed?explain=true", &Auth::None).await;
        assert_eq!(clean.expect_ok(name), &json!({"isSpam": false, "score": 0.0, "reasons": []}), "{name}");
        stack.get("/xmtp/spam/not-an-address", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", "an invalid address");
        stack.get("/xmtp/spam/0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", &Auth::None).await.expect_error(
            400,
            "VALIDATION_FAILED",
            "a bad checksum",
        );
        stack.stop().await;
    }
}

#[tokio::test]
async fn consent_set_before_any_conversation_holds_for_the_conversation_that_follows() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let carol = stack.registered("carol").await;
        let key = |key: &str| Auth::Key(key.to_string());
        let (alice_wallet, bob_wallet, carol_wallet) = (wallet(&stack, &alice).await, wallet(&stack, &bob).await, wallet(&stack, &carol).await);

        // Alice accepts bob and blocks carol before either has written to her.
        let accepted = stack
            .post("/xmtp/topics/accept", &key(&alice), body(&alice_wallet, json!([{"topic": "/xmtp/mls/1/g-0a0b/proto", "peerAddress": bob_wallet}])))
            .await;
        assert_eq!(accepted.expect_ok(name), &json!({"conversations": 0, "reports": 0}), "{name}: kept for later");
        let blocked = stack
            .post("/xmtp/topics/block", &key(&alice), body(&alice_wallet, json!([{"topic": "/xmtp/mls/1/g-0c/proto", "peerAddress": carol_wallet}])))
            .await;
        assert_eq!(blocked.expect_ok(name), &json!({"conversations": 0, "reports": 1}), "{name}");
        dm(&stack, &bob, "alice", "from bob").await;
        dm(&stack, &carol, "alice", "from carol").await;
        assert_eq!(inbox(&stack, &alice, "allowed").await, vec!["from bob"], "{name}");
        assert_eq!(inbox(&stack, &alice, "denied").await, vec!["from carol"], "{name}");
        assert!(inbox(&stack, &alice, "unknown").await.is_empty(), "{name}");
        // Bob's side is his own: unknown.
        assert_eq!(inbox(&stack, &bob, "unknown").await, vec!["from bob"], "{name}");

        // An XMTP topic alone (no peer): consent to the topic, no report; other topics without a
        // peer are still refused.
        let topic_only = stack.post("/xmtp/topics/block", &key(&alice), body(&alice_wallet, json!([{"topic": "/xmtp/mls/1/g-ABCD/proto"}]))).await;
        assert_eq!(topic_only.expect_ok(name), &json!({"conversations": 0, "reports": 0}), "{name}");
        let unknown = stack.post("/xmtp/topics/accept", &key(&alice), body(&alice_wallet, json!([{"topic": "topic-123"}]))).await;
        unknown.expect_error(404, "NOT_FOUND", "neither a conversation, a peer nor an XMTP topic");
        stack.stop().await;
    }
}
