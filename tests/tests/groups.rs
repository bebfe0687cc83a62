//! Open groups and their chat through the gateway's REST face (`/groups*`, and group messages
//! on `/messages/stream`), on SQLite + memory and PostgreSQL + Redis.

use std::time::Duration;

use clawx_common::{Principal, time::now_ms};
use clawx_proto::{
    identity::{DeleteUnverifiedAccountRequest, identity_service_client::IdentityServiceClient},
    messaging::{PublishGroupMessageRequest, StreamMessagesRequest, messaging_service_client::MessagingServiceClient},
};
use clawx_tests::{Auth, Reply, TestStack};
use reqwest::Method;
use serde_json::{Value, json};

fn key(key: &str) -> Auth {
    Auth::Key(key.to_string())
}

async fn create_group(stack: &TestStack, owner: &str, title: &str, description: &str) -> Value {
    let reply = stack.post("/groups", &key(owner), json!({"title": title, "description": description})).await;
    reply.expect_ok(&format!("{}: create {title}", stack.name)).clone()
}

async fn patch(stack: &TestStack, auth: &Auth, path: &str, body: Value) -> Reply {
    stack.call(Method::PATCH, path, auth, Some(body)).await
}

async fn delete(stack: &TestStack, auth: &Auth, path: &str) -> Reply {
    stack.call(Method::DELETE, path, auth, None).await
}

/// POST without a body, as join and leave are called.
async fn post_empty(stack: &TestStack, auth: &Auth, path: &str) -> Reply {
    stack.call(Method::POST, path, auth, None).await
}

fn is_iso_datetime(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.len() == 19
            && text.as_bytes()[10] == b'T'
            && text.chars().enumerate().all(|(index, character)| match index {
                4 | 7 => character == '-',
                10 => character == 'T',
                13 | 16 => character == ':',
                _ => character.is_ascii_digit(),
            })
    })
}

