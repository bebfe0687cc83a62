//! The OpenAPI 3.1 document of every REST route (`/openapi.json`) and Swagger UI (`/docs`,
//! assets vendored into the binary, so it works offline).
//!
//! The patterns and limits here are the ones the services enforce, so a request the document
//! calls valid is never refused as malformed, and one it calls invalid is always refused.

use std::sync::{Arc, OnceLock};

use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::guard::Gateway;

/// Handles: 2-32 letters, digits, `-` or `_` (any case; stored lower-case).
pub const HANDLE_PATTERN: &str = "^[A-Za-z0-9_-]{2,32}$";
/// Invisible formatting characters refused in names and texts (as a character-class body):
/// the Arabic letter mark, zero-width space/non-joiner/joiner, left-to-right and right-to-left
/// marks, bidi embeddings and overrides, the word joiner and invisible operators, bidi isolates,
/// and the zero-width no-break space (BOM).
macro_rules! invisible_characters {
    () => {
        r"\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
    };
}
/// One line of text that is not only whitespace, without control or invisible formatting
/// characters.
pub const NAME_PATTERN: &str = concat!(
    r"^[^\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"]*[^\s\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"][^\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"]*$"
);
/// Free text: no control characters except tab, line feed and carriage return, no invisible
/// formatting characters.
pub const TEXT_PATTERN: &str = concat!(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f", invisible_characters!(), r"]*$");
/// `http(s)://host[:port]`, then an RFC 3986 path, query and fragment: unreserved characters,
/// `%` and two hex digits, and the delimiters `! $ & ( ) * + , ; = : @ /` (`?` in the query and
/// fragment), so never a quote, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, space, control or
/// non-ASCII character. Port 1-65535. Empty clears the field.
pub const URL_PATTERN: &str = concat!(
    r"^(|https?://[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
    r"(/([A-Za-z0-9._~!$&()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?",
    r"(\?([A-Za-z0-9._~!$&()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?",
    r"(#([A-Za-z0-9._~!$&()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?)$"
);
/// `0x` and 40 hex digits, any case.
pub const ADDRESS_PATTERN: &str = "^0[xX][0-9a-fA-F]{40}$";
/// A domain name with at least one dot (3-253 characters, stated with min/maxLength).
pub const DOMAIN_PATTERN: &str = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$";
/// 65 bytes of hex, with or without `0x`.
pub const SIGNATURE_PATTERN: &str = "^(0x)?[0-9a-fA-F]{130}$";

fn string(pattern: &str, max: usize) -> Value {
    json!({"type": "string", "pattern": pattern, "maxLength": max})
}

fn nullable(schema: Value) -> Value {
    let mut schema = schema;
    if let Some(object) = schema.as_object_mut() {
        let kind = object.remove("type").unwrap_or(json!("string"));
        object.insert("type".into(), json!([kind, "null"]));
    }
    schema
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The ClawXmtp success envelope `{"ok": true, ...}` around an object schema's properties.
fn ok_object(properties: Value, required: &[&str]) -> Value {
    let mut all = Map::new();
    all.insert("ok".into(), json!({"const": true}));
    all.extend(properties.as_object().cloned().unwrap_or_default());
    let mut names = vec!["ok"];
    names.extend_from_slice(required);
    object(Value::Object(all), &names)
}

const REQUEST_ID: &str = "#/components/headers/RequestId";

fn response(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": {"x-request-id": {"$ref": REQUEST_ID}},
        "content": {"application/json": {"schema": schema}},
    })
}

fn error_response(description: &str, family: &str) -> Value {
    response(description, schema_ref(&format!("{family}Error")))
}

/// What an operation can answer besides success.
#[derive(Clone, Copy)]
struct Errors {
    body: bool,
    auth: bool,
    not_found: bool,
    conflict: bool,
}

const NONE: Errors = Errors { body: false, auth: false, not_found: false, conflict: false };

