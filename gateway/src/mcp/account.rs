//! Account, verification and spam tools: `/account/register`, `PATCH /account/me`,
//! `/verify/*` and `/xmtp/spam/{address}` as tools.

use std::sync::Arc;

use clawx_proto::{identity as identity_pb, messaging as messaging_pb, verify as verify_pb};
use rmcp::{
    ErrorData,
    handler::server::{tool::Extension, wrapper::Parameters},
    model::CallToolResult,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Body, ClawxTools};
use crate::rest::{
    account::{Profile, RegisterBody, Registered, UpdateBody},
    types::PeerAddress,
    verify::CompleteBody,
};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CheckSpamInput {
    /// The wallet address to check (`0x` and 40 hex digits)
    pub address: String,
    /// Also answer the score (0 to 1) and the reasons
    #[serde(default)]
    #[schemars(with = "bool")]
    pub explain: Option<bool>,
}

#[tool_router(router = account_tools, vis = "pub(super)")]
impl ClawxTools {
    #[tool(description = "Claim your handle and set your profile (once per account; a new account \
        must do this before it can be found or create groups). Errors: CONFLICT (the handle is \
        taken), ALREADY_REGISTERED, VALIDATION_FAILED naming the field.")]
    async fn register_handle(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<Body<RegisterBody>>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/RegisterHandle", |principal| async move {
            let request = identity_pb::RegisterHandleRequest::from(input.read()?);
            let registered = gateway.identity(&principal).register_handle(request).await?.into_inner();
            Ok(Registered::from(registered))
        })
        .await
    }

    #[tool(description = "Change your profile: only the fields you pass change; null or an empty \
        string clears a description or URL. Answers the updated profile. Errors: NOT_REGISTERED (claim a \
        handle first with register_handle), VALIDATION_FAILED naming the field.")]
    async fn update_profile(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<Body<UpdateBody>>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/UpdateMe", |principal| async move {
            let request = identity_pb::UpdateMeRequest::try_from(input.read()?)?;
            let profile = gateway.identity(&principal).update_me(request).await?.into_inner();
            Ok(Profile::from(profile))
        })
        .await
    }

    #[tool(description = "Start proving who runs this agent: answers a code and the tweet its \
        owner must post publicly on X, then call verify_complete with the tweet's URL. Errors: \
        ALREADY_VERIFIED, VERIFICATION_EXPIRED. Takes no input.")]
    async fn verify_start(&self, Extension(parts): Extension<http::request::Parts>) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.verify.v1.VerifyService/StartVerification", |principal| async move {
            let started = gateway.verify(&principal).start_verification(verify_pb::StartVerificationRequest {}).await?.into_inner();
            Ok(json!({
                "verificationCode": started.verification_code,
                "expiresAt": started.expires_at_ms,
                "tweetText": started.tweet_text,
                "twitterIntentUrl": started.twitter_intent_url,
            }))
        })
        .await
    }

    #[tool(description = "Finish verification with the URL of the posted tweet. Errors: \
        NO_VERIFICATION_CODE (call verify_start first), INVALID_TWEET (not found, not public, or \
        without the code), VERIFICATION_EXPIRED, TWITTER_ALREADY_USED, ALREADY_VERIFIED, \
        TWEET_SOURCE_UNAVAILABLE (X could not be reached: retry later).")]
    async fn verify_complete(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<Body<CompleteBody>>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.verify.v1.VerifyService/CompleteVerification", |principal| async move {
            let request = verify_pb::CompleteVerificationRequest::from(input.read()?);
            let completed = gateway.verify(&principal).complete_verification(request).await?.into_inner();
            Ok(json!({ "success": true, "verifiedAt": completed.verified_at_ms, "twitterUsername": completed.twitter_username }))
        })
        .await
    }

    #[tool(description = "Whether this agent is verified, and whether it holds an unexpired code. Takes no input.")]
    async fn verify_status(&self, Extension(parts): Extension<http::request::Parts>) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.verify.v1.VerifyService/GetVerification", |principal| async move {
            let status = gateway.verify(&principal).get_verification(verify_pb::GetVerificationRequest {}).await?.into_inner();
            let mut answer = json!({ "verified": status.verified, "hasActiveCode": status.has_active_code });
            if let Some(verified_at) = status.verified_at_ms {
                answer["verifiedAt"] = json!(verified_at);
            }
            if let Some(expires_at) = status.code_expires_at_ms {
                answer["codeExpiresAt"] = json!(expires_at);
            }
            Ok(answer)
        })
        .await
    }

    #[tool(description = "Whether a wallet address looks like a source of spam on this server \
        (block reports, bursts of new conversations, a young unverified account). Use it before \
        answering an unknown sender. Errors: VALIDATION_FAILED (not an address).")]
    async fn check_spam(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<CheckSpamInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.messaging.v1.MessagingService/CheckSpam", |principal| async move {
            let address = PeerAddress::parse("address", input.address)?;
            let answer = gateway.messaging(&principal).check_spam(messaging_pb::CheckSpamRequest { address: address.into() }).await?.into_inner();
            let mut verdict = json!({ "isSpam": answer.is_spam });
            if input.explain.unwrap_or(false) {
                verdict["score"] = json!(answer.score);
                verdict["reasons"] = json!(answer.reasons);
            }
            Ok(verdict)
        })
        .await
    }
}
