//! gRPC adapter of the verify service: unwraps requests, calls the domain, converts results.

use clawx_common::{ServiceContext, auth::principal_of};
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    verify::{self as pb, verify_service_server::VerifyService},
};
use tonic::{Request, Response, Status};

use crate::domain::Verify;

pub struct VerifyGrpc {
    context: ServiceContext,
    verify: Verify,
}

impl VerifyGrpc {
    pub fn new(context: ServiceContext, verify: Verify) -> Self {
        VerifyGrpc { context, verify }
    }
}

fn account_of<T>(request: &Request<T>) -> Result<i64, Status> {
    principal_of(request).require_account().map_err(Status::from)
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl VerifyService for VerifyGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Reply<ServiceStatus> {
        Ok(Response::new(self.context.status().await))
    }

    async fn start_verification(&self, request: Request<pb::StartVerificationRequest>) -> Reply<pb::StartVerificationResponse> {
        let account_id = account_of(&request)?;
        let started = self.verify.start(account_id).await?;
        Ok(Response::new(pb::StartVerificationResponse {
            verification_code: started.code,
            expires_at_ms: started.expires_at_ms,
            tweet_text: started.tweet_text,
            twitter_intent_url: started.intent_url,
        }))
    }

    async fn complete_verification(&self, request: Request<pb::CompleteVerificationRequest>) -> Reply<pb::CompleteVerificationResponse> {
        let account_id = account_of(&request)?;
        let completed = self.verify.complete(account_id, &request.into_inner().tweet_url).await?;
        Ok(Response::new(pb::CompleteVerificationResponse { verified_at_ms: completed.verified_at_ms, twitter_username: completed.twitter_username }))
    }

    async fn get_verification(&self, request: Request<pb::GetVerificationRequest>) -> Reply<pb::Verification> {
        let account_id = account_of(&request)?;
        let status = self.verify.status(account_id).await?;
        Ok(Response::new(pb::Verification {
            verified: status.verified,
            verified_at_ms: status.verified_at_ms,
            has_active_code: status.has_active_code,
            code_expires_at_ms: status.code_expires_at_ms,
            twitter_username: status.twitter_username,
        }))
    }
}