fn operation(family: &str, summary: &str, tag: &str, security: &Value, success: (&str, Value), errors: Errors, extra: &[(&str, &str)]) -> Value {
    let mut responses = Map::new();
    let (status, success) = success;
    responses.insert(status.to_string(), success);
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| error_response(description, family));
    };
    if errors.body {
        add("400", "Invalid input (`VALIDATION_FAILED` naming the field, `INVALID_JSON`)");
        add("413", "Body over the size limit (`PAYLOAD_TOO_LARGE`)");
        add("415", "Body is not JSON (`UNSUPPORTED_MEDIA_TYPE`)");
    }
    for (status, description) in extra {
        add(status, description);
    }
    if errors.auth {
        add("401", "Missing or invalid credentials (`UNAUTHORIZED`, `SIGNATURE_*`, `DOMAIN_NOT_FOUND`)");
    } else {
        add("401", "Invalid credentials were sent (`UNAUTHORIZED`, `SIGNATURE_*`, `DOMAIN_NOT_FOUND`)");
    }
    if errors.not_found {
        add("404", "Not found (`NOT_FOUND`)");
    }
    if errors.conflict {
        add("409", "Conflict");
    }
    add("400", "Invalid query or path parameter (`VALIDATION_FAILED`)");
    add("503", "A backing service is unavailable (`UNAVAILABLE`)");
    responses.insert(
        "429".into(),
        json!({
            "description": "Rate limited (`RATE_LIMITED`)",
            "headers": {
                "x-request-id": {"$ref": REQUEST_ID},
                "retry-after": {"description": "Seconds to wait", "required": true, "schema": {"type": "string"}},
            },
            "content": {"application/json": {"schema": schema_ref(&format!("{family}Error"))}},
        }),
    );
    json!({"summary": summary, "tags": [tag], "security": security, "responses": responses})
}

fn with_body(mut operation: Value, schema: Value) -> Value {
    operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
    operation
}

fn with_parameters(mut operation: Value, parameters: Value) -> Value {
    operation["parameters"] = parameters;
    operation
}

fn path_parameter(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

fn query_parameter(name: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "description": description, "schema": schema})
}

fn no_content(description: &str) -> Value {
    json!({"description": description, "headers": {"x-request-id": {"$ref": REQUEST_ID}}})
}

