//! Gateway behaviour across routes: rate limits, revocation on every replica, gRPC and
//! grpc-web with both kinds of credentials, docs and metrics.

use std::time::Duration;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use clawx_proto::identity::{GetMeRequest, identity_service_client::IdentityServiceClient};
use clawx_tests::{Auth, TestStack};
use prost::Message;
use reqwest::Method;
use serde_json::json;
use tonic::{Code, metadata::MetadataValue};

fn sign(wallet: &PrivateKeySigner, message: &str) -> String {
    format!("0x{}", hex::encode(wallet.sign_message_sync(message.as_bytes()).unwrap().as_bytes()))
}

/// Links a fresh wallet to the account of `key` and returns signed-request credentials.
async fn signed_credentials(stack: &TestStack, key: &str, domain: &str) -> (String, String, String) {
    let auth = Auth::Key(key.to_string());
    let wallet = PrivateKeySigner::random();
    let address = wallet.address().to_checksum(None);
    let challenge = stack.get(&format!("/account/wallets/challenge?address={address}"), &auth).await.body.clone();
    let message = challenge["message"].as_str().unwrap();
    stack
        .post("/account/wallets", &auth, json!({"address": address, "message": message, "signature": sign(&wallet, message)}))
        .await
        .expect_ok("link");
    let expiry = (clawx_common::time::now_ms() + 600_000).to_string();
    let reply = stack.get(&format!("/api/user/{domain}/signature?expiry={expiry}&device=true"), &Auth::None).await;
    let signature = sign(&wallet, reply.body["message"].as_str().unwrap());
    (domain.to_string(), expiry, signature)
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let stacks = TestStack::all_with(|config| {
        config.limits.per_account_per_minute = 3;
        config.limits.create_per_minute = 2;
        config.limits.per_ip_per_minute = 4;
    })
    .await;
    for stack in stacks {
        let name = stack.name;
        // Account creation, per client IP (each creation also counts as an anonymous call).
        let first = stack.call(Method::POST, "/account/create", &Auth::None, None).await;
        let first_key = first.expect_ok(name)["api_key"].as_str().unwrap().to_string();
        let second = stack.call(Method::POST, "/account/create", &Auth::None, None).await;
        let second_key = second.expect_ok(name)["api_key"].as_str().unwrap().to_string();
        let refused = stack.call(Method::POST, "/account/create", &Auth::None, None).await;
        refused.expect_error(429, "RATE_LIMITED", name);
        assert_eq!(refused.body["ok"], false);
        let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&retry_after), "{name}: {retry_after}");
        assert_eq!(refused.headers["ratelimit-limit"], "2");
        assert_eq!(refused.headers["ratelimit-remaining"], "0");

        // Per account: each key's account has its own budget.
        for remaining in ["2", "1", "0"] {
            let reply = stack.get("/account/me", &Auth::Key(first_key.clone())).await;
            reply.expect_ok(name);
            assert_eq!(reply.headers["ratelimit-limit"], "3", "{name}");
            assert_eq!(reply.headers["ratelimit-remaining"], remaining, "{name}");
            assert!(reply.headers.contains_key("ratelimit-reset"));
        }
        let refused = stack.get("/account/me", &Auth::Key(first_key.clone())).await;
        refused.expect_error(429, "RATE_LIMITED", name);
        assert!(refused.headers.contains_key("retry-after"));
        let other = stack.get("/account/me", &Auth::Key(second_key)).await;
        other.expect_ok(name);
        assert_eq!(other.headers["ratelimit-remaining"], "2", "{name}: independent budgets");

        // Anonymous calls, per client IP: two creations already spent half of it.
        stack.get("/users", &Auth::None).await.expect_ok(name);
        stack.get("/users", &Auth::None).await.expect_ok(name);
        stack.get("/users", &Auth::None).await.expect_error(429, "RATE_LIMITED", name);
        // Operations endpoints are not limited.
        assert_eq!(stack.get("/health", &Auth::None).await.status, 200);
        stack.stop().await;
    }
}

