//! The edge guard decides on an operation the same way whichever door it comes through: REST or
//! gRPC share the per-IP creation limit, and a revocation through either drops the credentials
//! the other one cached; every request to `/mcp` counts against the account's limit.

use clawx_proto::identity::{
    CreateAccountRequest, CreateApiKeyRequest, GetMeRequest, RevokeApiKeyRequest, identity_service_client::IdentityServiceClient,
};
use clawx_tests::{Auth, TestStack};
use reqwest::Method;
use serde_json::json;
use tonic::{Code, metadata::MetadataValue};

fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key).unwrap());
    request
}

#[tokio::test]
async fn creations_over_rest_and_grpc_share_one_per_ip_limit() {
    for stack in TestStack::all_with(|config| config.limits.create_per_minute = 3).await {
        let name = stack.name;
        let mut client = IdentityServiceClient::new(stack.channel().await);
        stack.call(Method::POST, "/account/create", &Auth::None, None).await.expect_ok(name);
        let created = client.create_account(CreateAccountRequest {}).await.unwrap().into_inner();
        assert!(created.api_key.starts_with("clx_"), "{name}");
        stack.call(Method::POST, "/account/create", &Auth::None, None).await.expect_ok(name);

        // The fourth creation is refused through either door.
        let refused = client.create_account(CreateAccountRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{name}");
        assert_eq!(refused.metadata().get("clawx-error-code").unwrap(), "RATE_LIMITED", "{name}");
        let refused = stack.call(Method::POST, "/account/create", &Auth::None, None).await;
        refused.expect_error(429, "RATE_LIMITED", name);
        assert_eq!(refused.headers["ratelimit-limit"], "3", "{name}");

        // Other anonymous calls are not creations.
        stack.get("/users", &Auth::None).await.expect_ok(name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn a_revocation_through_either_door_drops_what_both_cached() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("guarded").await;
        let mut client = IdentityServiceClient::new(stack.channel().await);
        let mut spare = Vec::new();
        for label in ["over grpc", "over rest"] {
            let created = stack.post("/account/keys", &Auth::Key(key.clone()), json!({"name": label})).await.expect_ok(name).clone();
            let spare_key = created["api_key"].as_str().unwrap().to_string();
            // Both doors have the key cached.
            stack.get("/account/me", &Auth::Key(spare_key.clone())).await.expect_ok(name);
            client.get_me(with_key(&spare_key, GetMeRequest {})).await.unwrap();
            spare.push((created["id"].as_str().unwrap().to_string(), spare_key));
        }

        // Revoked over gRPC: REST refuses the key at once.
        let (id, revoked) = &spare[0];
        client.revoke_api_key(with_key(&key, RevokeApiKeyRequest { id: id.clone() })).await.unwrap();
        stack.get("/account/me", &Auth::Key(revoked.clone())).await.expect_error(401, "UNAUTHORIZED", name);
        let status = client.get_me(with_key(revoked, GetMeRequest {})).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");

        // Revoked over REST: gRPC refuses the key at once.
        let (id, revoked) = &spare[1];
        assert_eq!(stack.call(Method::DELETE, &format!("/account/keys/{id}"), &Auth::Key(key.clone()), None).await.status, 204, "{name}");
        let status = client.get_me(with_key(revoked, GetMeRequest {})).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        stack.get("/account/me", &Auth::Key(revoked.clone())).await.expect_error(401, "UNAUTHORIZED", name);

        // The owner's key still works through both doors; anonymous gRPC callers of account
        // methods are turned away at the edge like REST ones.
        stack.get("/account/me", &Auth::Key(key.clone())).await.expect_ok(name);
        client.create_api_key(with_key(&key, CreateApiKeyRequest { name: "another".into() })).await.unwrap();
        let status = client.get_me(GetMeRequest {}).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        stack.get("/account/me", &Auth::None).await.expect_error(401, "UNAUTHORIZED", name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn every_mcp_request_of_an_account_counts_against_its_limit() {
    for stack in TestStack::all_with(|config| config.limits.per_account_per_minute = 3).await {
        let name = stack.name;
        let created = stack.call(Method::POST, "/account/create", &Auth::None, None).await;
        let key = created.expect_ok(name)["api_key"].as_str().unwrap().to_string();
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "edge-guard-test", "version": "1"}}});
        let post = || {
            stack
                .http
                .post(stack.url("/mcp"))
                .header("authorization", format!("Bearer {key}"))
                .header("accept", "application/json, text/event-stream")
                .json(&initialize)
                .send()
        };
        // The protocol's own requests count, not only tool calls: the fourth `initialize` is refused.
        for attempt in 1..=3 {
            let answered = post().await.unwrap();
            assert_eq!(answered.status(), 200, "{name}: initialize {attempt}");
        }
        let refused = post().await.unwrap();
        assert_eq!(refused.status(), 429, "{name}");
        assert!(refused.headers().contains_key("retry-after"), "{name}: {:?}", refused.headers());
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "RATE_LIMITED", "{name}: {body}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn mcp_waits_take_a_stream_slot_like_event_streams() {
    for stack in TestStack::all_with(|config| config.limits.xmtp_streams_per_ip = 1).await {
        let name = stack.name;
        let key = stack.registered("alice").await;
        // An event stream holds the address's only slot.
        let events = stack.http.get(stack.url("/messages/stream")).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(events.status(), 200, "{name}");
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "wait_for_messages", "arguments": {"timeout_seconds": 1}}});
        let answered = stack
            .http
            .post(stack.url("/mcp"))
            .header("authorization", format!("Bearer {key}"))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&call)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200, "{name}");
        let text = answered.text().await.unwrap();
        let json_text = text.lines().find_map(|line| line.strip_prefix("data:")).map_or(text.as_str(), str::trim);
        let reply: serde_json::Value = serde_json::from_str(json_text).unwrap_or_else(|error| panic!("{name}: {error}: {text}"));
        let result = &reply["result"];
        assert_eq!(result["isError"], true, "{name}: {reply}");
        let error: serde_json::Value = serde_json::from_str(result["content"][0]["text"].as_str().expect("text content")).unwrap();
        assert_eq!(error["code"], "RATE_LIMITED", "{name}: {error}");
        assert_eq!(error["retry_after_seconds"], 1, "{name}: {error}");
        drop(events);
        stack.stop().await;
    }
}
