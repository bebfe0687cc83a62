//! The rules of open groups and their chat: validation, ownership, membership, idempotent
//! sends, and the display data of owners, members and senders, read from the identity service
//! at read time in one batched call (so a renamed account shows its new name everywhere at
//! once, and nothing here goes stale).
//!
//! Accounts deleted since they joined (the verify service's sweep of unverified accounts) are
//! found the same way: the identity service no longer knows them. A read drops them from the
//! group's members (never the owner: a group whose owner is gone keeps its owner id with the
//! owner's handle, name and address null), so reads never fail on them and `member_count`
//! converges to the accounts that exist.

use std::{collections::HashMap, sync::Arc};

use clawx_common::{ErrorCode, ServiceError, ServiceResult, time::now_ms};
use clawx_identity::domain::types::{parse_name, parse_text, parse_url};
use clawx_proto::{groups as pb, identity::Profile, messaging};
use sha2::{Digest, Sha256};

use crate::{
    accounts::{Accounts, MAX_RESOLVE},
    store::{GroupChanges, GroupRecord, GroupsStore, MessageRecord, NewGroup, NewMessage, SendOutcome, StoreError},
};

/// Default and largest page of the group list.
pub const DEFAULT_GROUPS_PAGE: u32 = 20;
pub const MAX_GROUPS_PAGE: u32 = 100;
/// Default and largest page of a group's messages.
pub const DEFAULT_MESSAGES_PAGE: u32 = 50;
pub const MAX_MESSAGES_PAGE: u32 = 100;
/// Members a group's details list (by join time): with the owner, one identity lookup.
pub const MEMBERS_SHOWN: u32 = (MAX_RESOLVE - 1) as u32;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Longest search text.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Largest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// Random bytes of a group id (hex: twice as many characters).
const GROUP_ID_BYTES: usize = 12;

/// Settings of the groups domain.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Largest group message, in bytes of content (`CLAWX_MESSAGE_MAX_BYTES`, as direct messages).
    pub message_max_bytes: usize,
}

/// The groups service of one replica.
#[derive(Debug)]
pub struct Groups {
    store: Arc<dyn GroupsStore>,
    accounts: Accounts,
    settings: Settings,
}

fn not_found() -> ServiceError {
    ServiceError::not_found("group not found")
}

fn internal(error: StoreError) -> ServiceError {
    ServiceError::internal(format!("groups store: {error}"))
}

/// The store's refusals as clients see them.
fn refused(error: StoreError) -> ServiceError {
    match error {
        StoreError::NotFound => not_found(),
        StoreError::NotOwner => ServiceError::forbidden("only the group's owner may change or delete it"),
        StoreError::OwnerCannotLeave => ServiceError::new(ErrorCode::OwnerCannotLeave, "the owner cannot leave the group: delete it instead"),
        StoreError::NotAMember => ServiceError::new(ErrorCode::NotAMember, "you are not a member of this group"),
        other => internal(other),
    }
}

/// A group id as sent: hex of the right length in any case, lower-cased; anything else names
/// no group.
pub fn parse_group_id(text: &str) -> ServiceResult<String> {
    let text = text.trim();
    if text.len() == GROUP_ID_BYTES * 2 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(not_found())
    }
}

fn new_group_id() -> String {
    hex::encode(rand::random::<[u8; GROUP_ID_BYTES]>())
}

/// A required description: 1 to 10,000 characters, line breaks allowed.
fn parse_description(text: &str) -> ServiceResult<String> {
    parse_text("description", text, MAX_DESCRIPTION_CHARS)?.ok_or_else(|| ServiceError::invalid("description", "description must not be empty"))
}

fn parse_optional_url(field: &str, text: Option<&str>) -> ServiceResult<Option<String>> {
    match text {
        Some(text) => parse_url(field, text.trim()),
        None => Ok(None),
    }
}

/// What a send's idempotency key stands for: the group and the content.
fn request_hash(group_id: &str, content: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update((group_id.len() as u64).to_be_bytes());
    hasher.update(group_id.as_bytes());
    hasher.update(content.as_bytes());
    hasher.finalize().to_vec()
}

fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// The API form of a group, with its owner's display data when the owner exists.
fn group_view(record: GroupRecord, profiles: &HashMap<i64, Profile>) -> pb::Group {
    let owner = profiles.get(&record.owner_id);
    pb::Group {
        id: record.id,
        title: record.title,
        description: record.description,
        x_url: record.x_url,
        github_url: record.github_url,
        website_url: record.website_url,
        owner_id: record.owner_id,
        owner_handle: owner.and_then(|profile| profile.handle.clone()),
        owner_name: owner.and_then(|profile| profile.name.clone()),
        owner_address: owner.map(|profile| profile.wallet_address.clone()),
        member_count: count(record.member_count),
        created_at_ms: record.created_at,
        updated_at_ms: record.updated_at,
        members: Vec::new(),
    }
}

fn message_view(record: MessageRecord, profiles: &HashMap<i64, Profile>) -> pb::GroupMessage {
    pb::GroupMessage {
        sender_handle: profiles.get(&record.sender_id).and_then(|profile| profile.handle.clone()),
        id: record.id,
        group_id: record.group_id,
        sender_id: record.sender_id,
        content: record.content,
        sent_at_ms: record.sent_at,
    }
}

/// A group message as the members' message streams carry it.
pub fn stream_message(message: &pb::GroupMessage) -> messaging::Message {
    messaging::Message {
        id: message.id,
        sender_id: Some(message.sender_id),
        content: message.content.clone(),
        sent_at_ms: message.sent_at_ms,
        sender_handle: message.sender_handle.clone(),
        delivery: messaging::Delivery::Stored.into(),
        topic: format!("/clawx/group/1/{}", message.group_id),
        group_id: Some(message.group_id.clone()),
        ..Default::default()
    }
}

impl Groups {
    pub fn new(store: Arc<dyn GroupsStore>, accounts: Accounts, settings: Settings) -> Groups {
        Groups { store, accounts, settings }
    }

    async fn existing(&self, id: &str) -> ServiceResult<GroupRecord> {
        let id = parse_group_id(id)?;
        self.store.group(&id).await.map_err(internal)?.ok_or_else(not_found)
    }

    /// Groups newest first.
    pub async fn list(&self, limit: u32, offset: u32, search: &str) -> ServiceResult<pb::ListGroupsResponse> {
        let limit = if limit == 0 { DEFAULT_GROUPS_PAGE } else { limit.min(MAX_GROUPS_PAGE) };
        if search.chars().count() > MAX_SEARCH_CHARS {
            return Err(ServiceError::invalid("search", format!("search must be at most {MAX_SEARCH_CHARS} characters")));
        }
        // PostgreSQL text cannot hold NUL: refused here rather than failing the query.
        if search.contains('\0') {
            return Err(ServiceError::invalid("search", "search must not contain NUL characters"));
        }
        let search = search.trim().to_lowercase();
        let (records, total) = self.store.list_groups((!search.is_empty()).then_some(search.as_str()), limit, offset).await.map_err(internal)?;
        let owners: Vec<i64> = records.iter().map(|record| record.owner_id).collect();
        let profiles = self.accounts.profiles(&owners).await?;
        let groups = records.into_iter().map(|record| group_view(record, &profiles)).collect();
        Ok(pb::ListGroupsResponse { groups, total, limit, offset })
    }

    /// A group with its members (the first [`MEMBERS_SHOWN`] by join time). Members whose
    /// account no longer exists are removed on the way.
    pub async fn get(&self, id: &str) -> ServiceResult<pb::Group> {
        let record = self.existing(id).await?;
        self.with_members(record).await
    }

    async fn with_members(&self, mut record: GroupRecord) -> ServiceResult<pb::Group> {
        let members = self.store.members(&record.id, MEMBERS_SHOWN).await.map_err(internal)?;
        let mut ids: Vec<i64> = members.iter().map(|member| member.account_id).collect();
        ids.push(record.owner_id);
        let profiles = self.accounts.profiles(&ids).await?;
        let gone: Vec<i64> =
            members.iter().map(|member| member.account_id).filter(|id| *id != record.owner_id && !profiles.contains_key(id)).collect();
        if !gone.is_empty() {
            match self.store.remove_members(&record.id, &gone).await {
                Ok(removed) => {
                    tracing::info!(group.id = %record.id, removed, "members whose accounts no longer exist removed");
                    record.member_count -= removed as i64;
                }
                Err(error) => tracing::warn!(%error, group.id = %record.id, "could not remove members whose accounts no longer exist"),
            }
        }
        let members = members
            .into_iter()
            .filter_map(|member| {
                let profile = profiles.get(&member.account_id)?;
                Some(pb::Member {
                    id: member.account_id,
                    wallet_address: profile.wallet_address.clone(),
                    handle: profile.handle.clone(),
                    name: profile.name.clone(),
                    joined_at_ms: member.joined_at,
                })
            })
            .collect();
        Ok(pb::Group { members, ..group_view(record, &profiles) })
    }

