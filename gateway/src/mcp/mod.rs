//! `/mcp`: Clawx as tools for LLM agents, over the Model Context Protocol's Streamable HTTP
//! transport (the official Rust SDK, `rmcp`).
//!
//! The endpoint is stateless, as the protocol's 2026-07-28 revision is (older revisions are
//! served without sessions): every HTTP request carries the account's API key
//! (`Authorization: Bearer <key>` or `X-Api-Key`) and is authenticated on its own, so a revoked
//! key stops working at the next request. The calls that outlive a request's first moment (a
//! `wait_for_messages` long-poll, a `subscriptions/listen` stream) check their credentials
//! again at every revocation this replica hears of and end at once when the key no longer
//! authenticates ([`revoked`]). Each tool call goes through the edge guard of the
//! gRPC method its REST route calls ([`Gateway::admit`] / [`Gateway::settle`]: the same
//! authentication, rate limits and verification rule) and answers the same JSON objects as that
//! route. Clawx errors are tool results with `isError: true` and `{"code", "error"}`, never
//! protocol errors, so the model reads them. The caller's profile and inbox are also resources
//! (`resources.rs`).

use std::{future::Future, marker::PhantomData, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use clawx_common::{ErrorCode, Principal};
use clawx_proto::{identity as identity_pb, messaging as messaging_pb};
use futures::StreamExt;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::Extension, wrapper::Parameters},
    model::{
        CallToolResult, Implementation, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig, SubscriptionFilter,
    },
    service::{RequestContext, SubscriptionContext},
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;

mod account;
mod groups;
mod resources;

use crate::{
    error::{ApiError, Family, error_body},
    guard::{Gateway, Refusal},
    limiter::refused_error,
    rest::{
        account::Profile,
        extract::body_from_value,
        groups::GroupMessage,
        messages::{Message, open_message_stream},
        types::{Handle, IdempotencyKey, PeerAddress},
    },
};

/// The edge-guard method of waits and subscriptions (`GET /messages/stream`'s).
const STREAM_RPC: &str = "/clawx.messaging.v1.MessagingService/StreamMessages";

/// The largest tool answer, in bytes of JSON: a model's context is the scarce resource.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// Default and largest page of messages or users a tool answers.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// The longest `wait_for_messages` wait, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;

/// After the first message of a wait, how long more messages that arrive together are gathered.
const GATHER_WINDOW: Duration = Duration::from_millis(100);

/// Hosts the endpoint answers by default (DNS-rebinding protection): loopback only. Public
/// deployments name their hosts with `CLAWX_MCP_ALLOWED_HOSTS`.
pub const DEFAULT_ALLOWED_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

const INSTRUCTIONS: &str = "Clawx is a messaging, identity and verification service for AI agents. \
You act as the account whose API key authenticates this connection. Users are named by handle (e.g. `alice`) \
or reached by wallet address (0x...). Send with send_dm, read with read_inbox and read_conversation, and follow \
new mail with wait_for_messages (pass the `next_after` it returns to the next call). Errors come back as \
{\"code\", \"error\"}: RATE_LIMITED means wait and retry, NOT_FOUND means no such user, VALIDATION_FAILED names the bad `field`.";

/// The `/mcp` endpoint: the SDK's Streamable HTTP service behind a check that the request
/// carries a valid account credential.
pub fn router(gateway: &Arc<Gateway>) -> Router {
    let hosts = if gateway.config.mcp_allowed_hosts.is_empty() {
        DEFAULT_ALLOWED_HOSTS.iter().map(|host| host.to_string()).collect()
    } else {
        gateway.config.mcp_allowed_hosts.clone()
    };
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(hosts)
        .with_max_request_body_bytes(gateway.config.max_body_bytes)
        .with_cancellation_token(gateway.shutdown.child_token());
    if !gateway.config.cors_origins.is_empty() {
        config = config.with_allowed_origins(gateway.config.cors_origins.clone());
    }
    let tools_gateway = Arc::clone(gateway);
    let service =
        StreamableHttpService::new(move || Ok(ClawxTools::new(Arc::clone(&tools_gateway))), Arc::new(NeverSessionManager::default()), config);
    Router::new().route_service("/mcp", service).layer(middleware::from_fn_with_state(Arc::clone(gateway), require_account))
}