#[tokio::test]
async fn groups_are_created_read_listed_updated_and_deleted_by_their_owner() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let (anonymous, _) = stack.create_account().await;
        let me = stack.get("/account/me", &key(&alice)).await.expect_ok(name).clone();

        // Who may create, and what.
        stack.post("/groups", &Auth::None, json!({"title": "t", "description": "d"})).await.expect_error(401, "UNAUTHORIZED", name);
        stack.post("/groups", &key(&anonymous), json!({"title": "t", "description": "d"})).await.expect_error(403, "HANDLE_REQUIRED", name);
        let invalid = [
            (json!({"description": "d"}), "title"),
            (json!({"title": "t"}), "description"),
            (json!({"title": "x".repeat(201), "description": "d"}), "title"),
            (json!({"title": "   ", "description": "d"}), "title"),
            (json!({"title": "a\u{202e}b", "description": "d"}), "title"),
            (json!({"title": "t", "description": "d".repeat(10_001)}), "description"),
            (json!({"title": "t", "description": " \n "}), "description"),
            (json!({"title": "t", "description": "d", "x_url": "javascript:alert(1)"}), "x_url"),
            (json!({"title": "t", "description": "d", "website_url": "https://a.example/<b>"}), "website_url"),
            (json!({"title": "t", "description": "d", "owner_id": 5}), "owner_id"),
        ];
        for (body, field) in invalid {
            let reply = stack.post("/groups", &key(&alice), body.clone()).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {body}"));
            assert_eq!(reply.body["field"], field, "{name}: {body}: {}", reply.body);
            assert_eq!(reply.body["ok"], false, "{name}");
        }

        // Created: the flat object of GET /groups/:id, the creator its owner and one member.
        let body = json!({"title": "Rust agents", "description": "We write Rust.\nTogether.", "x_url": "https://x.com/rust", "github_url": null});
        let created = stack.post("/groups", &key(&alice), body).await.expect_ok(name).clone();
        let id = created["id"].as_str().expect("an id").to_string();
        assert!(id.len() == 24 && id.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()), "{name}: {id}");
        assert_eq!(created["ok"], true, "{name}");
        assert_eq!((created["title"].as_str(), created["description"].as_str()), (Some("Rust agents"), Some("We write Rust.\nTogether.")), "{name}");
        assert_eq!(
            (&created["x_url"], &created["github_url"], &created["website_url"]),
            (&json!("https://x.com/rust"), &Value::Null, &Value::Null),
            "{name}"
        );
        assert_eq!(
            (&created["owner_id"], &created["owner_handle"], &created["owner_name"]),
            (&me["id"], &json!("alice"), &json!("alice name")),
            "{name}"
        );
        assert_eq!(created["owner_address"], me["wallet_address"], "{name}");
        assert_eq!(created["member_count"], 1, "{name}");
        assert!(is_iso_datetime(&created["created_at"]) && is_iso_datetime(&created["updated_at"]), "{name}: {created}");
        let members = created["members"].as_array().expect("members");
        assert_eq!(members.len(), 1, "{name}");
        assert_eq!((&members[0]["id"], &members[0]["handle"], &members[0]["name"]), (&me["id"], &json!("alice"), &json!("alice name")), "{name}");
        assert_eq!(members[0]["wallet_address"], me["wallet_address"], "{name}");
        assert!(is_iso_datetime(&members[0]["joined_at"]), "{name}");

        // Read by anyone; any case of the id; malformed and unknown ids are 404.
        let read = stack.get(&format!("/groups/{id}"), &Auth::None).await.expect_ok(name).clone();
        assert_eq!(read, created, "{name}");
        stack.get(&format!("/groups/{}", id.to_ascii_uppercase()), &Auth::None).await.expect_ok(name);
        for bad in ["nope", "123", "zzzzzzzzzzzzzzzzzzzzzzzz", "0123456789abcdef01234567", &format!("{id}0")] {
            let reply = stack.get(&format!("/groups/{bad}"), &Auth::None).await;
            reply.expect_error(404, "NOT_FOUND", &format!("{name}: {bad}"));
            assert_eq!(reply.body["ok"], false, "{name}");
        }

        // Joining and leaving.
        let join = format!("/groups/{id}/join");
        let leave = format!("/groups/{id}/leave");
        post_empty(&stack, &Auth::None, &join).await.expect_error(401, "UNAUTHORIZED", name);
        let joined = post_empty(&stack, &key(&bob), &join).await.expect_ok(name).clone();
        assert_eq!(joined, json!({"ok": true, "group_id": id, "joined": true, "member_count": 2}), "{name}");
        let again = post_empty(&stack, &key(&bob), &join).await.expect_ok(name).clone();
        assert_eq!((&again["joined"], &again["member_count"]), (&json!(false), &json!(2)), "{name}: joining twice is a no-op");
        post_empty(&stack, &key(&anonymous), &join).await.expect_ok(&format!("{name}: any account joins"));
        post_empty(&stack, &key(&bob), "/groups/0123456789abcdef01234567/join").await.expect_error(404, "NOT_FOUND", name);
        post_empty(&stack, &key(&bob), "/groups/not-an-id/leave").await.expect_error(404, "NOT_FOUND", name);
        post_empty(&stack, &key(&alice), &leave).await.expect_error(400, "OWNER_CANNOT_LEAVE", name);
        let left = post_empty(&stack, &key(&anonymous), &leave).await.expect_ok(name).clone();
        assert_eq!(left, json!({"ok": true, "group_id": id, "member_count": 2}), "{name}");
        post_empty(&stack, &key(&anonymous), &leave).await.expect_error(400, "NOT_A_MEMBER", name);
        let read = stack.get(&format!("/groups/{id}"), &Auth::None).await.expect_ok(name).clone();
        let handles: Vec<&str> = read["members"].as_array().unwrap().iter().map(|member| member["handle"].as_str().unwrap()).collect();
        assert_eq!((handles, &read["member_count"]), (vec!["alice", "bob"], &json!(2)), "{name}: by join time");

        // Owner data is read fresh: a renamed owner shows the new name at once.
        patch(&stack, &key(&alice), "/account/me", json!({"name": "Alice Renamed"})).await.expect_ok(name);
        let read = stack.get(&format!("/groups/{id}"), &Auth::None).await.expect_ok(name).clone();
        assert_eq!((&read["owner_name"], &read["members"][0]["name"]), (&json!("Alice Renamed"), &json!("Alice Renamed")), "{name}");

        // Updates: owner only, partial, null clears a URL but not the title.
        let path = format!("/groups/{id}");
        patch(&stack, &Auth::None, &path, json!({"title": "x"})).await.expect_error(401, "UNAUTHORIZED", name);
        patch(&stack, &key(&bob), &path, json!({"title": "Mine now"})).await.expect_error(403, "FORBIDDEN", name);
        patch(&stack, &key(&alice), "/groups/0123456789abcdef01234567", json!({"title": "x"})).await.expect_error(404, "NOT_FOUND", name);
        let reply = patch(&stack, &key(&alice), &path, json!({"title": null})).await;
        reply.expect_error(400, "VALIDATION_FAILED", name);
        assert_eq!(reply.body["field"], "title", "{name}");
        let reply = patch(&stack, &key(&alice), &path, json!({"website_url": "ftp://example.com"})).await;
        assert_eq!((reply.status, &reply.body["field"]), (400, &json!("website_url")), "{name}: {}", reply.body);
        let updated = patch(&stack, &key(&alice), &path, json!({"title": "Rustaceans", "x_url": null, "website_url": "https://rust.example/"})).await;
        let updated = updated.expect_ok(name).clone();
        assert_eq!((&updated["title"], &updated["description"]), (&json!("Rustaceans"), &json!("We write Rust.\nTogether.")), "{name}");
        assert_eq!((&updated["x_url"], &updated["website_url"]), (&Value::Null, &json!("https://rust.example/")), "{name}");
        assert_eq!((&updated["created_at"], &updated["member_count"]), (&created["created_at"], &json!(2)), "{name}");
        assert_eq!(updated["members"].as_array().map(Vec::len), Some(2), "{name}");

        // Listing: newest first, paged, searched (LIKE wildcards are literal), limit capped.
        let second = create_group(&stack, &bob, "100% Ünïcode_club", "percent and underscore").await;
        let third = create_group(&stack, &bob, "Quiet", "nothing to see").await;
        let page = stack.get("/groups?limit=2", &Auth::None).await.expect_ok(name).clone();
        let ids = |page: &Value| page["groups"].as_array().unwrap().iter().map(|group| group["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&page), vec![third["id"].as_str().unwrap(), second["id"].as_str().unwrap()], "{name}");
        assert_eq!((&page["total"], &page["limit"], &page["offset"], &page["has_more"]), (&json!(3), &json!(2), &json!(0), &json!(true)), "{name}");
        assert!(page.get("ok").is_none(), "{name}: the seed's list shape");
        let listed = &page["groups"][0];
        assert!(listed.get("members").is_none(), "{name}: lists carry no members");
        assert_eq!(
            (&listed["owner_handle"], &listed["owner_name"], &listed["member_count"]),
            (&json!("bob"), &json!("bob name"), &json!(1)),
            "{name}"
        );
        let last = stack.get("/groups?limit=2&offset=2", &Auth::None).await.expect_ok(name).clone();
        assert_eq!((ids(&last), &last["has_more"]), (vec![id.clone()], &json!(false)), "{name}");
        let capped = stack.get("/groups?limit=1000", &Auth::None).await.expect_ok(name).clone();
        assert_eq!(capped["limit"], 100, "{name}");
        let defaulted = stack.get("/groups", &Auth::None).await.expect_ok(name).clone();
        assert_eq!(defaulted["limit"], 20, "{name}");
        for (search, expected) in [
            ("RUSTACEANS", vec![id.as_str()]),
            ("100%", vec![second["id"].as_str().unwrap()]),
            ("%", vec![second["id"].as_str().unwrap()]),
            ("_", vec![second["id"].as_str().unwrap()]),
            ("ünïcode", vec![second["id"].as_str().unwrap()]),
            ("to see", vec![third["id"].as_str().unwrap()]),
            ("absent", vec![]),
        ] {
            let found = stack.get(&format!("/groups?search={}", urlencode(search)), &Auth::None).await.expect_ok(name).clone();
            assert_eq!(ids(&found), expected, "{name}: search {search}");
            assert_eq!(found["total"], expected.len(), "{name}: search {search}");
        }
        stack.get("/groups?limit=-1", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get(&format!("/groups?search={}", "s".repeat(201)), &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get("/groups?search=a%00b", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);

        // Deleting: owner only, 204, then gone with its members.
        delete(&stack, &Auth::None, &path).await.expect_error(401, "UNAUTHORIZED", name);
        delete(&stack, &key(&bob), &path).await.expect_error(403, "FORBIDDEN", name);
        let deleted = delete(&stack, &key(&alice), &path).await;
        assert_eq!((deleted.status, &deleted.body), (204, &Value::Null), "{name}");
        stack.get(&path, &Auth::None).await.expect_error(404, "NOT_FOUND", name);
        delete(&stack, &key(&alice), &path).await.expect_error(404, "NOT_FOUND", name);
        post_empty(&stack, &key(&bob), &leave).await.expect_error(404, "NOT_FOUND", name);
        assert_eq!(stack.get("/groups", &Auth::None).await.expect_ok(name)["total"], 2, "{name}");
        stack.stop().await;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) { (byte as char).to_string() } else { format!("%{byte:02X}") })
        .collect()
}

async fn send(stack: &TestStack, auth: &Auth, id: &str, text: &str, idempotency_key: Option<&str>) -> Reply {
    let mut request = stack.http.post(stack.url(&format!("/groups/{id}/messages"))).json(&json!({"message": text}));
    if let Auth::Key(key) = auth {
        request = request.header("x-api-key", key);
    }
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let response = request.send().await.expect("gateway reachable");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    Reply { status, headers, body: response.json().await.unwrap_or(Value::Null) }
}

#[tokio::test]
async fn members_post_and_read_the_group_chat_idempotently_newest_first() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let carol = stack.registered("carol").await;
        let group = create_group(&stack, &alice, "Chat", "Talk here").await;
        let id = group["id"].as_str().unwrap().to_string();
        post_empty(&stack, &key(&bob), &format!("/groups/{id}/join")).await.expect_ok(name);
        let bob_id = stack.get("/account/me", &key(&bob)).await.expect_ok(name)["id"].clone();

        // Refusals.
        send(&stack, &Auth::None, &id, "hi", None).await.expect_error(401, "UNAUTHORIZED", name);
        send(&stack, &key(&carol), &id, "hi", None).await.expect_error(403, "FORBIDDEN", name);
        send(&stack, &key(&bob), "0123456789abcdef01234567", "hi", None).await.expect_error(404, "NOT_FOUND", name);
        send(&stack, &key(&bob), "bad", "hi", None).await.expect_error(404, "NOT_FOUND", name);
        for (text, why) in [(String::new(), "empty"), ("x".repeat(64 * 1024 + 1), "oversized"), ("a\0b".to_string(), "NUL")] {
            let reply = send(&stack, &key(&bob), &id, &text, None).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {why}"));
            assert_eq!(reply.body["field"], "message", "{name}: {why}");
        }
        let reply = send(&stack, &key(&bob), &id, "hi", Some("has space")).await;
        assert_eq!((reply.status, &reply.body["field"]), (400, &json!("Idempotency-Key")), "{name}: {}", reply.body);
        send(&stack, &key(&bob), &id, &"x".repeat(64 * 1024), None).await.expect_ok(&format!("{name}: the limit itself is fine"));

        // Idempotent sends.
        let first = send(&stack, &key(&bob), &id, "hello group", Some("send-1")).await.expect_ok(name)["message"].clone();
        assert_eq!((&first["group_id"], &first["sender_id"], &first["sender_handle"]), (&json!(id), &bob_id, &json!("bob")), "{name}");
        assert_eq!(first["content"], "hello group", "{name}");
        assert!(is_iso_datetime(&first["sent_at"]), "{name}: {first}");
        let repeated = send(&stack, &key(&bob), &id, "hello group", Some("send-1")).await.expect_ok(name)["message"].clone();
        assert_eq!(repeated, first, "{name}: a retry answers the first message");
        send(&stack, &key(&bob), &id, "something else", Some("send-1")).await.expect_error(409, "IDEMPOTENCY_KEY_REUSED", name);
        send(&stack, &key(&alice), &id, "hello group", Some("send-1")).await.expect_ok(&format!("{name}: keys are per account"));

        // Reads: members only, newest first, cursors and limits.
        let path = format!("/groups/{id}/messages");
        stack.get(&path, &Auth::None).await.expect_error(401, "UNAUTHORIZED", name);
        stack.get(&path, &key(&carol)).await.expect_error(403, "FORBIDDEN", name);
        stack.get("/groups/0123456789abcdef01234567/messages", &key(&bob)).await.expect_error(404, "NOT_FOUND", name);
        stack.get(&format!("{path}?before=-1"), &key(&bob)).await.expect_error(400, "VALIDATION_FAILED", name);
        for index in 0..3 {
            send(&stack, &key(&alice), &id, &format!("m{index}"), None).await.expect_ok(name);
        }
        let all = stack.get(&path, &key(&bob)).await.expect_ok(name)["messages"].as_array().unwrap().clone();
        let contents = |messages: &[Value]| {
            messages.iter().map(|message| message["content"].as_str().unwrap().chars().take(12).collect::<String>()).collect::<Vec<_>>()
        };
        assert_eq!(contents(&all), vec!["m2", "m1", "m0", "hello group", "hello group", "xxxxxxxxxxxx"], "{name}: stored once each, newest first");
        let ids: Vec<i64> = all.iter().map(|message| message["id"].as_i64().unwrap()).collect();
        let page = stack.get(&format!("{path}?limit=2"), &key(&bob)).await.expect_ok(name)["messages"].as_array().unwrap().clone();
        assert_eq!(contents(&page), vec!["m2", "m1"], "{name}");
        let older = stack.get(&format!("{path}?limit=2&before={}", ids[1]), &key(&bob)).await.expect_ok(name)["messages"].as_array().unwrap().clone();
        assert_eq!(contents(&older), vec!["m0", "hello group"], "{name}");
        let newer = stack.get(&format!("{path}?after={}", ids[2]), &key(&bob)).await.expect_ok(name)["messages"].as_array().unwrap().clone();
        assert_eq!(contents(&newer), vec!["m2", "m1"], "{name}");

        // Leaving ends access; deleting the group removes its messages.
        post_empty(&stack, &key(&bob), &format!("/groups/{id}/leave")).await.expect_ok(name);
        stack.get(&path, &key(&bob)).await.expect_error(403, "FORBIDDEN", name);
        send(&stack, &key(&bob), &id, "still here?", None).await.expect_error(403, "FORBIDDEN", name);
        assert_eq!(delete(&stack, &key(&alice), &format!("/groups/{id}")).await.status, 204, "{name}");
        stack.get(&path, &key(&alice)).await.expect_error(404, "NOT_FOUND", name);
        let recreated = create_group(&stack, &alice, "Chat", "Talk here").await;
        let fresh = stack.get(&format!("/groups/{}/messages", recreated["id"].as_str().unwrap()), &key(&alice)).await;
        assert_eq!(fresh.expect_ok(name)["messages"], json!([]), "{name}");
        stack.stop().await;
    }
}

