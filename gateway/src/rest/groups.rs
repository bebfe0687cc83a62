//! `/groups*`: open groups and their chat — the groups service's REST face. Each handler
//! declares its OpenAPI operation and, in [`routes`], the gRPC method the edge guard decides on
//! it by.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use clawx_common::{ErrorCode, time::format_iso_datetime};
use clawx_proto::{groups as pb, messaging as messaging_pb};
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
    types::{Envelope, GroupDescription, GroupTitle, IdempotencyKey, ProfileUrl},
};
use crate::{error::ApiError, guard::Gateway};

type Reply<T> = Result<Json<T>, ApiError>;

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The groups service's routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<Gateway>> {
    let guarded = |rpc, routes| guarded(gateway, rpc, routes);
    OpenApiRouter::new()
        .routes(guarded("/clawx.groups.v1.GroupsService/ListGroups", routes!(list_groups)))
        .routes(guarded("/clawx.groups.v1.GroupsService/CreateGroup", routes!(create_group)))
        .routes(guarded("/clawx.groups.v1.GroupsService/GetGroup", routes!(get_group)))
        .routes(guarded("/clawx.groups.v1.GroupsService/UpdateGroup", routes!(update_group)))
        .routes(guarded("/clawx.groups.v1.GroupsService/DeleteGroup", routes!(delete_group)))
        .routes(guarded("/clawx.groups.v1.GroupsService/JoinGroup", routes!(join_group)))
        .routes(guarded("/clawx.groups.v1.GroupsService/LeaveGroup", routes!(leave_group)))
        .routes(guarded("/clawx.groups.v1.GroupsService/SendGroupMessage", routes!(send_message)))
        .routes(guarded("/clawx.groups.v1.GroupsService/ListGroupMessages", routes!(list_messages)))
}

/// `YYYY-MM-DDTHH:MM:SS`, UTC: how groups show times.
fn iso_datetime() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("UTC, YYYY-MM-DDTHH:MM:SS"))
        .pattern(Some("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$"))
        .build()
}

/// A member of a group.
#[derive(Serialize, ToSchema)]
pub struct Member {
    /// The member's account id
    id: i64,
    /// The member's server-held wallet (EIP-55)
    wallet_address: String,
    #[schema(required = true)]
    handle: Option<String>,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(schema_with = iso_datetime)]
    joined_at: String,
}

impl From<pb::Member> for Member {
    fn from(member: pb::Member) -> Member {
        Member {
            id: member.id,
            wallet_address: member.wallet_address,
            handle: member.handle,
            name: member.name,
            joined_at: format_iso_datetime(member.joined_at_ms),
        }
    }
}

/// A group. Owner fields are null when the owner's account no longer exists.
#[derive(Serialize, ToSchema)]
pub struct Group {
    /// Hex
    #[schema(pattern = "^[0-9a-f]{24}$")]
    id: String,
    title: String,
    description: String,
    #[schema(required = true)]
    x_url: Option<String>,
    #[schema(required = true)]
    github_url: Option<String>,
    #[schema(required = true)]
    website_url: Option<String>,
    owner_id: i64,
    #[schema(required = true)]
    owner_handle: Option<String>,
    #[schema(required = true)]
    owner_name: Option<String>,
    /// The owner's server-held wallet (EIP-55)
    #[schema(required = true)]
    owner_address: Option<String>,
    /// Exact: every member, the owner included
    member_count: u32,
    #[schema(schema_with = iso_datetime)]
    created_at: String,
    #[schema(schema_with = iso_datetime)]
    updated_at: String,
    /// Members by join time (the first 499); only in a single group's answers
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    members: Option<Vec<Member>>,
}

impl Group {
    pub(crate) fn from_proto(group: pb::Group, with_members: bool) -> Group {
        Group {
            id: group.id,
            title: group.title,
            description: group.description,
            x_url: group.x_url,
            github_url: group.github_url,
            website_url: group.website_url,
            owner_id: group.owner_id,
            owner_handle: group.owner_handle,
            owner_name: group.owner_name,
            owner_address: group.owner_address,
            member_count: group.member_count,
            created_at: format_iso_datetime(group.created_at_ms),
            updated_at: format_iso_datetime(group.updated_at_ms),
            members: with_members.then(|| group.members.into_iter().map(Member::from).collect()),
        }
    }
}

