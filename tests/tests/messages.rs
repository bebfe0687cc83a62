//! Direct messages through the gateway's REST face: sends by handle and by wallet, the inbox,
//! conversation histories with paging, idempotent retries and the live event stream, with every
//! error a user can hit, on SQLite + memory and PostgreSQL + Redis.

use std::{future::Future, pin::Pin, time::Duration};

use alloy_signer_local::PrivateKeySigner;
use clawx_common::{ErrorCode, ServiceError};
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    messaging::{
        self as pb,
        messaging_service_client::MessagingServiceClient,
        messaging_service_server::{MessagingService, MessagingServiceServer},
    },
};
use clawx_tests::{Auth, Reply, TestStack};
use futures::Stream;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

/// Sends `body` to `path` with `key`, and an `Idempotency-Key` when given.
async fn send(stack: &TestStack, key: &str, path: &str, body: Value, idempotency_key: Option<&str>) -> Reply {
    let mut request = stack.http.post(stack.url(path)).header("x-api-key", key).json(&body);
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let response = request.send().await.expect("gateway reachable");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply { status, headers, body }
}

/// A DM by handle; returns the message object.
async fn dm(stack: &TestStack, key: &str, handle: &str, text: &str) -> Value {
    let reply = send(stack, key, "/messages/dm", json!({"handle": handle, "message": text}), None).await;
    reply.expect_ok(&format!("{}: dm to {handle}", stack.name))["message"].clone()
}

/// The message objects of a list reply (`messages` or `conversations`).
fn list(reply: &Reply, field: &str, context: &str) -> Vec<Value> {
    reply.expect_ok(context)[field].as_array().unwrap_or_else(|| panic!("{context}: {field} is a list: {}", reply.body)).clone()
}

fn ids(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|message| message["id"].as_i64().expect("id")).collect()
}

async fn me(stack: &TestStack, key: &str) -> Value {
    stack.get("/account/me", &Auth::Key(key.to_string())).await.expect_ok(stack.name).clone()
}

fn assert_message_shape(message: &Value, context: &str) {
    let sent_at = message["sent_at"].as_str().unwrap_or_else(|| panic!("{context}: sent_at: {message}"));
    assert_eq!((sent_at.len(), &sent_at[10..11]), (19, " "), "{context}: YYYY-MM-DD HH:MM:SS: {message}");
    assert!(message["topic"].as_str().is_some_and(|topic| topic.starts_with("/clawx/dm/1/")), "{context}: {message}");
    assert_eq!(message["delivery"], "stored", "{context}: {message}");
    assert!(message.get("delivery_error").is_none(), "{context}: {message}");
    for field in ["id", "sender_id", "recipient_id", "content", "sender_handle", "recipient_handle"] {
        assert!(message.get(field).is_some(), "{context}: a message carries {field}: {message}");
    }
}

