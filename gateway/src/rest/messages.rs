//! `/messages/*`: direct messages, the inbox, conversation histories and the live stream — the
//! messaging service's REST face. Each handler declares its OpenAPI operation and, in
//! [`routes`], the gRPC method the edge guard decides on it by.
//!
//! Fixed paths (`/messages/inbox`, `/messages/stream`, `/messages/dm`, `/messages/address/..`,
//! `/messages/xmtp/sync`) and `/messages/{handle}` overlap: a static segment always wins, so a user whose handle is
//! `inbox` or `stream` is reached by wallet address instead.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{
        IntoResponse,
        sse::{Event, KeepAlive, Sse},
    },
};
use clawx_common::{ErrorCode, ServiceError, time::format_sql_datetime};
use clawx_proto::messaging as pb;
use futures::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        Ref, RefOr,
        schema::{Object, ObjectBuilder, OneOfBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Account, JsonBody, PathParam, QueryParams},
    groups::GroupMessage,
    guarded::guarded,
    types::{Envelope, EventId, Handle, IdempotencyKey, PeerAddress, sql_datetime},
};
use crate::{error::ApiError, guard::Gateway};

type Reply<T> = Result<Json<T>, ApiError>;

/// How often an idle event stream carries a comment, so proxies keep the connection open.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const LAST_EVENT_ID_HEADER: &str = "last-event-id";

/// The messaging service's routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<Gateway>> {
    let guarded = |rpc, routes| guarded(gateway, rpc, routes);
    OpenApiRouter::new()
        .routes(guarded("/clawx.messaging.v1.MessagingService/SendDirectMessage", routes!(send_by_handle)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/SendDirectMessage", routes!(send_by_address)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/ListInbox", routes!(inbox)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/ListConversation", routes!(conversation_with_handle)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/ListConversation", routes!(conversation_with_address)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/StreamMessages", routes!(stream_messages)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/SyncXmtp", routes!(sync_xmtp)))
}

#[derive(Serialize, ToSchema)]
pub struct Synced {
    /// Messages stored by this pull (0 when nothing was new)
    synced: u64,
    /// `N messages synced from XMTP`
    message: String,
}

type SyncedReply = Envelope<Synced>;

#[utoipa::path(get, path = "/messages/xmtp/sync", tag = "Messages", summary = "Pull your new XMTP messages now",
    description = "Stores the messages your XMTP installation received that are not stored yet (Clawx also does this on its own, at once for messages through its own node). `synced` counts only newly stored messages.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "Pulled", body = SyncedReply)))]
pub async fn sync_xmtp(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<SyncedReply> {
    let synced = gateway.messaging(&account.principal).sync_xmtp(pb::SyncXmtpRequest {}).await?.into_inner().synced;
    Ok(Json(Envelope(Synced { synced, message: format!("{synced} messages synced from XMTP") })))
}

/// Where a message stands on its way over XMTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Stored here; not yet carried over XMTP
    Stored,
    /// Carried over XMTP
    Sent,
    /// XMTP delivery failed (`delivery_error` says why)
    Failed,
}

impl From<pb::Delivery> for Delivery {
    fn from(delivery: pb::Delivery) -> Delivery {
        match delivery {
            pb::Delivery::Sent => Delivery::Sent,
            pb::Delivery::Failed => Delivery::Failed,
            pb::Delivery::Stored | pb::Delivery::Unspecified => Delivery::Stored,
        }
    }
}