    /// Creates a group owned by `account_id`, who must have a handle.
    #[tracing::instrument(name = "groups.create", skip_all, fields(account.id = account_id))]
    pub async fn create(&self, account_id: i64, request: pb::CreateGroupRequest) -> ServiceResult<pb::Group> {
        let title = parse_name("title", &request.title, MAX_TITLE_CHARS)?;
        let description = parse_description(&request.description)?;
        let x_url = parse_optional_url("x_url", request.x_url.as_deref())?;
        let github_url = parse_optional_url("github_url", request.github_url.as_deref())?;
        let website_url = parse_optional_url("website_url", request.website_url.as_deref())?;
        let profiles = self.accounts.profiles(&[account_id]).await?;
        let Some(owner) = profiles.get(&account_id) else {
            return Err(ServiceError::unauthorized("this account no longer exists"));
        };
        if owner.handle.is_none() {
            return Err(ServiceError::new(ErrorCode::HandleRequired, "register a handle first (POST /account/register) to create groups"));
        }
        let mut group =
            NewGroup { id: new_group_id(), title, description, x_url, github_url, website_url, owner_id: account_id, created_at: now_ms() };
        // 96 random bits: a collision is next to impossible, and a second draw settles it.
        let record = match self.store.create_group(&group).await {
            Err(StoreError::IdTaken) => {
                group.id = new_group_id();
                self.store.create_group(&group).await
            }
            other => other,
        }
        .map_err(internal)?;
        tracing::info!(group.id = %record.id, "group created");
        self.with_members(record).await
    }

    /// Changes fields of a group of `account_id`'s; empty URLs clear them.
    pub async fn update(&self, account_id: i64, request: pb::UpdateGroupRequest) -> ServiceResult<pb::Group> {
        let id = parse_group_id(&request.id)?;
        let changes = GroupChanges {
            title: request.title.as_deref().map(|title| parse_name("title", title, MAX_TITLE_CHARS)).transpose()?,
            description: request.description.as_deref().map(parse_description).transpose()?,
            x_url: request.x_url.as_deref().map(|url| parse_url("x_url", url.trim())).transpose()?,
            github_url: request.github_url.as_deref().map(|url| parse_url("github_url", url.trim())).transpose()?,
            website_url: request.website_url.as_deref().map(|url| parse_url("website_url", url.trim())).transpose()?,
        };
        let record = self.store.update_group(&id, account_id, &changes, now_ms()).await.map_err(refused)?;
        self.with_members(record).await
    }

    /// Deletes a group of `account_id`'s with its members and messages.
    #[tracing::instrument(name = "groups.delete", skip_all, fields(account.id = account_id))]
    pub async fn delete(&self, account_id: i64, id: &str) -> ServiceResult<()> {
        let id = parse_group_id(id)?;
        self.store.delete_group(&id, account_id).await.map_err(refused)?;
        tracing::info!(group.id = %id, "group deleted");
        Ok(())
    }

    pub async fn join(&self, account_id: i64, id: &str) -> ServiceResult<pb::JoinGroupResponse> {
        let id = parse_group_id(id)?;
        let (joined, member_count) = self.store.join(&id, account_id, now_ms()).await.map_err(refused)?;
        Ok(pb::JoinGroupResponse { joined, member_count: count(member_count) })
    }

    pub async fn leave(&self, account_id: i64, id: &str) -> ServiceResult<pb::LeaveGroupResponse> {
        let id = parse_group_id(id)?;
        let member_count = self.store.leave(&id, account_id).await.map_err(refused)?;
        Ok(pb::LeaveGroupResponse { member_count: count(member_count) })
    }

    /// The refusal of a member-only call to someone who is not a member.
    fn members_only() -> ServiceError {
        ServiceError::forbidden("only members of this group may read and post its messages: join it first")
    }

