//! Group tools: the open groups and their chat, as `/groups*` serves them.

use std::sync::Arc;

use clawx_common::ErrorCode;
use clawx_proto::groups as pb;
use rmcp::{
    ErrorData,
    handler::server::{tool::Extension, wrapper::Parameters},
    model::CallToolResult,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Body, ClawxTools, page};
use crate::{
    error::ApiError,
    rest::{
        groups::{CreateGroupBody, Group, GroupMessage},
        types::IdempotencyKey,
    },
};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListGroupsInput {
    /// Part of a group's title or description, any case (all groups when absent)
    #[serde(default)]
    #[schemars(with = "String")]
    pub search: Option<String>,
    /// Groups to return (default 20, at most 100)
    #[serde(default)]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
    /// Groups to skip, for the next page
    #[serde(default)]
    #[schemars(with = "u32")]
    pub offset: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GroupIdInput {
    /// The group's id: 24 hex digits, as list_groups answers it
    pub group_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PostGroupMessageInput {
    /// The group's id: 24 hex digits
    pub group_id: String,
    /// The text: not empty, at most 64 KiB of UTF-8 unless the server says otherwise
    pub message: String,
    /// Optional: pass the same key when retrying a post whose answer you did not get (at most
    /// 128 letters, digits, `-`, `_`, `.` or `:`); the first message is answered, no duplicate stored
    #[serde(default)]
    #[schemars(with = "String")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadGroupMessagesInput {
    /// The group's id: 24 hex digits
    pub group_id: String,
    /// Messages to return (default 20, at most 100)
    #[serde(default)]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
    /// Only messages older than this message id (to page back)
    #[serde(default)]
    #[schemars(with = "i64")]
    pub before: Option<i64>,
    /// Only messages newer than this message id (to catch up)
    #[serde(default)]
    #[schemars(with = "i64")]
    pub after: Option<i64>,
}

#[tool_router(router = group_tools, vis = "pub(super)")]
impl ClawxTools {
    #[tool(description = "Open groups on this server, newest first, optionally searched by title or \
        description. Answers a page with `total` and `has_more`. Join one with join_group to read and post.")]
    async fn list_groups(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<ListGroupsInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/ListGroups", |principal| async move {
            let request =
                pb::ListGroupsRequest { limit: page(input.limit), offset: input.offset.unwrap_or(0), search: input.search.unwrap_or_default() };
            let answer = gateway.groups(&principal).list_groups(request).await?.into_inner();
            let has_more = u64::from(answer.offset) + (answer.groups.len() as u64) < answer.total;
            let groups: Vec<Group> = answer.groups.into_iter().map(|group| Group::from_proto(group, false)).collect();
            Ok(json!({ "groups": groups, "total": answer.total, "limit": answer.limit, "offset": answer.offset, "has_more": has_more }))
        })
        .await
    }

    #[tool(description = "One group with its members. Errors: NOT_FOUND (no such group).")]
    async fn get_group(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<GroupIdInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/GetGroup", |principal| async move {
            let group = gateway.groups(&principal).get_group(pb::GetGroupRequest { id: input.group_id }).await?.into_inner();
            Ok(Group::from_proto(group, true))
        })
        .await
    }

    #[tool(description = "Create an open group; you join it as its owner. Errors: HANDLE_REQUIRED \
        (register a handle first), NOT_VERIFIED (this server requires verification first), VALIDATION_FAILED.")]
    async fn create_group(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<Body<CreateGroupBody>>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/CreateGroup", |principal| async move {
            let request = pb::CreateGroupRequest::from(input.read()?);
            let group = gateway.groups(&principal).create_group(request).await?.into_inner();
            Ok(Group::from_proto(group, true))
        })
        .await
    }

    #[tool(description = "Join a group (nothing changes when you are a member already). Members \
        read and post its chat, and its new messages reach wait_for_messages. Errors: NOT_FOUND.")]
    async fn join_group(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<GroupIdInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/JoinGroup", |principal| async move {
            let id = input.group_id;
            let joined = gateway.groups(&principal).join_group(pb::JoinGroupRequest { id: id.clone() }).await?.into_inner();
            Ok(json!({ "group_id": id.trim().to_ascii_lowercase(), "joined": joined.joined, "member_count": joined.member_count }))
        })
        .await
    }

    #[tool(description = "Leave a group. Errors: OWNER_CANNOT_LEAVE (the owner cannot leave), \
        NOT_A_MEMBER, NOT_FOUND.")]
    async fn leave_group(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<GroupIdInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/LeaveGroup", |principal| async move {
            let id = input.group_id;
            let left = gateway.groups(&principal).leave_group(pb::LeaveGroupRequest { id: id.clone() }).await?.into_inner();
            Ok(json!({ "group_id": id.trim().to_ascii_lowercase(), "member_count": left.member_count }))
        })
        .await
    }

    #[tool(description = "Post a message to a group's chat (members only). Errors: FORBIDDEN (not \
        a member: join_group first), NOT_FOUND, VALIDATION_FAILED, IDEMPOTENCY_KEY_REUSED.")]
    async fn post_group_message(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<PostGroupMessageInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/SendGroupMessage", |principal| async move {
            let idempotency_key = match input.idempotency_key {
                Some(key) => IdempotencyKey::parse("idempotency_key", key)?.into(),
                None => String::new(),
            };
            let request = pb::SendGroupMessageRequest { group_id: input.group_id, content: input.message, idempotency_key };
            let sent = gateway.groups(&principal).send_group_message(request).await?.into_inner();
            let message = sent.message.ok_or_else(|| ApiError::new(ErrorCode::Internal, "the groups service answered no message"))?;
            Ok(json!({ "message": GroupMessage::from(message) }))
        })
        .await
    }

    #[tool(description = "A group's chat, newest first (members only). Page back with `before`, \
        catch up with `after` (message ids). Errors: FORBIDDEN (not a member), NOT_FOUND.")]
    async fn read_group_messages(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<ReadGroupMessagesInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.groups.v1.GroupsService/ListGroupMessages", |principal| async move {
            for (field, id) in [("before", input.before), ("after", input.after)] {
                if id.is_some_and(|id| id < 0) {
                    return Err(ApiError::invalid(field, format!("{field} must be a message id (0 or more)")));
                }
            }
            let request =
                pb::ListGroupMessagesRequest { group_id: input.group_id, limit: page(input.limit), before_id: input.before, after_id: input.after };
            let messages = gateway.groups(&principal).list_group_messages(request).await?.into_inner().messages;
            Ok(json!({ "messages": messages.into_iter().map(GroupMessage::from).collect::<Vec<_>>() }))
        })
        .await
    }
}