/// A direct message as the ClawXmtp family shows it. Ids and handles are null for a wallet
/// with no account here; that side then carries its address.
#[derive(Serialize, ToSchema)]
pub struct Message {
    id: i64,
    #[schema(required = true)]
    sender_id: Option<i64>,
    #[schema(required = true)]
    recipient_id: Option<i64>,
    content: String,
    #[schema(schema_with = sql_datetime)]
    sent_at: String,
    #[schema(required = true)]
    sender_handle: Option<String>,
    #[schema(required = true)]
    recipient_handle: Option<String>,
    /// The sender's wallet (lowercase), when it has no account here
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^0x[0-9a-f]{40}$", nullable = false)]
    sender_address: Option<String>,
    /// The recipient's wallet (lowercase), when it has no account here
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^0x[0-9a-f]{40}$", nullable = false)]
    recipient_address: Option<String>,
    delivery: Delivery,
    /// Why XMTP delivery failed (only when `delivery` is `failed`)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    delivery_error: Option<String>,
    /// The conversation's topic (`/clawx/dm/1/<conversation id>`), for consent and push
    topic: String,
    /// Only on a message received over XMTP whose content is not text: its XMTP content type
    /// (`authority/type:major.minor`, e.g. `xmtp.org/reaction:1.0`); `content` is then the
    /// sender's fallback text
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "xmtp.org/reaction:1.0")]
    content_type: Option<String>,
}

impl From<pb::Message> for Message {
    fn from(message: pb::Message) -> Message {
        let delivery = message.delivery().into();
        Message {
            id: message.id,
            sender_id: message.sender_id,
            recipient_id: message.recipient_id,
            content: message.content,
            sent_at: format_sql_datetime(message.sent_at_ms),
            sender_handle: message.sender_handle,
            recipient_handle: message.recipient_handle,
            sender_address: message.sender_address,
            recipient_address: message.recipient_address,
            delivery,
            delivery_error: message.delivery_error,
            topic: message.topic,
            content_type: message.content_type,
        }
    }
}

fn messages(list: Vec<pb::Message>) -> Vec<Message> {
    list.into_iter().map(Message::from).collect()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DmBody {
    /// The recipient's handle (any case)
    handle: Handle,
    /// The text: not empty, at most `CLAWX_MESSAGE_MAX_BYTES` bytes of UTF-8 (64 KiB by default)
    #[schema(min_length = 1)]
    message: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DmAddressBody {
    /// Any wallet (EIP-55 or lowercase), with an account here or not
    wallet_address: PeerAddress,
    /// The text: not empty, at most `CLAWX_MESSAGE_MAX_BYTES` bytes of UTF-8 (64 KiB by default)
    #[schema(min_length = 1)]
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct SentMessage {
    message: Message,
}

type SentMessageReply = Envelope<SentMessage>;

/// The `Idempotency-Key` header, or empty when none was sent.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let field = "Idempotency-Key";
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(String::new());
    };
    let text = value.to_str().map_err(|_| ApiError::invalid(field, format!("{field} {}", IdempotencyKey::FORMAT.rule)))?;
    Ok(IdempotencyKey::parse(field, text.to_string())?.into())
}

async fn send(
    gateway: &Gateway,
    account: &Account,
    headers: &HeaderMap,
    to: pb::send_direct_message_request::To,
    text: String,
) -> Reply<SentMessageReply> {
    let request = pb::SendDirectMessageRequest { to: Some(to), content: text, idempotency_key: idempotency_key(headers)? };
    let sent = gateway.messaging(&account.principal).send_direct_message(request).await?.into_inner();
    let message = sent.message.ok_or_else(|| ApiError::new(ErrorCode::Internal, "the messaging service answered no message"))?;
    Ok(Json(Envelope(SentMessage { message: message.into() })))
}

#[utoipa::path(post, path = "/messages/dm", tag = "Messages", summary = "Send a direct message to a user by handle",
    description = "Stored durably (with an outbox entry for XMTP delivery) before the answer. With an `Idempotency-Key`, a retry with the same key and body answers the first message and stores nothing.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("Idempotency-Key" = inline(Option<IdempotencyKey>), Header, nullable = false, description = "Makes a retried send safe: scoped to your account, kept 24 hours")),
    request_body = DmBody,
    responses(
        (status = 200, description = "Sent", body = SentMessageReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field: a missing field, an empty or oversized message, a bad Idempotency-Key), or a message to yourself"),
        (status = 404, description = "No user has this handle (`NOT_FOUND`)"),
        (status = 409, description = "This Idempotency-Key was used with another body (`IDEMPOTENCY_KEY_REUSED`)"),
        (status = 503, description = "The message could not be stored; nothing was kept, retry (`UNAVAILABLE`)"),
    ))]