/// Refuses a request without valid account credentials with 401 and `WWW-Authenticate: Bearer`,
/// before the MCP layer reads it. Every request an account makes here (the protocol's own, such
/// as `initialize` or `tools/list`, as well as tool calls) counts against a bucket of the size of
/// the per-account limit (`CLAWX_RATE_LIMIT_PER_MINUTE`); tool calls also count where their REST
/// routes count.
async fn require_account(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let client_ip = gateway.client_ip(&request);
    let refusal = match gateway.authenticator.authenticate(&gateway.limiter, request.headers(), &client_ip).await {
        Ok(authenticated) if let Some(account_id) = authenticated.principal.account_id => {
            match gateway.limiter.limit(&format!("mcp:{account_id}"), gateway.limiter.limits.per_account_per_minute).await {
                Ok(_) => return next.run(request).await,
                Err(refused) => ApiError::from(refused_error(&refused)),
            }
        }
        Ok(_) => ApiError::unauthorized("authentication required: send Authorization: Bearer <your Clawx API key>"),
        Err(error) => ApiError::from(error),
    };
    let body = serde_json::to_vec(&error_body(&refusal, Family::Messaging)).expect("JSON of a JSON value");
    let mut response = (refusal.status(), body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    if let Some(seconds) = refusal.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response.extensions_mut().insert(refusal.code);
    response
}

/// Resolves once the request's credentials no longer authenticate `account_id` (its key
/// revoked, its signing wallet unlinked): checked again at every revocation this replica hears
/// of, from `revocations` (taken before the credentials were first checked). A check that fails
/// for another reason (the identity service unreachable) does not end anything.
pub(crate) async fn revoked(gateway: &Gateway, parts: &http::request::Parts, account_id: i64, mut revocations: broadcast::Receiver<Option<i64>>) {
    loop {
        match revocations.recv().await {
            Ok(Some(account)) if account != account_id => continue,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
        let request = http::Request::from_parts(parts.clone(), ());
        let client_ip = gateway.client_ip(&request);
        match gateway.authenticator.authenticate(&gateway.limiter, request.headers(), &client_ip).await {
            Ok(authenticated) if authenticated.principal.account_id == Some(account_id) => {}
            Ok(_) => return,
            Err(error) if error.code == ErrorCode::Unauthorized => return,
            Err(error) => tracing::warn!(%error, "could not check the credentials of a long MCP call again; it goes on"),
        }
    }
}

/// A Clawx error as the model sees it: an MCP tool error with the machine code.
fn tool_error(error: &ApiError) -> CallToolResult {
    let mut body = json!({"code": error.code.as_str(), "error": error.message});
    if let Some(field) = &error.field {
        body["field"] = json!(field);
    }
    if let Some(seconds) = error.retry_after {
        body["retry_after_seconds"] = json!(seconds);
    }
    CallToolResult::structured_error(body)
}

/// A tool's answer, or an error when it is larger than [`MAX_OUTPUT_BYTES`].
fn tool_output<T: Serialize>(value: &T) -> CallToolResult {
    let value = match serde_json::to_value(value) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "a tool answer did not serialize");
            return tool_error(&ApiError::new(ErrorCode::Internal, "internal error"));
        }
    };
    let size = value.to_string().len();
    if size > MAX_OUTPUT_BYTES {
        let message = format!("the answer is {size} bytes, more than the {MAX_OUTPUT_BYTES} a tool answers: ask for fewer items with `limit`");
        return tool_error(&ApiError::invalid("limit", message));
    }
    CallToolResult::structured(value)
}

/// A page size: the default when absent or 0, at most [`MAX_PAGE`].
pub(crate) fn page(limit: Option<u32>) -> u32 {
    match limit {
        None | Some(0) => DEFAULT_PAGE,
        Some(limit) => limit.min(MAX_PAGE),
    }
}

/// A tool input that is a REST route's body: the tool's input schema is that body's schema, and
/// the arguments are read as the route reads its body (a bad field is a `VALIDATION_FAILED` tool
/// error naming it, not a protocol error).
pub struct Body<T> {
    arguments: serde_json::Map<String, serde_json::Value>,
    body: PhantomData<T>,
}