type GroupReply = Envelope<Group>;

fn details(group: pb::Group) -> Json<GroupReply> {
    Json(Envelope(Group::from_proto(group, true)))
}

/// A page of groups.
#[derive(Serialize, ToSchema)]
pub struct GroupList {
    /// Newest first
    groups: Vec<Group>,
    /// Groups matching the search
    total: u64,
    /// The page size applied
    limit: u32,
    offset: u32,
    /// Whether groups follow this page
    has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupsQuery {
    /// Page size (capped at 100; 0 means the default)
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 20)]
    limit: Option<u32>,
    /// Groups to skip
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 0)]
    offset: Option<u32>,
    /// Substring of the title or the description, case-insensitive (`%` and `_` match themselves)
    #[param(max_length = 200, pattern = "^[^\\x00]*$")]
    search: Option<String>,
}

#[utoipa::path(get, path = "/groups", tag = "Groups", summary = "Groups, newest first",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(GroupsQuery),
    responses((status = 200, description = "A page of groups", body = GroupList)))]
pub async fn list_groups(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    QueryParams(query): QueryParams<GroupsQuery>,
) -> Reply<GroupList> {
    let request =
        pb::ListGroupsRequest { limit: query.limit.unwrap_or(0), offset: query.offset.unwrap_or(0), search: query.search.unwrap_or_default() };
    let page = gateway.groups(&principal).list_groups(request).await?.into_inner();
    let has_more = u64::from(page.offset) + (page.groups.len() as u64) < page.total;
    Ok(Json(GroupList {
        groups: page.groups.into_iter().map(|group| Group::from_proto(group, false)).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
        has_more,
    }))
}

#[utoipa::path(get, path = "/groups/{id}", tag = "Groups", summary = "A group with its members",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)")),
    responses((status = 200, description = "The group", body = GroupReply), (status = 404, description = "No such group, or a malformed id (`NOT_FOUND`)")))]
pub async fn get_group(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, PathParam(id): PathParam<String>) -> Reply<GroupReply> {
    let group = gateway.groups(&principal).get_group(pb::GetGroupRequest { id }).await?.into_inner();
    Ok(details(group))
}

/// The body of `POST /groups` (and the `create_group` MCP tool's input).
#[derive(Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupBody {
    /// One line, at most 200 characters
    title: GroupTitle,
    /// What the group is for: at most 10,000 characters; line breaks allowed
    description: GroupDescription,
    /// Optional http(s) URL of the group's X account
    #[serde(default)]
    #[schemars(with = "ProfileUrl")]
    x_url: Option<ProfileUrl>,
    /// Optional http(s) URL of the group's GitHub
    #[serde(default)]
    #[schemars(with = "ProfileUrl")]
    github_url: Option<ProfileUrl>,
    /// Optional http(s) URL of the group's website
    #[serde(default)]
    #[schemars(with = "ProfileUrl")]
    website_url: Option<ProfileUrl>,
}

impl From<CreateGroupBody> for pb::CreateGroupRequest {
    fn from(body: CreateGroupBody) -> pb::CreateGroupRequest {
        pb::CreateGroupRequest {
            title: body.title.into(),
            description: body.description.into(),
            x_url: body.x_url.map(Into::into),
            github_url: body.github_url.map(Into::into),
            website_url: body.website_url.map(Into::into),
        }
    }
}

#[utoipa::path(post, path = "/groups", tag = "Groups", summary = "Create a group (you join it as its owner)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = CreateGroupBody,
    responses(
        (status = 200, description = "The new group, as GET /groups/{id} shows it", body = GroupReply),
        (status = 403, description = "Register a handle first (`HANDLE_REQUIRED`), or verify the account first when verification is required (`NOT_VERIFIED`)"),
    ))]
pub async fn create_group(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<CreateGroupBody>) -> Reply<GroupReply> {
    let group = gateway.groups(&account.principal).create_group(pb::CreateGroupRequest::from(body)).await?.into_inner();
    Ok(details(group))
}

/// A partial update: absent fields are kept, `null` clears a URL.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupBody {
    // Never null: a title or a description cannot be cleared.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = GroupTitle, required = false)]
    title: Option<Option<GroupTitle>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = GroupDescription, required = false)]
    description: Option<Option<GroupDescription>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ProfileUrl>)]
    x_url: Option<Option<ProfileUrl>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ProfileUrl>)]
    github_url: Option<Option<ProfileUrl>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ProfileUrl>)]
    website_url: Option<Option<ProfileUrl>>,
}