/// A minimal Server-Sent Events reader for `/messages/stream`.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(stack: &TestStack, key: &str) -> Events {
        let response = stack.http.get(stack.url("/messages/stream")).header("x-api-key", key).send().await.expect("gateway reachable");
        assert_eq!(response.status(), 200, "{}: the stream opens", stack.name);
        Events { response, buffer: String::new() }
    }

    /// The next event as (id, event, data); comments are skipped.
    async fn next(&mut self) -> (Option<String>, String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
                let mut fields = 0;
                for line in block.lines().filter(|line| !line.starts_with(':')) {
                    let (field, value) = line.split_once(':').map_or((line, ""), |(field, value)| (field, value.strip_prefix(' ').unwrap_or(value)));
                    fields += 1;
                    match field {
                        "id" => id = Some(value.to_string()),
                        "event" => event = value.to_string(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if fields > 0 {
                    return (id, event, serde_json::from_str(&data).unwrap_or(Value::Null));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk()).await.expect("an event within 20 s").expect("readable");
            self.buffer.push_str(std::str::from_utf8(&chunk.expect("the stream stays open")).expect("UTF-8"));
        }
    }
}

/// The gRPC message stream of `key`'s account, through the gateway.
async fn grpc_stream(stack: &TestStack, key: &str) -> tonic::Streaming<clawx_proto::messaging::Message> {
    let mut client = MessagingServiceClient::new(stack.channel().await);
    let mut request = tonic::Request::new(StreamMessagesRequest { after_id: 0 });
    request.metadata_mut().insert("x-api-key", key.parse().unwrap());
    client.stream_messages(request).await.expect("the gRPC stream opens").into_inner()
}

/// Waits until a message sent to the stream's owner shows up, so the stream is live.
async fn await_live(stack: &TestStack, events: &mut Events, sender: &str, handle: &str) {
    let marker = format!("ping {handle}");
    stack.post("/messages/dm", &key(sender), json!({"handle": handle, "message": marker})).await.expect_ok(stack.name);
    loop {
        let (_, event, data) = events.next().await;
        if event == "message" && data["content"] == marker.as_str() {
            return;
        }
    }
}

#[tokio::test]
async fn members_see_new_group_messages_on_their_stream_with_the_group_id() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let carol = stack.registered("carol").await;
        let group = create_group(&stack, &alice, "Live", "Streams").await;
        let id = group["id"].as_str().unwrap().to_string();
        post_empty(&stack, &key(&bob), &format!("/groups/{id}/join")).await.expect_ok(name);

        let mut bob_events = Events::open(&stack, &bob).await;
        let mut bob_grpc = grpc_stream(&stack, &bob).await;
        let mut carol_events = Events::open(&stack, &carol).await;
        await_live(&stack, &mut bob_events, &alice, "bob").await;
        await_live(&stack, &mut carol_events, &alice, "carol").await;
        // The gRPC stream is live once it has the marker the SSE stream saw (replayed or live).
        while tokio::time::timeout(Duration::from_secs(20), bob_grpc.message()).await.expect("in time").unwrap().expect("open").content != "ping bob"
        {
        }

        let sent = send(&stack, &key(&alice), &id, "to every member", None).await.expect_ok(name)["message"].clone();
        let (event_id, event, data) = bob_events.next().await;
        assert_eq!((event_id, event.as_str()), (None, "group_message"), "{name}: {data}");
        assert_eq!(data, sent, "{name}: the group message, with its group id");
        assert_eq!(data["group_id"], id.as_str(), "{name}");
        // Over gRPC too: a Message with the group's id and topic.
        let message = tokio::time::timeout(Duration::from_secs(20), bob_grpc.message()).await.expect("in time").unwrap().expect("open");
        assert_eq!(
            (message.group_id.as_deref(), message.id, message.content.as_str()),
            (Some(id.as_str()), sent["id"].as_i64().unwrap(), "to every member"),
            "{name}"
        );
        assert_eq!((message.topic.as_str(), message.recipient_id), (format!("/clawx/group/1/{id}").as_str(), None), "{name}");

        // Nobody but the groups service publishes group messages.
        let mut messaging = MessagingServiceClient::new(stack.channel().await);
        let mut request = tonic::Request::new(PublishGroupMessageRequest { member_ids: vec![1, 2, 3], message: Some(Default::default()) });
        request.metadata_mut().insert("x-api-key", alice.parse().unwrap());
        let refused = messaging.publish_group_message(request).await.expect_err("accounts cannot publish");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}");

        // The stream's direct messages go on in order after it, with their ids.
        let dm =
            stack.post("/messages/dm", &key(&carol), json!({"handle": "bob", "message": "after the group"})).await.expect_ok(name)["message"].clone();
        let (event_id, event, data) = bob_events.next().await;
        assert_eq!((event.as_str(), data["id"].clone(), event_id), ("message", dm["id"].clone(), Some(dm["id"].to_string())), "{name}");

        // Carol is no member: her next event is the direct message she sent after the group
        // message, not the group message.
        let (_, event, data) = carol_events.next().await;
        assert_eq!((event.as_str(), &data["id"]), ("message", &dm["id"]), "{name}: {data}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn member_count_stays_exact_under_concurrent_joins_and_leaves() {
    let adjust = |config: &mut clawx_gateway::Config| config.limits.create_per_minute = 0;
    for stack in TestStack::all_with(adjust).await {
        let name = stack.name;
        let owner = stack.registered("owner").await;
        let group = create_group(&stack, &owner, "Crowd", "Everyone at once").await;
        let id = group["id"].as_str().unwrap().to_string();
        let mut keys = Vec::new();
        for _ in 0..24 {
            keys.push(stack.create_account().await.0);
        }
        // Every account joins twice at once.
        let (join, leave) = (format!("/groups/{id}/join"), format!("/groups/{id}/leave"));
        let call = |member: &String, path: &String| {
            let (stack, auth, path) = (&stack, key(member), path.clone());
            async move { post_empty(stack, &auth, &path).await }
        };
        let joins = keys.iter().chain(keys.iter()).map(|member| call(member, &join));
        let replies = futures::future::join_all(joins).await;
        assert!(replies.iter().all(|reply| reply.status == 200), "{name}");
        assert_eq!(replies.iter().filter(|reply| reply.body["joined"] == true).count(), 24, "{name}: each joined once");
        assert_eq!(stack.get(&format!("/groups/{id}"), &Auth::None).await.expect_ok(name)["member_count"], 25, "{name}");

        // Half leave while as many new accounts join.
        let mut newcomers = Vec::new();
        for _ in 0..12 {
            newcomers.push(stack.create_account().await.0);
        }
        let leaving = keys[..12].iter().map(|member| call(member, &leave));
        let joining = newcomers.iter().map(|member| call(member, &join));
        let (left, joined) = futures::future::join(futures::future::join_all(leaving), futures::future::join_all(joining)).await;
        assert!(left.iter().chain(joined.iter()).all(|reply| reply.status == 200), "{name}");
        let read = stack.get(&format!("/groups/{id}"), &Auth::None).await.expect_ok(name).clone();
        assert_eq!(read["member_count"], 25, "{name}");
        assert_eq!(read["members"].as_array().unwrap().len(), 25, "{name}: the count is the members");
        stack.stop().await;
    }
}