#[tokio::test]
async fn two_accounts_exchange_messages_and_each_sees_its_inbox_and_history() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let carol = stack.registered("carol").await;
        let (alice_id, bob_id) = (me(&stack, &alice).await["id"].clone(), me(&stack, &bob).await["id"].clone());

        let first = dm(&stack, &alice, "bob", "Hello Bob!").await;
        assert_message_shape(&first, name);
        assert_eq!((&first["sender_id"], &first["recipient_id"]), (&alice_id, &bob_id), "{name}: {first}");
        assert_eq!((first["sender_handle"].as_str(), first["recipient_handle"].as_str()), (Some("alice"), Some("bob")));
        assert_eq!(first["content"], "Hello Bob!");
        assert!(first.get("sender_address").is_none() && first.get("recipient_address").is_none(), "{name}: accounts carry no address");
        let reply = dm(&stack, &bob, "ALICE", "Hi Alice").await;
        assert_eq!(reply["topic"], first["topic"], "{name}: one conversation whoever writes");
        let from_carol = dm(&stack, &carol, "bob", "Bob, it's Carol").await;
        assert_ne!(from_carol["topic"], first["topic"]);

        // Each inbox: the latest message of each conversation, newest conversation first.
        let bob_inbox = list(&stack.get("/messages/inbox", &Auth::Key(bob.clone())).await, "conversations", name);
        assert_eq!(ids(&bob_inbox), vec![from_carol["id"].as_i64().unwrap(), reply["id"].as_i64().unwrap()], "{name}");
        assert_message_shape(&bob_inbox[1], name);
        let alice_inbox = list(&stack.get("/messages/inbox", &Auth::Key(alice.clone())).await, "conversations", name);
        assert_eq!(alice_inbox, vec![reply.clone()], "{name}: the inbox shows the same message object");
        let page = list(&stack.get("/messages/inbox?limit=1&offset=1", &Auth::Key(bob.clone())).await, "conversations", name);
        assert_eq!(ids(&page), vec![reply["id"].as_i64().unwrap()], "{name}");
        let unknown = list(&stack.get("/messages/inbox?consent=unknown", &Auth::Key(bob.clone())).await, "conversations", name);
        assert_eq!(unknown.len(), 2, "{name}: new conversations have unknown consent");
        let allowed = list(&stack.get("/messages/inbox?consent=allowed", &Auth::Key(bob.clone())).await, "conversations", name);
        assert!(allowed.is_empty(), "{name}");
        let refused = stack.get("/messages/inbox?consent=maybe", &Auth::Key(bob.clone())).await;
        assert_eq!(refused.expect_error(400, "VALIDATION_FAILED", name).body["field"], "consent");

        // Histories, newest first, the same from both sides; a third account sees none of it.
        let history = list(&stack.get("/messages/bob", &Auth::Key(alice.clone())).await, "messages", name);
        assert_eq!(history, vec![reply.clone(), first.clone()], "{name}");
        let history = list(&stack.get("/messages/Alice", &Auth::Key(bob.clone())).await, "messages", name);
        assert_eq!(ids(&history), ids(&[reply.clone(), first.clone()]), "{name}");
        let history = list(&stack.get("/messages/alice", &Auth::Key(carol.clone())).await, "messages", name);
        assert!(history.is_empty(), "{name}: only the two participants read a conversation");

        // A user named like a fixed route: the fixed route wins, the wallet reaches the user.
        let inbox_user = stack.registered("inbox").await;
        let to_inbox_user = dm(&stack, &alice, "inbox", "Hello, user named inbox").await;
        assert_eq!(to_inbox_user["recipient_handle"], "inbox");
        let alice_inbox = stack.get("/messages/inbox", &Auth::Key(alice.clone())).await;
        assert_eq!(
            ids(&list(&alice_inbox, "conversations", name))[0],
            to_inbox_user["id"].as_i64().unwrap(),
            "{name}: GET /messages/inbox is the inbox"
        );
        assert!(alice_inbox.body.get("messages").is_none(), "{name}");
        let wallet = me(&stack, &inbox_user).await["wallet_address"].as_str().unwrap().to_string();
        let history = list(&stack.get(&format!("/messages/address/{wallet}"), &Auth::Key(alice.clone())).await, "messages", name);
        assert_eq!(history, vec![to_inbox_user], "{name}");

        // Errors, each with its status and code.
        let key = alice.as_str();
        for (path, body, field) in [
            ("/messages/dm", json!({"message": "hi"}), "handle"),
            ("/messages/dm", json!({"handle": "bob"}), "message"),
            ("/messages/dm", json!({"handle": "b", "message": "hi"}), "handle"),
            ("/messages/dm", json!({"handle": "bob", "message": "hi", "extra": 1}), "extra"),
            ("/messages/dm/address", json!({"message": "hi"}), "wallet_address"),
            ("/messages/dm/address", json!({"wallet_address": "0x12", "message": "hi"}), "wallet_address"),
        ] {
            let reply = send(&stack, key, path, body.clone(), None).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {body}"));
            assert_eq!(reply.body["field"], field, "{name}: {body}");
            assert_eq!(reply.body["ok"], false, "{name}: {body}");
        }
        let empty = send(&stack, key, "/messages/dm", json!({"handle": "bob", "message": ""}), None).await;
        assert_eq!(empty.expect_error(400, "VALIDATION_FAILED", name).body["field"], "message");
        let oversized = send(&stack, key, "/messages/dm", json!({"handle": "bob", "message": "x".repeat(64 * 1024 + 1)}), None).await;
        assert_eq!(oversized.expect_error(400, "VALIDATION_FAILED", name).body["field"], "message");
        let at_limit = send(&stack, key, "/messages/dm", json!({"handle": "bob", "message": "x".repeat(64 * 1024)}), None).await;
        at_limit.expect_ok(name);
        send(&stack, key, "/messages/dm", json!({"handle": "alice", "message": "me"}), None).await.expect_error(400, "VALIDATION_FAILED", name);
        send(&stack, key, "/messages/dm", json!({"handle": "nobody", "message": "hi"}), None).await.expect_error(404, "NOT_FOUND", name);
        stack.get("/messages/nobody", &Auth::Key(alice.clone())).await.expect_error(404, "NOT_FOUND", name);
        let refused = stack.get("/messages/a", &Auth::Key(alice.clone())).await;
        assert_eq!(refused.expect_error(400, "VALIDATION_FAILED", name).body["field"], "handle");
        let refused = stack.get("/messages/address/0x12", &Auth::Key(alice.clone())).await;
        assert_eq!(refused.expect_error(400, "VALIDATION_FAILED", name).body["field"], "address");
        for path in ["/messages/inbox", "/messages/bob", "/messages/stream", &format!("/messages/address/{wallet}")] {
            let reply = stack.get(path, &Auth::None).await;
            reply.expect_error(401, "UNAUTHORIZED", &format!("{name}: {path}"));
            assert_eq!(reply.body["ok"], false);
        }
        for path in ["/messages/dm", "/messages/dm/address"] {
            stack.post(path, &Auth::None, json!({"handle": "bob", "message": "hi"})).await.expect_error(401, "UNAUTHORIZED", name);
        }
        stack.stop().await;
    }
}

