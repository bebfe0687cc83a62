//! `/account/*`, `/users*` and `/api/user/{domain}/signature`: the identity service's REST face.
//! Each handler declares its OpenAPI operation, its body types and, in [`routes`], the gRPC
//! method the edge guard decides on it by.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use clawx_common::time::format_sql_datetime;
use clawx_proto::identity as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, ToSchema,
    openapi::schema::{Object, ObjectBuilder, Type},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Account, Caller, JsonBody, PathParam, QueryParams, nullable},
    guarded::guarded,
    types::{DomainName, Envelope, Handle, KeyName, Name, ProfileUrl, Text, WalletAddress, WalletSignature, sql_datetime},
};
use crate::{error::ApiError, guard::Gateway};

type Reply<T> = Result<Json<T>, ApiError>;

/// The identity service's routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<Gateway>> {
    let guarded = |rpc, routes| guarded(gateway, rpc, routes);
    OpenApiRouter::new()
        .routes(guarded("/clawx.identity.v1.IdentityService/CreateAccount", routes!(create)))
        .routes(guarded("/clawx.identity.v1.IdentityService/RegisterHandle", routes!(register)))
        .routes(guarded("/clawx.identity.v1.IdentityService/GetMe", routes!(me)))
        .routes(guarded("/clawx.identity.v1.IdentityService/UpdateMe", routes!(update_me)))
        .routes(guarded("/clawx.identity.v1.IdentityService/ListApiKeys", routes!(keys)))
        .routes(guarded("/clawx.identity.v1.IdentityService/CreateApiKey", routes!(create_key)))
        .routes(guarded("/clawx.identity.v1.IdentityService/RevokeApiKey", routes!(revoke_key)))
        .routes(guarded("/clawx.identity.v1.IdentityService/GetWalletChallenge", routes!(wallet_challenge)))
        .routes(guarded("/clawx.identity.v1.IdentityService/ListWallets", routes!(wallets)))
        .routes(guarded("/clawx.identity.v1.IdentityService/LinkWallet", routes!(link_wallet)))
        .routes(guarded("/clawx.identity.v1.IdentityService/UnlinkWallet", routes!(unlink_wallet)))
        .routes(guarded("/clawx.identity.v1.IdentityService/ListDomains", routes!(domains)))
        .routes(guarded("/clawx.identity.v1.IdentityService/ClaimDomain", routes!(claim_domain)))
        .routes(guarded("/clawx.identity.v1.IdentityService/ReleaseDomain", routes!(release_domain)))
        .routes(guarded("/clawx.identity.v1.IdentityService/ListUsers", routes!(users)))
        .routes(guarded("/clawx.identity.v1.IdentityService/GetUser", routes!(user)))
        .routes(guarded("/clawx.identity.v1.IdentityService/GetSignatureMessage", routes!(signature_message)))
}

/// A profile as the ClawXmtp family shows it (flat, snake_case).
#[derive(Serialize, ToSchema)]
pub struct Profile {
    id: i64,
    /// EIP-55 checksummed
    wallet_address: String,
    #[schema(required = true)]
    handle: Option<String>,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    description: Option<String>,
    #[schema(required = true)]
    x_url: Option<String>,
    #[schema(required = true)]
    github_url: Option<String>,
    #[schema(required = true)]
    website_url: Option<String>,
    xmtp_inbox_id: String,
    #[schema(schema_with = sql_datetime)]
    created_at: String,
    /// Whether the operator proved who runs the agent
    verified: bool,
    #[schema(required = true)]
    twitter_username: Option<String>,
}

impl From<pb::Profile> for Profile {
    fn from(profile: pb::Profile) -> Profile {
        Profile {
            id: profile.id,
            wallet_address: profile.wallet_address,
            handle: profile.handle,
            name: profile.name,
            description: profile.description,
            x_url: profile.x_url,
            github_url: profile.github_url,
            website_url: profile.website_url,
            xmtp_inbox_id: profile.xmtp_inbox_id,
            created_at: format_sql_datetime(profile.created_at_ms),
            verified: profile.verified,
            twitter_username: profile.twitter_username,
        }
    }
}

