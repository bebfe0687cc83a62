//! The OpenAPI 3.1 document (`/openapi.json`) and Swagger UI (`/docs`, assets vendored into the
//! binary, so it works offline).
//!
//! Operations, bodies and their patterns come from the handlers' `#[utoipa::path]`
//! declarations and the types that serve the responses (see [`super::types`]). This file adds
//! what every operation shares: the document's header, the security schemes, the error shape of
//! each API family, the errors any guarded operation can answer (bad input, credentials, rate
//! limits, an unavailable service), the request-id header on every response, and operation ids.

use std::sync::Arc;

use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};

use crate::{error::Family, guard::Gateway};

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "Status", summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn document(Extension(document): Extension<Arc<Value>>) -> Json<Value> {
    Json(document.as_ref().clone())
}

/// Swagger UI at `/docs`, reading `/openapi.json`.
pub fn swagger_ui(document: &Value) -> Router<Arc<Gateway>> {
    let ui = utoipa_swagger_ui::SwaggerUi::new("/docs").external_url_unchecked("/docs/openapi.json", document.clone());
    Router::from(ui)
}

const REQUEST_ID: &str = "#/components/headers/RequestId";
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn family_name(path: &str) -> &'static str {
    match Family::of_path(path) {
        Family::ClawXmtp => "ClawXmtp",
        Family::Verification => "Verification",
        Family::Messaging => "Messaging",
    }
}

fn error_schema(properties: Value, required: &[&str]) -> Value {
    let mut all = json!({
        "error": {"type": "string", "description": "Human-readable message"},
        "code": {"type": "string", "description": "Machine-readable code, e.g. NOT_FOUND"},
        "field": {"type": "string", "description": "The request field at fault (validation errors)"},
    });
    all.as_object_mut().expect("an object").extend(properties.as_object().cloned().unwrap_or_default());
    let mut names = vec!["error", "code"];
    names.extend_from_slice(required);
    json!({"type": "object", "properties": all, "required": names, "additionalProperties": false})
}

fn components() -> Value {
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
            "ClawXmtpError": error_schema(json!({"ok": {"type": "boolean", "enum": [false]}}), &["ok"]),
            "VerificationError": error_schema(json!({"statusCode": {"type": "integer"}}), &["statusCode"]),
            "MessagingError": error_schema(json!({}), &[]),
        },
    })
}

/// The errors every guarded operation may answer, added where the handler declared none.
fn add_shared_errors(operation: &mut Map<String, Value>, family: &str) {
    let has_body = operation.contains_key("requestBody");
    let public = operation["security"].as_array().is_some_and(|alternatives| alternatives.iter().any(|alternative| alternative == &json!({})));
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{family}Error")}}}});
    let responses = operation.entry("responses").or_insert_with(|| json!({})).as_object_mut().expect("responses are an object");
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| error(description));
    };
    if has_body {
        add("400", "Invalid input (`VALIDATION_FAILED` naming the field, `INVALID_JSON`)");
        add("413", "Body over the size limit (`PAYLOAD_TOO_LARGE`)");
        add("415", "Body is not JSON (`UNSUPPORTED_MEDIA_TYPE`)");
    }
    if public {
        add("401", "Invalid credentials were sent (`UNAUTHORIZED`, `SIGNATURE_*`, `DOMAIN_NOT_FOUND`)");
    } else {
        add("401", "Missing or invalid credentials (`UNAUTHORIZED`, `SIGNATURE_*`, `DOMAIN_NOT_FOUND`)");
    }
    add("400", "Invalid query or path parameter (`VALIDATION_FAILED`)");
    add("503", "A backing service is unavailable (`UNAVAILABLE`)");
    let mut limited = error("Rate limited (`RATE_LIMITED`)");
    limited["headers"] = json!({"retry-after": {"description": "Seconds to wait", "required": true, "schema": {"type": "string"}}});
    responses.insert("429".into(), limited);
}

/// Every response carries `x-request-id`; every error response has its family's shape.
fn settle_responses(operation: &mut Map<String, Value>, family: &str) {
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else { continue };
        let headers = response.entry("headers").or_insert_with(|| json!({})).as_object_mut().expect("headers are an object");
        headers.insert("x-request-id".into(), json!({"$ref": REQUEST_ID}));
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && !response.contains_key("content") {
            response.insert("content".into(), json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{family}Error")}}}));
        }
    }
}

/// `<method><Path>`, e.g. `deleteAccountKeysId`, for links and client generators.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for segment in path.split(['/', '-', '{', '}', '_']).filter(|segment| !segment.is_empty()) {
        let mut characters = segment.chars();
        if let Some(first) = characters.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(characters);
        }
    }
    id
}

/// Clawx bodies carry no fields beyond those declared: every object schema says so.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.contains_key("properties") && !object.contains_key("additionalProperties") {
                object.insert("additionalProperties".into(), Value::Bool(false));
            }
            object.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The whole document: the operations the routes declared, and what they share.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    let mut document = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    let mut paths = document.get_mut("paths").and_then(Value::as_object_mut).map(std::mem::take).unwrap_or_default();
    for (path, item) in paths.iter_mut() {
        let family = family_name(path);
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut().filter(|(method, _)| METHODS.contains(&method.as_str())) {
            let Some(operation) = operation.as_object_mut() else { continue };
            operation.insert("operationId".into(), Value::String(operation_id(method, path)));
            if operation.get("security").and_then(Value::as_array).is_some_and(|security| !security.is_empty()) {
                add_shared_errors(operation, family);
            } else {
                operation.insert("security".into(), json!([]));
            }
            settle_responses(operation, family);
        }
    }
    paths.insert(
        "/docs/".into(),
        json!({"get": {
            "summary": "Swagger UI for this document (works offline)", "tags": ["Status"], "security": [], "operationId": "getDocs",
            "responses": {"200": {"description": "The Swagger UI page", "headers": {"x-request-id": {"$ref": REQUEST_ID}}, "content": {"text/html": {"schema": {"type": "string"}}}}},
        }}),
    );
    let mut components = components();
    if let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object) {
        components["schemas"].as_object_mut().expect("schemas").extend(schemas.clone());
    }
    let mut document = json!({
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
            {"name": "Messages", "description": "Direct messages, your inbox, conversation histories and the live stream"},
            {"name": "Chat", "description": "Consent (accept, block) and the spam check, in the Unstoppable-style /xmtp paths"},
            {"name": "Authentication", "description": "Signed-expiry requests"},
            {"name": "Verification", "description": "Agents, and proving who runs one with a public tweet"},
            {"name": "Status", "description": "Health and status"},
        ],
        "paths": paths,
        "components": components,
    });
    close_objects(&mut document);
    document
}