#[tokio::test]
async fn deleted_accounts_leave_their_groups_and_reads_go_on() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let bob = stack.registered("bob").await;
        let group = create_group(&stack, &alice, "Survivors", "Accounts come and go").await;
        let id = group["id"].as_str().unwrap().to_string();
        post_empty(&stack, &key(&bob), &format!("/groups/{id}/join")).await.expect_ok(name);
        send(&stack, &key(&bob), &id, "bob was here", None).await.expect_ok(name);
        let owned = create_group(&stack, &bob, "Bob's", "Owned by bob").await;

        // Delete bob the way the verify service's sweep does.
        let bob_id = stack.get("/account/me", &key(&bob)).await.expect_ok(name)["id"].as_i64().unwrap();
        let mut identity =
            IdentityServiceClient::new(tonic::transport::Channel::from_shared(stack.service_address("identity")).unwrap().connect().await.unwrap());
        let mut request = tonic::Request::new(DeleteUnverifiedAccountRequest { account_id: bob_id, created_before_ms: now_ms() + 60_000 });
        stack.auth.authorize(&mut request, "identity", &Principal::from_service("verify"));
        assert!(identity.delete_unverified_account(request).await.unwrap().into_inner().deleted, "{name}");

        // Reads still answer: bob is gone from the members, his group keeps no owner data.
        let read = stack.get(&format!("/groups/{id}"), &Auth::None).await.expect_ok(name).clone();
        assert_eq!((&read["member_count"], read["members"].as_array().unwrap().len()), (&json!(1), 1), "{name}: {read}");
        let orphan = stack.get(&format!("/groups/{}", owned["id"].as_str().unwrap()), &Auth::None).await.expect_ok(name).clone();
        assert_eq!((&orphan["owner_id"], &orphan["owner_handle"], &orphan["owner_address"]), (&json!(bob_id), &Value::Null, &Value::Null), "{name}");
        assert_eq!(orphan["members"], json!([]), "{name}");
        stack.get("/groups", &Auth::None).await.expect_ok(name);
        let messages = stack.get(&format!("/groups/{id}/messages"), &key(&alice)).await.expect_ok(name)["messages"].clone();
        assert_eq!((&messages[0]["content"], &messages[0]["sender_handle"]), (&json!("bob was here"), &Value::Null), "{name}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn with_verification_required_unverified_accounts_cannot_create_groups() {
    let verify = clawx_verify::Settings { require_verification: true, ..clawx_verify::Settings::default() };
    for stack in TestStack::all_with_verify(verify, |_| {}).await {
        let name = stack.name;
        let alice = stack.registered("alice").await;
        let refused = stack.post("/groups", &key(&alice), json!({"title": "t", "description": "d"})).await;
        refused.expect_error(403, "NOT_VERIFIED", name);
        assert_eq!(refused.body["ok"], false, "{name}");
        stack.get("/groups", &Auth::None).await.expect_ok(&format!("{name}: reading needs nothing"));
        stack.stop().await;
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_group_route() {
    let stack = TestStack::embedded().await;
    let document = stack.get("/openapi.json", &Auth::None).await.body;
    let routes = [
        ("/groups", "get", None),
        ("/groups", "post", Some("403")),
        ("/groups/{id}", "get", Some("404")),
        ("/groups/{id}", "patch", Some("403")),
        ("/groups/{id}", "delete", Some("204")),
        ("/groups/{id}/join", "post", Some("404")),
        ("/groups/{id}/leave", "post", Some("400")),
        ("/groups/{id}/messages", "post", Some("409")),
        ("/groups/{id}/messages", "get", Some("403")),
    ];
    for (path, method, status) in routes {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{path} {method} is documented");
        if let Some(status) = status {
            assert!(operation["responses"][status].is_object(), "{path} {method} documents {status}");
        }
    }
    assert_eq!(document["paths"]["/groups"]["get"]["security"][0], json!({}), "listing needs no authentication");
    for schema in ["Group", "GroupList", "GroupMessage", "Member"] {
        assert!(document["components"]["schemas"][schema].is_object(), "{schema}");
    }
    stack.stop().await;
}
