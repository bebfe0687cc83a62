//! `/account/*`, `/users*` and `/api/user/{domain}/signature`: the identity service's REST face.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{delete, get, patch, post},
};
use clawx_proto::identity as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    extract::{Account, Caller, JsonBody, PathParam, QueryParams, nullable},
    guarded, views,
};
use crate::{error::ApiError, guard::Gateway};

type Reply = Result<Json<Value>, ApiError>;

/// The identity service's routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> Router<Arc<Gateway>> {
    let guarded = |rpc, route| guarded(gateway, rpc, route);
    Router::new()
        .route("/account/create", guarded("/clawx.identity.v1.IdentityService/CreateAccount", post(create)))
        .route("/account/register", guarded("/clawx.identity.v1.IdentityService/RegisterHandle", post(register)))
        .route("/account/me", guarded("/clawx.identity.v1.IdentityService/GetMe", get(me)))
        .route("/account/me", guarded("/clawx.identity.v1.IdentityService/UpdateMe", patch(update_me)))
        .route("/account/keys", guarded("/clawx.identity.v1.IdentityService/ListApiKeys", get(keys)))
        .route("/account/keys", guarded("/clawx.identity.v1.IdentityService/CreateApiKey", post(create_key)))
        .route("/account/keys/{id}", guarded("/clawx.identity.v1.IdentityService/RevokeApiKey", delete(revoke_key)))
        .route("/account/wallets/challenge", guarded("/clawx.identity.v1.IdentityService/GetWalletChallenge", get(wallet_challenge)))
        .route("/account/wallets", guarded("/clawx.identity.v1.IdentityService/ListWallets", get(wallets)))
        .route("/account/wallets", guarded("/clawx.identity.v1.IdentityService/LinkWallet", post(link_wallet)))
        .route("/account/wallets/{address}", guarded("/clawx.identity.v1.IdentityService/UnlinkWallet", delete(unlink_wallet)))
        .route("/account/domains", guarded("/clawx.identity.v1.IdentityService/ListDomains", get(domains)))
        .route("/account/domains", guarded("/clawx.identity.v1.IdentityService/ClaimDomain", post(claim_domain)))
        .route("/account/domains/{name}", guarded("/clawx.identity.v1.IdentityService/ReleaseDomain", delete(release_domain)))
        .route("/users", guarded("/clawx.identity.v1.IdentityService/ListUsers", get(users)))
        .route("/users/{handle}", guarded("/clawx.identity.v1.IdentityService/GetUser", get(user)))
        .route("/api/user/{domain}/signature", guarded("/clawx.identity.v1.IdentityService/GetSignatureMessage", get(signature_message)))
}

pub async fn create(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller) -> Reply {
    let created = gateway.identity(&principal).create_account(pb::CreateAccountRequest {}).await?.into_inner();
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
    let registered = gateway.identity(&account.principal).register_handle(message).await?.into_inner();
    Ok(Json(json!({
        "ok": true,
        "handle": registered.handle,
        "wallet_address": registered.wallet_address,
        "profile_url": format!("/users/{}", registered.handle),
    })))
}

pub async fn me(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let profile = gateway.identity(&account.principal).get_me(pb::GetMeRequest {}).await?.into_inner();
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
    let profile = gateway.identity(&account.principal).update_me(message).await?.into_inner();
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
    let users = gateway.identity(&principal).list_users(message).await?.into_inner().users;
    let users: Vec<Value> = users.into_iter().map(|user| Value::Object(views::profile(user))).collect();
    Ok(Json(json!({"ok": true, "users": users})))
}

pub async fn user(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, PathParam(handle): PathParam<String>) -> Reply {
    let profile = gateway.identity(&principal).get_user(pb::GetUserRequest { handle }).await?.into_inner();
    Ok(Json(views::ok_with(views::profile(profile))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    name: String,
}

pub async fn create_key(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<NameBody>) -> Reply {
    let created = gateway.identity(&account.principal).create_api_key(pb::CreateApiKeyRequest { name: body.name }).await?.into_inner();
    let key = created.key.unwrap_or_default();
    Ok(Json(json!({"ok": true, "id": key.id, "name": key.name, "prefix": key.prefix, "api_key": created.api_key})))
}

pub async fn keys(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let keys = gateway.identity(&account.principal).list_api_keys(pb::ListApiKeysRequest {}).await?.into_inner().keys;
    Ok(Json(json!({"ok": true, "keys": keys.into_iter().map(views::api_key).collect::<Vec<_>>()})))
}

pub async fn revoke_key(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Result<StatusCode, ApiError> {
    gateway.identity(&account.principal).revoke_api_key(pb::RevokeApiKeyRequest { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ChallengeQuery {
    address: Option<String>,
}

pub async fn wallet_challenge(State(gateway): State<Arc<Gateway>>, account: Account, QueryParams(query): QueryParams<ChallengeQuery>) -> Reply {
    let address = query.address.ok_or_else(|| ApiError::invalid("address", "address is required"))?;
    let challenge = gateway.identity(&account.principal).get_wallet_challenge(pb::GetWalletChallengeRequest { address }).await?.into_inner();
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
    let linked = gateway.identity(&account.principal).link_wallet(message).await?.into_inner();
    Ok(Json(views::ok_with(views::wallet(linked))))
}

pub async fn wallets(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let wallets = gateway.identity(&account.principal).list_wallets(pb::ListWalletsRequest {}).await?.into_inner().wallets;
    Ok(Json(json!({"ok": true, "wallets": wallets.into_iter().map(views::wallet).map(Value::Object).collect::<Vec<_>>()})))
}

pub async fn unlink_wallet(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(address): PathParam<String>) -> Result<StatusCode, ApiError> {
    gateway.identity(&account.principal).unlink_wallet(pb::UnlinkWalletRequest { address }).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn claim_domain(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<NameBody>) -> Reply {
    let domain = gateway.identity(&account.principal).claim_domain(pb::ClaimDomainRequest { name: body.name }).await?.into_inner();
    Ok(Json(views::ok_with(views::domain(domain))))
}

pub async fn domains(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply {
    let domains = gateway.identity(&account.principal).list_domains(pb::ListDomainsRequest {}).await?.into_inner().domains;
    Ok(Json(json!({"ok": true, "domains": domains.into_iter().map(views::domain).map(Value::Object).collect::<Vec<_>>()})))
}

pub async fn release_domain(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(name): PathParam<String>) -> Result<StatusCode, ApiError> {
    gateway.identity(&account.principal).release_domain(pb::ReleaseDomainRequest { name }).await?;
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
    let message = gateway.identity(&principal).get_signature_message(pb::GetSignatureMessageRequest { domain, expiry, device }).await?.into_inner();
    Ok(Json(json!({
        "message": message.message,
        "headers": {"x-auth-domain": message.domain, "x-auth-expires": message.expiry.to_string()},
    })))
}