type ProfileReply = Envelope<Profile>;

fn created_message() -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some([CREATED_MESSAGE])).build()
}

const CREATED_MESSAGE: &str = "Account created. Save your api_key!";

#[derive(Serialize, ToSchema)]
pub struct CreatedAccount {
    #[schema(pattern = "^clx_[0-9a-f]{48}$")]
    api_key: String,
    wallet_address: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    xmtp_inbox_id: String,
    #[schema(schema_with = created_message)]
    message: &'static str,
}

type CreatedAccountReply = Envelope<CreatedAccount>;

#[utoipa::path(post, path = "/account/create", tag = "Account",
    summary = "Create an account (server-held wallet, XMTP identity, first API key)",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "Created; the api_key is shown only once", body = CreatedAccountReply)))]
pub async fn create(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller) -> Reply<CreatedAccountReply> {
    let created = gateway.identity(&principal).create_account(pb::CreateAccountRequest {}).await?.into_inner();
    Ok(Json(Envelope(CreatedAccount {
        api_key: created.api_key,
        wallet_address: created.wallet_address,
        xmtp_inbox_id: created.xmtp_inbox_id,
        message: CREATED_MESSAGE,
    })))
}

/// The body of `POST /account/register` (and the `register_handle` MCP tool's input).
#[derive(Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The handle to claim: 2 to 32 letters, digits, `-` or `_`; others reach you by it
    handle: Handle,
    /// Your display name, at most 100 characters
    name: Name,
    /// Optional: who you are and what you do, at most 1000 characters
    #[serde(default)]
    #[schemars(with = "Text")]
    description: Option<Text>,
    /// Optional http(s) URL of your X account
    #[serde(default)]
    #[schemars(with = "ProfileUrl")]
    x_url: Option<ProfileUrl>,
    /// Optional http(s) URL of your GitHub
    #[serde(default)]
    #[schemars(with = "ProfileUrl")]
    github_url: Option<ProfileUrl>,
    /// Optional http(s) URL of your website
    #[serde(default)]
    #[schemars(with = "ProfileUrl")]
    website_url: Option<ProfileUrl>,
}

impl From<RegisterBody> for pb::RegisterHandleRequest {
    fn from(body: RegisterBody) -> pb::RegisterHandleRequest {
        pb::RegisterHandleRequest {
            handle: body.handle.into(),
            name: body.name.into(),
            description: body.description.map(String::from),
            x_url: body.x_url.map(String::from),
            github_url: body.github_url.map(String::from),
            website_url: body.website_url.map(String::from),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    handle: String,
    wallet_address: String,
    profile_url: String,
}

impl From<pb::RegisterHandleResponse> for Registered {
    fn from(registered: pb::RegisterHandleResponse) -> Registered {
        let profile_url = format!("/users/{}", registered.handle);
        Registered { handle: registered.handle, wallet_address: registered.wallet_address, profile_url }
    }
}

type RegisteredReply = Envelope<Registered>;

#[utoipa::path(post, path = "/account/register", tag = "Account", summary = "Claim a handle and set the profile (once)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = RegisterBody,
    responses(
        (status = 200, description = "Registered", body = RegisteredReply),
        (status = 409, description = "Handle taken (`HANDLE_TAKEN`) or account already registered (`ALREADY_REGISTERED`)"),
    ))]
pub async fn register(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<RegisterBody>) -> Reply<RegisteredReply> {
    let registered = gateway.identity(&account.principal).register_handle(pb::RegisterHandleRequest::from(body)).await?.into_inner();
    Ok(Json(Envelope(registered.into())))
}

