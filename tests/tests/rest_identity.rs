//! Every identity REST route through the gateway, with success and documented errors, on
//! SQLite + memory and PostgreSQL + Redis.

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use clawx_tests::{Auth, TestStack};
use reqwest::Method;
use serde_json::{Value, json};

fn sign(wallet: &PrivateKeySigner, message: &str) -> String {
    format!("0x{}", hex::encode(wallet.sign_message_sync(message.as_bytes()).unwrap().as_bytes()))
}

#[tokio::test]
async fn accounts_handles_profiles_and_directory() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let (key, created) = stack.create_account().await;
        assert_eq!(created["ok"], true);
        assert_eq!(created["message"], "Account created. Save your api_key!");
        assert!(key.starts_with("clx_"), "{name}");
        let wallet = created["wallet_address"].as_str().unwrap().to_string();
        assert!(wallet.starts_with("0x") && wallet.len() == 42);
        assert_eq!(created["xmtp_inbox_id"].as_str().unwrap().len(), 64);
        let auth = Auth::Key(key.clone());

        // Before registering: profile has no handle; PATCH needs a handle first.
        let me = stack.get("/account/me", &auth).await;
        assert_eq!(me.expect_ok(name)["handle"], Value::Null);
        assert_eq!(me.body["wallet_address"], wallet.as_str());
        stack.call(Method::PATCH, "/account/me", &auth, Some(json!({"name": "X"}))).await.expect_error(403, "NOT_REGISTERED", name);

        // Registration errors, each naming its field.
        for (body, field) in [
            (json!({"name": "A"}), "handle"),
            (json!({"handle": "alice"}), "name"),
            (json!({"handle": "a", "name": "A"}), "handle"),
            (json!({"handle": "alice", "name": "A", "x_url": "ftp://x"}), "x_url"),
            (json!({"handle": "alice", "name": "A", "extra": 1}), "extra"),
            (json!({"handle": 7, "name": "A"}), "handle"),
        ] {
            let reply = stack.post("/account/register", &auth, body.clone()).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {body}"));
            assert_eq!(reply.body["field"], field, "{name}: {body}");
            assert_eq!(reply.body["ok"], false, "{name}: ClawXmtp errors carry ok:false");
        }
        let reply = stack.post("/account/register", &Auth::None, json!({"handle": "alice", "name": "A"})).await;
        reply.expect_error(401, "UNAUTHORIZED", name);
        assert_eq!(reply.body["ok"], false);

        let registered = stack
            .post(
                "/account/register",
                &Auth::Bearer(key.clone()),
                json!({
                    "handle": "Alice", "name": "Alice Liddell", "description": "Curious", "x_url": "https://x.com/alice",
                    "github_url": "https://github.com/alice", "website_url": null,
                }),
            )
            .await;
        assert_eq!(registered.expect_ok(name), &json!({"ok": true, "handle": "alice", "wallet_address": wallet, "profile_url": "/users/alice"}));
        stack.post("/account/register", &auth, json!({"handle": "alice2", "name": "A"})).await.expect_error(409, "ALREADY_REGISTERED", name);
        let other = stack.create_account().await.0;
        stack.post("/account/register", &Auth::Key(other.clone()), json!({"handle": "ALICE", "name": "B"})).await.expect_error(
            409,
            "HANDLE_TAKEN",
            name,
        );

        // Profile: every field, flat; PATCH partial, null clears, unknown fields refused.
        let me = stack.get("/account/me", &auth).await;
        let body = me.expect_ok(name);
        for field in [
            "id",
            "handle",
            "name",
            "description",
            "x_url",
            "github_url",
            "website_url",
            "wallet_address",
            "xmtp_inbox_id",
            "created_at",
            "verified",
            "twitter_username",
        ] {
            assert!(body.get(field).is_some(), "{name}: /account/me has {field}");
        }
        assert_eq!(body["verified"], false);
        let created_at = body["created_at"].as_str().unwrap();
        assert_eq!(created_at.len(), 19, "{name}: YYYY-MM-DD HH:MM:SS");
        assert_eq!(&created_at[10..11], " ");
        assert!(!body.to_string().contains("wallet_key") && !body.to_string().contains(&key), "{name}: no secrets");

        let patched = stack.call(Method::PATCH, "/account/me", &auth, Some(json!({"x_url": null, "description": "Very curious"}))).await;
        let body = patched.expect_ok(name);
        assert_eq!(body["x_url"], Value::Null, "{name}");
        assert_eq!(body["description"], "Very curious");
        assert_eq!(body["github_url"], "https://github.com/alice", "{name}: untouched");
        stack.call(Method::PATCH, "/account/me", &auth, Some(json!({"handle": "bob"}))).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.call(Method::PATCH, "/account/me", &auth, Some(json!({"name": null}))).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.call(Method::PATCH, "/account/me", &auth, Some(json!({"website_url": "javascript:alert(1)"}))).await.expect_error(
            400,
            "VALIDATION_FAILED",
            name,
        );

        // Directory.
        stack.post("/account/register", &Auth::Key(other), json!({"handle": "bob", "name": "Robert"})).await.expect_ok(name);
        let users = stack.get("/users", &Auth::None).await;
        let list = users.expect_ok(name)["users"].as_array().unwrap().clone();
        assert_eq!(list.iter().map(|user| user["handle"].as_str().unwrap()).collect::<Vec<_>>(), vec!["alice", "bob"], "{name}");
        for field in [
            "id",
            "wallet_address",
            "handle",
            "name",
            "description",
            "x_url",
            "github_url",
            "website_url",
            "created_at",
            "verified",
            "twitter_username",
        ] {
            assert!(list[0].get(field).is_some(), "{name}: users carry {field}");
        }
        assert!(list[0].get("ok").is_none());
        let found = stack.get("/users?search=LIDDELL", &Auth::None).await;
        assert_eq!(found.expect_ok(name)["users"].as_array().unwrap().len(), 1);
        let page = stack.get("/users?limit=1&offset=1", &Auth::None).await;
        assert_eq!(page.expect_ok(name)["users"][0]["handle"], "bob");
        stack.get("/users?limit=-1", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get("/users?offset=x", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);

        let user = stack.get("/users/ALICE", &Auth::None).await;
        let body = user.expect_ok(name);
        assert_eq!(body["handle"], "alice");
        assert_eq!(body["ok"], true);
        stack.get("/users/nobody", &Auth::None).await.expect_error(404, "NOT_FOUND", name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn bad_bodies_get_coded_errors_never_a_500() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("bodies").await;
        let url = stack.url("/account/register");
        let send = |body: reqwest::Body, content_type: Option<&'static str>| {
            let mut request = stack.http.post(&url).header("x-api-key", &key).body(body);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.send()
        };
        let cases: Vec<(reqwest::Body, Option<&'static str>, u16, &str)> = vec![
            ("{\"handle\": ".into(), Some("application/json"), 400, "INVALID_JSON"),
            ("handle=x".into(), Some("application/x-www-form-urlencoded"), 415, "UNSUPPORTED_MEDIA_TYPE"),
            ("{}".into(), None, 415, "UNSUPPORTED_MEDIA_TYPE"),
            ("[1, 2]".into(), Some("application/json"), 400, "VALIDATION_FAILED"),
            ("null".into(), Some("application/json"), 400, "VALIDATION_FAILED"),
            (vec![b'x'; 2 * 1024 * 1024].into(), Some("application/json"), 413, "PAYLOAD_TOO_LARGE"),
        ];
        for (body, content_type, status, code) in cases {
            let response = send(body, content_type).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{name}: {code}");
            assert!(response.headers().contains_key("x-request-id"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], code, "{name}: {body}");
            assert_eq!(body["ok"], false, "{name}: {body}");
        }
        stack.stop().await;
    }
}

