//! Agents and tweet verification through the gateway (`/agents`, `/verify/*`), with a loopback
//! stand-in for X speaking the X API v2, syndication and oEmbed formats, on SQLite + memory and
//! PostgreSQL + Redis; and the `CLAWX_REQUIRE_VERIFICATION` policy at the edge.

use clawx_common::time::now_ms;
use clawx_tests::{Auth, Reply, TestStack};
use clawx_verify::{
    Clock, Settings,
    testing::{Failure, FakeX, Source, Visibility},
};
use serde_json::{Value, json};

const MINUTE_MS: i64 = 60_000;

fn settings(x: &FakeX, api: bool, oembed: bool) -> Settings {
    Settings { sources: x.settings(api, oembed), ..Settings::default() }
}

/// Asserts a verification-family error: status, code, message and `statusCode`.
fn expect_error(reply: &Reply, status: u16, code: &str, context: &str) {
    reply.expect_error(status, code, context);
    assert_eq!(reply.body["statusCode"], status, "{context}: {}", reply.body);
    assert!(reply.body.get("ok").is_none(), "{context}: {}", reply.body);
}

/// Creates an agent; its API key and the reply body.
async fn agent(stack: &TestStack, id: &str) -> (Auth, Value) {
    let reply = stack.post("/agents", &Auth::None, json!({"id": id, "name": format!("{id} name")})).await;
    let body = reply.expect_ok(&format!("{}: create {id}", stack.name)).clone();
    (Auth::Bearer(body["apiKey"].as_str().expect("apiKey").to_string()), body)
}

async fn start(stack: &TestStack, auth: &Auth) -> Value {
    stack.post("/verify/start", auth, json!({})).await.expect_ok(&format!("{}: start", stack.name)).clone()
}

async fn complete(stack: &TestStack, auth: &Auth, url: &str) -> Reply {
    stack.post("/verify/complete", auth, json!({"tweetUrl": url})).await
}

async fn status(stack: &TestStack, auth: &Auth) -> Value {
    stack.get("/verify/status", auth).await.expect_ok(&format!("{}: status", stack.name)).clone()
}