#[tokio::test]
async fn messages_by_wallet_address_reach_accounts_and_strangers() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let (alice_me, bob_me) = (me(&stack, &alice).await, me(&stack, &bob).await);
        let bob_wallet = bob_me["wallet_address"].as_str().unwrap().to_string();

        // To an account's wallet (checksummed or lowercase): it lands in that account's inbox.
        let sent = send(&stack, &alice, "/messages/dm/address", json!({"wallet_address": bob_wallet, "message": "by wallet"}), None).await;
        let sent = sent.expect_ok(name)["message"].clone();
        assert_message_shape(&sent, name);
        assert_eq!((&sent["recipient_id"], sent["recipient_handle"].as_str()), (&bob_me["id"], Some("bob")), "{name}: {sent}");
        assert!(sent.get("recipient_address").is_none(), "{name}: {sent}");
        let again =
            send(&stack, &alice, "/messages/dm/address", json!({"wallet_address": bob_wallet.to_lowercase(), "message": "lowercase"}), None).await;
        assert_eq!(again.expect_ok(name)["message"]["topic"], sent["topic"], "{name}: the same conversation as by handle");
        let bob_inbox = list(&stack.get("/messages/inbox", &Auth::Key(bob.clone())).await, "conversations", name);
        assert_eq!(bob_inbox.len(), 1, "{name}");
        assert_eq!(bob_inbox[0]["content"], "lowercase");
        assert_eq!(bob_inbox[0]["sender_id"], alice_me["id"]);
        let by_handle = list(&stack.get("/messages/alice", &Auth::Key(bob.clone())).await, "messages", name);
        assert_eq!(by_handle.len(), 2, "{name}");

        // To a wallet with no account here: ids and handles are null, the address is carried.
        let stranger = PrivateKeySigner::random().address();
        let checksummed = stranger.to_checksum(None);
        let lowercase = checksummed.to_lowercase();
        let sent = send(&stack, &alice, "/messages/dm/address", json!({"wallet_address": checksummed, "message": "hello stranger"}), None).await;
        let sent = sent.expect_ok(name)["message"].clone();
        assert_message_shape(&sent, name);
        assert_eq!(sent["recipient_id"], Value::Null, "{name}: {sent}");
        assert_eq!(sent["recipient_handle"], Value::Null);
        assert_eq!(sent["recipient_address"], lowercase.as_str());
        assert_eq!(sent["sender_handle"], "alice");
        assert!(sent.get("sender_address").is_none());
        let alice_inbox = list(&stack.get("/messages/inbox", &Auth::Key(alice.clone())).await, "conversations", name);
        assert_eq!(alice_inbox[0], sent, "{name}: the newest conversation");
        for address in [&checksummed, &lowercase] {
            let history = list(&stack.get(&format!("/messages/address/{address}"), &Auth::Key(alice.clone())).await, "messages", name);
            assert_eq!(history, vec![sent.clone()], "{name}: {address}");
        }
        let history = list(&stack.get(&format!("/messages/address/{lowercase}"), &Auth::Key(bob.clone())).await, "messages", name);
        assert!(history.is_empty(), "{name}: not bob's conversation");

        // To the wallet of an account with no handle: its id, a null handle, no address.
        let (unregistered, _) = stack.create_account().await;
        let unregistered_me = me(&stack, &unregistered).await;
        let body = json!({"wallet_address": unregistered_me["wallet_address"], "message": "no handle yet"});
        let sent = send(&stack, &alice, "/messages/dm/address", body, None).await.expect_ok(name)["message"].clone();
        assert_eq!((&sent["recipient_id"], &sent["recipient_handle"]), (&unregistered_me["id"], &Value::Null), "{name}: {sent}");
        assert!(sent.get("recipient_address").is_none(), "{name}: {sent}");
        let their_inbox = list(&stack.get("/messages/inbox", &Auth::Key(unregistered.clone())).await, "conversations", name);
        assert_eq!(ids(&their_inbox), ids(&[sent]), "{name}");

        // Refusals: a wrong EIP-55 checksum, your own wallet.
        let mut wrong = checksummed.clone().into_bytes();
        let letter = wrong.iter().skip(2).position(|byte| byte.is_ascii_alphabetic()).expect("a letter in 40 hex digits") + 2;
        wrong[letter] ^= 0x20;
        let wrong = String::from_utf8(wrong).unwrap();
        let refused = send(&stack, &alice, "/messages/dm/address", json!({"wallet_address": wrong, "message": "hi"}), None).await;
        assert_eq!(refused.expect_error(400, "VALIDATION_FAILED", name).body["field"], "wallet_address");
        stack.get(&format!("/messages/address/{wrong}"), &Auth::Key(alice.clone())).await.expect_error(400, "VALIDATION_FAILED", name);
        let own = json!({"wallet_address": alice_me["wallet_address"], "message": "to me"});
        send(&stack, &alice, "/messages/dm/address", own, None).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn a_retried_send_with_its_idempotency_key_stores_one_message() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let body = json!({"handle": "bob", "message": "exactly once"});
        let first = send(&stack, &alice, "/messages/dm", body.clone(), Some("order-7:retry_1.a")).await.expect_ok(name).clone();
        let retried = send(&stack, &alice, "/messages/dm", body.clone(), Some("order-7:retry_1.a")).await.expect_ok(name).clone();
        assert_eq!(retried, first, "{name}: the retry answers the first message");
        let history = list(&stack.get("/messages/bob", &Auth::Key(alice.clone())).await, "messages", name);
        assert_eq!(history.len(), 1, "{name}: stored once");

        // The same key with another body is refused; another account's key is its own.
        let other = json!({"handle": "bob", "message": "something else"});
        send(&stack, &alice, "/messages/dm", other.clone(), Some("order-7:retry_1.a")).await.expect_error(409, "IDEMPOTENCY_KEY_REUSED", name);
        let bobs = send(&stack, &bob, "/messages/dm", json!({"handle": "alice", "message": "mine"}), Some("order-7:retry_1.a")).await;
        assert_ne!(bobs.expect_ok(name)["message"]["id"], first["message"]["id"]);
        let history = list(&stack.get("/messages/bob", &Auth::Key(alice.clone())).await, "messages", name);
        assert_eq!(history.len(), 2, "{name}");

        // Without a key every send is stored; a malformed key is refused naming the header.
        send(&stack, &alice, "/messages/dm", body.clone(), None).await.expect_ok(name);
        send(&stack, &alice, "/messages/dm", body.clone(), None).await.expect_ok(name);
        for bad in ["has space", "semi;colon", &"k".repeat(129)] {
            let refused = send(&stack, &alice, "/messages/dm", body.clone(), Some(bad)).await;
            refused.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {bad}"));
            assert_eq!(refused.body["field"], "Idempotency-Key", "{name}");
        }
        let history = list(&stack.get("/messages/bob?limit=200", &Auth::Key(alice.clone())).await, "messages", name);
        assert_eq!(history.len(), 4, "{name}: nothing stored for refused keys");
        stack.stop().await;
    }
}

