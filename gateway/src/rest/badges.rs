//! `/badges` and `/push/*`: badges, their token-gated groups (Push-style communities) and
//! partner notifications, in the bodies of the Unstoppable-style messaging API — the groups
//! service's `BadgesService`. Errors are `{"error", "code"}`.
//!
//! Joining and leaving need no credentials: the wallet's signature proves the address. The
//! signed texts (EIP-191 `personal_sign`): to join, the badge code itself (or `Join <code>`);
//! to leave, `Leave <code>`. Notifications need a signed-expiry request whose `x-auth-domain` is
//! the body's `sender.domain`.

use std::sync::Arc;

use axum::{Json, extract::State, http::HeaderMap};
use clawx_common::{AuthMethod, ErrorCode, Principal};
use clawx_proto::{groups as pb, identity as identity_pb};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Account, Caller, JsonBody, PathParam},
    guarded::guarded,
};
use crate::{error::ApiError, guard::Gateway};

type Reply<T> = Result<Json<T>, ApiError>;

/// The routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<Gateway>> {
    let guarded = |rpc, routes| guarded(gateway, rpc, routes);
    OpenApiRouter::new()
        .routes(guarded("/clawx.groups.v1.BadgesService/CreateBadge", routes!(create_badge)))
        .routes(guarded("/clawx.groups.v1.BadgesService/GetBadge", routes!(get_badge)))
        .routes(guarded("/clawx.groups.v1.BadgesService/CheckEligibility", routes!(eligibility)))
        .routes(guarded("/clawx.groups.v1.BadgesService/CreateGatedGroup", routes!(create_group)))
        .routes(guarded("/clawx.groups.v1.BadgesService/JoinGatedGroup", routes!(join_group)))
        .routes(guarded("/clawx.groups.v1.BadgesService/LeaveGatedGroup", routes!(leave_group)))
        .routes(guarded("/clawx.groups.v1.BadgesService/SendBadgeNotification", routes!(send_notification)))
        .routes(guarded("/clawx.groups.v1.BadgesService/GetNotification", routes!(get_notification)))
}

/// What an address must hold.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// The EVM chain id
    chain_id: u64,
    /// The token contract (lowercase hex)
    contract: String,
    /// `erc20`, `erc721` or `erc1155`
    #[schema(pattern = "^erc(20|721|1155)$")]
    standard: String,
    /// Decimal token id (ERC-1155; ERC-721 when one token is required)
    #[schema(pattern = "^[0-9]{1,78}$")]
    token_id: Option<String>,
    /// Decimal base units the address must hold at least
    #[schema(pattern = "^[0-9]{1,78}$")]
    min_balance: String,
}

fn rule_view(rule: Option<pb::HoldingRule>) -> RuleView {
    let rule = rule.unwrap_or_default();
    let standard = match pb::TokenStandard::try_from(rule.standard) {
        Ok(pb::TokenStandard::Erc20) => "erc20",
        Ok(pb::TokenStandard::Erc721) => "erc721",
        Ok(pb::TokenStandard::Erc1155) => "erc1155",
        _ => "unknown",
    };
    RuleView {
        chain_id: rule.chain_id,
        contract: rule.contract,
        standard: standard.to_string(),
        token_id: rule.token_id,
        min_balance: rule.min_balance,
    }
}

/// A badge.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BadgeView {
    code: String,
    name: String,
    chain_id: u64,
    /// The token contract (lowercase hex)
    contract: String,
    /// `erc20`, `erc721` or `erc1155`
    standard: String,
    /// Decimal token id, or null
    token_id: Option<String>,
    /// Decimal base units
    min_balance: String,
    /// The account that created the badge: the only one that may notify its members
    partner_id: i64,
    /// The gated group, once `POST /push/group` created it
    group_chat_id: Option<String>,
    /// Members of the gated group
    member_count: u64,
    /// Unix milliseconds
    created_at: i64,
}

fn badge_view(badge: pb::Badge) -> BadgeView {
    let rule = rule_view(badge.rule);
    BadgeView {
        code: badge.code,
        name: badge.name,
        chain_id: rule.chain_id,
        contract: rule.contract,
        standard: rule.standard,
        token_id: rule.token_id,
        min_balance: rule.min_balance,
        partner_id: badge.partner_account_id,
        group_chat_id: badge.group_chat_id,
        member_count: badge.member_count,
        created_at: badge.created_at_ms,
    }
}