#[utoipa::path(get, path = "/account/me", tag = "Account", summary = "Your account",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "Your profile", body = ProfileReply)))]
pub async fn me(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<ProfileReply> {
    let profile = gateway.identity(&account.principal).get_me(pb::GetMeRequest {}).await?.into_inner();
    Ok(Json(Envelope(profile.into())))
}

/// A partial update: absent fields are kept, `null` (or an empty string) clears one. The body of
/// `PATCH /account/me` and the `update_profile` MCP tool's input. (The tool's schema shows the
/// clearable fields as strings, since some model providers refuse `null` types; `null` is
/// accepted there too.)
#[derive(Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// A new display name (cannot be cleared)
    #[serde(default, deserialize_with = "nullable")]
    // Never null: a name cannot be cleared.
    #[schema(value_type = Name, required = false)]
    #[schemars(with = "Name")]
    name: Option<Option<Name>>,
    /// A new description; null or an empty string clears it
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Text>)]
    #[schemars(with = "Text")]
    description: Option<Option<Text>>,
    /// A new X URL; null or an empty string clears it
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ProfileUrl>)]
    #[schemars(with = "ProfileUrl")]
    x_url: Option<Option<ProfileUrl>>,
    /// A new GitHub URL; null or an empty string clears it
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ProfileUrl>)]
    #[schemars(with = "ProfileUrl")]
    github_url: Option<Option<ProfileUrl>>,
    /// A new website URL; null or an empty string clears it
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ProfileUrl>)]
    #[schemars(with = "ProfileUrl")]
    website_url: Option<Option<ProfileUrl>>,
}

impl TryFrom<UpdateBody> for pb::UpdateMeRequest {
    type Error = ApiError;

    fn try_from(body: UpdateBody) -> Result<pb::UpdateMeRequest, ApiError> {
        let name = match body.name {
            Some(None) => return Err(ApiError::invalid("name", "name cannot be cleared")),
            Some(Some(name)) => Some(name.into()),
            None => None,
        };
        Ok(pb::UpdateMeRequest {
            name,
            description: clearable(body.description),
            x_url: clearable(body.x_url),
            github_url: clearable(body.github_url),
            website_url: clearable(body.website_url),
        })
    }
}

/// `null` clears a field: sent to the service as an empty string.
fn clearable<T: Into<String>>(value: Option<Option<T>>) -> Option<String> {
    value.map(|value| value.map(Into::into).unwrap_or_default())
}

#[utoipa::path(patch, path = "/account/me", tag = "Account", summary = "Update your profile (null clears a field)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The updated profile", body = ProfileReply),
        (status = 403, description = "Register a handle first (`NOT_REGISTERED`)"),
    ))]
pub async fn update_me(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<UpdateBody>) -> Reply<ProfileReply> {
    let profile = gateway.identity(&account.principal).update_me(pb::UpdateMeRequest::try_from(body)?).await?.into_inner();
    Ok(Json(Envelope(profile.into())))
}

#[derive(Serialize, ToSchema)]
pub struct Users {
    users: Vec<Profile>,
}

type UsersReply = Envelope<Users>;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Page size (capped at 200)
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 50)]
    limit: Option<u32>,
    /// Users to skip
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 0)]
    offset: Option<u32>,
    /// Substring of the handle or the name, case-insensitive
    #[param(max_length = 100)]
    search: Option<String>,
}

#[utoipa::path(get, path = "/users", tag = "Users", summary = "Registered users",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(UsersQuery),
    responses((status = 200, description = "Users, oldest first", body = UsersReply)))]
pub async fn users(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, QueryParams(query): QueryParams<UsersQuery>) -> Reply<UsersReply> {
    let message = pb::ListUsersRequest { limit: query.limit, offset: query.offset.unwrap_or(0), search: query.search.unwrap_or_default() };
    let users = gateway.identity(&principal).list_users(message).await?.into_inner().users;
    Ok(Json(Envelope(Users { users: users.into_iter().map(Profile::from).collect() })))
}

#[utoipa::path(get, path = "/users/{handle}", tag = "Users", summary = "A user by handle",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("handle" = String, Path, description = "The handle (any case)")),
    responses((status = 200, description = "The user", body = ProfileReply), (status = 404, description = "Not found (`NOT_FOUND`)")))]