#[tokio::test]
async fn histories_page_back_with_before_and_catch_up_with_after() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let mut sent = Vec::new();
        for number in 1..=5 {
            let key = if number % 2 == 0 { &bob } else { &alice };
            let to = if number % 2 == 0 { "alice" } else { "bob" };
            sent.push(dm(&stack, key, to, &format!("message {number}")).await["id"].as_i64().unwrap());
        }
        let page = |query: String| {
            let alice = alice.clone();
            let stack = &stack;
            async move { ids(&list(&stack.get(&format!("/messages/bob{query}"), &Auth::Key(alice)).await, "messages", &query)) }
        };
        let newest_first: Vec<i64> = sent.iter().rev().copied().collect();
        assert_eq!(page(String::new()).await, newest_first, "{name}");
        assert_eq!(page("?limit=2".into()).await, vec![sent[4], sent[3]], "{name}");
        assert_eq!(page(format!("?limit=2&before={}", sent[3])).await, vec![sent[2], sent[1]], "{name}: paging back");
        assert_eq!(page(format!("?limit=2&before={}", sent[1])).await, vec![sent[0]], "{name}: the oldest");
        assert_eq!(page(format!("?after={}", sent[2])).await, vec![sent[4], sent[3]], "{name}: catching up");
        assert_eq!(page(format!("?after={}", sent[4])).await, Vec::<i64>::new(), "{name}: nothing new");
        assert_eq!(page(format!("?after={}&before={}", sent[0], sent[4])).await, vec![sent[3], sent[2], sent[1]], "{name}");
        assert_eq!(page("?limit=1&offset=1".into()).await, vec![sent[3]], "{name}");
        for (query, field) in [("?before=-1", "before"), ("?after=x", "after"), ("?limit=-1", "limit"), ("?offset=x", "offset")] {
            let refused = stack.get(&format!("/messages/bob{query}"), &Auth::Key(alice.clone())).await;
            assert_eq!(refused.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {query}")).body["field"], field, "{name}: {query}");
        }
        stack.stop().await;
    }
}

