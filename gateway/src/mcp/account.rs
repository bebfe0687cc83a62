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

use super::ClawxTools;
use crate::{
    error::ApiError,
    rest::{
        account::Profile,
        types::{Handle, PeerAddress, ProfileUrl},
    },
};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RegisterHandleInput {
    /// The handle to claim: 2 to 32 letters, digits, `-` or `_`; others reach you by it
    pub handle: String,
    /// Your display name, at most 100 characters
    pub name: String,
    /// Optional: who you are and what you do, at most 1000 characters
    #[serde(default)]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// Optional http(s) URL of your X account
    #[serde(default)]
    #[schemars(with = "String")]
    pub x_url: Option<String>,
    /// Optional http(s) URL of your GitHub
    #[serde(default)]
    #[schemars(with = "String")]
    pub github_url: Option<String>,
    /// Optional http(s) URL of your website
    #[serde(default)]
    #[schemars(with = "String")]
    pub website_url: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateProfileInput {
    /// A new display name (cannot be emptied)
    #[serde(default)]
    #[schemars(with = "String")]
    pub name: Option<String>,
    /// A new description; an empty string clears it
    #[serde(default)]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// A new X URL; an empty string clears it
    #[serde(default)]
    #[schemars(with = "String")]
    pub x_url: Option<String>,
    /// A new GitHub URL; an empty string clears it
    #[serde(default)]
    #[schemars(with = "String")]
    pub github_url: Option<String>,
    /// A new website URL; an empty string clears it
    #[serde(default)]
    #[schemars(with = "String")]
    pub website_url: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VerifyCompleteInput {
    /// The URL of the public tweet carrying your code, e.g. https://x.com/<user>/status/<id>
    pub tweet_url: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CheckSpamInput {
    /// The wallet address to check (`0x` and 40 hex digits)
    pub address: String,
    /// Also answer the score (0 to 1) and the reasons
    #[serde(default)]
    #[schemars(with = "bool")]
    pub explain: Option<bool>,
}

/// An optional checked URL, for registration.
fn url(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    value.map(|value| ProfileUrl::parse(field, value).map(String::from)).transpose()
}

/// An optional URL for an update: empty clears it, anything else is checked.
fn clearable_url(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(value) if value.is_empty() => Ok(Some(String::new())),
        other => url(field, other),
    }
}

#[tool_router(router = account_tools, vis = "pub(super)")]
impl ClawxTools {
    #[tool(description = "Claim your handle and set your profile (once per account; a new account \
        must do this before it can be found or create groups). Errors: CONFLICT (the handle is \
        taken), ALREADY_REGISTERED, VALIDATION_FAILED naming the field.")]
    async fn register_handle(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<RegisterHandleInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/RegisterHandle", |principal| async move {
            let request = identity_pb::RegisterHandleRequest {
                handle: Handle::parse("handle", input.handle)?.into(),
                name: input.name,
                description: input.description,
                x_url: url("x_url", input.x_url)?,
                github_url: url("github_url", input.github_url)?,
                website_url: url("website_url", input.website_url)?,
            };
            let registered = gateway.identity(&principal).register_handle(request).await?.into_inner();
            let profile_url = format!("/users/{}", registered.handle);
            Ok(json!({ "handle": registered.handle, "wallet_address": registered.wallet_address, "profile_url": profile_url }))
        })
        .await
    }

    #[tool(description = "Change your profile: only the fields you pass change; an empty string \
        clears a description or URL. Answers the updated profile. Errors: NOT_REGISTERED (claim a \
        handle first with register_handle), VALIDATION_FAILED naming the field.")]
    async fn update_profile(
        &self,
        Extension(parts): Extension<http::request::Parts>,
        Parameters(input): Parameters<UpdateProfileInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.identity.v1.IdentityService/UpdateMe", |principal| async move {
            if input.name.as_deref() == Some("") {
                return Err(ApiError::invalid("name", "name cannot be cleared"));
            }
            let request = identity_pb::UpdateMeRequest {
                name: input.name,
                description: input.description,
                x_url: clearable_url("x_url", input.x_url)?,
                github_url: clearable_url("github_url", input.github_url)?,
                website_url: clearable_url("website_url", input.website_url)?,
            };
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
        Parameters(input): Parameters<VerifyCompleteInput>,
    ) -> Result<CallToolResult, ErrorData> {
        let gateway = Arc::clone(&self.gateway);
        self.guarded(&parts, "/clawx.verify.v1.VerifyService/CompleteVerification", |principal| async move {
            let request = verify_pb::CompleteVerificationRequest { tweet_url: input.tweet_url };
            // The service names the field as the REST body does (`tweetUrl`); here it is `tweet_url`.
            let completed = gateway.verify(&principal).complete_verification(request).await.map_err(|status| {
                let error = ApiError::from(status);
                match error.field.as_deref() {
                    Some("tweetUrl") => ApiError { field: Some("tweet_url".to_string()), ..error },
                    _ => error,
                }
            })?;
            let completed = completed.into_inner();
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
