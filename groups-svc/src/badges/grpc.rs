//! gRPC adapter of `clawx.groups.v1.BadgesService`: unwraps requests, calls [`Badges`],
//! converts answers; errors become a `Status` once, here.

use clawx_common::{ServiceError, auth::principal_of};
use clawx_proto::groups::{self as pb, badges_service_server::BadgesService};
use tonic::{Request, Response, Status};

use super::{Badge, Badges, Eligibility, NotificationRequest, rules::lower_hex, store::NotificationStatus};

type Reply<T> = Result<Response<T>, Status>;

pub struct BadgesGrpc {
    badges: Badges,
}

impl BadgesGrpc {
    pub fn new(badges: Badges) -> Self {
        BadgesGrpc { badges }
    }
}

fn account_of<T>(request: &Request<T>) -> Result<i64, Status> {
    principal_of(request).require_account().map_err(ServiceError::into_status)
}

fn rule(rule: &super::rules::HoldingRule) -> pb::HoldingRule {
    pb::HoldingRule {
        chain_id: rule.chain_id,
        contract: lower_hex(&rule.contract),
        standard: rule.standard.to_proto() as i32,
        token_id: rule.token_id.map(|id| id.to_string()),
        min_balance: rule.min_balance.to_string(),
    }
}

fn badge(badge: Badge) -> pb::Badge {
    pb::Badge {
        rule: Some(rule(&badge.rule)),
        code: badge.code,
        name: badge.name,
        partner_account_id: badge.partner_account_id,
        group_chat_id: badge.group_id,
        created_at_ms: badge.created_at,
        member_count: u64::try_from(badge.member_count).unwrap_or(0),
    }
}

fn eligibility(answer: Eligibility) -> pb::Eligibility {
    pb::Eligibility {
        rule: Some(rule(&answer.rule)),
        badge_code: answer.badge_code,
        address: answer.address,
        balance: answer.balance.to_string(),
        eligible: answer.eligible,
    }
}

fn notification(status: NotificationStatus) -> pb::Notification {
    let count = |value: i64| u32::try_from(value).unwrap_or(u32::MAX);
    pb::Notification {
        id: status.id,
        badge_code: status.badge_code,
        subject: status.subject,
        recipients: count(status.recipients),
        delivered: count(status.delivered),
        pending: count(status.pending),
        failed: count(status.failed),
        created_at_ms: status.created_at,
    }
}

#[tonic::async_trait]
impl BadgesService for BadgesGrpc {
    async fn create_badge(&self, request: Request<pb::CreateBadgeRequest>) -> Reply<pb::Badge> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let created = self
            .badges
            .create_badge(
                account_id,
                &message.code,
                &message.name,
                message.chain_id,
                &message.contract,
                &message.standard,
                message.token_id.as_deref(),
                message.min_balance.as_deref(),
            )
            .await?;
        Ok(Response::new(badge(created)))
    }

    async fn get_badge(&self, request: Request<pb::GetBadgeRequest>) -> Reply<pb::Badge> {
        let found = self.badges.badge(&request.into_inner().code).await?;
        Ok(Response::new(badge(found)))
    }

    async fn check_eligibility(&self, request: Request<pb::CheckEligibilityRequest>) -> Reply<pb::Eligibility> {
        let message = request.into_inner();
        let answer = self.badges.eligibility(&message.code, &message.address).await?;
        Ok(Response::new(eligibility(answer)))
    }

    async fn create_gated_group(&self, request: Request<pb::CreateGatedGroupRequest>) -> Reply<pb::GatedGroup> {
        let code = request.into_inner().badge_code;
        let (group_chat_id, created) = self.badges.create_group(&code).await?;
        Ok(Response::new(pb::GatedGroup { group_chat_id, badge_code: code, created }))
    }

    async fn join_gated_group(&self, request: Request<pb::JoinGatedGroupRequest>) -> Reply<pb::Membership> {
        let message = request.into_inner();
        let (group_chat_id, address) = self.badges.join(&message.badge_code, &message.address, &message.signature).await?;
        Ok(Response::new(pb::Membership { group_chat_id, badge_code: message.badge_code, address, member: true }))
    }

    async fn leave_gated_group(&self, request: Request<pb::LeaveGatedGroupRequest>) -> Reply<pb::Membership> {
        let message = request.into_inner();
        let (group_chat_id, address) = self.badges.leave(&message.badge_code, &message.address, &message.signature).await?;
        Ok(Response::new(pb::Membership { group_chat_id, badge_code: message.badge_code, address, member: false }))
    }

    async fn send_badge_notification(&self, request: Request<pb::SendBadgeNotificationRequest>) -> Reply<pb::Notification> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let sent = self
            .badges
            .send_notification(
                account_id,
                NotificationRequest {
                    badge_code: message.badge_code,
                    subject: message.subject,
                    message: message.message,
                    cta_url: message.cta_url,
                    image_url: message.image_url,
                    sender_domain: message.sender_domain,
                },
            )
            .await?;
        Ok(Response::new(notification(sent)))
    }

    async fn get_notification(&self, request: Request<pb::GetNotificationRequest>) -> Reply<pb::Notification> {
        let account_id = account_of(&request)?;
        let status = self.badges.notification(account_id, &request.into_inner().id).await?;
        Ok(Response::new(notification(status)))
    }
}