/// One Server-Sent Event.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads an event stream as it arrives.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// Opens `/messages/stream{query}` for `key`, resuming after `last_event_id` when given.
    async fn try_open(stack: &TestStack, key: &str, query: &str, last_event_id: Option<i64>) -> Result<EventStream, Reply> {
        let mut request = stack.http.get(stack.url(&format!("/messages/stream{query}"))).header("x-api-key", key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("gateway reachable");
        if response.status() != 200 {
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            return Err(Reply { status, headers, body: response.json().await.unwrap_or(Value::Null) });
        }
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Ok(EventStream { response, buffer: String::new() })
    }

    /// [`EventStream::try_open`], which must succeed.
    async fn open(stack: &TestStack, key: &str, query: &str, last_event_id: Option<i64>) -> EventStream {
        match EventStream::try_open(stack, key, query, last_event_id).await {
            Ok(events) => events,
            Err(reply) => panic!("{}: the stream is refused: {} {}", stack.name, reply.status, reply.body),
        }
    }

    /// The next event (comments skipped); fails after 20 seconds without one.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event { id: None, event: "message".into(), data: String::new() };
                let mut fields = 0;
                for line in block.lines().filter(|line| !line.starts_with(':')) {
                    let (field, value) = line.split_once(':').map_or((line, ""), |(field, value)| (field, value.strip_prefix(' ').unwrap_or(value)));
                    fields += 1;
                    match field {
                        "id" => event.id = Some(value.to_string()),
                        "event" => event.event = value.to_string(),
                        "data" => event.data.push_str(value),
                        _ => {}
                    }
                }
                if fields > 0 {
                    return event;
                }
                continue;
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(20), self.response.chunk()).await.expect("an event within 20 s").expect("stream readable");
            let chunk = chunk.expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// Whether the stream ends (with nothing but comments before the end).
    async fn end(&mut self) -> bool {
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk()).await.expect("the end within 20 s");
            match chunk {
                Ok(None) => return self.buffer.lines().all(|line| line.is_empty() || line.starts_with(':')),
                Ok(Some(chunk)) => self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events")),
                Err(_) => return false,
            }
        }
    }

    /// The next event, which must be a message; returns the message object.
    async fn message(&mut self) -> Value {
        let event = self.next().await;
        assert_eq!(event.event, "message", "{event:?}");
        let message: Value = serde_json::from_str(&event.data).expect("JSON data");
        assert_eq!(event.id.as_deref(), Some(message["id"].to_string().as_str()), "the event id is the message id");
        message
    }
}