#[tokio::test]
async fn api_keys_and_revocation_at_once() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("keys").await;
        let auth = Auth::Key(key.clone());
        let created = stack.post("/account/keys", &auth, json!({"name": "ci"})).await;
        let body = created.expect_ok(name).clone();
        let second = body["api_key"].as_str().unwrap().to_string();
        assert!(second.starts_with(body["prefix"].as_str().unwrap()), "{name}");
        stack.post("/account/keys", &auth, json!({})).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.post("/account/keys", &auth, json!({"name": ""})).await.expect_error(400, "VALIDATION_FAILED", name);

        let listed = stack.get("/account/keys", &Auth::Key(second.clone())).await;
        let keys = listed.expect_ok(name)["keys"].as_array().unwrap().clone();
        assert_eq!(keys.len(), 2, "{name}");
        for entry in &keys {
            assert_eq!(entry.as_object().unwrap().keys().cloned().collect::<Vec<_>>().len(), 5, "{name}: {entry}");
            assert!(!entry.to_string().contains(&key[12..]), "{name}: never the key");
        }
        assert!(keys[1]["last_used_at"].is_string(), "{name}: last use recorded");

        // Warm the caches, revoke, and the key fails on the very next request.
        stack.get("/account/me", &Auth::Key(second.clone())).await.expect_ok(name);
        let id = body["id"].as_str().unwrap();
        let revoked = stack.call(Method::DELETE, &format!("/account/keys/{id}"), &auth, None).await;
        assert_eq!(revoked.status, 204, "{name}");
        assert_eq!(revoked.body, Value::Null, "{name}: no body");
        stack.get("/account/me", &Auth::Key(second.clone())).await.expect_error(401, "UNAUTHORIZED", name);
        stack.call(Method::DELETE, &format!("/account/keys/{id}"), &auth, None).await.expect_error(404, "NOT_FOUND", name);

        let first_id = stack.get("/account/keys", &auth).await.body["keys"][0]["id"].as_str().unwrap().to_string();
        stack.call(Method::DELETE, &format!("/account/keys/{first_id}"), &auth, None).await.expect_error(400, "LAST_KEY", name);
        stack.call(Method::DELETE, "/account/keys/key_x", &Auth::None, None).await.expect_error(401, "UNAUTHORIZED", name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn wallets_domains_and_signed_requests() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("signer").await;
        let auth = Auth::Key(key.clone());
        let wallet = PrivateKeySigner::random();
        let address = wallet.address().to_checksum(None);

        stack.get("/account/wallets/challenge", &auth).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get("/account/wallets/challenge?address=0x12", &auth).await.expect_error(400, "VALIDATION_FAILED", name);
        let challenge = stack.get(&format!("/account/wallets/challenge?address={address}"), &auth).await;
        let body = challenge.expect_ok(name).clone();
        assert!(body["expiresAt"].is_i64(), "{name}: camelCase expiresAt in ms");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(body["nonce"].as_str().unwrap()));

        let link = |signature: String| json!({"address": address, "message": message, "signature": signature});
        stack.post("/account/wallets", &auth, json!({"address": address})).await.expect_error(400, "VALIDATION_FAILED", name);
        let reply = stack.post("/account/wallets", &auth, link(sign(&wallet, message))).await;
        assert_eq!(reply.expect_ok(name)["address"], address.as_str());
        stack.post("/account/wallets", &auth, link(sign(&wallet, message))).await.expect_error(400, "CHALLENGE_INVALID", name);
        let listed = stack.get("/account/wallets", &auth).await;
        assert_eq!(listed.expect_ok(name)["wallets"].as_array().unwrap().len(), 1);

        // Another account cannot take the wallet.
        let other = stack.registered("other").await;
        let other_challenge = stack.get(&format!("/account/wallets/challenge?address={address}"), &Auth::Key(other.clone())).await.body.clone();
        let other_message = other_challenge["message"].as_str().unwrap();
        let reply = stack
            .post(
                "/account/wallets",
                &Auth::Key(other.clone()),
                json!({"address": address, "message": other_message, "signature": sign(&wallet, other_message)}),
            )
            .await;
        reply.expect_error(409, "WALLET_ALREADY_LINKED", name);

        // The signature route and signed requests.
        let expiry = clawx_common::time::now_ms() + 600_000;
        stack.get("/api/user/signer/signature", &Auth::None).await.expect_error(400, "VALIDATION_FAILED", name);
        stack.get(&format!("/api/user/nobody/signature?expiry={expiry}"), &Auth::None).await.expect_error(404, "NOT_FOUND", name);
        stack.get(&format!("/api/user/signer/signature?expiry={expiry}&device=maybe"), &Auth::None).await.expect_error(
            400,
            "VALIDATION_FAILED",
            name,
        );
        let reply = stack.get(&format!("/api/user/signer/signature?device=true&expiry={expiry}"), &Auth::None).await;
        let body = reply.expect_ok(name).clone();
        assert!(body.get("ok").is_none(), "{name}: messaging family shape");
        assert_eq!(body["headers"], json!({"x-auth-domain": "signer", "x-auth-expires": expiry.to_string()}));
        let signature = sign(&wallet, body["message"].as_str().unwrap());
        let signed = Auth::Signed { domain: "signer".into(), expires: expiry.to_string(), signature: signature.clone() };
        let me = stack.get("/account/me", &signed).await;
        assert_eq!(me.expect_ok(name)["handle"], "signer", "{name}: signed request authenticates");
        // x-auth-expiration is accepted as well.
        let response = stack
            .http
            .get(stack.url("/account/me"))
            .header("x-auth-domain", "signer")
            .header("x-auth-expiration", expiry.to_string())
            .header("x-auth-signature", &signature)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");

        let now = clawx_common::time::now_ms();
        let bad = |domain: &str, expires: String, signature: String| Auth::Signed { domain: domain.into(), expires, signature };
        let flipped = {
            let mut bytes = hex::decode(&signature[2..]).unwrap();
            bytes[64] = 0x30;
            format!("0x{}", hex::encode(bytes))
        };
        for (auth, code) in [
            (bad("signer", (now - 1000).to_string(), signature.clone()), "SIGNATURE_EXPIRED"),
            (bad("signer", "soon".into(), signature.clone()), "SIGNATURE_MALFORMED"),
            (bad("signer", expiry.to_string(), "0xabc".into()), "SIGNATURE_MALFORMED"),
            (bad("signer", expiry.to_string(), flipped), "SIGNATURE_MALFORMED"),
            (bad("signer", expiry.to_string(), sign(&PrivateKeySigner::random(), body["message"].as_str().unwrap())), "SIGNATURE_MISMATCH"),
            (bad("nobody", expiry.to_string(), signature.clone()), "DOMAIN_NOT_FOUND"),
        ] {
            let reply = stack.get("/account/me", &auth).await;
            reply.expect_error(401, code, &format!("{name}: {code}"));
        }
        let response = stack.http.get(stack.url("/account/me")).header("x-auth-domain", "signer").send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}: partial signed headers");

        // Domains.
        let claimed = stack.post("/account/domains", &auth, json!({"name": "Signer.Crypto"})).await;
        assert_eq!(claimed.expect_ok(name)["name"], "signer.crypto");
        stack.post("/account/domains", &Auth::Key(other.clone()), json!({"name": "signer.crypto"})).await.expect_error(409, "CONFLICT", name);
        stack.post("/account/domains", &auth, json!({"name": "nodot"})).await.expect_error(400, "VALIDATION_FAILED", name);
        assert_eq!(stack.get("/account/domains", &auth).await.expect_ok(name)["domains"][0]["name"], "signer.crypto");
        stack.call(Method::DELETE, "/account/domains/other.crypto", &auth, None).await.expect_error(404, "NOT_FOUND", name);
        assert_eq!(stack.call(Method::DELETE, "/account/domains/signer.crypto", &auth, None).await.status, 204);

        // Unlinking ends signed requests at once, cached or not.
        stack.call(Method::DELETE, "/account/wallets/0x0000000000000000000000000000000000000001", &auth, None).await.expect_error(
            404,
            "NOT_FOUND",
            name,
        );
        assert_eq!(stack.call(Method::DELETE, &format!("/account/wallets/{address}"), &auth, None).await.status, 204, "{name}");
        stack.get("/account/me", &signed).await.expect_error(401, "SIGNATURE_MISMATCH", name);
        stack.stop().await;
    }
}