/// A new badge.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateBadgeBody {
    /// 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    code: String,
    /// 1 to 200 characters
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// An EVM chain id this server has an RPC for (`CLAWX_CHAIN_RPC_<chainId>`; 400 otherwise)
    #[schema(minimum = 1)]
    chain_id: u64,
    /// The token contract
    #[schema(pattern = "^0x[0-9a-fA-F]{40}$")]
    contract: String,
    /// `erc20`, `erc721` or `erc1155`
    #[schema(pattern = "^erc(20|721|1155)$")]
    standard: String,
    /// Decimal token id: required for erc1155, optional for erc721 (one token), refused for erc20
    #[serde(default)]
    #[schema(pattern = "^(0|[1-9][0-9]{0,77})$")]
    token_id: Option<String>,
    /// Decimal base units, at least 1 (default 1; 1 for an erc721 token id)
    #[serde(default)]
    #[schema(pattern = "^[1-9][0-9]{0,77}$")]
    min_balance: Option<String>,
}

#[utoipa::path(post, path = "/badges", tag = "Communities", summary = "Create a badge",
    description = "A badge is a code and a holding rule on an EVM chain: an ERC-20 minimum balance, an ERC-721 balance (or one token id), or an ERC-1155 balance of a token id. The caller becomes the badge's partner, the only account that may notify its members.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = CreateBadgeBody,
    responses(
        (status = 200, description = "The badge", body = BadgeView),
        (status = 400, description = "Invalid field, or no RPC configured for the chain (`VALIDATION_FAILED` naming the field)"),
        (status = 409, description = "A badge with this code exists (`CONFLICT`)"),
    ))]
pub async fn create_badge(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<CreateBadgeBody>) -> Reply<BadgeView> {
    let request = pb::CreateBadgeRequest {
        code: body.code,
        name: body.name,
        chain_id: body.chain_id,
        contract: body.contract,
        standard: body.standard,
        token_id: body.token_id,
        min_balance: body.min_balance,
    };
    let badge = gateway.badges(&account.principal).create_badge(request).await?.into_inner();
    Ok(Json(badge_view(badge)))
}

#[utoipa::path(get, path = "/badges/{code}", tag = "Communities", summary = "One badge",
    security(()),
    params(("code" = String, Path, description = "The badge code")),
    responses(
        (status = 200, description = "The badge", body = BadgeView),
        (status = 404, description = "No such badge (`NOT_FOUND`)"),
    ))]
pub async fn get_badge(State(gateway): State<Arc<Gateway>>, Caller(principal): Caller, PathParam(code): PathParam<String>) -> Reply<BadgeView> {
    let badge = gateway.badges(&principal).get_badge(pb::GetBadgeRequest { code }).await?.into_inner();
    Ok(Json(badge_view(badge)))
}

/// A dry run of joining.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EligibilityView {
    badge_code: String,
    /// Lowercase hex
    address: String,
    rule: RuleView,
    /// Decimal: what the rule compares (for an ERC-721 token id, 1 if the address owns it)
    balance: String,
    eligible: bool,
}

#[utoipa::path(get, path = "/badges/{code}/eligibility/{address}", tag = "Communities", summary = "Whether an address satisfies a badge now",
    description = "Reads the chain (results are reused for a few seconds). A chain that cannot be read answers 503 `CHAIN_UNAVAILABLE`, never a guess.",
    security(()),
    params(("code" = String, Path, description = "The badge code"), ("address" = String, Path, description = "The wallet (0x and 40 hex digits)")),
    responses(
        (status = 200, description = "The verdict", body = EligibilityView),
        (status = 400, description = "Not a wallet address (`VALIDATION_FAILED`)"),
        (status = 404, description = "No such badge (`NOT_FOUND`)"),
        (status = 503, description = "The chain cannot be read now (`CHAIN_UNAVAILABLE`)"),
    ))]
pub async fn eligibility(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    PathParam((code, address)): PathParam<(String, String)>,
) -> Reply<EligibilityView> {
    let answer = gateway.badges(&principal).check_eligibility(pb::CheckEligibilityRequest { code, address }).await?.into_inner();
    Ok(Json(EligibilityView {
        rule: rule_view(answer.rule),
        badge_code: answer.badge_code,
        address: answer.address,
        balance: answer.balance,
        eligible: answer.eligible,
    }))
}

/// `SerializedPushGroupCreatePost`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateGroupBody {
    /// Badge code associated with the token gated group
    #[schema(min_length = 1, max_length = 64)]
    badge_code: String,
}

/// The gated group of a badge.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupChatView {
    /// The same on every call for the badge
    group_chat_id: String,
}