    /// Stores a member's message, then puts it on every member's live stream.
    #[tracing::instrument(name = "groups.send", skip_all, fields(account.id = account_id))]
    pub async fn send(&self, account_id: i64, request: pb::SendGroupMessageRequest) -> ServiceResult<pb::GroupMessage> {
        let group_id = parse_group_id(&request.group_id)?;
        let content = request.content;
        if content.is_empty() {
            return Err(ServiceError::invalid("message", "message must not be empty"));
        }
        if content.len() > self.settings.message_max_bytes {
            return Err(ServiceError::invalid("message", format!("message must be at most {} bytes", self.settings.message_max_bytes)));
        }
        if content.contains('\0') {
            return Err(ServiceError::invalid("message", "message must not contain NUL characters"));
        }
        let key = request.idempotency_key;
        if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(ServiceError::invalid("idempotency_key", "idempotency key must be printable ASCII without spaces"));
        }
        if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(ServiceError::invalid("idempotency_key", format!("idempotency key must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes")));
        }
        let idempotency = (!key.is_empty()).then(|| (key, request_hash(&group_id, &content)));
        let message = NewMessage { group_id, sender_id: account_id, content, sent_at: now_ms(), idempotency };
        let outcome = self.store.send_message(&message).await.map_err(|error| match error {
            StoreError::NotAMember => Groups::members_only(),
            other => refused(other),
        })?;
        let profiles = self.accounts.profiles(&[account_id]).await.unwrap_or_default();
        match outcome {
            SendOutcome::Stored(record) => {
                let message = message_view(record, &profiles);
                tracing::info!(group.id = %message.group_id, message.id = message.id, "group message stored");
                self.fan_out(&message).await;
                Ok(message)
            }
            SendOutcome::Repeated(record) => Ok(message_view(record, &profiles)),
            SendOutcome::KeyReused => {
                Err(ServiceError::new(ErrorCode::IdempotencyKeyReused, "this idempotency key was already used with another message"))
            }
        }
    }

    /// Puts a stored message on the members' live streams. The message is stored whatever
    /// happens here; a member who misses it live reads it from the group's messages.
    async fn fan_out(&self, message: &pb::GroupMessage) {
        let members = match self.store.member_ids(&message.group_id).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(%error, "group members could not be read: message not streamed");
                return;
            }
        };
        if let Err(error) = self.accounts.publish(members, stream_message(message)).await {
            tracing::warn!(%error, message.id = message.id, "group message not streamed");
        }
    }

    /// A group's messages newest first, for its members.
    pub async fn messages(&self, account_id: i64, request: pb::ListGroupMessagesRequest) -> ServiceResult<Vec<pb::GroupMessage>> {
        let group = self.existing(&request.group_id).await?;
        if !self.store.is_member(&group.id, account_id).await.map_err(internal)? {
            return Err(Groups::members_only());
        }
        let limit = if request.limit == 0 { DEFAULT_MESSAGES_PAGE } else { request.limit.min(MAX_MESSAGES_PAGE) };
        let before_id = request.before_id.filter(|id| *id > 0).unwrap_or(i64::MAX);
        let after_id = request.after_id.unwrap_or(0).max(0);
        let records = self.store.messages(&group.id, before_id, after_id, limit).await.map_err(internal)?;
        let senders: Vec<i64> = records.iter().map(|record| record.sender_id).collect();
        let profiles = self.accounts.profiles(&senders).await?;
        Ok(records.into_iter().map(|record| message_view(record, &profiles)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_hex_of_one_length() {
        let id = new_group_id();
        assert_eq!(parse_group_id(&id).unwrap(), id);
        assert_eq!(parse_group_id(&id.to_ascii_uppercase()).unwrap(), id);
        for bad in ["", "1", "zz", &"g".repeat(24), &"a".repeat(25), "../etc/passwd"] {
            assert_eq!(parse_group_id(bad).unwrap_err().code, ErrorCode::NotFound, "{bad}");
        }
    }

    #[test]
    fn keys_stand_for_group_and_content() {
        assert_eq!(request_hash("a", "b"), request_hash("a", "b"));
        assert_ne!(request_hash("a", "bc"), request_hash("ab", "c"));
    }
}
