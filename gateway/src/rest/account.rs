//! `/account/*`, `/users*` and `/api/user/{domain}/signature`: the identity service's REST face.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use clawx_proto::identity as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    extract::{Account, Caller, JsonBody, PathParam, QueryParams, nullable},
    views,
};
use crate::{Gateway, error::ApiError, upstream::Upstream};

type Reply = Result<Json<Value>, ApiError>;

pub async fn create(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &principal, pb::CreateAccountRequest {});
    let created = gateway.upstreams.identity().create_account(request).await?.into_inner();
    Ok(Json(json!({
        "ok": true,
        "api_key": created.api_key,
        "wallet_address": created.wallet_address,
        "xmtp_inbox_id": created.xmtp_inbox_id,
        "message": "Account created. Save your api_key!",
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    handle: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    x_url: Option<String>,
    #[serde(default)]
    github_url: Option<String>,
    #[serde(default)]
    website_url: Option<String>,
}

pub async fn register(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<RegisterBody>) -> Reply {
    let message = pb::RegisterHandleRequest {
        handle: body.handle,
        name: body.name,
        description: body.description,
        x_url: body.x_url,
        github_url: body.github_url,
        website_url: body.website_url,
    };
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, message);
    let registered = gateway.upstreams.identity().register_handle(request).await?.into_inner();
    Ok(Json(json!({
        "ok": true,
        "handle": registered.handle,
        "wallet_address": registered.wallet_address,
        "profile_url": format!("/users/{}", registered.handle),
    })))
}

pub async fn me(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::GetMeRequest {});
    let profile = gateway.upstreams.identity().get_me(request).await?.into_inner();
    Ok(Json(views::ok_with(views::profile(profile))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    x_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    github_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    website_url: Option<Option<String>>,
}

/// `null` clears a field: sent to the service as an empty string.
fn clearable(value: Option<Option<String>>) -> Option<String> {
    value.map(Option::unwrap_or_default)
}

pub async fn update_me(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<UpdateBody>) -> Reply {
    let name = match body.name {
        Some(None) => return Err(ApiError::invalid("name", "name cannot be cleared")),
        Some(Some(name)) => Some(name),
        None => None,
    };
    let message = pb::UpdateMeRequest {
        name,
        description: clearable(body.description),
        x_url: clearable(body.x_url),
        github_url: clearable(body.github_url),
        website_url: clearable(body.website_url),
    };
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, message);
    let profile = gateway.upstreams.identity().update_me(request).await?.into_inner();
    Ok(Json(views::ok_with(views::profile(profile))))
}

#[derive(Deserialize)]
pub struct UsersQuery {
    limit: Option<u32>,
    offset: Option<u32>,
    search: Option<String>,
}

pub async fn users(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, QueryParams(query): QueryParams<UsersQuery>) -> Reply {
    let message = pb::ListUsersRequest { limit: query.limit, offset: query.offset.unwrap_or(0), search: query.search.unwrap_or_default() };
    let request = gateway.upstreams.request(Upstream::Identity, &principal, message);
    let users = gateway.upstreams.identity().list_users(request).await?.into_inner().users;
    let users: Vec<Value> = users.into_iter().map(|user| Value::Object(views::profile(user))).collect();
    Ok(Json(json!({"ok": true, "users": users})))
}

pub async fn user(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, PathParam(handle): PathParam<String>) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &principal, pb::GetUserRequest { handle });
    let profile = gateway.upstreams.identity().get_user(request).await?.into_inner();
    Ok(Json(views::ok_with(views::profile(profile))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    name: String,
}

pub async fn create_key(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<NameBody>) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::CreateApiKeyRequest { name: body.name });
    let created = gateway.upstreams.identity().create_api_key(request).await?.into_inner();
    let key = created.key.unwrap_or_default();
    Ok(Json(json!({"ok": true, "id": key.id, "name": key.name, "prefix": key.prefix, "api_key": created.api_key})))
}