#[utoipa::path(post, path = "/push/group", tag = "Communities", summary = "Creates a new Push Protocol token gated group",
    description = "Creates the badge's token gated group if it does not yet exist; answers its id either way.",
    security(()),
    request_body = CreateGroupBody,
    responses(
        (status = 200, description = "Group created successfully (or it existed)", body = GroupChatView),
        (status = 404, description = "Badge not found (`NOT_FOUND`)"),
    ))]
pub async fn create_group(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    JsonBody(body): JsonBody<CreateGroupBody>,
) -> Reply<GroupChatView> {
    let group = gateway.badges(&principal).create_gated_group(pb::CreateGatedGroupRequest { badge_code: body.badge_code }).await?.into_inner();
    Ok(Json(GroupChatView { group_chat_id: group.group_chat_id }))
}

/// `SerializedPushGroupJoinPost`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipBody {
    /// Wallet address to join (or leave) the token gated group
    #[schema(pattern = "^0x[0-9a-fA-F]{40}$")]
    address: String,
    /// Badge code associated with the token gated group
    #[schema(min_length = 1, max_length = 64)]
    badge_code: String,
    /// The address's EIP-191 `personal_sign` signature (65 bytes hex, `0x` optional): to join, of the badge code itself (or of `Join <badgeCode>`); to leave, of `Leave <badgeCode>`
    #[schema(pattern = "^(0x)?[0-9a-fA-F]{130}$")]
    signature: String,
}

/// A membership after the call.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipView {
    group_chat_id: String,
    badge_code: String,
    /// Lowercase hex
    address: String,
    /// Whether the address is a member now
    member: bool,
}

fn membership_view(membership: pb::Membership) -> MembershipView {
    MembershipView {
        group_chat_id: membership.group_chat_id,
        badge_code: membership.badge_code,
        address: membership.address,
        member: membership.member,
    }
}

#[utoipa::path(post, path = "/push/group/join", tag = "Communities", summary = "Request to join a Push Protocol token gated community",
    description = "Joins the address when `signature` is its EIP-191 signature of the badge code (or of `Join <badgeCode>`) and it satisfies the badge's rule on chain now. No API key needed: the signature proves the address. Joining again is a no-op. Members who stop holding are removed by a periodic re-check.",
    security(()),
    request_body = MembershipBody,
    responses(
        (status = 200, description = "Group joined successfully", body = MembershipView),
        (status = 400, description = "Invalid address or signature (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "Wallet not authorized to join group: the signature is not the address's, or the address does not hold what the badge needs (the message says which) (`FORBIDDEN`)"),
        (status = 404, description = "Badge or group not found (`NOT_FOUND`)"),
        (status = 503, description = "The chain cannot be read now (`CHAIN_UNAVAILABLE`)"),
    ))]
pub async fn join_group(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    JsonBody(body): JsonBody<MembershipBody>,
) -> Reply<MembershipView> {
    let request = pb::JoinGatedGroupRequest { badge_code: body.badge_code, address: body.address, signature: body.signature };
    let membership = gateway.badges(&principal).join_gated_group(request).await?.into_inner();
    Ok(Json(membership_view(membership)))
}

#[utoipa::path(post, path = "/push/group/leave", tag = "Communities", summary = "Request to leave a Push Protocol token gated community",
    description = "Removes the address when `signature` is its EIP-191 signature of `Leave <badgeCode>` (a join signature is refused). Leaving a group one is not in changes nothing. Leaving opts out of partner notifications.",
    security(()),
    request_body = MembershipBody,
    responses(
        (status = 200, description = "Group was left successfully", body = MembershipView),
        (status = 400, description = "Invalid address or signature (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "The signature is not the address's signature of `Leave <badgeCode>` (`FORBIDDEN`)"),
        (status = 404, description = "Badge or group not found (`NOT_FOUND`)"),
    ))]
pub async fn leave_group(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    JsonBody(body): JsonBody<MembershipBody>,
) -> Reply<MembershipView> {
    let request = pb::LeaveGatedGroupRequest { badge_code: body.badge_code, address: body.address, signature: body.signature };
    let membership = gateway.badges(&principal).leave_gated_group(request).await?.into_inner();
    Ok(Json(membership_view(membership)))
}

/// The sender of a notification.
#[derive(Deserialize, ToSchema)]
pub struct SenderBody {
    /// The domain name of the notification sender: must equal `x-auth-domain`
    #[schema(min_length = 1, max_length = 253)]
    domain: String,
}