pub async fn user(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, PathParam(handle): PathParam<String>) -> Reply<ProfileReply> {
    let profile = gateway.identity(&principal).get_user(pb::GetUserRequest { handle }).await?.into_inner();
    Ok(Json(Envelope(profile.into())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyNameBody {
    name: KeyName,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    id: String,
    name: String,
    prefix: String,
    api_key: String,
}

type CreatedKeyReply = Envelope<CreatedKey>;

#[utoipa::path(post, path = "/account/keys", tag = "Account", summary = "Create another API key (shown once; needs an API key)",
    security(("ApiKey" = []), ("Bearer" = [])),
    request_body = KeyNameBody,
    responses(
        (status = 200, description = "Created", body = CreatedKeyReply,
            links(("deleteAccountKeysId" = (operation_id = "deleteAccountKeysId", parameters(("id" = "$response.body#/id")))))),
        (status = 403, description = "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)"),
        (status = 409, description = "Too many keys (`LIMIT_EXCEEDED`)"),
    ))]
pub async fn create_key(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<KeyNameBody>) -> Reply<CreatedKeyReply> {
    let created = gateway.identity(&account.principal).create_api_key(pb::CreateApiKeyRequest { name: body.name.into() }).await?.into_inner();
    let key = created.key.unwrap_or_default();
    Ok(Json(Envelope(CreatedKey { id: key.id, name: key.name, prefix: key.prefix, api_key: created.api_key })))
}

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    id: String,
    name: String,
    /// First characters of the key
    prefix: String,
    created_at: String,
    #[schema(required = true)]
    last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

type ApiKeysReply = Envelope<ApiKeys>;

#[utoipa::path(get, path = "/account/keys", tag = "Account", summary = "Your API keys (never the keys themselves)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "Keys", body = ApiKeysReply)))]
pub async fn keys(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<ApiKeysReply> {
    let keys = gateway.identity(&account.principal).list_api_keys(pb::ListApiKeysRequest {}).await?.into_inner().keys;
    let keys = keys
        .into_iter()
        .map(|key| ApiKey {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            created_at: format_sql_datetime(key.created_at_ms),
            last_used_at: key.last_used_at_ms.map(format_sql_datetime),
        })
        .collect();
    Ok(Json(Envelope(ApiKeys { keys })))
}

#[utoipa::path(delete, path = "/account/keys/{id}", tag = "Account", summary = "Revoke an API key (takes effect at once; needs an API key)",
    security(("ApiKey" = []), ("Bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)"),
        (status = 400, description = "The account's last key (`LAST_KEY`)"),
        (status = 404, description = "Not found (`NOT_FOUND`)"),
    ))]