pub async fn send_by_handle(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DmBody>,
) -> Reply<SentMessageReply> {
    send(&gateway, &account, &headers, pb::send_direct_message_request::To::Handle(body.handle.into()), body.message).await
}

#[utoipa::path(post, path = "/messages/dm/address", tag = "Messages", summary = "Send a direct message to any wallet address",
    description = "The wallet needs no account here (but an XMTP inbox); a wallet of an account here reaches that account's inbox. Stored durably before the answer; `Idempotency-Key` as for /messages/dm.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("Idempotency-Key" = inline(Option<IdempotencyKey>), Header, nullable = false, description = "Makes a retried send safe: scoped to your account, kept 24 hours")),
    request_body = DmAddressBody,
    responses(
        (status = 200, description = "Sent", body = SentMessageReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field: a missing field, an invalid address, an empty or oversized message, a bad Idempotency-Key), a message to your own wallet, or a wallet with no account here and no XMTP inbox (`RECIPIENT_NOT_ON_XMTP`; nothing is stored)"),
        (status = 409, description = "This Idempotency-Key was used with another body (`IDEMPOTENCY_KEY_REUSED`)"),
        (status = 503, description = "The message could not be stored; nothing was kept, retry (`UNAVAILABLE`)"),
    ))]
pub async fn send_by_address(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DmAddressBody>,
) -> Reply<SentMessageReply> {
    send(&gateway, &account, &headers, pb::send_direct_message_request::To::WalletAddress(body.wallet_address.into()), body.message).await
}

/// A conversation's consent state, as an inbox filter.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsentFilter {
    Allowed,
    Unknown,
    Denied,
}

impl From<ConsentFilter> for pb::Consent {
    fn from(consent: ConsentFilter) -> pb::Consent {
        match consent {
            ConsentFilter::Allowed => pb::Consent::Allowed,
            ConsentFilter::Unknown => pb::Consent::Unknown,
            ConsentFilter::Denied => pb::Consent::Denied,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Only conversations in this consent state (every one when absent)
    #[param(inline)]
    consent: Option<ConsentFilter>,
    /// Page size (capped at 200; 0 means the default)
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 50)]
    limit: Option<u32>,
    /// Conversations to skip
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 0)]
    offset: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Inbox {
    /// The latest message of each conversation, newest conversation first
    conversations: Vec<Message>,
}

type InboxReply = Envelope<Inbox>;

#[utoipa::path(get, path = "/messages/inbox", tag = "Messages", summary = "Your inbox: the latest message of each conversation",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(InboxQuery),
    responses((status = 200, description = "Conversations, newest first", body = InboxReply)))]