#[tokio::test]
async fn the_event_stream_delivers_new_messages_and_resumes_without_duplicates() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let before = dm(&stack, &alice, "bob", "sent before bob listened").await;

        // Live: without a starting point, only what is sent after connecting.
        let mut events = EventStream::open(&stack, &bob, "", None).await;
        let first = dm(&stack, &alice, "bob", "live one").await;
        assert_eq!(events.message().await, first, "{name}: the message object, as sent");
        let own = dm(&stack, &bob, "alice", "bob's own message").await;
        assert_eq!(events.message().await["id"], own["id"], "{name}: the caller's sends are its messages too");
        drop(events);

        // Messages sent while away, then live ones: resumed after the last id seen.
        let missed = [dm(&stack, &alice, "bob", "while away 1").await, dm(&stack, &alice, "bob", "while away 2").await];
        let mut events = EventStream::open(&stack, &bob, &format!("?after={}", before["id"]), own["id"].as_i64()).await;
        for expected in &missed {
            assert_eq!(events.message().await["id"], expected["id"], "{name}: replay after Last-Event-ID, which wins over ?after=");
        }
        let live = dm(&stack, &alice, "bob", "after resuming").await;
        assert_eq!(events.message().await["id"], live["id"], "{name}: no duplicate between replay and live");
        drop(events);

        // ?after= alone replays from there; other accounts' messages never appear.
        let carol = stack.registered("carol").await;
        dm(&stack, &carol, "alice", "not bob's business").await;
        let mut events = EventStream::open(&stack, &bob, &format!("?after={}", missed[1]["id"]), None).await;
        assert_eq!(events.message().await["id"], live["id"], "{name}");
        let next = dm(&stack, &alice, "bob", "next").await;
        assert_eq!(events.message().await["id"], next["id"], "{name}: carol's message to alice is skipped");
        drop(events);

        for (query, header, field) in [("?after=-1", None, "after"), ("?after=x", None, "after"), ("", Some("x"), "Last-Event-ID")] {
            let mut request = stack.http.get(stack.url(&format!("/messages/stream{query}"))).header("x-api-key", &bob);
            if let Some(header) = header {
                request = request.header("last-event-id", header);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 400, "{name}: {query}");
            let body: Value = response.json().await.unwrap();
            assert_eq!((body["code"].as_str(), body["field"].as_str()), (Some("VALIDATION_FAILED"), Some(field)), "{name}: {body}");
        }
        stack.stop().await;
    }
}

/// A gRPC `StreamMessages` call through the gateway with `key`.
async fn grpc_stream(stack: &TestStack, key: &str) -> Result<tonic::Streaming<pb::Message>, tonic::Status> {
    let mut client = MessagingServiceClient::new(stack.channel().await);
    let mut request = tonic::Request::new(pb::StreamMessagesRequest { after_id: 0 });
    request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key).unwrap());
    client.stream_messages(request).await.map(tonic::Response::into_inner)
}