#[tokio::test]
async fn revocation_reaches_every_gateway_replica() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let other_gateway = stack.second_gateway().await;
        let key = stack.registered("replicated").await;
        let spare = stack.post("/account/keys", &Auth::Key(key.clone()), json!({"name": "spare"})).await.body.clone();
        let spare_key = spare["api_key"].as_str().unwrap().to_string();
        let (domain, expires, signature) = signed_credentials(&stack, &key, "replicated").await;

        // Both replicas have both credentials cached.
        let me_on = |base: String, auth: Auth| {
            let http = stack.http.clone();
            async move {
                let mut request = http.get(format!("{base}/account/me"));
                request = match auth {
                    Auth::Key(key) => request.header("x-api-key", key),
                    Auth::Signed { domain, expires, signature } => {
                        request.header("x-auth-domain", domain).header("x-auth-expires", expires).header("x-auth-signature", signature)
                    }
                    _ => request,
                };
                request.send().await.unwrap().status().as_u16()
            }
        };
        let signed = Auth::Signed { domain: domain.clone(), expires: expires.clone(), signature: signature.clone() };
        for base in [stack.base_url.clone(), other_gateway.clone()] {
            assert_eq!(me_on(base.clone(), Auth::Key(spare_key.clone())).await, 200, "{name}");
            assert_eq!(me_on(base, signed.clone()).await, 200, "{name}");
        }

        // Revoke the spare key on the first replica; the second one refuses it too.
        let id = spare["id"].as_str().unwrap();
        assert_eq!(stack.call(Method::DELETE, &format!("/account/keys/{id}"), &Auth::Key(key.clone()), None).await.status, 204);
        assert_eq!(me_on(stack.base_url.clone(), Auth::Key(spare_key.clone())).await, 401, "{name}: the serving replica");
        assert_eq!(eventually_status(&me_on, &other_gateway, Auth::Key(spare_key.clone()), 401).await, 401, "{name}: the other replica");

        // Unlink the wallet on the second replica; the first one refuses the signature.
        let wallets = stack.get("/account/wallets", &Auth::Key(key.clone())).await.body.clone();
        let address = wallets["wallets"][0]["address"].as_str().unwrap().to_string();
        let response = stack.http.delete(format!("{other_gateway}/account/wallets/{address}")).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(eventually_status(&me_on, &stack.base_url, signed.clone(), 401).await, 401, "{name}: signature revoked everywhere");
        stack.stop().await;
    }
}

/// The status of `call` once it reaches `expected`, trying for at most half a second (pub/sub
/// delivery between replicas takes milliseconds).
async fn eventually_status<F, Fut>(call: &F, base: &str, auth: Auth, expected: u16) -> u16
where
    F: Fn(String, Auth) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let status = call(base.to_string(), auth.clone()).await;
        if status == expected || tokio::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn grpc_and_grpc_web_with_api_keys_and_signed_requests() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("grpcuser").await;
        let (domain, expires, signature) = signed_credentials(&stack, &key, "grpcuser").await;
        let mut client = IdentityServiceClient::new(stack.channel().await);

        // Native gRPC: API key in metadata (x-api-key or authorization), or signed headers.
        let mut request = tonic::Request::new(GetMeRequest {});
        request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key.as_str()).unwrap());
        assert_eq!(client.get_me(request).await.unwrap().into_inner().handle.as_deref(), Some("grpcuser"), "{name}");
        let mut request = tonic::Request::new(GetMeRequest {});
        request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {key}")).unwrap());
        assert!(client.get_me(request).await.is_ok(), "{name}");
        let mut request = tonic::Request::new(GetMeRequest {});
        request.metadata_mut().insert("x-auth-domain", MetadataValue::try_from(domain.as_str()).unwrap());
        request.metadata_mut().insert("x-auth-expires", MetadataValue::try_from(expires.as_str()).unwrap());
        request.metadata_mut().insert("x-auth-signature", MetadataValue::try_from(signature.as_str()).unwrap());
        assert_eq!(client.get_me(request).await.unwrap().into_inner().handle.as_deref(), Some("grpcuser"), "{name}");

        // Missing and bad credentials, with the Clawx code in metadata.
        let status = client.get_me(tonic::Request::new(GetMeRequest {})).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        let mut request = tonic::Request::new(GetMeRequest {});
        request.metadata_mut().insert("x-api-key", MetadataValue::from_static("clx_000000000000000000000000000000000000000000000000"));
        let status = client.get_me(request).await.unwrap_err();
        assert_eq!(status.metadata().get("clawx-error-code").unwrap(), "UNAUTHORIZED", "{name}");
        let mut request = tonic::Request::new(GetMeRequest {});
        request.metadata_mut().insert("x-auth-domain", MetadataValue::try_from(domain.as_str()).unwrap());
        request.metadata_mut().insert("x-auth-expires", MetadataValue::from_static("1"));
        request.metadata_mut().insert("x-auth-signature", MetadataValue::try_from(signature.as_str()).unwrap());
        let status = client.get_me(request).await.unwrap_err();
        assert_eq!(status.metadata().get("clawx-error-code").unwrap(), "SIGNATURE_EXPIRED", "{name}");
        // A client cannot pass itself off as the gateway or another service.
        let mut request = tonic::Request::new(clawx_proto::identity::ResolveAccountsRequest { ids: vec![1], ..Default::default() });
        request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key.as_str()).unwrap());
        request.metadata_mut().insert("clawx-internal-token", MetadataValue::from_static("forged"));
        let status = client.resolve_accounts(request).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: service-only call");

        // grpc-web (raw frames, as a browser sends them), with an API key and with a signature.
        for headers in [
            vec![("x-api-key", key.clone())],
            vec![("x-auth-domain", domain.clone()), ("x-auth-expires", expires.clone()), ("x-auth-signature", signature.clone())],
        ] {
            let mut request = stack
                .http
                .post(stack.url("/clawx.identity.v1.IdentityService/GetMe"))
                .header("content-type", "application/grpc-web+proto")
                .header("x-grpc-web", "1")
                .body(vec![0u8, 0, 0, 0, 0]);
            for (header, value) in &headers {
                request = request.header(*header, value);
            }
            let body = request.send().await.unwrap().bytes().await.unwrap();
            assert_eq!(body[0], 0, "{name}: data frame first");
            let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            let profile = clawx_proto::identity::Profile::decode(&body[5..5 + length]).unwrap();
            assert_eq!(profile.handle.as_deref(), Some("grpcuser"), "{name}");
            assert!(String::from_utf8_lossy(&body[5 + length..]).contains("grpc-status:0"), "{name}");
        }
        // Browsers' CORS preflight for grpc-web is answered.
        let preflight = stack
            .http
            .request(Method::OPTIONS, stack.url("/clawx.identity.v1.IdentityService/GetMe"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web,x-api-key")
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success(), "{name}");
        assert!(preflight.headers().contains_key("access-control-allow-origin"));
        stack.stop().await;
    }
}