pub async fn inbox(State(gateway): State<Arc<Gateway>>, account: Account, QueryParams(query): QueryParams<InboxQuery>) -> Reply<InboxReply> {
    let request = pb::ListInboxRequest {
        consent: query.consent.map_or(pb::Consent::Unspecified, pb::Consent::from).into(),
        limit: query.limit.unwrap_or(0),
        offset: query.offset.unwrap_or(0),
    };
    let conversations = gateway.messaging(&account.principal).list_inbox(request).await?.into_inner().conversations;
    Ok(Json(Envelope(Inbox { conversations: messages(conversations) })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size (capped at 200; 0 means the default)
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 50)]
    limit: Option<u32>,
    /// Messages to skip
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 0)]
    offset: Option<u32>,
    /// Only messages older than this message id (paging back)
    #[param(minimum = 0)]
    before: Option<i64>,
    /// Only messages newer than this message id (catching up)
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// A message id given as `field`: 0 or more.
fn message_id(field: &str, id: Option<i64>) -> Result<Option<i64>, ApiError> {
    match id {
        Some(id) if id < 0 => Err(ApiError::invalid(field, format!("{field} must be a message id (0 or more)"))),
        other => Ok(other),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Conversation {
    /// Newest first
    messages: Vec<Message>,
}

type ConversationReply = Envelope<Conversation>;

async fn conversation(
    gateway: &Gateway,
    account: &Account,
    peer: pb::list_conversation_request::Peer,
    query: HistoryQuery,
) -> Reply<ConversationReply> {
    let request = pb::ListConversationRequest {
        peer: Some(peer),
        limit: query.limit.unwrap_or(0),
        offset: query.offset.unwrap_or(0),
        before_id: message_id("before", query.before)?,
        after_id: message_id("after", query.after)?,
    };
    let list = gateway.messaging(&account.principal).list_conversation(request).await?.into_inner().messages;
    Ok(Json(Envelope(Conversation { messages: messages(list) })))
}

#[utoipa::path(get, path = "/messages/{handle}", tag = "Messages", summary = "Your conversation with a user, newest first",
    description = "Page back with `before` (the oldest id you hold) and catch up with `after` (the newest); both are message ids. \
        `inbox`, `stream` and `dm` name the fixed routes here: reach a user with such a handle by wallet address.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("handle" = Handle, Path, description = "The other user's handle (any case)"), HistoryQuery),
    responses(
        (status = 200, description = "Messages, newest first", body = ConversationReply),
        (status = 404, description = "No user has this handle (`NOT_FOUND`)"),
    ))]
pub async fn conversation_with_handle(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(handle): PathParam<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Reply<ConversationReply> {
    let handle = Handle::parse("handle", handle)?;
    conversation(&gateway, &account, pb::list_conversation_request::Peer::Handle(handle.into()), query).await
}

#[utoipa::path(get, path = "/messages/address/{address}", tag = "Messages", summary = "Your conversation with a wallet, newest first",
    description = "For a wallet with no account here, or the wallet of an account. Paging as for /messages/{handle}.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("address" = PeerAddress, Path, description = "The other side's wallet (EIP-55 or lowercase)"), HistoryQuery),
    responses((status = 200, description = "Messages, newest first", body = ConversationReply)))]
pub async fn conversation_with_address(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(address): PathParam<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Reply<ConversationReply> {
    let address = PeerAddress::parse("address", address)?;
    let peer = pb::list_conversation_request::Peer::WalletAddress(address.into());
    // The service names the address `wallet_address`; here it is the path's `address`.
    conversation(&gateway, &account, peer, query).await.map_err(|error| match error.field.as_deref() {
        Some("wallet_address") => {
            ApiError { field: Some("address".to_string()), message: error.message.replacen("wallet_address", "address", 1), ..error }
        }
        _ => error,
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Replay after this message id (`Last-Event-ID` wins); without either, only new messages
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// Where a stream starts: after `Last-Event-ID` (what a reconnecting client last saw), else
/// after `?after=`, else at new messages only.
fn stream_start(headers: &HeaderMap, query: &StreamQuery) -> Result<i64, ApiError> {
    let after = message_id("after", query.after)?;
    let field = "Last-Event-ID";
    if let Some(value) = headers.get(LAST_EVENT_ID_HEADER) {
        let text = value.to_str().map_err(|_| ApiError::invalid(field, format!("{field} {}", EventId::FORMAT.rule)))?;
        let id = EventId::parse(field, text.to_string())?;
        return Ok(id.0.parse().expect("18 digits fit an i64"));
    }
    Ok(after.unwrap_or(0))
}

/// The data of a stream's last event when it ends with an error.
#[derive(Serialize, ToSchema)]
pub struct StreamError {
    /// Machine-readable code, e.g. UNAVAILABLE
    code: String,
    /// Human-readable message
    error: String,
}

/// One event of `/messages/stream`, as the OpenAPI document describes it: a message (its id,
/// `event: message`, the message object as JSON) or a last error (`event: error`).
pub struct StreamEvent;

/// A string holding JSON of the schema `name`.
fn json_text(name: &str) -> Object {
    ObjectBuilder::new().schema_type(Type::String).content_media_type("application/json").content_schema(Some(Ref::from_schema_name(name))).build()
}

fn constant(value: &'static str) -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some([value])).build()
}

impl PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let message = ObjectBuilder::new()
            .property("id", ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]+$")))
            .property("event", constant("message"))
            .property("data", json_text("Message"))
            .required("id")
            .required("event")
            .required("data");
        let group_message = ObjectBuilder::new()
            .property("event", constant("group_message"))
            .property("data", json_text("GroupMessage"))
            .required("event")
            .required("data");
        let error =
            ObjectBuilder::new().property("event", constant("error")).property("data", json_text("StreamError")).required("event").required("data");
        RefOr::T(Schema::OneOf(OneOfBuilder::new().item(message).item(group_message).item(error).build()))
    }
}

impl ToSchema for StreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("Message".to_string(), Message::schema()));
        schemas.push(("StreamError".to_string(), StreamError::schema()));
        schemas.push(("GroupMessage".to_string(), GroupMessage::schema()));
        Message::schemas(schemas);
    }
}