#[tokio::test]
async fn limits_expiry_and_non_canonical_signatures_over_rest() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("limits").await;
        let auth = Auth::Key(key.clone());
        // At most 20 keys per account.
        for index in 1..20 {
            stack.post("/account/keys", &auth, json!({"name": format!("k{index}")})).await.expect_ok(name);
        }
        stack.post("/account/keys", &auth, json!({"name": "one too many"})).await.expect_error(409, "LIMIT_EXCEEDED", name);

        // A challenge signed too late.
        let wallet = PrivateKeySigner::random();
        let address = wallet.address().to_checksum(None);
        let challenge = stack.get(&format!("/account/wallets/challenge?address={address}"), &auth).await.body.clone();
        let message = challenge["message"].as_str().unwrap().to_string();
        tokio::time::sleep(clawx_tests::CHALLENGE_TTL + std::time::Duration::from_millis(200)).await;
        let reply =
            stack.post("/account/wallets", &auth, json!({"address": address, "message": message, "signature": sign(&wallet, &message)})).await;
        reply.expect_error(400, "CHALLENGE_EXPIRED", name);

        // A malleated (high-s) signed request.
        let challenge = stack.get(&format!("/account/wallets/challenge?address={address}"), &auth).await.body.clone();
        let message = challenge["message"].as_str().unwrap().to_string();
        stack
            .post("/account/wallets", &auth, json!({"address": address, "message": message, "signature": sign(&wallet, &message)}))
            .await
            .expect_ok(name);
        let expiry = clawx_common::time::now_ms() + 600_000;
        let text = stack.get(&format!("/api/user/limits/signature?expiry={expiry}&device=true"), &Auth::None).await.body["message"]
            .as_str()
            .unwrap()
            .to_string();
        let signature = hex::decode(sign(&wallet, &text).trim_start_matches("0x")).unwrap();
        let order = alloy_primitives_order();
        let s = u256(&signature[32..64]);
        let mut twin = signature.clone();
        twin[32..64].copy_from_slice(&sub(&order, &s));
        twin[64] = if signature[64] == 27 { 28 } else { 27 };
        let high = Auth::Signed { domain: "limits".into(), expires: expiry.to_string(), signature: format!("0x{}", hex::encode(twin)) };
        stack.get("/account/me", &high).await.expect_error(401, "SIGNATURE_NOT_CANONICAL", name);

        // Path parameters that are not UTF-8 get a coded JSON error.
        let reply = stack.get("/users/%FF%FE", &Auth::None).await;
        reply.expect_error(400, "VALIDATION_FAILED", name);
        assert_eq!(reply.body["ok"], false, "{name}");
        stack.stop().await;
    }
}