#[tokio::test]
async fn docs_openapi_and_metrics_are_served() {
    let stack = TestStack::embedded().await;
    let spec = stack.get("/openapi.json", &Auth::None).await;
    let body = spec.expect_ok("openapi");
    assert_eq!(body["openapi"], "3.1.0");
    for path in [
        "/account/create",
        "/account/register",
        "/account/me",
        "/users",
        "/users/{handle}",
        "/account/keys",
        "/account/keys/{id}",
        "/account/wallets",
        "/account/wallets/challenge",
        "/account/wallets/{address}",
        "/account/domains",
        "/account/domains/{name}",
        "/api/user/{domain}/signature",
        "/health",
        "/status",
    ] {
        assert!(body["paths"].get(path).is_some(), "documented: {path}");
    }
    assert!(body["components"]["securitySchemes"].get("ApiKey").is_some());
    let docs = stack.http.get(stack.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
    let script = stack.http.get(stack.url("/docs/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(script.status(), 200, "assets are vendored, served offline");
    let config = stack.http.get(stack.url("/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(config.contains("openapi.json"), "{config}");

    stack.get("/users", &Auth::None).await;
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("clawx_http_requests_total{method=\"GET\",route=\"/users\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("clawx_http_request_duration_seconds_bucket"), "latency histogram");
    stack.stop().await;
}

#[tokio::test]
async fn xmtp_node_paths_are_forwarded_without_auth_and_limited_per_ip() {
    use clawx_proto::xmtp::identity::api::v1::{GetInboxIdsRequest, get_inbox_ids_request, identity_api_client::IdentityApiClient};
    let stacks = TestStack::all_with(|config| config.limits.xmtp_per_minute = 3).await;
    for stack in stacks {
        let name = stack.name;
        let mut client = IdentityApiClient::new(stack.channel().await);
        let request = || GetInboxIdsRequest {
            requests: vec![get_inbox_ids_request::Request { identifier: "0x0000000000000000000000000000000000000001".into(), identifier_kind: 1 }],
        };
        for _ in 0..3 {
            let reply = client.get_inbox_ids(request()).await.unwrap().into_inner();
            assert_eq!(reply.responses[0].inbox_id, None, "{name}: answered by the node, no credentials needed");
        }
        let status = client.get_inbox_ids(request()).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{name}: {status:?}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn credential_guessing_is_rate_limited_per_ip() {
    let stacks = TestStack::all_with(|config| config.limits.auth_checks_per_minute = 3).await;
    for stack in stacks {
        let name = stack.name;
        let key = stack.registered("guarded").await;
        // The valid key costs one check, then comes from the cache.
        for _ in 0..3 {
            stack.get("/account/me", &Auth::Key(key.clone())).await.expect_ok(name);
        }
        for index in 0..2 {
            let guess = format!("clx_{:048x}", index + 1);
            stack.get("/account/me", &Auth::Key(guess)).await.expect_error(401, "UNAUTHORIZED", name);
        }
        let refused = stack.get("/account/me", &Auth::Key(format!("clx_{:048x}", 99))).await;
        refused.expect_error(429, "RATE_LIMITED", name);
        assert!(refused.headers.contains_key("retry-after"), "{name}");
        stack.get("/account/me", &Auth::Key(key.clone())).await.expect_ok(&format!("{name}: cached keys still work"));
        stack.stop().await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_last_forwarded_address_counts() {
    let stack = TestStack::embedded_with(|config| {
        config.trust_forwarded_for = true;
        config.limits.create_per_minute = 1;
    })
    .await;
    let create = |forwarded: &'static str| stack.http.post(stack.url("/account/create")).header("x-forwarded-for", forwarded).send();
    assert_eq!(create("1.1.1.1, 10.0.0.1").await.unwrap().status(), 200);
    assert_eq!(create("2.2.2.2, 10.0.0.1").await.unwrap().status(), 429, "what the client wrote on the left does not count");
    assert_eq!(create("2.2.2.2, 10.0.0.2").await.unwrap().status(), 200, "another client of the proxy");
    stack.stop().await;
}

#[tokio::test]
async fn metric_labels_are_bounded_and_cors_allows_authorization() {
    let stack = TestStack::embedded().await;
    stack.http.request(Method::from_bytes(b"FOO123").unwrap(), stack.url("/users")).send().await.unwrap();
    let channel = stack.channel().await;
    let mut junk = tonic::client::Grpc::new(channel);
    junk.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/xmtp.junk42.Thing/Call");
    let _ = junk
        .unary::<clawx_proto::common::GetStatusRequest, clawx_proto::common::GetStatusRequest, _>(
            tonic::Request::new(clawx_proto::common::GetStatusRequest {}),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("FOO123") && metrics.contains("method=\"OTHER\""), "{metrics}");
    assert!(!metrics.contains("junk42") && metrics.contains("route=\"grpc:unknown\""), "{metrics}");

    let preflight = stack
        .http
        .request(Method::OPTIONS, stack.url("/account/me"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    stack.stop().await;
}

fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key).unwrap());
    request
}

#[tokio::test]
async fn revocations_over_grpc_take_effect_at_once() {
    use clawx_proto::identity::{CreateApiKeyRequest, RevokeApiKeyRequest};
    let stack = TestStack::embedded().await;
    let key = stack.registered("grpcrevoke").await;
    let mut client = IdentityServiceClient::new(stack.channel().await);
    let spare = client.create_api_key(with_key(&key, CreateApiKeyRequest { name: "spare".into() })).await.unwrap().into_inner();
    client.get_me(with_key(&spare.api_key, GetMeRequest {})).await.unwrap();
    client.revoke_api_key(with_key(&key, RevokeApiKeyRequest { id: spare.key.unwrap().id })).await.unwrap();
    let status = client.get_me(with_key(&spare.api_key, GetMeRequest {})).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "the cached key is dropped before the revocation is answered");
    stack.stop().await;
}

#[tokio::test]
async fn xmtp_streams_are_capped_per_ip_and_outlive_the_upstream_timeout() {
    use clawx_proto::xmtp::mls::api::v1::{
        SendWelcomeMessagesRequest, SubscribeWelcomeMessagesRequest, WelcomeMessageInput, mls_api_client::MlsApiClient,
        subscribe_welcome_messages_request::Filter, welcome_message_input,
    };
    let stacks = TestStack::all_with(|config| {
        config.limits.xmtp_streams_per_ip = 2;
        config.upstream_timeout = Duration::from_secs(1);
    })
    .await;
    for stack in stacks {
        let name = stack.name;
        let mut mls = MlsApiClient::new(stack.channel().await);
        let subscribe = |key: u8| SubscribeWelcomeMessagesRequest { filters: vec![Filter { installation_key: vec![key; 32], id_cursor: 0 }] };
        let mut first = mls.subscribe_welcome_messages(subscribe(1)).await.unwrap().into_inner();
        let second = mls.subscribe_welcome_messages(subscribe(2)).await.unwrap().into_inner();
        let status = mls.subscribe_welcome_messages(subscribe(3)).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{name}: {status:?}");
        drop(second);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let third = loop {
            match mls.subscribe_welcome_messages(subscribe(3)).await {
                Ok(stream) => break stream,
                Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(status) => panic!("{name}: the slot was not freed: {status:?}"),
            }
        };
        // Longer than the upstream timeout: the stream stays up and still delivers.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let welcome = WelcomeMessageInput {
            version: Some(welcome_message_input::Version::V1(welcome_message_input::V1 {
                installation_key: vec![1; 32],
                data: b"late".to_vec(),
                hpke_public_key: vec![9; 32],
                wrapper_algorithm: 1,
                welcome_metadata: vec![],
            })),
        };
        mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome] }).await.unwrap();
        let delivered = tokio::time::timeout(Duration::from_secs(10), first.message()).await.expect("in time").unwrap().unwrap();
        assert!(delivered.version.is_some(), "{name}");
        drop(third);
        stack.stop().await;
    }
}

fn with_signature<T>(credentials: &(String, String, String), message: T) -> tonic::Request<T> {
    let (domain, expires, signature) = credentials;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-auth-domain", MetadataValue::try_from(domain.as_str()).unwrap());
    request.metadata_mut().insert("x-auth-expires", MetadataValue::try_from(expires.as_str()).unwrap());
    request.metadata_mut().insert("x-auth-signature", MetadataValue::try_from(signature.as_str()).unwrap());
    request
}

/// A signed-expiry request is a bearer token for up to 30 days: it may use the account, but
/// managing credentials (keys, wallets, domains) takes an API key, over REST, gRPC and grpc-web.
#[tokio::test]
async fn signed_requests_cannot_manage_credentials() {
    use clawx_proto::identity::{
        ClaimDomainRequest, CreateApiKeyRequest, LinkWalletRequest, ReleaseDomainRequest, RevokeApiKeyRequest, UnlinkWalletRequest,
    };
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("cautious").await;
        let auth = Auth::Key(key.clone());
        let credentials = signed_credentials(&stack, &key, "cautious").await;
        let signed = Auth::Signed { domain: credentials.0.clone(), expires: credentials.1.clone(), signature: credentials.2.clone() };
        let linked = stack.get("/account/wallets", &auth).await.body["wallets"][0]["address"].as_str().unwrap().to_string();
        let spare_key = stack.post("/account/keys", &auth, json!({"name": "spare"})).await.expect_ok(name)["id"].as_str().unwrap().to_string();
        stack.post("/account/domains", &auth, json!({"name": "cautious.crypto"})).await.expect_ok(name);
        let other_wallet = PrivateKeySigner::random();
        let other_address = other_wallet.address().to_checksum(None);
        let challenge =
            stack.get(&format!("/account/wallets/challenge?address={other_address}"), &auth).await.body["message"].as_str().unwrap().to_string();
        let link = json!({"address": other_address, "message": challenge, "signature": sign(&other_wallet, &challenge)});

        // REST: every credential change is refused with 403 API_KEY_REQUIRED and ok:false.
        let attempts = [
            (Method::POST, "/account/keys".to_string(), Some(json!({"name": "minted"}))),
            (Method::DELETE, format!("/account/keys/{spare_key}"), None),
            (Method::POST, "/account/wallets".to_string(), Some(link.clone())),
            (Method::DELETE, format!("/account/wallets/{linked}"), None),
            (Method::POST, "/account/domains".to_string(), Some(json!({"name": "stolen.crypto"}))),
            (Method::DELETE, "/account/domains/cautious.crypto".to_string(), None),
        ];
        for (method, path, body) in attempts {
            let context = format!("{name}: {method} {path}");
            let reply = stack.call(method, &path, &signed, body).await;
            reply.expect_error(403, "API_KEY_REQUIRED", &context);
            assert_eq!(reply.body["ok"], false, "{context}");
        }
        // Reading them, and the rest of the account, still works with a signature.
        stack.get("/account/me", &signed).await.expect_ok(name);
        assert_eq!(stack.get("/account/keys", &signed).await.expect_ok(name)["keys"].as_array().unwrap().len(), 2, "{name}: no key minted");
        assert_eq!(
            stack.get("/account/wallets", &signed).await.expect_ok(name)["wallets"].as_array().unwrap().len(),
            1,
            "{name}: nothing linked or unlinked"
        );
        assert_eq!(stack.get("/account/domains", &signed).await.expect_ok(name)["domains"][0]["name"], "cautious.crypto", "{name}: not released");
        assert_eq!(stack.get("/account/domains", &signed).await.body["domains"].as_array().unwrap().len(), 1, "{name}: nothing claimed");

        // Native gRPC through the gateway: PermissionDenied with the same code.
        let mut client = IdentityServiceClient::new(stack.channel().await);
        let link_request =
            || LinkWalletRequest { address: other_address.clone(), message: challenge.clone(), signature: sign(&other_wallet, &challenge) };
        let results = [
            ("CreateApiKey", client.create_api_key(with_signature(&credentials, CreateApiKeyRequest { name: "minted".into() })).await.map(|_| ())),
            ("RevokeApiKey", client.revoke_api_key(with_signature(&credentials, RevokeApiKeyRequest { id: spare_key.clone() })).await.map(|_| ())),
            ("LinkWallet", client.link_wallet(with_signature(&credentials, link_request())).await.map(|_| ())),
            ("UnlinkWallet", client.unlink_wallet(with_signature(&credentials, UnlinkWalletRequest { address: linked.clone() })).await.map(|_| ())),
            ("ClaimDomain", client.claim_domain(with_signature(&credentials, ClaimDomainRequest { name: "stolen.crypto".into() })).await.map(|_| ())),
            (
                "ReleaseDomain",
                client.release_domain(with_signature(&credentials, ReleaseDomainRequest { name: "cautious.crypto".into() })).await.map(|_| ()),
            ),
        ];
        for (method, result) in results {
            let status = result.expect_err(&format!("{name}: {method} with a signature"));
            assert_eq!(status.code(), Code::PermissionDenied, "{name}: {method}: {status:?}");
            assert_eq!(status.metadata().get("clawx-error-code").unwrap(), "API_KEY_REQUIRED", "{name}: {method}");
        }

        // grpc-web, as a browser sends it.
        let frame = {
            let message = CreateApiKeyRequest { name: "minted".into() }.encode_to_vec();
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            frame
        };
        let response = stack
            .http
            .post(stack.url("/clawx.identity.v1.IdentityService/CreateApiKey"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("x-auth-domain", &credentials.0)
            .header("x-auth-expires", &credentials.1)
            .header("x-auth-signature", &credentials.2)
            .body(frame)
            .send()
            .await
            .unwrap();
        let headers = format!("{:?}", response.headers());
        let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).to_string();
        assert!(headers.contains("\"grpc-status\": \"7\"") || body.contains("grpc-status:7"), "{name}: {headers} {body}");

        // The same calls with the API key succeed.
        let mut client = IdentityServiceClient::new(stack.channel().await);
        client.claim_domain(with_key(&key, ClaimDomainRequest { name: "second.crypto".into() })).await.unwrap();
        client.revoke_api_key(with_key(&key, RevokeApiKeyRequest { id: spare_key.clone() })).await.unwrap();
        assert_eq!(stack.get("/account/keys", &auth).await.expect_ok(name)["keys"].as_array().unwrap().len(), 1, "{name}");
        stack.stop().await;
    }

    // The OpenAPI document says so on each of these operations.
    let stack = TestStack::embedded().await;
    let spec = stack.get("/openapi.json", &Auth::None).await.body;
    for (path, method) in [
        ("/account/keys", "post"),
        ("/account/keys/{id}", "delete"),
        ("/account/wallets", "post"),
        ("/account/wallets/{address}", "delete"),
        ("/account/domains", "post"),
        ("/account/domains/{name}", "delete"),
    ] {
        let operation = &spec["paths"][path][method];
        let forbidden = operation["responses"]["403"]["description"].as_str().unwrap_or_default();
        assert!(forbidden.contains("API_KEY_REQUIRED"), "{method} {path}: {operation}");
        let security = operation["security"].to_string();
        assert!(!security.contains("SignedSignature"), "{method} {path}: only API keys are accepted: {security}");
    }
    stack.stop().await;
}