fn message_event(message: pb::Message) -> Event {
    if message.group_id.is_some() {
        // Group messages carry no `id:`: they are not in the stream's replay sequence, so
        // `Last-Event-ID` keeps naming the last direct message.
        let data = serde_json::to_string(&GroupMessage::from_stream(message)).expect("a message serializes");
        return Event::default().event("group_message").data(data);
    }
    let id = message.id.to_string();
    let data = serde_json::to_string(&Message::from(message)).expect("a message serializes");
    Event::default().id(id).event("message").data(data)
}

fn error_event(status: &tonic::Status) -> Event {
    let error = ServiceError::from_status(status);
    let data = StreamError { code: error.code.as_str().to_string(), error: error.message };
    Event::default().event("error").data(serde_json::to_string(&data).expect("an error serializes"))
}

#[utoipa::path(get, path = "/messages/stream", tag = "Messages", summary = "Your messages as they arrive (Server-Sent Events)",
    description = "Every message of your conversations after the starting id, oldest first, then each new one as it is stored: \
        once each, in order, with no gap. Each event is `id: <message id>`, `event: message`, `data: <message JSON>`; \
        reconnect with `Last-Event-ID` to resume without duplicates. New messages of the groups you are a member of \
        arrive live as `event: group_message`, `data: <group message JSON>` (with its `group_id`), without an `id:` and \
        not replayed: read what you missed with GET /groups/{id}/messages?after=. A comment line arrives every 15 seconds while idle. \
        When the stream ends with an error (a slow reader dropped, the service going away), an `event: error` \
        carries `{\"code\", \"error\"}` before the connection closes. Each open stream counts against the per-IP cap on \
        long-lived streams (`CLAWX_XMTP_STREAMS_PER_IP`); past it, 429 `RATE_LIMITED`.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(
        ("Last-Event-ID" = inline(Option<EventId>), Header, nullable = false, description = "The id of the last message received: replay starts after it"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "An endless event stream; the schema is one event's", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "Invalid `after` or `Last-Event-ID` (`VALIDATION_FAILED`)"),
    ))]
pub async fn stream_messages(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    headers: HeaderMap,
    QueryParams(query): QueryParams<StreamQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let after_id = stream_start(&headers, &query)?;
    let (slot, upstream) = open_message_stream(&gateway, &account.principal, after_id).await?;
    let events = relay(upstream, slot).take_until(gateway.shutdown.clone().cancelled_owned());
    let stream =
        Sse::new(events).keep_alive(KeepAlive::new().interval(gateway.config.sse_heartbeat.max(Duration::from_millis(10))).text("heartbeat"));
    // Buffering proxies (nginx) would hold events back.
    Ok(([(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))], stream))
}