#[tokio::test]
async fn agents_prove_who_runs_them_with_a_tweet() {
    let x = FakeX::start("e2e-bearer").await;
    for stack in TestStack::all_with_verify(settings(&x, true, false), |_| {}).await {
        let name = stack.name;
        let (auth, created) = agent(&stack, "My-Agent").await;
        let agent_json = &created["agent"];
        assert_eq!(agent_json["id"], "my-agent", "{name}: {created}");
        assert_eq!(agent_json["handle"], "my-agent", "{name}");
        assert_eq!(agent_json["name"], "My-Agent name", "{name}");
        assert_eq!(agent_json["verified"], false, "{name}");
        assert!(agent_json["wallet_address"].as_str().is_some_and(|wallet| wallet.starts_with("0x")), "{name}");
        assert!(agent_json["xmtp_inbox_id"].as_str().is_some_and(|inbox| inbox.len() == 64), "{name}");
        assert!(agent_json["created_at"].as_i64().is_some_and(|at| (at - now_ms()).abs() < MINUTE_MS), "{name}");
        assert_eq!(created.as_object().unwrap().len(), 2, "{name}: {created}");
        let me = stack.get("/account/me", &auth).await;
        let me = me.expect_ok(name);
        assert_eq!((me["handle"].clone(), me["verified"].clone(), me["twitter_username"].clone()), (json!("my-agent"), json!(false), Value::Null));

        // Creation refusals.
        expect_error(&stack.post("/agents", &Auth::None, json!({"id": "MY-agent", "name": "again"})).await, 409, "HANDLE_TAKEN", "taken id");
        let bad_id = stack.post("/agents", &Auth::None, json!({"id": "x", "name": "n"})).await;
        expect_error(&bad_id, 400, "VALIDATION_FAILED", "short id");
        assert_eq!(bad_id.body["field"], "id", "{name}");
        let no_name = stack.post("/agents", &Auth::None, json!({"id": "nameless"})).await;
        expect_error(&no_name, 400, "VALIDATION_FAILED", "missing name");
        assert_eq!(no_name.body["field"], "name", "{name}");
        let blank_name = stack.post("/agents", &Auth::None, json!({"id": "blank-name", "name": "   "})).await;
        expect_error(&blank_name, 400, "VALIDATION_FAILED", "blank name");
        expect_error(
            &stack.post("/agents", &Auth::None, json!({"id": "extra", "name": "n", "email": "e"})).await,
            400,
            "VALIDATION_FAILED",
            "extra field",
        );
        expect_error(&stack.get("/agents/none", &Auth::None).await, 404, "NOT_FOUND", "unknown path in the family");

        // Authentication.
        for (method, path) in [("POST", "/verify/start"), ("POST", "/verify/complete"), ("GET", "/verify/status")] {
            let body = (method == "POST").then(|| json!({"tweetUrl": "https://x.com/a/status/1"}));
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            expect_error(&stack.call(method.clone(), path, &Auth::None, body.clone()).await, 401, "UNAUTHORIZED", path);
            expect_error(&stack.call(method, path, &Auth::Bearer("clx_nope".into()), body).await, 401, "UNAUTHORIZED", path);
        }

        assert_eq!(status(&stack, &auth).await, json!({"verified": false, "hasActiveCode": false}), "{name}");
        expect_error(&complete(&stack, &auth, "https://x.com/op/status/1").await, 400, "NO_VERIFICATION_CODE", "complete before start");

        // A first code, replaced by a second.
        let first = start(&stack, &auth).await;
        let second = start(&stack, &auth).await;
        let code = second["verificationCode"].as_str().unwrap().to_string();
        assert_ne!(first["verificationCode"], second["verificationCode"], "{name}");
        assert!(
            code.len() == 11 && code.starts_with("CLAW-") && code[5..].bytes().all(|b| b"ABCDEFGHJKMNPQRSTUVWXYZ23456789".contains(&b)),
            "{code}"
        );
        let expires_at = second["expiresAt"].as_i64().unwrap();
        assert!((expires_at - (now_ms() + 15 * MINUTE_MS)).abs() < MINUTE_MS, "{name}: {second}");
        let text = format!("I'm verifying my @claw_mail email address!\n\nVerification code: {code}");
        assert_eq!(second["tweetText"], text.as_str(), "{name}");
        let intent = format!(
            "https://twitter.com/intent/tweet?text=I%27m%20verifying%20my%20%40claw_mail%20email%20address%21%0A%0AVerification%20code%3A%20{code}"
        );
        assert_eq!(second["twitterIntentUrl"], intent.as_str(), "{name}");
        assert_eq!(second.as_object().unwrap().len(), 4, "{name}: {second}");
        assert_eq!(status(&stack, &auth).await, json!({"verified": false, "hasActiveCode": true, "codeExpiresAt": expires_at}), "{name}");

        // Each rule, each failure keeping the code.
        let at = now_ms() + 1_000;
        let old_code = first["verificationCode"].as_str().unwrap();
        let tweet_url = |text: &str, at: i64| format!("https://x.com/op/status/{}", x.post("7", "op", text, at));
        let cases: Vec<(String, &str)> = vec![
            ("https://example.com/op/status/1".into(), "x.com or twitter.com"),
            ("https://x.com/op/likes/1".into(), "x.com/{user}/status/{id}"),
            ("not a link".into(), "not a URL"),
            (format!("https://x.com/op/status/{}", x.post("7", "op", &text, at) + 100_000), "not found"),
            (tweet_url(&format!("I'm verifying {code}"), at), "does not mention @claw_mail"),
            (tweet_url(&format!("@claw_mailer {code}"), at), "does not mention @claw_mail"),
            (tweet_url(&format!("hey x@claw_mail {code}"), at), "does not mention @claw_mail"),
            (tweet_url("@claw_mail no code here", at), "does not contain the verification code"),
            (tweet_url(&format!("@claw_mail {old_code}"), at), "does not contain the verification code"),
            (tweet_url(&text, now_ms() - 5 * MINUTE_MS), "posted before"),
        ];
        // Retweets do not count: one as X writes it (`RT @op: ...`), and one the X API marks as
        // `retweeted` whatever its text says.
        let original = x.post("7", "op", &text, at);
        let cases: Vec<(String, &str)> = cases
            .into_iter()
            .chain([
                (format!("https://x.com/fan/status/{}", x.retweet(original, "8", "fan", None, at)), "retweets do not count"),
                (format!("https://x.com/fan/status/{}", x.retweet(original, "8", "fan", Some(&text), at)), "retweets do not count"),
            ])
            .collect();
        for (url, reason) in cases {
            let reply = complete(&stack, &auth, &url).await;
            expect_error(&reply, 400, "INVALID_TWEET", &url);
            assert!(reply.body["error"].as_str().unwrap().contains(reason), "{name}: {url}: {}", reply.body);
        }
        let protected = x.post("7", "op", &text, at);
        x.set_visibility(protected, Visibility::Protected);
        let reply = complete(&stack, &auth, &format!("https://x.com/op/status/{protected}")).await;
        expect_error(&reply, 400, "INVALID_TWEET", "protected");
        assert!(reply.body["error"].as_str().unwrap().contains("not public"), "{name}: {}", reply.body);
        let deleted = x.post("7", "op", &text, at);
        x.set_visibility(deleted, Visibility::Deleted);
        expect_error(&complete(&stack, &auth, &format!("https://twitter.com/i/web/status/{deleted}")).await, 400, "INVALID_TWEET", "deleted");
        expect_error(&stack.post("/verify/complete", &auth, json!({})).await, 400, "VALIDATION_FAILED", "no tweetUrl");
        expect_error(&stack.post("/verify/complete", &auth, json!({"tweetUrl": 5})).await, 400, "VALIDATION_FAILED", "a number");
        assert_eq!(status(&stack, &auth).await["hasActiveCode"], true, "{name}: failed attempts keep the code");
        let me = stack.get("/account/me", &auth).await;
        assert_eq!(me.expect_ok(name)["verified"], false, "{name}: nothing stored on failure");

        // Success, with the mention in another case and a mobile URL with a query.
        let good = x.post("7", "Operator_7", &text.replace("@claw_mail", "@Claw_Mail"), at);
        let reply = complete(&stack, &auth, &format!("https://mobile.twitter.com/Operator_7/status/{good}?s=20&t=abc")).await;
        let done = reply.expect_ok(name).clone();
        assert_eq!(done["success"], true, "{name}");
        assert_eq!(done["twitterUsername"], "Operator_7", "{name}");
        let verified_at = done["verifiedAt"].as_i64().unwrap();
        assert!((verified_at - now_ms()).abs() < MINUTE_MS, "{name}");
        assert_eq!(status(&stack, &auth).await, json!({"verified": true, "verifiedAt": verified_at, "hasActiveCode": false}), "{name}");
        for path in ["/account/me", "/users/my-agent"] {
            let profile = stack.get(path, &auth).await;
            let profile = profile.expect_ok(name);
            assert_eq!((profile["verified"].clone(), profile["twitter_username"].clone()), (json!(true), json!("Operator_7")), "{name}: {path}");
        }
        expect_error(&stack.post("/verify/start", &auth, json!({})).await, 400, "ALREADY_VERIFIED", "start when verified");

        // One X account (by its id, whatever it is called now) verifies one agent.
        let (other, _) = agent(&stack, "other-agent").await;
        let other_text = start(&stack, &other).await["tweetText"].as_str().unwrap().to_string();
        let reused = x.post("7", "renamed_7", &other_text, now_ms() + 1_000);
        expect_error(&complete(&stack, &other, &format!("https://x.com/renamed_7/status/{reused}")).await, 400, "TWITTER_ALREADY_USED", "reused");
        assert_eq!(status(&stack, &other).await["hasActiveCode"], true, "{name}");

        // Verification is optional by default: unverified agents send.
        let sent = stack.post("/messages/dm", &other, json!({"handle": "my-agent", "message": "hi"})).await;
        sent.expect_ok(name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn tweet_sources_are_asked_in_order_and_an_outage_is_503() {
    let x = FakeX::start("e2e-bearer").await;
    for stack in TestStack::all_with_verify(settings(&x, true, true), |_| {}).await {
        let name = stack.name;
        let (auth, _) = agent(&stack, "sourced").await;
        let text = start(&stack, &auth).await["tweetText"].as_str().unwrap().to_string();
        let tweet = x.post("55", "sourcer", &text, now_ms() + 1_000);
        let url = format!("https://x.com/sourcer/status/{tweet}");

        // Every source down (429, a hang past the timeout, 503): unavailable, code kept.
        x.fail(Source::Api, Some(Failure::RateLimited));
        x.fail(Source::Syndication, Some(Failure::Hang));
        x.fail(Source::OEmbed, Some(Failure::ServerError));
        let before = (x.hits(Source::Api), x.hits(Source::Syndication), x.hits(Source::OEmbed));
        expect_error(&complete(&stack, &auth, &url).await, 503, "TWEET_SOURCE_UNAVAILABLE", "all down");
        assert_eq!((x.hits(Source::Api), x.hits(Source::Syndication), x.hits(Source::OEmbed)), (before.0 + 1, before.1 + 1, before.2 + 1), "{name}");
        assert_eq!(status(&stack, &auth).await["hasActiveCode"], true, "{name}");

        // A source answering "not found" is final: the next is not asked.
        x.fail(Source::Api, None);
        let missing = format!("https://x.com/sourcer/status/{}", tweet + 100_000);
        let syndication_hits = x.hits(Source::Syndication);
        expect_error(&complete(&stack, &auth, &missing).await, 400, "INVALID_TWEET", "missing on the API");
        assert_eq!(x.hits(Source::Syndication), syndication_hits, "{name}");

        // The API failing, syndication answers; oEmbed is not asked.
        x.fail(Source::Api, Some(Failure::ServerError));
        x.fail(Source::Syndication, None);
        let oembed_hits = x.hits(Source::OEmbed);
        let done = complete(&stack, &auth, &url).await;
        assert_eq!(done.expect_ok(name)["twitterUsername"], "sourcer", "{name}");
        assert_eq!(x.hits(Source::OEmbed), oembed_hits, "{name}");

        // Only oEmbed up: it reads the blockquote and binds the username.
        x.fail(Source::OEmbed, None);
        let (by_oembed, _) = agent(&stack, "embedded").await;
        let text = start(&stack, &by_oembed).await["tweetText"].as_str().unwrap().to_string();
        let tweet = x.post("66", "embedder", &text, now_ms() + 1_000);
        x.fail(Source::Syndication, Some(Failure::ServerError));
        let done = complete(&stack, &by_oembed, &format!("https://x.com/i/status/{tweet}")).await;
        assert_eq!(done.expect_ok(name)["twitterUsername"], "embedder", "{name}");
        // That username is bound now, whoever asks through which source.
        let (third, _) = agent(&stack, "third").await;
        let text = start(&stack, &third).await["tweetText"].as_str().unwrap().to_string();
        let tweet = x.post("77", "Embedder", &text, now_ms() + 1_000);
        x.fail(Source::Api, None);
        x.fail(Source::Syndication, None);
        expect_error(&complete(&stack, &third, &format!("https://x.com/i/status/{tweet}")).await, 400, "TWITTER_ALREADY_USED", "username bound");
        x.fail(Source::Api, None);
        stack.stop().await;
    }
}

#[tokio::test]
async fn with_verification_required_unverified_agents_cannot_send_and_expire() {
    let x = FakeX::start("e2e-bearer").await;
    let clock = Clock::manual(now_ms());
    // Sweeps are the verify service's own tests; here they would race the clock the test moves.
    let verify = Settings {
        require_verification: true,
        clock: clock.clone(),
        attempts_per_hour: 6,
        sweep_interval: std::time::Duration::from_secs(3600),
        ..settings(&x, false, false)
    };
    for stack in TestStack::all_with_verify(verify, |_| {}).await {
        let name = stack.name;
        clock.set(now_ms());
        let (sender, _) = agent(&stack, "sender").await;
        agent(&stack, "receiver").await;

        // Refused at the edge, over REST and gRPC alike.
        let refused = stack.post("/messages/dm", &sender, json!({"handle": "receiver", "message": "hi"})).await;
        refused.expect_error(403, "NOT_VERIFIED", "unverified sender");
        assert_eq!(refused.body["ok"], false, "{name}: /messages errors are ClawXmtp-shaped");
        let Auth::Bearer(key) = &sender else { unreachable!() };
        let mut client = clawx_proto::messaging::messaging_service_client::MessagingServiceClient::new(stack.channel().await);
        let mut request = tonic::Request::new(clawx_proto::messaging::SendDirectMessageRequest {
            to: Some(clawx_proto::messaging::send_direct_message_request::To::Handle("receiver".into())),
            content: "hi".into(),
            ..Default::default()
        });
        request.metadata_mut().insert("x-api-key", key.parse().unwrap());
        let refused = client.send_direct_message(request).await.expect_err("unverified over gRPC");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{name}");
        assert_eq!(refused.metadata().get("clawx-error-code").and_then(|value| value.to_str().ok()), Some("NOT_VERIFIED"), "{name}");
        // Reading is allowed.
        stack.get("/messages/inbox", &sender).await.expect_ok(name);

        // A code expires after 15 minutes.
        let text = start(&stack, &sender).await["tweetText"].as_str().unwrap().to_string();
        clock.advance(16 * MINUTE_MS);
        let tweet = x.post("88", "sender_op", &text, clock.now_ms());
        expect_error(&complete(&stack, &sender, &format!("https://x.com/sender_op/status/{tweet}")).await, 400, "VERIFICATION_EXPIRED", "old code");
        assert_eq!(status(&stack, &sender).await, json!({"verified": false, "hasActiveCode": false}), "{name}");

        // Verified, the agent sends at once.
        let text = start(&stack, &sender).await["tweetText"].as_str().unwrap().to_string();
        let tweet = x.post("88", "sender_op", &text, clock.now_ms());
        complete(&stack, &sender, &format!("https://x.com/sender_op/status/{tweet}")).await.expect_ok(name);
        stack.post("/messages/dm", &sender, json!({"handle": "receiver", "message": "hi"})).await.expect_ok(name);

        // Per-account attempts are limited.
        let (eager, _) = agent(&stack, "eager").await;
        for _ in 0..6 {
            start(&stack, &eager).await;
        }
        let limited = stack.post("/verify/start", &eager, json!({})).await;
        expect_error(&limited, 429, "RATE_LIMITED", "seventh start in an hour");
        assert!(limited.headers.contains_key("retry-after"), "{name}");

        // Past the 24-hour window an unverified agent cannot verify any more.
        let (late, _) = agent(&stack, "late").await;
        clock.advance(25 * 60 * MINUTE_MS);
        expect_error(&stack.post("/verify/start", &late, json!({})).await, 400, "VERIFICATION_EXPIRED", "past the window");
        stack.stop().await;
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_verification_routes() {
    let stack = TestStack::embedded().await;
    let document = stack.get("/openapi.json", &Auth::None).await.body;
    for (path, method) in [("/agents", "post"), ("/verify/start", "post"), ("/verify/complete", "post"), ("/verify/status", "get")] {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{path} {method} is documented");
        assert_eq!(
            operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/VerificationError",
            "{path}"
        );
        assert!(operation["responses"]["200"]["content"]["application/json"]["schema"].is_object(), "{path}");
    }
    assert_eq!(document["paths"]["/agents"]["post"]["security"][0], json!({}), "no authentication needed");
    assert!(document["paths"]["/verify/complete"]["post"]["responses"]["503"].is_object());
    stack.stop().await;
}

#[tokio::test]
async fn agent_creation_is_limited_per_client_ip_like_account_creation() {
    let x = FakeX::start("e2e-bearer").await;
    for stack in TestStack::all_with_verify(settings(&x, false, false), |config| config.limits.create_per_minute = 2).await {
        agent(&stack, "first-agent").await;
        stack.post("/account/create", &Auth::None, json!({})).await.expect_ok(stack.name);
        let limited = stack.post("/agents", &Auth::None, json!({"id": "third-agent", "name": "Third"})).await;
        expect_error(&limited, 429, "RATE_LIMITED", "third creation in a minute");
        assert!(limited.headers.contains_key("retry-after"), "{}", stack.name);
        let taken = stack.get("/users/third-agent", &Auth::None).await;
        taken.expect_error(404, "NOT_FOUND", "nothing created when refused");
        stack.stop().await;
    }
}