fn profile_properties() -> Value {
    json!({
        "id": {"type": "integer"},
        "wallet_address": {"type": "string", "description": "EIP-55 checksummed"},
        "handle": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "description": {"type": ["string", "null"]},
        "x_url": {"type": ["string", "null"]},
        "github_url": {"type": ["string", "null"]},
        "website_url": {"type": ["string", "null"]},
        "xmtp_inbox_id": {"type": "string"},
        "created_at": {"type": "string", "description": "UTC, YYYY-MM-DD HH:MM:SS", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"},
        "verified": {"type": "boolean", "description": "Whether the operator proved who runs the agent"},
        "twitter_username": {"type": ["string", "null"]},
    })
}

const PROFILE_FIELDS: &[&str] = &[
    "id", "wallet_address", "handle", "name", "description", "x_url", "github_url", "website_url", "xmtp_inbox_id",
    "created_at", "verified", "twitter_username",
];

fn components() -> Value {
    let error = |extra: Value, required: &[&str]| {
        let mut properties = json!({
            "error": {"type": "string", "description": "Human-readable message"},
            "code": {"type": "string", "description": "Machine-readable code, e.g. NOT_FOUND"},
            "field": {"type": "string", "description": "The request field at fault (validation errors)"},
        });
        properties.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let mut names = vec!["error", "code"];
        names.extend_from_slice(required);
        object(properties, &names)
    };
    json!({
        "securitySchemes": {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key", "description": "The api_key from POST /account/create"},
            "Bearer": {"type": "http", "scheme": "bearer", "description": "The same API key as `Authorization: Bearer <key>`"},
            "SignedDomain": {"type": "apiKey", "in": "header", "name": "x-auth-domain", "description": "Signed-expiry request: the domain (handle or claimed domain)"},
            "SignedExpires": {"type": "apiKey", "in": "header", "name": "x-auth-expires", "description": "Signed-expiry request: expiry in Unix milliseconds (x-auth-expiration is accepted too)"},
            "SignedSignature": {"type": "apiKey", "in": "header", "name": "x-auth-signature", "description": "Signed-expiry request: EIP-191 signature of the message from GET /api/user/{domain}/signature by a linked wallet (65 bytes hex)"},
        },
        "headers": {
            "RequestId": {"description": "Echoes the client's x-request-id or a generated one", "required": true, "schema": {"type": "string"}},
        },
        "schemas": {
            "ClawXmtpError": error(json!({"ok": {"const": false}}), &["ok"]),
            "VerificationError": error(json!({"statusCode": {"type": "integer"}}), &["statusCode"]),
            "MessagingError": error(json!({}), &[]),
            "Profile": object(profile_properties(), PROFILE_FIELDS),
            "ProfileResponse": ok_object(profile_properties(), PROFILE_FIELDS),
            "ApiKey": object(json!({
                "id": {"type": "string"},
                "name": {"type": "string"},
                "prefix": {"type": "string", "description": "First characters of the key"},
                "created_at": {"type": "string"},
                "last_used_at": {"type": ["string", "null"]},
            }), &["id", "name", "prefix", "created_at", "last_used_at"]),
            "LinkedWallet": object(json!({"address": {"type": "string"}, "linked_at": {"type": "string"}}), &["address", "linked_at"]),
            "Domain": object(json!({"name": {"type": "string"}, "claimed_at": {"type": "string"}}), &["name", "claimed_at"]),
        },
    })
}

fn paths() -> Value {
    let authed = json!([{"ApiKey": []}, {"Bearer": []}, {"SignedDomain": [], "SignedExpires": [], "SignedSignature": []}]);
    // Credential management (keys, wallets, domains) takes an API key: a signed-expiry request
    // is a bearer token for up to 30 days and must not mint credentials that outlive it.
    let key_only = json!([{"ApiKey": []}, {"Bearer": []}]);
    let api_key_required = ("403", "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)");
    let public = json!([{}, {"ApiKey": []}, {"Bearer": []}, {"SignedDomain": [], "SignedExpires": [], "SignedSignature": []}]);
    let none = json!([]);
    let x = "ClawXmtp";
    let profile_body_properties = json!({
        "description": string(TEXT_PATTERN, 1000),
        "x_url": string(URL_PATTERN, 2048),
        "github_url": string(URL_PATTERN, 2048),
        "website_url": string(URL_PATTERN, 2048),
    });
    let mut register = json!({
        "handle": string(HANDLE_PATTERN, 32),
        "name": string(NAME_PATTERN, 100),
    });
    register.as_object_mut().unwrap().extend(
        profile_body_properties.as_object().unwrap().iter().map(|(key, value)| (key.clone(), nullable(value.clone()))),
    );
    let mut update = json!({"name": string(NAME_PATTERN, 100)});
    update.as_object_mut().unwrap().extend(
        profile_body_properties.as_object().unwrap().iter().map(|(key, value)| (key.clone(), nullable(value.clone()))),
    );
    let key_name = object(json!({"name": string(NAME_PATTERN, 64)}), &["name"]);

    json!({
        "/health": {"get": {
            "summary": "Health check", "tags": ["Status"], "security": none,
            "responses": {"200": response("The gateway is up", object(json!({"ok": {"const": true}, "uptime": {"type": "number", "description": "Seconds since start"}}), &["ok", "uptime"]))},
        }},
        "/status": {"get": {
            "summary": "Status probe: live checks of the databases and Redis", "tags": ["Status"], "security": none,
            "responses": {"200": response("Component status", object(json!({
                "status": object(json!({"http": {"type": "boolean"}, "db": {"type": "boolean"}, "redis": {"type": "boolean"}}), &["http", "db", "redis"]),
            }), &["status"]))},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics: requests by route and status, latency histograms", "tags": ["Status"], "security": none,
            "responses": {"200": {"description": "Prometheus text format", "headers": {"x-request-id": {"$ref": REQUEST_ID}}, "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "summary": "This document", "tags": ["Status"], "security": none,
            "responses": {"200": response("The OpenAPI 3.1 document", json!({"type": "object"}))},
        }},
        "/docs/": {"get": {
            "summary": "Swagger UI for this document (works offline)", "tags": ["Status"], "security": none,
            "responses": {"200": {"description": "The Swagger UI page", "headers": {"x-request-id": {"$ref": REQUEST_ID}}, "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
        "/account/create": {"post": operation(x, "Create an account (server-held wallet, XMTP identity, first API key)", "Account", &public,
            ("200", response("Created; the api_key is shown only once", ok_object(json!({
                "api_key": {"type": "string", "pattern": "^clx_[0-9a-f]{48}$"},
                "wallet_address": {"type": "string"},
                "xmtp_inbox_id": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "message": {"const": "Account created. Save your api_key!"},
            }), &["api_key", "wallet_address", "xmtp_inbox_id", "message"]))), NONE, &[])},
        "/account/register": {"post": with_body(operation(x, "Claim a handle and set the profile (once)", "Account", &authed,
            ("200", response("Registered", ok_object(json!({
                "handle": {"type": "string"}, "wallet_address": {"type": "string"}, "profile_url": {"type": "string"},
            }), &["handle", "wallet_address", "profile_url"]))),
            Errors { body: true, auth: true, conflict: true, ..NONE },
            &[("409", "Handle taken (`HANDLE_TAKEN`) or account already registered (`ALREADY_REGISTERED`)")]),
            object(register, &["handle", "name"]))},
        "/account/me": {
            "get": operation(x, "Your account", "Account", &authed, ("200", response("Your profile", schema_ref("ProfileResponse"))), Errors { auth: true, ..NONE }, &[]),
            "patch": with_body(operation(x, "Update your profile (null clears a field)", "Account", &authed,
                ("200", response("The updated profile", schema_ref("ProfileResponse"))),
                Errors { body: true, auth: true, ..NONE }, &[("403", "Register a handle first (`NOT_REGISTERED`)")]),
                object(update, &[])),
        },
        "/account/keys": {
            "get": operation(x, "Your API keys (never the keys themselves)", "Account", &authed,
                ("200", response("Keys", ok_object(json!({"keys": {"type": "array", "items": schema_ref("ApiKey")}}), &["keys"]))), Errors { auth: true, ..NONE }, &[]),
            "post": with_body(operation(x, "Create another API key (shown once; needs an API key)", "Account", &key_only,
                ("200", response("Created", ok_object(json!({
                    "id": {"type": "string"}, "name": {"type": "string"}, "prefix": {"type": "string"}, "api_key": {"type": "string"},
                }), &["id", "name", "prefix", "api_key"]))),
                Errors { body: true, auth: true, ..NONE }, &[api_key_required, ("409", "Too many keys (`LIMIT_EXCEEDED`)")]), key_name.clone()),
        },
        "/account/keys/{id}": {"delete": with_parameters(operation(x, "Revoke an API key (takes effect at once; needs an API key)", "Account", &key_only,
            ("204", no_content("Revoked")), Errors { auth: true, not_found: true, ..NONE }, &[api_key_required, ("400", "The account's last key (`LAST_KEY`)")]),
            json!([path_parameter("id", json!({"type": "string"}), "Key id")]))},
        "/account/wallets/challenge": {"get": with_parameters(operation(x, "A single-use EIP-4361 message proving control of a wallet", "Account", &authed,
            ("200", response("Sign `message` with personal_sign, then POST /account/wallets", ok_object(json!({
                "message": {"type": "string"}, "nonce": {"type": "string"}, "expiresAt": {"type": "integer", "description": "Unix milliseconds"},
            }), &["message", "nonce", "expiresAt"]))), Errors { auth: true, ..NONE }, &[]),
            json!([query_parameter("address", true, string(ADDRESS_PATTERN, 42), "The wallet to link")]))},
        "/account/wallets": {
            "get": operation(x, "Your linked wallets", "Account", &authed,
                ("200", response("Wallets", ok_object(json!({"wallets": {"type": "array", "items": schema_ref("LinkedWallet")}}), &["wallets"]))), Errors { auth: true, ..NONE }, &[]),
            "post": with_body(operation(x, "Link a wallet with a signed challenge (needs an API key)", "Account", &key_only,
                ("200", response("Linked", ok_object(json!({"address": {"type": "string"}, "linked_at": {"type": "string"}}), &["address", "linked_at"]))),
                Errors { body: true, auth: true, ..NONE },
                &[api_key_required,
                  ("400", "Invalid input, or the challenge is unknown, used, expired (`CHALLENGE_INVALID`, `CHALLENGE_EXPIRED`) or not signed by the wallet"),
                  ("409", "Linked to another account (`WALLET_ALREADY_LINKED`) or too many wallets (`LIMIT_EXCEEDED`)")]),
                object(json!({"address": string(ADDRESS_PATTERN, 42), "message": {"type": "string", "maxLength": 2000}, "signature": string(SIGNATURE_PATTERN, 132)}), &["address", "message", "signature"])),
        },
        "/account/wallets/{address}": {"delete": with_parameters(operation(x, "Unlink a wallet (its signed requests stop working at once; needs an API key)", "Account", &key_only,
            ("204", no_content("Unlinked")), Errors { auth: true, not_found: true, ..NONE }, &[api_key_required]),
            json!([path_parameter("address", json!({"type": "string"}), "The linked wallet")]))},
        "/account/domains": {
            "get": operation(x, "Domain names your account answers to in signed requests", "Account", &authed,
                ("200", response("Domains", ok_object(json!({"domains": {"type": "array", "items": schema_ref("Domain")}}), &["domains"]))), Errors { auth: true, ..NONE }, &[]),
            "post": with_body(operation(x, "Claim a domain name (needs an API key)", "Account", &key_only,
                ("200", response("Claimed", ok_object(json!({"name": {"type": "string"}, "claimed_at": {"type": "string"}}), &["name", "claimed_at"]))),
                Errors { body: true, auth: true, ..NONE }, &[api_key_required, ("409", "Claimed by another account (`CONFLICT`) or too many (`LIMIT_EXCEEDED`)")]),
                object(json!({"name": {"type": "string", "pattern": DOMAIN_PATTERN, "minLength": 3, "maxLength": 253}}), &["name"])),
        },
        "/account/domains/{name}": {"delete": with_parameters(operation(x, "Release a domain name (needs an API key)", "Account", &key_only,
            ("204", no_content("Released")), Errors { auth: true, not_found: true, ..NONE }, &[api_key_required]),
            json!([path_parameter("name", json!({"type": "string"}), "The domain")]))},
        "/users": {"get": with_parameters(operation(x, "Registered users", "Users", &public,
            ("200", response("Users, oldest first", ok_object(json!({"users": {"type": "array", "items": schema_ref("Profile")}}), &["users"]))), NONE, &[]),
            json!([
                query_parameter("limit", false, json!({"type": "integer", "minimum": 0, "maximum": 4_294_967_295u64, "default": 50}), "Page size (capped at 200)"),
                query_parameter("offset", false, json!({"type": "integer", "minimum": 0, "maximum": 4_294_967_295u64, "default": 0}), "Users to skip"),
                query_parameter("search", false, json!({"type": "string", "maxLength": 100}), "Substring of the handle or the name, case-insensitive"),
            ]))},
        "/users/{handle}": {"get": with_parameters(operation(x, "A user by handle", "Users", &public,
            ("200", response("The user", schema_ref("ProfileResponse"))), Errors { not_found: true, ..NONE }, &[]),
            json!([path_parameter("handle", json!({"type": "string"}), "The handle (any case)")]))},
        "/api/user/{domain}/signature": {"get": with_parameters(operation("Messaging", "The message a wallet signs for signed-expiry requests", "Authentication", &public,
            ("200", response("Sign `message` (UTF-8) with personal_sign and send it as x-auth-signature with these headers", object(json!({
                "message": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "headers": object(json!({"x-auth-domain": {"type": "string"}, "x-auth-expires": {"type": "string"}}), &["x-auth-domain", "x-auth-expires"]),
            }), &["message", "headers"]))),
            Errors { not_found: true, ..NONE }, &[("400", "expiry missing, not in the future or too far ahead; device not a boolean")]),
            json!([
                path_parameter("domain", json!({"type": "string"}), "An account's handle or claimed domain"),
                query_parameter("expiry", true, json!({"type": "integer", "minimum": 0}), "Unix milliseconds, in the future and within the signature horizon (30 days by default)"),
                query_parameter("device", false, json!({"type": "boolean"}), "Whether the signature is kept on a device"),
            ]))},
    })
}

/// Adds an OpenAPI link from a success response to the operation that removes what it made.
fn link(paths: &mut Value, from: (&str, &str, &str), to_operation: &str, parameter: &str, pointer: &str) {
    let (path, method, status) = from;
    paths[path][method]["responses"][status]["links"] = json!({
        to_operation: {"operationId": to_operation, "parameters": {parameter: format!("$response.body#{pointer}")}},
    });
}

/// Gives every operation an id (`<method><Path>`), for links and client generators.
fn name_operations(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            let mut id = method.clone();
            for segment in path.split(['/', '-', '{', '}', '_']).filter(|segment| !segment.is_empty()) {
                let mut characters = segment.chars();
                if let Some(first) = characters.next() {
                    id.push(first.to_ascii_uppercase());
                    id.extend(characters);
                }
            }
            operation["operationId"] = Value::String(id);
        }
    }
}

/// The whole document.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut paths = paths();
        name_operations(&mut paths);
        link(&mut paths, ("/account/keys", "post", "200"), "deleteAccountKeysId", "id", "/id");
        link(&mut paths, ("/account/wallets", "post", "200"), "deleteAccountWalletsAddress", "address", "/address");
        link(&mut paths, ("/account/domains", "post", "200"), "deleteAccountDomainsName", "name", "/name");
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Clawx",
                "version": clawx_common::VERSION,
                "description": "Messaging, identity and verification for AI agents. Errors carry a human `error` and a machine `code`; \
                    ClawXmtp paths (/account, /users, /messages, /groups) add `ok: false`, verification paths (/agents, /verify) add `statusCode`.",
            },
            "tags": [
                {"name": "Account", "description": "Your account, keys, wallets and domains"},
                {"name": "Users", "description": "The public directory"},
                {"name": "Authentication", "description": "Signed-expiry requests"},
                {"name": "Status", "description": "Health and status"},
            ],
            "paths": paths,
            "components": components(),
        })
    })
}

/// `GET /openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec().clone())
}

/// Swagger UI at `/docs`, reading `/openapi.json`.
pub fn swagger_ui() -> Router<Arc<Gateway>> {
    let ui = utoipa_swagger_ui::SwaggerUi::new("/docs").external_url_unchecked("/docs/openapi.json", spec().clone());
    Router::from(ui)
}