/// The secp256k1 group order, big-endian.
fn alloy_primitives_order() -> [u8; 32] {
    let mut order = [0u8; 32];
    hex::decode_to_slice("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", &mut order).unwrap();
    order
}

fn u256(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().unwrap()
}

/// `a - b` for big-endian 256-bit numbers with `a > b`.
fn sub(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for index in (0..32).rev() {
        let mut digit = i16::from(a[index]) - i16::from(b[index]) - borrow;
        borrow = if digit < 0 { 1 } else { 0 };
        if digit < 0 {
            digit += 256;
        }
        out[index] = digit as u8;
    }
    out
}

/// Profile URLs are RFC 3986 without quotes, angle brackets, spaces or control characters;
/// names, key names and descriptions refuse bidi controls and zero-width characters. The
/// OpenAPI patterns say exactly what the server accepts.
#[tokio::test]
async fn stored_text_refuses_markup_and_invisible_characters() {
    use clawx_gateway::rest::types::{NAME_PATTERN, TEXT_PATTERN, URL_PATTERN};
    let url_pattern = regex::Regex::new(URL_PATTERN).unwrap();
    let name_pattern = regex::Regex::new(NAME_PATTERN).unwrap();
    let text_pattern = regex::Regex::new(TEXT_PATTERN).unwrap();
    let refused_urls = [
        "https://x.com/\"onmouseover=\"alert(1)",
        "https://x.com/<script>",
        "https://x.com/a>b",
        "https://x.com/a'b",
        "https://x.com/a b",
        "https://x.com/a\u{0}b",
        "https://x.com/a\u{7f}",
        "https://x.com/a\\b",
        "https://x.com/a^b",
        "https://x.com/a`b",
        "https://x.com/{a}",
        "https://x.com/a|b",
        "https://x.com/%zz",
        "https://x.com/%4",
        "https://x.com/caf\u{e9}",
        "https://x.com/#a#b",
        "https://x.com/a\n",
        "https://user@x.com/",
    ];
    let accepted_urls = [
        "https://x.com",
        "https://x.com/a%20b",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
        "https://x.com/a?b=c&d=e;f",
        "https://x.com/p@q:r/~s!$*+,=-._",
        "https://x.com/#frag/?x",
        "https://x.com?q=/a?b",
        "http://localhost:8080/%C3%A9",
    ];
    let refused_names = [
        "Ann\u{202e}gpj.exe",
        "A\u{200b}nn",
        "A\u{200c}B",
        "A\u{200d}B",
        "\u{feff}Ann",
        "A\u{2066}B\u{2069}",
        "A\u{2060}B",
        "A\u{202a}B",
        "A\u{200f}B",
        "\u{200b}",
    ];
    let accepted_names = ["Ann", "Zo\u{eb} \u{1f980}", "\u{540d}\u{524d}", "A & B <ok>"];
    let refused_descriptions = ["hello\u{202e}dlrow", "a\u{200c}b", "x\u{feff}", "a\u{2068}b"];
    let accepted_descriptions = ["line one\nline two", "tab\there", "quotes \" and <angles> are fine in text"];

    for stack in TestStack::all().await {
        let name = stack.name;
        let key = stack.registered("texts").await;
        let auth = Auth::Key(key.clone());
        // Refused registrations leave this account unregistered.
        let fresh = Auth::Key(stack.create_account().await.0);
        let patch = |field: &str, value: &str| json!({ field: value });

        for url in refused_urls {
            let reply = stack.call(Method::PATCH, "/account/me", &auth, Some(patch("website_url", url))).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {url:?}"));
            assert_eq!(reply.body["field"], "website_url", "{name}: {url:?}");
            let reply = stack.post("/account/register", &fresh, json!({"handle": "fresh", "name": "F", "x_url": url})).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: register {url:?}"));
            assert!(!url_pattern.is_match(url), "the URL pattern refuses {url:?}");
        }
        for url in accepted_urls {
            let reply = stack.call(Method::PATCH, "/account/me", &auth, Some(patch("github_url", url))).await;
            assert_eq!(reply.expect_ok(&format!("{name}: {url:?}"))["github_url"], url, "{name}: stored as sent");
            assert!(url_pattern.is_match(url), "the URL pattern accepts {url:?}");
        }
        for text in refused_names {
            let reply = stack.call(Method::PATCH, "/account/me", &auth, Some(patch("name", text))).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {text:?}"));
            assert_eq!(reply.body["field"], "name");
            let reply = stack.post("/account/keys", &auth, json!({"name": text})).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: key name {text:?}"));
            let reply = stack.post("/account/register", &fresh, json!({"handle": "fresh", "name": text})).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: register {text:?}"));
            assert!(!name_pattern.is_match(text), "the name pattern refuses {text:?}");
        }
        for text in accepted_names {
            let reply = stack.call(Method::PATCH, "/account/me", &auth, Some(patch("name", text))).await;
            assert_eq!(reply.expect_ok(&format!("{name}: {text:?}"))["name"], text);
            assert!(name_pattern.is_match(text), "the name pattern accepts {text:?}");
        }
        for text in refused_descriptions {
            let reply = stack.call(Method::PATCH, "/account/me", &auth, Some(patch("description", text))).await;
            reply.expect_error(400, "VALIDATION_FAILED", &format!("{name}: {text:?}"));
            assert_eq!(reply.body["field"], "description");
            assert!(!text_pattern.is_match(text), "the text pattern refuses {text:?}");
        }
        for text in accepted_descriptions {
            let reply = stack.call(Method::PATCH, "/account/me", &auth, Some(patch("description", text))).await;
            assert_eq!(reply.expect_ok(&format!("{name}: {text:?}"))["description"], text);
            assert!(text_pattern.is_match(text), "the text pattern accepts {text:?}");
        }
        stack.stop().await;
    }
}
