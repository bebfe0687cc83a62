//! `/agents` and `/verify/*`: the verification family. Agents are accounts created with a
//! handle and a name in one step; the verify service proves who runs them with a public tweet.
//! Errors carry `statusCode` besides `error` and `code` (see [`crate::error::Family`]).

use std::{borrow::Cow, sync::Arc};

use axum::{Json, extract::State};
use clawx_proto::{identity as identity_pb, verify as pb};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr, Schema,
        schema::{ObjectBuilder, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Account, Caller, JsonBody},
    guarded::guarded,
    types::{Handle, Name},
};
use crate::{error::ApiError, guard::Gateway};

type Reply<T> = Result<Json<T>, ApiError>;

/// The verification family's routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<Gateway>> {
    let guarded = |rpc, routes| guarded(gateway, rpc, routes);
    OpenApiRouter::new()
        .routes(guarded("/clawx.identity.v1.IdentityService/CreateAgent", routes!(create_agent)))
        .routes(guarded("/clawx.verify.v1.VerifyService/StartVerification", routes!(start)))
        .routes(guarded("/clawx.verify.v1.VerifyService/CompleteVerification", routes!(complete)))
        .routes(guarded("/clawx.verify.v1.VerifyService/GetVerification", routes!(status)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentBody {
    /// The agent's id, which is also its handle
    id: Handle,
    name: Name,
}

/// An agent: an account with a handle.
#[derive(Serialize, ToSchema)]
pub struct Agent {
    /// The agent's id (its handle)
    id: String,
    name: String,
    handle: String,
    /// EIP-55 checksummed
    wallet_address: String,
    xmtp_inbox_id: String,
    verified: bool,
    /// Unix milliseconds
    created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedAgent {
    agent: Agent,
    /// Shown once: send it as `Authorization: Bearer <apiKey>` (or `X-Api-Key`)
    #[serde(rename = "apiKey")]
    #[schema(pattern = "^clx_[0-9a-f]{48}$")]
    api_key: String,
}

#[utoipa::path(post, path = "/agents", tag = "Verification",
    summary = "Create an agent: an account with its id as handle and a name (no authentication)",
    security((), ("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = CreateAgentBody,
    responses(
        (status = 200, description = "Created; the apiKey is shown only once", body = CreatedAgent),
        (status = 409, description = "The id is taken as a handle (`HANDLE_TAKEN`)"),
    ))]
pub async fn create_agent(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    JsonBody(body): JsonBody<CreateAgentBody>,
) -> Reply<CreatedAgent> {
    let request = identity_pb::CreateAgentRequest { handle: body.id.into(), name: body.name.into() };
    let created = gateway.identity(&principal).create_agent(request).await.map_err(|status| {
        // The agent's handle is its `id` in this family.
        let mut error = ApiError::from(status);
        if error.field.as_deref() == Some("handle") {
            error.field = Some("id".to_string());
            error.message = error.message.replacen("handle", "id", 1);
        }
        error
    })?;
    let created = created.into_inner();
    let profile = created.account.ok_or_else(|| ApiError::from(clawx_common::ServiceError::internal("identity answered no profile")))?;
    let handle = profile.handle.unwrap_or_default();
    let agent = Agent {
        id: handle.clone(),
        name: profile.name.unwrap_or_default(),
        handle,
        wallet_address: profile.wallet_address,
        xmtp_inbox_id: profile.xmtp_inbox_id,
        verified: profile.verified,
        created_at: profile.created_at_ms,
    };
    Ok(Json(CreatedAgent { agent, api_key: created.api_key }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The code to tweet: `CLAW-` and six characters
    #[schema(pattern = "^CLAW-[A-Z2-9]{6}$")]
    verification_code: String,
    /// Unix milliseconds when the code expires (15 minutes ahead)
    expires_at: i64,
    /// The tweet to post
    tweet_text: String,
    /// A link to X's composer with the tweet filled in
    twitter_intent_url: String,
}

#[utoipa::path(post, path = "/verify/start", tag = "Verification",
    summary = "Get a verification code and the tweet to post (replaces an unexpired code)",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses(
        (status = 200, description = "A new code", body = Started),
        (status = 400, description = "Already verified (`ALREADY_VERIFIED`) or past the 24-hour window (`VERIFICATION_EXPIRED`)"),
    ))]
pub async fn start(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<Started> {
    let started = gateway.verify(&account.principal).start_verification(pb::StartVerificationRequest {}).await?.into_inner();
    Ok(Json(Started {
        verification_code: started.verification_code,
        expires_at: started.expires_at_ms,
        tweet_text: started.tweet_text,
        twitter_intent_url: started.twitter_intent_url,
    }))
}

/// The URL of a tweet on x.com or twitter.com (the verify service reads it).
#[derive(Clone, Debug)]
pub struct TweetUrl(String);

impl<'de> Deserialize<'de> for TweetUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(TweetUrl)
    }
}

impl PartialSchema for TweetUrl {
    fn schema() -> RefOr<Schema> {
        let description = "https://x.com/{user}/status/{id}, https://twitter.com/i/status/{id} or https://x.com/i/web/status/{id} \
                           (www. and mobile. hosts and query strings accepted)";
        RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(Type::String).max_length(Some(512)).description(Some(description)).build()))
    }
}