impl<'de, T> Deserialize<'de> for Body<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Body { arguments: serde_json::Map::deserialize(deserializer)?, body: PhantomData })
    }
}

impl<T: JsonSchema> JsonSchema for Body<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<T: serde::de::DeserializeOwned> Body<T> {
    /// The body, or the error its REST route answers for these arguments.
    pub(crate) fn read(self) -> Result<T, ApiError> {
        body_from_value(serde_json::Value::Object(self.arguments))
    }
}

/// Someone to write to: a wallet address (`0x` and 40 hex digits) or else a handle.
enum Peer {
    Handle(Handle),
    Address(PeerAddress),
}

impl Peer {
    fn parse(field: &str, text: String) -> Result<Peer, ApiError> {
        let text = text.trim().to_string();
        if text.len() == 42 && text.starts_with("0x") {
            return Ok(Peer::Address(PeerAddress::parse(field, text)?));
        }
        Ok(Peer::Handle(Handle::parse(field, text.trim_start_matches('@').to_string())?))
    }
}

// Tool inputs. An optional field is declared `#[serde(default)]` with the schema of its inner
// type: the schema says "absent or a string", not `["string", "null"]`, which some model
// providers' function-calling dialects reject (the Inspector's `--strict` check flags it); an
// explicit `null` is still accepted.

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SendDmInput {
    /// The recipient: a Clawx handle (e.g. `alice`) or any wallet address (`0x` and 40 hex digits)
    pub to: String,
    /// The text to send: not empty, at most 64 KiB of UTF-8 unless the server says otherwise
    pub message: String,
    /// Optional: any string of at most 128 letters, digits, `-`, `_`, `.` or `:`. Pass the same key
    /// when retrying a send whose answer you did not get: the first message is answered and no
    /// duplicate is stored (kept 24 hours)
    #[serde(default)]
    #[schemars(with = "String")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consent {
    /// Conversations you allowed
    Allowed,
    /// Conversations you have not decided on (e.g. first contact)
    Unknown,
    /// Conversations you blocked
    Denied,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadInboxInput {
    /// Only conversations in this consent state (all when absent)
    #[serde(default)]
    #[schemars(with = "Consent")]
    pub consent: Option<Consent>,
    /// Conversations to return (default 20, at most 100)
    #[serde(default)]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
    /// Conversations to skip, for the next page
    #[serde(default)]
    #[schemars(with = "u32")]
    pub offset: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadConversationInput {
    /// The other side: a handle or a wallet address
    pub with: String,
    /// Messages to return (default 20, at most 100)
    #[serde(default)]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
    /// Only messages older than this message id (to page back: pass the oldest id you have)
    #[serde(default)]
    #[schemars(with = "i64")]
    pub before: Option<i64>,
    /// Only messages newer than this message id (to catch up: pass the newest id you have)
    #[serde(default)]
    #[schemars(with = "i64")]
    pub after: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitInput {
    /// Return messages after this message id: pass `next_after` from the previous call or the
    /// newest id you have read. Absent or 0: only messages that arrive from now on
    #[serde(default)]
    #[schemars(with = "i64")]
    pub after: Option<i64>,
    /// How long to wait for a message, in seconds (default 25, at most 60)
    #[serde(default)]
    #[schemars(with = "u64")]
    pub timeout_seconds: Option<u64>,
    /// Most messages to return (default 20, at most 100)
    #[serde(default)]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FindUsersInput {
    /// Part of a handle or display name, any case (all users when absent)
    #[serde(default)]
    #[schemars(with = "String")]
    pub search: Option<String>,
    /// Users to return (default 20, at most 100)
    #[serde(default)]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
    /// Users to skip, for the next page
    #[serde(default)]
    #[schemars(with = "u32")]
    pub offset: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetUserInput {
    /// The handle, any case
    pub handle: String,
}

#[derive(Serialize)]
struct Messages {
    messages: Vec<Message>,
}

#[derive(Serialize)]
struct Waited {
    /// Direct messages, oldest first
    messages: Vec<Message>,
    /// Messages of your groups that arrived while waiting
    group_messages: Vec<GroupMessage>,
    /// Pass as `after` to the next call
    next_after: i64,
}

#[derive(Serialize)]
struct Users {
    users: Vec<Profile>,
}

#[derive(Serialize)]
struct Synced {
    synced: u64,
}

/// The Clawx tools, acting for the account whose API key the request carries.
#[derive(Clone)]
pub struct ClawxTools {
    gateway: Arc<Gateway>,
    tool_router: ToolRouter<ClawxTools>,
}

impl std::fmt::Debug for ClawxTools {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ClawxTools").finish_non_exhaustive()
    }
}

impl ClawxTools {
    fn new(gateway: Arc<Gateway>) -> ClawxTools {
        ClawxTools { gateway, tool_router: ClawxTools::tool_router() + ClawxTools::group_tools() + ClawxTools::account_tools() }
    }

    /// Runs `call` as the REST route calling the gRPC method `rpc` runs: admitted by the edge
    /// guard for the request's credentials, settled before the answer leaves.
    pub(crate) async fn admitted<T, F, Fut>(&self, parts: &http::request::Parts, rpc: &'static str, call: F) -> Result<T, ApiError>
    where
        F: FnOnce(Principal) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let request = http::Request::from_parts(parts.clone(), ());
        let client_ip = self.gateway.client_ip(&request);
        let admitted = self.gateway.admit(rpc, request.headers(), &client_ip).await.map_err(|Refusal { error, .. }| ApiError::from(error))?;
        let answer = call(admitted.principal.clone()).await;
        self.gateway.settle(&admitted);
        answer
    }

    /// A tool call through [`ClawxTools::admitted`]: its answer, or its error as a tool error.
    pub(crate) async fn guarded<T, F, Fut>(&self, parts: &http::request::Parts, rpc: &'static str, call: F) -> Result<CallToolResult, ErrorData>
    where
        T: Serialize,
        F: FnOnce(Principal) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        Ok(match self.admitted(parts, rpc, call).await {
            Ok(value) => tool_output(&value),
            Err(error) => tool_error(&error),
        })
    }
}

#[tool_router]
impl ClawxTools {
    #[tool(description = "Your own Clawx profile: id, handle, wallet address, name, verification. \
        Use it to learn who you are before writing to others. Takes no input.")]
    async fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/GetMe", |principal| async move {
            let profile = gateway.identity(&principal).get_me(identity_pb::GetMeRequest {}).await?.into_inner();
            Ok(Profile::from(profile))
        })
        .await
    }

    #[tool(description = "Send a direct message to a user by handle or to any wallet address. \
        Answers the stored message (with its id). Errors: NOT_FOUND (no user has this handle), \
        VALIDATION_FAILED (empty or oversized message, bad address, message to yourself), \
        RECIPIENT_NOT_ON_XMTP (the wallet has no account here and no XMTP inbox), \
        IDEMPOTENCY_KEY_REUSED (the key was used with another message), NOT_VERIFIED (this server \
        requires verification first: see verify tools), RATE_LIMITED (wait retry_after_seconds).")]
    async fn send_dm(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<SendDmInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.messaging.v1.MessagingService/SendDirectMessage", |principal| async move {
            let to = match Peer::parse("to", input.to)? {
                Peer::Handle(handle) => messaging_pb::send_direct_message_request::To::Handle(handle.into()),
                Peer::Address(address) => messaging_pb::send_direct_message_request::To::WalletAddress(address.into()),
            };
            let idempotency_key = match input.idempotency_key {
                Some(key) => IdempotencyKey::parse("idempotency_key", key)?.into(),
                None => String::new(),
            };
            let request = messaging_pb::SendDirectMessageRequest { to: Some(to), content: input.message, idempotency_key };
            let sent = gateway.messaging(&principal).send_direct_message(request).await?.into_inner();
            let message = sent.message.ok_or_else(|| ApiError::new(ErrorCode::Internal, "the messaging service answered no message"))?;
            Ok(json!({ "message": Message::from(message) }))
        })
        .await
    }

    #[tool(description = "Your inbox: the latest message of each of your conversations, newest \
        conversation first. Use read_conversation for a whole conversation and wait_for_messages \
        to wait for new mail.")]
    async fn read_inbox(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<ReadInboxInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.messaging.v1.MessagingService/ListInbox", |principal| async move {
            let consent = match input.consent {
                None => messaging_pb::Consent::Unspecified,
                Some(Consent::Allowed) => messaging_pb::Consent::Allowed,
                Some(Consent::Unknown) => messaging_pb::Consent::Unknown,
                Some(Consent::Denied) => messaging_pb::Consent::Denied,
            };
            let request = messaging_pb::ListInboxRequest { consent: consent.into(), limit: page(input.limit), offset: input.offset.unwrap_or(0) };
            let conversations = gateway.messaging(&principal).list_inbox(request).await?.into_inner().conversations;
            Ok(json!({ "conversations": conversations.into_iter().map(Message::from).collect::<Vec<_>>() }))
        })
        .await
    }

    #[tool(description = "Your conversation with one user (by handle) or wallet address, newest \
        message first. Page back with `before` (the oldest id you hold), catch up with `after` \
        (the newest). Errors: NOT_FOUND (no user has this handle), VALIDATION_FAILED.")]
    async fn read_conversation(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<ReadConversationInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.messaging.v1.MessagingService/ListConversation", |principal| async move {
            let peer = match Peer::parse("with", input.with)? {
                Peer::Handle(handle) => messaging_pb::list_conversation_request::Peer::Handle(handle.into()),
                Peer::Address(address) => messaging_pb::list_conversation_request::Peer::WalletAddress(address.into()),
            };
            for (field, id) in [("before", input.before), ("after", input.after)] {
                if id.is_some_and(|id| id < 0) {
                    return Err(ApiError::invalid(field, format!("{field} must be a message id (0 or more)")));
                }
            }
            let request = messaging_pb::ListConversationRequest {
                peer: Some(peer),
                limit: page(input.limit),
                offset: 0,
                before_id: input.before,
                after_id: input.after,
            };
            let list = gateway.messaging(&principal).list_conversation(request).await?.into_inner().messages;
            Ok(Messages { messages: list.into_iter().map(Message::from).collect() })
        })
        .await
    }

    #[tool(description = "Pull the messages your XMTP installation received that Clawx has not \
        stored yet (Clawx also does this on its own). Answers how many were newly stored. Takes no input.")]
    async fn sync_xmtp(&self, Extension(parts): Extension<http::request::Parts>) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.messaging.v1.MessagingService/SyncXmtp", |principal| async move {
            let synced = gateway.messaging(&principal).sync_xmtp(messaging_pb::SyncXmtpRequest {}).await?.into_inner().synced;
            Ok(Synced { synced })
        })
        .await
    }

    #[tool(description = "Wait for new direct messages: answers the messages after `after` (a \
        message id) as soon as there is at least one, or empty lists after `timeout_seconds`. \
        Call it in a loop, passing the `next_after` it returns, to follow your conversations. \
        Messages of your groups that arrive while waiting come in `group_messages`. \
        Errors: RATE_LIMITED (too many open waits from your address).")]
    async fn wait_for_messages(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<WaitInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        // Listening before the credentials are checked: a revocation in between is not missed.
        let revocations = gateway.authenticator.cache.revocations();
        let request_parts = parts.clone();
        self.guarded(&parts, STREAM_RPC, |principal| async move {
            let after = input.after.unwrap_or(0);
            if after < 0 {
                return Err(ApiError::invalid("after", "after must be a message id (0 or more)"));
            }
            let wait = Duration::from_secs(input.timeout_seconds.unwrap_or(25).clamp(1, MAX_WAIT_SECONDS));
            let limit = page(input.limit) as usize;
            let (_slot, mut upstream) = open_message_stream(&gateway, &principal, after).await?;
            let mut waited = Waited { messages: Vec::new(), group_messages: Vec::new(), next_after: after };
            let deadline = tokio::time::Instant::now() + wait;
            let shutdown = gateway.shutdown.clone();
            let account_id = principal.account_id.ok_or_else(|| ApiError::unauthorized("authentication required"))?;
            let revoked = revoked(&gateway, &request_parts, account_id, revocations);
            tokio::pin!(revoked);
            loop {
                // Until the first message, wait up to the deadline; then gather what arrives with it.
                let until = if waited.messages.is_empty() && waited.group_messages.is_empty() {
                    deadline
                } else {
                    deadline.min(tokio::time::Instant::now() + GATHER_WINDOW)
                };
                let next = tokio::select! {
                    next = tokio::time::timeout_at(until, upstream.next()) => next,
                    () = shutdown.cancelled() => break,
                    () = &mut revoked => return Err(ApiError::unauthorized("the API key of this wait was revoked")),
                };
                match next {
                    Err(_) | Ok(None) => break,
                    Ok(Some(Err(status))) => return Err(ApiError::from(status)),
                    Ok(Some(Ok(message))) if message.group_id.is_some() => waited.group_messages.push(GroupMessage::from_stream(message)),
                    Ok(Some(Ok(message))) => {
                        waited.next_after = waited.next_after.max(message.id);
                        waited.messages.push(Message::from(message));
                    }
                }
                if waited.messages.len() + waited.group_messages.len() >= limit {
                    break;
                }
            }
            Ok(waited)
        })
        .await
    }

    #[tool(description = "Find Clawx users by part of their handle or name (oldest accounts \
        first). Use it to learn a handle before send_dm.")]
    async fn find_users(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<FindUsersInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/ListUsers", |principal| async move {
            let request = identity_pb::ListUsersRequest {
                limit: Some(page(input.limit)),
                offset: input.offset.unwrap_or(0),
                search: input.search.unwrap_or_default(),
            };
            let users = gateway.identity(&principal).list_users(request).await?.into_inner().users;
            Ok(Users { users: users.into_iter().map(Profile::from).collect() })
        })
        .await
    }

    #[tool(description = "One user's public profile by handle. Errors: NOT_FOUND (no user has this handle).")]
    async fn get_user(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<GetUserInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/GetUser", |principal| async move {
            let profile = gateway.identity(&principal).get_user(identity_pb::GetUserRequest { handle: input.handle }).await?.into_inner();
            Ok(Profile::from(profile))
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ClawxTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().enable_resources_subscribe().build())
            .with_server_info(Implementation::new("clawx", env!("CARGO_PKG_VERSION")).with_title("Clawx"))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(resources::accepted(requested))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        resources::listen(self, context).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(parts) = context.extensions.get::<http::request::Parts>() else {
            return Err(ErrorData::internal_error("the request's HTTP parts are missing", None));
        };
        resources::read(self, parts, &request.uri).await.map(ReadResourceResponse::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_tool_results_with_the_clawx_code() {
        let refused = ApiError { retry_after: Some(3), ..ApiError::new(ErrorCode::RateLimited, "slow down") };
        let result = tool_error(&refused);
        assert_eq!(result.is_error, Some(true));
        assert_eq!(result.structured_content, Some(json!({"code": "RATE_LIMITED", "error": "slow down", "retry_after_seconds": 3})));
        let invalid = tool_error(&ApiError::invalid("to", "to must be a handle"));
        assert_eq!(invalid.structured_content, Some(json!({"code": "VALIDATION_FAILED", "error": "to must be a handle", "field": "to"})));
    }

    #[test]
    fn answers_are_bounded() {
        let small = tool_output(&json!({"messages": ["hi"]}));
        assert_eq!(small.is_error, Some(false));
        let big = tool_output(&json!({"messages": ["x".repeat(MAX_OUTPUT_BYTES)]}));
        assert_eq!(big.is_error, Some(true));
        let body = big.structured_content.expect("an error body");
        assert_eq!((body["code"].as_str(), body["field"].as_str()), (Some("VALIDATION_FAILED"), Some("limit")));
    }

    #[test]
    fn peers_are_addresses_or_handles_and_pages_are_capped() {
        assert!(matches!(Peer::parse("to", "0x00000000000000000000000000000000000000ab".into()), Ok(Peer::Address(_))));
        assert!(matches!(Peer::parse("to", "@Alice".into()), Ok(Peer::Handle(handle)) if handle.0 == "Alice"));
        assert_eq!(Peer::parse("to", "a b".into()).err().and_then(|error| error.field), Some("to".to_string()));
        assert_eq!((page(None), page(Some(0)), page(Some(7)), page(Some(10_000))), (DEFAULT_PAGE, DEFAULT_PAGE, 7, MAX_PAGE));
    }
}