pub async fn keys(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::ListApiKeysRequest {});
    let keys = gateway.upstreams.identity().list_api_keys(request).await?.into_inner().keys;
    Ok(Json(json!({"ok": true, "keys": keys.into_iter().map(views::api_key).collect::<Vec<_>>()})))
}

pub async fn revoke_key(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Result<StatusCode, ApiError> {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::RevokeApiKeyRequest { id });
    gateway.upstreams.identity().revoke_api_key(request).await?;
    gateway.auth_cache.revoke_account(account.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ChallengeQuery {
    address: Option<String>,
}

pub async fn wallet_challenge(State(gateway): State<Arc<Gateway>>, account: Account, QueryParams(query): QueryParams<ChallengeQuery>) -> Reply {
    let address = query.address.ok_or_else(|| ApiError::invalid("address", "address is required"))?;
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::GetWalletChallengeRequest { address });
    let challenge = gateway.upstreams.identity().get_wallet_challenge(request).await?.into_inner();
    Ok(Json(json!({"ok": true, "message": challenge.message, "nonce": challenge.nonce, "expiresAt": challenge.expires_at_ms})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    address: String,
    message: String,
    signature: String,
}

pub async fn link_wallet(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<LinkBody>) -> Reply {
    let message = pb::LinkWalletRequest { address: body.address, message: body.message, signature: body.signature };
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, message);
    let linked = gateway.upstreams.identity().link_wallet(request).await?.into_inner();
    Ok(Json(views::ok_with(views::wallet(linked))))
}

pub async fn wallets(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::ListWalletsRequest {});
    let wallets = gateway.upstreams.identity().list_wallets(request).await?.into_inner().wallets;
    Ok(Json(json!({"ok": true, "wallets": wallets.into_iter().map(views::wallet).map(Value::Object).collect::<Vec<_>>()})))
}

pub async fn unlink_wallet(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(address): PathParam<String>) -> Result<StatusCode, ApiError> {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::UnlinkWalletRequest { address });
    gateway.upstreams.identity().unlink_wallet(request).await?;
    gateway.auth_cache.revoke_account(account.id);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn claim_domain(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<NameBody>) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::ClaimDomainRequest { name: body.name });
    let domain = gateway.upstreams.identity().claim_domain(request).await?.into_inner();
    Ok(Json(views::ok_with(views::domain(domain))))
}

pub async fn domains(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::ListDomainsRequest {});
    let domains = gateway.upstreams.identity().list_domains(request).await?.into_inner().domains;
    Ok(Json(json!({"ok": true, "domains": domains.into_iter().map(views::domain).map(Value::Object).collect::<Vec<_>>()})))
}

pub async fn release_domain(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(name): PathParam<String>) -> Result<StatusCode, ApiError> {
    let request = gateway.upstreams.request(Upstream::Identity, &account.principal, pb::ReleaseDomainRequest { name });
    gateway.upstreams.identity().release_domain(request).await?;
    gateway.auth_cache.revoke_account(account.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SignatureQuery {
    expiry: Option<String>,
    device: Option<String>,
}

pub async fn signature_message(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    PathParam(domain): PathParam<String>,
    QueryParams(query): QueryParams<SignatureQuery>,
) -> Reply {
    let expiry_text = query.expiry.ok_or_else(|| ApiError::invalid("expiry", "expiry is required (Unix milliseconds)"))?;
    let expiry: i64 = expiry_text
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid("expiry", "expiry must be a Unix timestamp in milliseconds"))?;
    let device = match query.device.as_deref().map(str::trim) {
        None | Some("") => false,
        Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => return Err(ApiError::invalid("device", "device must be true or false")),
    };
    let request = gateway.upstreams.request(Upstream::Identity, &principal, pb::GetSignatureMessageRequest { domain, expiry, device });
    let message = gateway.upstreams.identity().get_signature_message(request).await?.into_inner();
    Ok(Json(json!({
        "message": message.message,
        "headers": {"x-auth-domain": message.domain, "x-auth-expires": message.expiry.to_string()},
    })))
}