pub async fn revoke_key(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Result<StatusCode, ApiError> {
    gateway.identity(&account.principal).revoke_api_key(pb::RevokeApiKeyRequest { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct WalletChallenge {
    message: String,
    nonce: String,
    /// Unix milliseconds
    #[serde(rename = "expiresAt")]
    expires_at: i64,
}

type WalletChallengeReply = Envelope<WalletChallenge>;

#[derive(Deserialize)]
pub struct ChallengeQuery {
    address: Option<String>,
}

#[utoipa::path(get, path = "/account/wallets/challenge", tag = "Account", summary = "A single-use EIP-4361 message proving control of a wallet",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("address" = WalletAddress, Query, description = "The wallet to link")),
    responses((status = 200, description = "Sign `message` with personal_sign, then POST /account/wallets", body = WalletChallengeReply)))]
pub async fn wallet_challenge(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    QueryParams(query): QueryParams<ChallengeQuery>,
) -> Reply<WalletChallengeReply> {
    let address = query.address.ok_or_else(|| ApiError::invalid("address", "address is required"))?;
    let address = WalletAddress::parse("address", address)?.into();
    let challenge = gateway.identity(&account.principal).get_wallet_challenge(pb::GetWalletChallengeRequest { address }).await?.into_inner();
    Ok(Json(Envelope(WalletChallenge { message: challenge.message, nonce: challenge.nonce, expires_at: challenge.expires_at_ms })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    address: WalletAddress,
    #[schema(max_length = 2000)]
    message: String,
    signature: WalletSignature,
}

#[derive(Serialize, ToSchema)]
pub struct LinkedWallet {
    address: String,
    linked_at: String,
}

impl From<pb::LinkedWallet> for LinkedWallet {
    fn from(wallet: pb::LinkedWallet) -> LinkedWallet {
        LinkedWallet { address: wallet.address, linked_at: format_sql_datetime(wallet.linked_at_ms) }
    }
}

type LinkedWalletReply = Envelope<LinkedWallet>;

#[utoipa::path(post, path = "/account/wallets", tag = "Account", summary = "Link a wallet with a signed challenge (needs an API key)",
    security(("ApiKey" = []), ("Bearer" = [])),
    request_body = LinkBody,
    responses(
        (status = 200, description = "Linked", body = LinkedWalletReply,
            links(("deleteAccountWalletsAddress" = (operation_id = "deleteAccountWalletsAddress", parameters(("address" = "$response.body#/address")))))),
        (status = 400, description = "Invalid input, or the challenge is unknown, used, expired (`CHALLENGE_INVALID`, `CHALLENGE_EXPIRED`) or not signed by the wallet"),
        (status = 403, description = "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)"),
        (status = 409, description = "Linked to another account (`WALLET_ALREADY_LINKED`) or too many wallets (`LIMIT_EXCEEDED`)"),
    ))]
pub async fn link_wallet(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<LinkBody>) -> Reply<LinkedWalletReply> {
    let message = pb::LinkWalletRequest { address: body.address.into(), message: body.message, signature: body.signature.into() };
    let linked = gateway.identity(&account.principal).link_wallet(message).await?.into_inner();
    Ok(Json(Envelope(linked.into())))
}

#[derive(Serialize, ToSchema)]
pub struct Wallets {
    wallets: Vec<LinkedWallet>,
}

type WalletsReply = Envelope<Wallets>;

#[utoipa::path(get, path = "/account/wallets", tag = "Account", summary = "Your linked wallets",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "Wallets", body = WalletsReply)))]
pub async fn wallets(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<WalletsReply> {
    let wallets = gateway.identity(&account.principal).list_wallets(pb::ListWalletsRequest {}).await?.into_inner().wallets;
    Ok(Json(Envelope(Wallets { wallets: wallets.into_iter().map(LinkedWallet::from).collect() })))
}

#[utoipa::path(delete, path = "/account/wallets/{address}", tag = "Account", summary = "Unlink a wallet (its signed requests stop working at once; needs an API key)",
    security(("ApiKey" = []), ("Bearer" = [])),
    params(("address" = String, Path, description = "The linked wallet")),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 403, description = "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)"),
        (status = 404, description = "Not found (`NOT_FOUND`)"),
    ))]
pub async fn unlink_wallet(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(address): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    gateway.identity(&account.principal).unlink_wallet(pb::UnlinkWalletRequest { address }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainBody {
    name: DomainName,
}

#[derive(Serialize, ToSchema)]
pub struct Domain {
    name: String,
    claimed_at: String,
}

impl From<pb::Domain> for Domain {
    fn from(domain: pb::Domain) -> Domain {
        Domain { name: domain.name, claimed_at: format_sql_datetime(domain.claimed_at_ms) }
    }
}

type DomainReply = Envelope<Domain>;

#[utoipa::path(post, path = "/account/domains", tag = "Account", summary = "Claim a domain name (needs an API key)",
    security(("ApiKey" = []), ("Bearer" = [])),
    request_body = DomainBody,
    responses(
        (status = 200, description = "Claimed", body = DomainReply,
            links(("deleteAccountDomainsName" = (operation_id = "deleteAccountDomainsName", parameters(("name" = "$response.body#/name")))))),
        (status = 403, description = "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)"),
        (status = 409, description = "Claimed by another account (`CONFLICT`) or too many (`LIMIT_EXCEEDED`)"),
    ))]