/// Retries `open` until it succeeds: a closed stream frees its slot once the gateway sees the
/// client leave.
async fn once_a_slot_is_free<T, E, F: Future<Output = Result<T, E>>>(mut open: impl FnMut() -> F) -> Option<T> {
    for _ in 0..100 {
        if let Ok(opened) = open().await {
            return Some(opened);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn event_streams_and_grpc_message_streams_share_the_per_ip_stream_cap() {
    for stack in TestStack::all_with(|config| config.limits.xmtp_streams_per_ip = 1).await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let events = EventStream::open(&stack, &alice, "", None).await;
        let Err(refused) = EventStream::try_open(&stack, &alice, "", None).await else { panic!("{name}: a second stream is refused") };
        refused.expect_error(429, "RATE_LIMITED", name);
        assert_eq!(refused.body["ok"], false);
        let refused = grpc_stream(&stack, &alice).await.expect_err("the gRPC stream is refused too");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{name}: {refused:?}");
        assert_eq!(refused.metadata().get("clawx-error-code").unwrap(), "RATE_LIMITED", "{name}");
        drop(events);

        let grpc = once_a_slot_is_free(|| grpc_stream(&stack, &alice)).await.unwrap_or_else(|| panic!("{name}: a closed stream frees its slot"));
        EventStream::try_open(&stack, &alice, "", None).await.err().expect("the gRPC stream holds the slot").expect_error(429, "RATE_LIMITED", name);
        drop(grpc);

        let mut events = once_a_slot_is_free(|| EventStream::try_open(&stack, &alice, "", None))
            .await
            .unwrap_or_else(|| panic!("{name}: a closed gRPC stream frees its slot"));
        let bob = stack.registered("bob").await;
        let sent = dm(&stack, &bob, "alice", "through the reopened stream").await;
        assert_eq!(events.message().await["id"], sent["id"], "{name}");
        stack.stop().await;
    }
}

/// A stand-in for the messaging service whose message stream sends one message (its content
/// names the `after_id` asked for) and then fails, as a stream does when the service drops a
/// slow reader or goes away; asked for new messages only (`after_id` 0), it stays silent and
/// never ends.
struct FailingStream;

#[tonic::async_trait]
impl MessagingService for FailingStream {
    type StreamMessagesStream = Pin<Box<dyn Stream<Item = Result<pb::Message, tonic::Status>> + Send>>;

    async fn get_status(&self, _request: tonic::Request<GetStatusRequest>) -> Result<tonic::Response<ServiceStatus>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn send_direct_message(
        &self,
        _request: tonic::Request<pb::SendDirectMessageRequest>,
    ) -> Result<tonic::Response<pb::SendDirectMessageResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn list_inbox(&self, _request: tonic::Request<pb::ListInboxRequest>) -> Result<tonic::Response<pb::ListInboxResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn list_conversation(
        &self,
        _request: tonic::Request<pb::ListConversationRequest>,
    ) -> Result<tonic::Response<pb::ListConversationResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn set_consent(&self, _request: tonic::Request<pb::SetConsentRequest>) -> Result<tonic::Response<pb::SetConsentResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn check_spam(&self, _request: tonic::Request<pb::CheckSpamRequest>) -> Result<tonic::Response<pb::CheckSpamResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn purge_account(
        &self,
        _request: tonic::Request<pb::PurgeAccountRequest>,
    ) -> Result<tonic::Response<pb::PurgeAccountResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn register_push(
        &self,
        _request: tonic::Request<pb::RegisterPushRequest>,
    ) -> Result<tonic::Response<pb::RegisterPushResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn sync_xmtp(&self, _request: tonic::Request<pb::SyncXmtpRequest>) -> Result<tonic::Response<pb::SyncXmtpResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn publish_group_message(
        &self,
        _request: tonic::Request<pb::PublishGroupMessageRequest>,
    ) -> Result<tonic::Response<pb::PublishGroupMessageResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stand-in"))
    }

    async fn stream_messages(
        &self,
        request: tonic::Request<pb::StreamMessagesRequest>,
    ) -> Result<tonic::Response<Self::StreamMessagesStream>, tonic::Status> {
        let after_id = request.into_inner().after_id;
        if after_id == 0 {
            return Ok(tonic::Response::new(Box::pin(futures::stream::pending())));
        }
        let message = pb::Message {
            id: after_id + 1,
            sender_id: Some(1),
            recipient_id: Some(2),
            content: format!("after {after_id}"),
            sent_at_ms: 1_700_000_000_000,
            sender_handle: Some("alice".into()),
            recipient_handle: Some("bob".into()),
            delivery: pb::Delivery::Stored.into(),
            topic: "/clawx/dm/1/1".into(),
            ..pb::Message::default()
        };
        let failure = ServiceError::new(ErrorCode::Unavailable, "the messaging service is shutting down").into_status();
        Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(message), Err(failure)]))))
    }
}

/// Serves [`FailingStream`] on loopback until `shutdown`; returns its URL.
async fn serve_stand_in(shutdown: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = tonic::transport::Server::builder().add_service(MessagingServiceServer::new(FailingStream));
    tokio::spawn(clawx_common::grpc::serve(router, listener, shutdown.clone()));
    url
}

