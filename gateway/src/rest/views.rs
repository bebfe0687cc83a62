//! JSON views of service replies, in the seeds' field names and formats.

use clawx_common::time::format_sql_datetime;
use clawx_proto::identity as pb;
use serde_json::{Map, Value, json};

/// A profile as the ClawXmtp family shows it (flat, snake_case, `YYYY-MM-DD HH:MM:SS`).
pub fn profile(profile: pb::Profile) -> Map<String, Value> {
    object(json!({
        "id": profile.id,
        "wallet_address": profile.wallet_address,
        "handle": profile.handle,
        "name": profile.name,
        "description": profile.description,
        "x_url": profile.x_url,
        "github_url": profile.github_url,
        "website_url": profile.website_url,
        "xmtp_inbox_id": profile.xmtp_inbox_id,
        "created_at": format_sql_datetime(profile.created_at_ms),
        "verified": profile.verified,
        "twitter_username": profile.twitter_username,
    }))
}

/// `{"ok": true, ...fields}`.
pub fn ok_with(fields: Map<String, Value>) -> Value {
    let mut body = Map::with_capacity(fields.len() + 1);
    body.insert("ok".into(), Value::Bool(true));
    body.extend(fields);
    Value::Object(body)
}

pub fn api_key(key: pb::ApiKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": format_sql_datetime(key.created_at_ms),
        "last_used_at": key.last_used_at_ms.map(format_sql_datetime),
    })
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal"),
    }
}

pub fn wallet(wallet: pb::LinkedWallet) -> Map<String, Value> {
    object(json!({"address": wallet.address, "linked_at": format_sql_datetime(wallet.linked_at_ms)}))
}

pub fn domain(domain: pb::Domain) -> Map<String, Value> {
    object(json!({"name": domain.name, "claimed_at": format_sql_datetime(domain.claimed_at_ms)}))
}