/// `null` clears a URL: sent to the service as an empty string.
fn clearable(value: Option<Option<ProfileUrl>>) -> Option<String> {
    value.map(|value| value.map(Into::into).unwrap_or_default())
}

/// A field that may be changed but not cleared.
fn required<T: Into<String>>(field: &str, value: Option<Option<T>>) -> Result<Option<String>, ApiError> {
    match value {
        Some(None) => Err(ApiError::invalid(field, format!("{field} cannot be cleared"))),
        Some(Some(value)) => Ok(Some(value.into())),
        None => Ok(None),
    }
}

#[utoipa::path(patch, path = "/groups/{id}", tag = "Groups", summary = "Update your group (null clears a URL)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)")),
    request_body = UpdateGroupBody,
    responses(
        (status = 200, description = "The updated group", body = GroupReply),
        (status = 403, description = "Not your group (`FORBIDDEN`)"),
        (status = 404, description = "No such group (`NOT_FOUND`)"),
    ))]
pub async fn update_group(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<UpdateGroupBody>,
) -> Reply<GroupReply> {
    let request = pb::UpdateGroupRequest {
        id,
        title: required("title", body.title)?,
        description: required("description", body.description)?,
        x_url: clearable(body.x_url),
        github_url: clearable(body.github_url),
        website_url: clearable(body.website_url),
    };
    let group = gateway.groups(&account.principal).update_group(request).await?.into_inner();
    Ok(details(group))
}

#[utoipa::path(delete, path = "/groups/{id}", tag = "Groups", summary = "Delete your group with its members and messages",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not your group (`FORBIDDEN`)"),
        (status = 404, description = "No such group (`NOT_FOUND`)"),
    ))]