/// `SerializedBadgeNotificationPost`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationBody {
    /// The badge identifier
    #[schema(min_length = 1, max_length = 64)]
    badge_code: String,
    /// Notification subject (1 to 200 characters)
    #[schema(min_length = 1, max_length = 200)]
    subject: String,
    /// Notification message body (1 to 10000 characters)
    #[schema(min_length = 1, max_length = 10000)]
    message: String,
    /// Optional link the user can click for more information (http or https)
    #[serde(default)]
    #[schema(max_length = 2048)]
    cta_url: Option<String>,
    /// Optional link to an image (http or https)
    #[serde(default)]
    #[schema(max_length = 2048)]
    image_url: Option<String>,
    sender: SenderBody,
}

/// A notification and how far its delivery got.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    notification_id: String,
    badge_code: String,
    subject: String,
    /// Members of the badge's group when it was sent
    recipients: u32,
    /// Delivered to the member's inbox
    delivered: u32,
    /// Waiting for (another) attempt
    pending: u32,
    /// Given up
    failed: u32,
    /// Unix milliseconds
    created_at: i64,
}

fn notification_view(notification: pb::Notification) -> NotificationView {
    NotificationView {
        notification_id: notification.id,
        badge_code: notification.badge_code,
        subject: notification.subject,
        recipients: notification.recipients,
        delivered: notification.delivered,
        pending: notification.pending,
        failed: notification.failed,
        created_at: notification.created_at_ms,
    }
}

fn normalized_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[utoipa::path(post, path = "/push/notification/badge", tag = "Partner notifications", summary = "Send a message to holders of a badge",
    description = "Queues a message to every member of the badge's gated group (joining is the opt-in, leaving opts out), delivered in the background as a direct message from the partner's account: the subject, a blank line, the message, then the links. Answers at once with the notification's id; `GET /push/notification/{id}` follows the delivery. Needs a signed-expiry request whose `x-auth-domain` equals `sender.domain`; only the badge's partner may send.",
    security(("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = NotificationBody,
    responses(
        (status = 200, description = "Notification successful (queued)", body = NotificationView),
        (status = 401, description = "Not a signed-expiry request, or its signature is invalid (`UNAUTHORIZED`, `SIGNATURE_*`, `DOMAIN_NOT_FOUND`)"),
        (status = 403, description = "Notification not authorized: `sender.domain` is not `x-auth-domain`, or the caller is not the badge's partner (`FORBIDDEN`)"),
        (status = 404, description = "Domain or badge not found (`NOT_FOUND`)"),
    ))]
pub async fn send_notification(
    State(gateway): State<Arc<Gateway>>,
    account: Account,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NotificationBody>,
) -> Reply<NotificationView> {
    if account.principal.method != AuthMethod::Signature {
        return Err(ApiError::unauthorized("this route needs a signed-expiry request: x-auth-domain, x-auth-expires and x-auth-signature"));
    }
    let signed_domain = headers.get("x-auth-domain").and_then(|value| value.to_str().ok()).map(normalized_domain).unwrap_or_default();
    let sender_domain = normalized_domain(&body.sender.domain);
    if sender_domain != signed_domain {
        // Which answer: a domain nobody here answers to is not found; another one is not yours.
        let probe =
            identity_pb::GetSignatureMessageRequest { domain: sender_domain.clone(), expiry: clawx_common::time::now_ms() + 60_000, device: false };
        return match gateway.identity(&Principal::service()).get_signature_message(probe).await {
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(ApiError::new(ErrorCode::NotFound, format!("domain {sender_domain} not found")))
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                Err(ApiError::invalid("sender.domain", "sender.domain is not a domain name"))
            }
            _ => Err(ApiError::new(ErrorCode::Forbidden, "sender.domain must equal x-auth-domain, the domain the request was signed for")),
        };
    }
    let request = pb::SendBadgeNotificationRequest {
        badge_code: body.badge_code,
        subject: body.subject,
        message: body.message,
        cta_url: body.cta_url,
        image_url: body.image_url,
        sender_domain,
    };
    let notification = gateway.badges(&account.principal).send_badge_notification(request).await?.into_inner();
    Ok(Json(notification_view(notification)))
}

#[utoipa::path(get, path = "/push/notification/{id}", tag = "Partner notifications", summary = "How far a notification's delivery got",
    description = "Counts of the members it was delivered to, still pending and given up. Only the partner that sent it sees it (404 for anyone else).",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    params(("id" = String, Path, description = "The notificationId")),
    responses(
        (status = 200, description = "The notification", body = NotificationView),
        (status = 404, description = "No such notification of yours (`NOT_FOUND`)"),
    ))]
pub async fn get_notification(State(gateway): State<Arc<Gateway>>, account: Account, PathParam(id): PathParam<String>) -> Reply<NotificationView> {
    let notification = gateway.badges(&account.principal).get_notification(pb::GetNotificationRequest { id }).await?.into_inner();
    Ok(Json(notification_view(notification)))
}