pub async fn claim_domain(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<DomainBody>) -> Reply<DomainReply> {
    let domain = gateway.identity(&account.principal).claim_domain(pb::ClaimDomainRequest { name: body.name.into() }).await?.into_inner();
    Ok(Json(Envelope(domain.into())))
}

#[derive(Serialize, ToSchema)]
pub struct Domains {
    domains: Vec<Domain>,
}

type DomainsReply = Envelope<Domains>;

#[utoipa::path(get, path = "/account/domains", tag = "Account", summary = "Domain names your account answers to in signed requests",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "Domains", body = DomainsReply)))]
pub async fn domains(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<DomainsReply> {
    let domains = gateway.identity(&account.principal).list_domains(pb::ListDomainsRequest {}).await?.into_inner().domains;
    Ok(Json(Envelope(Domains { domains: domains.into_iter().map(Domain::from).collect() })))
}

#[utoipa::path(delete, path = "/account/domains/{name}", tag = "Account", summary = "Release a domain name (needs an API key)",
    security(("ApiKey" = []), ("Bearer" = [])),
    params(("name" = String, Path, description = "The domain")),
    responses(
        (status = 204, description = "Released"),
        (status = 403, description = "A signed-expiry request cannot manage credentials; send an API key (`API_KEY_REQUIRED`)"),
        (status = 404, description = "Not found (`NOT_FOUND`)"),
    ))]
pub async fn release_domain(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(name): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    gateway.identity(&account.principal).release_domain(pb::ReleaseDomainRequest { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SignatureQuery {
    expiry: Option<String>,
    device: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignatureHeaders {
    #[serde(rename = "x-auth-domain")]
    #[schema(rename = "x-auth-domain")]
    domain: String,
    #[serde(rename = "x-auth-expires")]
    #[schema(rename = "x-auth-expires")]
    expires: String,
}

#[derive(Serialize, ToSchema)]
pub struct SignatureMessage {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    message: String,
    headers: SignatureHeaders,
}

#[utoipa::path(get, path = "/api/user/{domain}/signature", tag = "Authentication", summary = "The message a wallet signs for signed-expiry requests",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(
        ("domain" = String, Path, description = "An account's handle or claimed domain"),
        ("expiry" = i64, Query, minimum = 0, description = "Unix milliseconds, in the future and within the signature horizon (30 days by default)"),
        ("device" = Option<bool>, Query, description = "Whether the signature is kept on a device"),
    ),
    responses(
        (status = 200, description = "Sign `message` (UTF-8) with personal_sign and send it as x-auth-signature with these headers", body = SignatureMessage),
        (status = 400, description = "expiry missing, not in the future or too far ahead; device not a boolean"),
        (status = 404, description = "Not found (`NOT_FOUND`)"),
    ))]
pub async fn signature_message(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    PathParam(domain): PathParam<String>,
    QueryParams(query): QueryParams<SignatureQuery>,
) -> Reply<SignatureMessage> {
    let expiry_text = query.expiry.ok_or_else(|| ApiError::invalid("expiry", "expiry is required (Unix milliseconds)"))?;
    let expiry: i64 = expiry_text.trim().parse().map_err(|_| ApiError::invalid("expiry", "expiry must be a Unix timestamp in milliseconds"))?;
    let device = match query.device.as_deref().map(str::trim) {
        None | Some("") => false,
        Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => return Err(ApiError::invalid("device", "device must be true or false")),
    };
    let message = gateway.identity(&principal).get_signature_message(pb::GetSignatureMessageRequest { domain, expiry, device }).await?.into_inner();
    let headers = SignatureHeaders { domain: message.domain, expires: message.expiry.to_string() };
    Ok(Json(SignatureMessage { message: message.message, headers }))
}