#[tokio::test]
async fn a_stream_that_fails_upstream_ends_with_an_error_event_and_frees_its_slot() {
    let shutdown = CancellationToken::new();
    let stand_in = serve_stand_in(&shutdown).await;
    let adjust = move |config: &mut clawx_gateway::Config| {
        config.upstreams.messaging = stand_in.clone();
        config.limits.xmtp_streams_per_ip = 1;
    };
    for stack in TestStack::all_with(adjust).await {
        let name = stack.name;
        let key = stack.registered("alice").await;
        for attempt in 0..2 {
            // The first stream's slot must be free again for the second to open.
            let mut events = once_a_slot_is_free(|| EventStream::try_open(&stack, &key, "", Some(41)))
                .await
                .unwrap_or_else(|| panic!("{name}: stream {attempt} opens"));
            let message = events.message().await;
            assert_eq!((message["id"].as_i64(), message["content"].as_str()), (Some(42), Some("after 41")), "{name}: {message}");
            let last = events.next().await;
            assert_eq!(last.event, "error", "{name}: {last:?}");
            let data: Value = serde_json::from_str(&last.data).unwrap();
            assert_eq!(data["code"], "UNAVAILABLE", "{name}: {data}");
            assert!(data["error"].as_str().is_some_and(|text| !text.is_empty()), "{name}: {data}");
            assert!(events.end().await, "{name}: the stream closes after the error");
        }
        stack.stop().await;
    }
    shutdown.cancel();
}

#[tokio::test]
async fn open_event_streams_end_when_the_gateway_stops() {
    let shutdown = CancellationToken::new();
    let stand_in = serve_stand_in(&shutdown).await;
    for stack in TestStack::all_with(move |config| config.upstreams.messaging = stand_in.clone()).await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let mut events = EventStream::open(&stack, &alice, "", None).await;
        // The upstream stream never ends: the gateway must end it to stop.
        tokio::time::timeout(Duration::from_secs(30), stack.stop()).await.unwrap_or_else(|_| panic!("{name}: stops with a stream open"));
        assert!(events.end().await, "{name}: the stream ends cleanly");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn the_openapi_document_describes_every_message_route() {
    let stack = TestStack::embedded().await;
    let document = stack.get("/openapi.json", &Auth::None).await.body;
    for (path, method) in [
        ("/messages/dm", "post"),
        ("/messages/dm/address", "post"),
        ("/messages/inbox", "get"),
        ("/messages/{handle}", "get"),
        ("/messages/address/{address}", "get"),
        ("/messages/stream", "get"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{path} {method} is documented");
        for status in ["200", "400", "401", "429", "503"] {
            assert!(operation["responses"][status].is_object(), "{path} {method} documents {status}");
        }
    }
    assert!(document["paths"]["/messages/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    assert!(document["paths"]["/messages/dm"]["post"]["responses"]["409"].is_object());
    assert!(document["paths"]["/messages/dm"]["post"]["responses"]["404"].is_object());
    let parameters = document["paths"]["/messages/dm"]["post"]["parameters"].as_array().expect("parameters");
    assert!(parameters.iter().any(|parameter| parameter["name"] == "Idempotency-Key" && parameter["in"] == "header"));
    let message = &document["components"]["schemas"]["Message"];
    for field in ["id", "sender_id", "recipient_id", "content", "sent_at", "sender_handle", "recipient_handle", "delivery", "topic"] {
        assert!(message["required"].as_array().unwrap().iter().any(|name| name == field), "Message requires {field}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn an_idle_event_stream_gets_heartbeats_and_still_delivers() {
    for stack in TestStack::all_with(|config| config.sse_heartbeat = Duration::from_millis(200)).await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let mut events = EventStream::open(&stack, &bob, "", None).await;
        // Nothing is sent: only heartbeat comments arrive, several of them.
        let mut heartbeats = 0;
        for _ in 0..20 {
            let chunk = tokio::time::timeout(Duration::from_secs(5), events.response.chunk()).await.expect("a heartbeat within 5 s");
            let chunk = chunk.expect("stream readable").expect("the stream stays open");
            let text = std::str::from_utf8(&chunk).expect("UTF-8").to_string();
            heartbeats += text.lines().filter(|line| line.starts_with(':') && line.contains("heartbeat")).count();
            assert!(text.lines().all(|line| line.is_empty() || line.starts_with(':')), "{name}: only comments while idle: {text:?}");
            if heartbeats >= 3 {
                break;
            }
        }
        assert!(heartbeats >= 3, "{name}: heartbeat comments on an idle stream, got {heartbeats}");
        // The idle stream still carries the next message.
        let sent = dm(&stack, &alice, "bob", "after the quiet").await;
        assert_eq!(events.message().await["id"], sent["id"], "{name}");
        stack.stop().await;
    }
}