pub async fn delete_group(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Result<StatusCode, ApiError> {
    gateway.groups(&account.principal).delete_group(pb::DeleteGroupRequest { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct Joined {
    group_id: String,
    /// False when you were a member already
    joined: bool,
    member_count: u32,
}

type JoinedReply = Envelope<Joined>;

#[utoipa::path(post, path = "/groups/{id}/join", tag = "Groups", summary = "Join a group (a no-op when you are a member)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)")),
    responses(
        (status = 200, description = "You are a member", body = JoinedReply),
        (status = 404, description = "No such group (`NOT_FOUND`)"),
    ))]
pub async fn join_group(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Reply<JoinedReply> {
    let joined = gateway.groups(&account.principal).join_group(pb::JoinGroupRequest { id: id.clone() }).await?.into_inner();
    Ok(Json(Envelope(Joined { group_id: id.trim().to_ascii_lowercase(), joined: joined.joined, member_count: joined.member_count })))
}

#[derive(Serialize, ToSchema)]
pub struct Left {
    group_id: String,
    member_count: u32,
}

type LeftReply = Envelope<Left>;

#[utoipa::path(post, path = "/groups/{id}/leave", tag = "Groups", summary = "Leave a group",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)")),
    responses(
        (status = 200, description = "You are no longer a member", body = LeftReply),
        (status = 400, description = "The owner cannot leave: delete the group instead (`OWNER_CANNOT_LEAVE`); you are not a member (`NOT_A_MEMBER`)"),
        (status = 404, description = "No such group (`NOT_FOUND`)"),
    ))]
pub async fn leave_group(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Reply<LeftReply> {
    let left = gateway.groups(&account.principal).leave_group(pb::LeaveGroupRequest { id: id.clone() }).await?.into_inner();
    Ok(Json(Envelope(Left { group_id: id.trim().to_ascii_lowercase(), member_count: left.member_count })))
}

/// A message of a group's chat.
#[derive(Serialize, ToSchema)]
pub struct GroupMessage {
    id: i64,
    /// The group (hex)
    group_id: String,
    sender_id: i64,
    /// Null when the sender has no handle (or no account any more)
    #[schema(required = true)]
    sender_handle: Option<String>,
    content: String,
    #[schema(schema_with = iso_datetime)]
    sent_at: String,
}

impl From<pb::GroupMessage> for GroupMessage {
    fn from(message: pb::GroupMessage) -> GroupMessage {
        GroupMessage {
            id: message.id,
            group_id: message.group_id,
            sender_id: message.sender_id,
            sender_handle: message.sender_handle,
            content: message.content,
            sent_at: format_iso_datetime(message.sent_at_ms),
        }
    }
}

impl GroupMessage {
    /// A group message as a message stream carries it (see `/messages/stream`).
    pub fn from_stream(message: messaging_pb::Message) -> GroupMessage {
        GroupMessage {
            id: message.id,
            group_id: message.group_id.unwrap_or_default(),
            sender_id: message.sender_id.unwrap_or_default(),
            sender_handle: message.sender_handle,
            content: message.content,
            sent_at: format_iso_datetime(message.sent_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMessageBody {
    /// The text: not empty, at most `CLAWX_MESSAGE_MAX_BYTES` bytes of UTF-8 (64 KiB by default)
    #[schema(min_length = 1)]
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct SentGroupMessage {
    message: GroupMessage,
}

type SentGroupMessageReply = Envelope<SentGroupMessage>;

/// The `Idempotency-Key` header, or empty when none was sent.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let field = "Idempotency-Key";
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(String::new());
    };
    let text = value.to_str().map_err(|_| ApiError::invalid(field, format!("{field} {}", IdempotencyKey::FORMAT.rule)))?;
    Ok(IdempotencyKey::parse(field, text.to_string())?.into())
}

#[utoipa::path(post, path = "/groups/{id}/messages", tag = "Groups", summary = "Post to a group's chat (members only)",
    description = "Stored before the answer, then put on every member's live message stream (`/messages/stream`, event `group_message`). \
        With an `Idempotency-Key`, a retry with the same key and body answers the first message and stores nothing.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(
        ("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)"),
        ("Idempotency-Key" = inline(Option<IdempotencyKey>), Header, nullable = false, description = "Makes a retried send safe: scoped to your account, kept 24 hours"),
    ),
    request_body = GroupMessageBody,
    responses(
        (status = 200, description = "Posted", body = SentGroupMessageReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field: an empty or oversized message, a bad Idempotency-Key)"),
        (status = 403, description = "You are not a member of the group (`FORBIDDEN`)"),
        (status = 404, description = "No such group (`NOT_FOUND`)"),
        (status = 409, description = "This Idempotency-Key was used with another body (`IDEMPOTENCY_KEY_REUSED`)"),
    ))]
pub async fn send_message(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GroupMessageBody>,
) -> Reply<SentGroupMessageReply> {
    let request = pb::SendGroupMessageRequest { group_id: id, content: body.message, idempotency_key: idempotency_key(&headers)? };
    let sent = gateway.groups(&account.principal).send_group_message(request).await?.into_inner();
    let message = sent.message.ok_or_else(|| ApiError::new(ErrorCode::Internal, "the groups service answered no message"))?;
    Ok(Json(Envelope(SentGroupMessage { message: message.into() })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupMessagesQuery {
    /// Page size (capped at 100; 0 means the default)
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295u64, default = 50)]
    limit: Option<u32>,
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
pub struct GroupMessages {
    /// Newest first
    messages: Vec<GroupMessage>,
}

type GroupMessagesReply = Envelope<GroupMessages>;

#[utoipa::path(get, path = "/groups/{id}/messages", tag = "Groups", summary = "A group's chat, newest first (members only)",
    description = "Page back with `before` (the oldest id you hold) and catch up with `after` (the newest); both are message ids.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The group's id: 24 hex digits (anything else is 404)"), GroupMessagesQuery),
    responses(
        (status = 200, description = "Messages, newest first", body = GroupMessagesReply),
        (status = 403, description = "You are not a member of the group (`FORBIDDEN`)"),
        (status = 404, description = "No such group (`NOT_FOUND`)"),
    ))]
pub async fn list_messages(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    PathParam(id): PathParam<String>,
    QueryParams(query): QueryParams<GroupMessagesQuery>,
) -> Reply<GroupMessagesReply> {
    let request = pb::ListGroupMessagesRequest {
        group_id: id,
        limit: query.limit.unwrap_or(0),
        before_id: message_id("before", query.before)?,
        after_id: message_id("after", query.after)?,
    };
    let messages = gateway.groups(&account.principal).list_group_messages(request).await?.into_inner().messages;
    Ok(Json(Envelope(GroupMessages { messages: messages.into_iter().map(GroupMessage::from).collect() })))
}