/// One of the client address's stream slots and the caller's messages after `after_id`, live:
/// what the event stream, MCP waits and MCP subscriptions hold open. 429 `RATE_LIMITED` when the
/// address holds all its slots.
pub(crate) async fn open_message_stream(
    gateway: &Gateway,
    principal: &clawx_common::Principal,
    after_id: i64,
) -> Result<(crate::limiter::StreamSlot, tonic::Streaming<pb::Message>), ApiError> {
    let client_ip = principal.client_ip.as_deref().unwrap_or("unknown");
    let Some(slot) = gateway.streams.acquire(client_ip) else {
        let refusal = ApiError::new(ErrorCode::RateLimited, "too many open streams, waits and subscriptions from this address; close some first");
        return Err(ApiError { retry_after: Some(1), ..refusal });
    };
    let upstream = gateway.messaging(principal).stream_messages(pb::StreamMessagesRequest { after_id }).await?.into_inner();
    Ok((slot, upstream))
}

/// The upstream messages as events, holding the client's stream slot until the stream ends or
/// the client leaves; an upstream error becomes a last `error` event.
fn relay(
    upstream: tonic::Streaming<pb::Message>,
    slot: crate::limiter::StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    stream::unfold(Some((upstream, slot)), |state| async move {
        let (mut upstream, slot) = state?;
        match upstream.next().await {
            Some(Ok(message)) => Some((Ok(message_event(message)), Some((upstream, slot)))),
            Some(Err(status)) => Some((Ok(error_event(&status)), None)),
            None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_start_after_last_event_id_then_after() {
        let mut headers = HeaderMap::new();
        assert_eq!(stream_start(&headers, &StreamQuery { after: None }).unwrap(), 0);
        assert_eq!(stream_start(&headers, &StreamQuery { after: Some(7) }).unwrap(), 7);
        assert_eq!(stream_start(&headers, &StreamQuery { after: Some(-1) }).unwrap_err().field.as_deref(), Some("after"));
        headers.insert(LAST_EVENT_ID_HEADER, HeaderValue::from_static("42"));
        assert_eq!(stream_start(&headers, &StreamQuery { after: Some(7) }).unwrap(), 42);
        headers.insert(LAST_EVENT_ID_HEADER, HeaderValue::from_static("x"));
        assert_eq!(stream_start(&headers, &StreamQuery { after: None }).unwrap_err().field.as_deref(), Some("Last-Event-ID"));
    }

    #[test]
    fn idempotency_keys_are_checked_like_request_ids() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), "");
        headers.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("retry-1:a.b_c"));
        assert_eq!(idempotency_key(&headers).unwrap(), "retry-1:a.b_c");
        for bad in ["has space", "ü", &"k".repeat(129)] {
            headers.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_bytes(bad.as_bytes()).unwrap());
            let refused = idempotency_key(&headers).unwrap_err();
            assert_eq!((refused.code, refused.field.as_deref()), (ErrorCode::ValidationFailed, Some("Idempotency-Key")), "{bad}");
        }
    }

    #[test]
    fn message_objects_carry_addresses_only_for_wallets_without_accounts() {
        let message = pb::Message {
            id: 9,
            sender_id: Some(1),
            recipient_id: None,
            content: "hi".into(),
            sent_at_ms: 1_700_000_000_000,
            sender_handle: Some("alice".into()),
            recipient_handle: None,
            sender_address: None,
            recipient_address: Some("0x00000000000000000000000000000000000000ab".into()),
            delivery: pb::Delivery::Stored.into(),
            delivery_error: None,
            topic: "/clawx/dm/1/3".into(),
            group_id: None,
            content_type: None,
        };
        let json = serde_json::to_value(Message::from(message)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 9, "sender_id": 1, "recipient_id": null, "content": "hi", "sent_at": "2023-11-14 22:13:20",
                "sender_handle": "alice", "recipient_handle": null, "recipient_address": "0x00000000000000000000000000000000000000ab",
                "delivery": "stored", "topic": "/clawx/dm/1/3",
            })
        );
    }
}