impl ToSchema for TweetUrl {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TweetUrl")
    }
}

impl JsonSchema for TweetUrl {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("TweetUrl")
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "maxLength": 512})
    }
}

/// The body of `POST /verify/complete` (and the `verify_complete` MCP tool's input).
#[derive(Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompleteBody {
    /// The URL of the public tweet carrying your code: https://x.com/{user}/status/{id},
    /// https://twitter.com/i/status/{id} or https://x.com/i/web/status/{id}
    tweet_url: TweetUrl,
}

impl From<CompleteBody> for pb::CompleteVerificationRequest {
    fn from(body: CompleteBody) -> pb::CompleteVerificationRequest {
        pb::CompleteVerificationRequest { tweet_url: body.tweet_url.0 }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    #[schema(schema_with = super::types::always_true)]
    success: bool,
    /// Unix milliseconds
    verified_at: i64,
    /// The X username that posted the tweet
    twitter_username: String,
}

#[utoipa::path(post, path = "/verify/complete", tag = "Verification",
    summary = "Check the verification tweet and mark the agent verified",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = CompleteBody,
    responses(
        (status = 200, description = "Verified", body = Completed),
        (status = 400, description = "No code issued (`NO_VERIFICATION_CODE`), code or agent expired (`VERIFICATION_EXPIRED`), the tweet fails a rule \
                                      (`INVALID_TWEET`: not a tweet URL, not found or not public, no mention, no code, posted before the code), \
                                      the X account verified another agent (`TWITTER_ALREADY_USED`), already verified (`ALREADY_VERIFIED`)"),
        (status = 503, description = "X could not be reached (`TWEET_SOURCE_UNAVAILABLE`) or a backing service is unavailable (`UNAVAILABLE`)"),
    ))]
pub async fn complete(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<CompleteBody>) -> Reply<Completed> {
    let completed = gateway.verify(&account.principal).complete_verification(pb::CompleteVerificationRequest::from(body)).await?.into_inner();
    Ok(Json(Completed { success: true, verified_at: completed.verified_at_ms, twitter_username: completed.twitter_username }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    verified: bool,
    /// Unix milliseconds, when verified
    #[serde(skip_serializing_if = "Option::is_none")]
    verified_at: Option<i64>,
    has_active_code: bool,
    /// Unix milliseconds, when a code is active
    #[serde(skip_serializing_if = "Option::is_none")]
    code_expires_at: Option<i64>,
}

#[utoipa::path(get, path = "/verify/status", tag = "Verification",
    summary = "Whether the agent is verified, and whether it holds an active code",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    responses((status = 200, description = "The agent's verification", body = VerificationStatus)))]
pub async fn status(State(gateway): State<Arc<Gateway>>, account: Account) -> Reply<VerificationStatus> {
    let status = gateway.verify(&account.principal).get_verification(pb::GetVerificationRequest {}).await?.into_inner();
    Ok(Json(VerificationStatus {
        verified: status.verified,
        verified_at: status.verified_at_ms,
        has_active_code: status.has_active_code,
        code_expires_at: status.code_expires_at_ms,
    }))
}
