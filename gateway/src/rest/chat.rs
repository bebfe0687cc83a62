//! `/xmtp/*`: consent, the spam check and push registration, in the bodies of the
//! Unstoppable-style Chat API — the messaging service's `SetConsent`, `CheckSpam` and
//! `RegisterPush`. Errors are `{"error", "code"}`.
//!
//! Topics: a Clawx conversation topic (`/clawx/dm/1/<conversation id>`, the `topic` of every
//! message the API returns) names that conversation; any other topic (an XMTP topic such as
//! `/xmtp/mls/1/g-<hex group id>/proto`) may name the peer with `peerAddress`: a wallet, or the
//! account here owning it; without one, consent applies to the XMTP topic itself.

use std::sync::Arc;

use axum::{Json, extract::State};
use clawx_proto::messaging as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Account, Caller, JsonBody, PathParam, QueryParams},
    guarded::guarded,
    types::PeerAddress,
};
use crate::{error::ApiError, guard::Gateway};

type Reply<T> = Result<Json<T>, ApiError>;

/// The routes, each behind the guard of the gRPC method it calls.
pub fn routes(gateway: &Arc<Gateway>) -> OpenApiRouter<Arc<Gateway>> {
    let guarded = |rpc, routes| guarded(gateway, rpc, routes);
    OpenApiRouter::new()
        .routes(guarded("/clawx.messaging.v1.MessagingService/SetConsent", routes!(accept)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/SetConsent", routes!(block)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/CheckSpam", routes!(spam)))
        .routes(guarded("/clawx.messaging.v1.MessagingService/RegisterPush", routes!(register)))
}

/// One topic of a registration (`SerializedTopicPost`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicBody {
    /// A Clawx conversation topic (`/clawx/dm/1/<id>`) of yours, or any topic with `peerAddress`
    #[schema(min_length = 1, max_length = 512)]
    topic: String,
    /// The peer (a wallet, or the account here owning it); needed unless `topic` is a Clawx conversation
    #[serde(default)]
    peer_address: Option<PeerAddress>,
    /// Optional: the EIP-191 `personal_sign` signature of `topic` (UTF-8) by `ownerAddress`, 65 bytes hex; 403 when it is not
    #[serde(default)]
    signature: Option<String>,
    /// Accepted for compatibility; the route decides (accept or block)
    #[serde(default)]
    accept: Option<bool>,
    /// Accepted for compatibility; the route decides (accept or block)
    #[serde(default)]
    block: Option<bool>,
}

/// `SerializedRegistrationPost`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationBody {
    /// Your server-held wallet or a wallet linked to you (403 otherwise)
    owner_address: PeerAddress,
    /// Accepted for compatibility; not used
    #[serde(default)]
    signed_public_key: Option<String>,
    /// 1 to 100 topics
    #[schema(min_items = 1, max_items = 100)]
    registrations: Vec<TopicBody>,
}

/// What a consent call changed.
#[derive(Serialize, ToSchema)]
pub struct ConsentReply {
    /// Conversations whose consent was set
    conversations: u32,
    /// Spam reports newly filed (block only; one per reporter and peer)
    reports: u32,
}

/// The topics of a body as the messaging service takes them. The peer API's per-topic
/// `accept`/`block` flags are read for compatibility only: the route says which.
fn consent_targets(registrations: Vec<TopicBody>) -> Vec<pb::ConsentTarget> {
    registrations
        .into_iter()
        .map(|registration| {
            let _ = (registration.accept, registration.block);
            pb::ConsentTarget {
                topic: registration.topic,
                peer_address: registration.peer_address.map(String::from),
                signature: registration.signature,
            }
        })
        .collect()
}

async fn set_consent(gateway: &Gateway, account: &Account, consent: pb::Consent, body: RegistrationBody) -> Reply<ConsentReply> {
    // accept/block flags and signedPublicKey are read for compatibility only.
    let _ = &body.signed_public_key;
    let targets = consent_targets(body.registrations);
    let request = pb::SetConsentRequest { owner_address: body.owner_address.into(), consent: consent as i32, targets };
    let answer = gateway.messaging(&account.principal).set_consent(request).await?.into_inner();
    Ok(Json(ConsentReply { conversations: answer.conversations, reports: answer.reports }))
}

#[utoipa::path(post, path = "/xmtp/topics/accept", tag = "Chat", summary = "Accept chat requests",
    description = "Sets your consent to `allowed` for each topic: a Clawx conversation topic of yours, a peer named by `peerAddress` (a conversation with it that starts later starts allowed), or an XMTP topic without `peerAddress`. Accepted conversations are listed by `GET /messages/inbox?consent=allowed`. Every topic is checked before any is changed.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = RegistrationBody,
    responses(
        (status = 200, description = "Accept successful", body = ConsentReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "`ownerAddress` is not a wallet of yours, or a `signature` is not its signature of the topic (`FORBIDDEN`)"),
        (status = 404, description = "A topic is not a conversation of yours, and names neither a peer nor an XMTP topic (`NOT_FOUND`)"),
    ))]
pub async fn accept(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<RegistrationBody>) -> Reply<ConsentReply> {
    set_consent(&gateway, &account, pb::Consent::Allowed, body).await
}

#[utoipa::path(post, path = "/xmtp/topics/block", tag = "Chat", summary = "Block conversations and report them as spam",
    description = "Sets your consent to `denied` for each topic and files one spam report per peer (once per reporter and peer; a peer named by `peerAddress` is reported, and denied for any later conversation, even without one now). An XMTP topic without `peerAddress` is denied for push notifications, with no report. A denied peer's messages are still stored (listed by `GET /messages/inbox?consent=denied`) but neither streamed nor pushed to you.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = RegistrationBody,
    responses(
        (status = 200, description = "Block successful", body = ConsentReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "`ownerAddress` is not a wallet of yours, or a `signature` is not its signature of the topic (`FORBIDDEN`)"),
        (status = 404, description = "A topic is not a conversation of yours, and names neither a peer nor an XMTP topic (`NOT_FOUND`)"),
    ))]
pub async fn block(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<RegistrationBody>) -> Reply<ConsentReply> {
    set_consent(&gateway, &account, pb::Consent::Denied, body).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SpamQuery {
    /// Add `score` and `reasons`
    explain: Option<bool>,
}

/// The spam verdict.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpamReply {
    /// Whether the address looks like a source of spam
    is_spam: bool,
    /// With `explain=true`: 0 (nothing against it) to 1
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    score: Option<f64>,
    /// With `explain=true`: why, in words
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<String>>,
}

#[utoipa::path(get, path = "/xmtp/spam/{address}", tag = "Chat", summary = "Whether an address is a source of spam",
    description = "From this server's own signals: block reports from distinct accounts (the main one), the new conversations the address's account opened in the last hour, a young unverified account. Thresholds: `CLAWX_SPAM_*`. No authentication; limited per client IP.",
    security(()),
    params(("address" = PeerAddress, Path, description = "The wallet (EIP-55 or lowercase)"), SpamQuery),
    responses(
        (status = 200, description = "The verdict", body = SpamReply),
        (status = 400, description = "Not a wallet address (`VALIDATION_FAILED`)"),
    ))]
pub async fn spam(
    State(gateway): State<Arc<Gateway>>,
    Caller(principal): Caller,
    PathParam(address): PathParam<String>,
    QueryParams(query): QueryParams<SpamQuery>,
) -> Reply<SpamReply> {
    let address = PeerAddress::parse("address", address)?;
    let answer = gateway.messaging(&principal).check_spam(pb::CheckSpamRequest { address: address.into() }).await?.into_inner();
    let explain = query.explain.unwrap_or(false);
    Ok(Json(SpamReply { is_spam: answer.is_spam, score: explain.then_some(answer.score), reasons: explain.then_some(answer.reasons) }))
}

/// Where push notifications go: the Clawx extension of the registration body.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum PushTargetBody {
    /// Each notification is `POST`ed to `url` as JSON, signed per Standard Webhooks
    Webhook {
        /// http or https; must reach a public address (unless the server sets `CLAWX_PUSH_ALLOW_PRIVATE_TARGETS`)
        #[schema(min_length = 1, max_length = 2048)]
        url: String,
    },
    /// Each notification is sent through FCM HTTP v1 to this registration token (when the server configures FCM)
    Fcm {
        /// The device's FCM registration token
        #[schema(min_length = 1, max_length = 4096)]
        token: String,
    },
}

/// `SerializedRegistrationPost` with the delivery target.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushRegistrationBody {
    /// Your server-held wallet or a wallet linked to you (403 otherwise)
    owner_address: PeerAddress,
    /// Accepted for compatibility; not used
    #[serde(default)]
    signed_public_key: Option<String>,
    /// 1 to 100 topics: `/clawx/inbox/1` (every direct message to you), `/clawx/dm/1/<id>` (one conversation of yours), `/xmtp/mls/1/g-<hex>/proto` or `/xmtp/mls/1/w-<hex>/proto` (an XMTP topic needs `signature`, 403 otherwise, and reaches at most 20 targets); `accept`/`block` are ignored here (use `/xmtp/topics/accept` and `/xmtp/topics/block`)
    #[schema(min_items = 1, max_items = 100)]
    registrations: Vec<TopicBody>,
    /// Where notifications go: `{"platform": "webhook", "url"}` or `{"platform": "fcm", "token"}`
    target: PushTargetBody,
}

/// What a registration did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterReply {
    /// The target (the same for every registration of the same URL or token)
    target_id: i64,
    /// Topics registered (repeats counted once)
    registered: u32,
    /// Of those, topics the target did not have before
    new_topics: u32,
    /// Webhooks only: the signing secret of this URL (`whsec_<base64>`), to check each notification's `webhook-signature`
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

#[utoipa::path(post, path = "/xmtp/topics/register", tag = "Chat", summary = "Register topics for push notifications",
    description = "Links topics to a delivery target. Each message that then arrives on one of them — a direct message to you, or an envelope written to this server's XMTP node for a registered XMTP topic — is queued and delivered by a background worker (retries with exponential backoff; a webhook answering 410 Gone, or an FCM token reported `UNREGISTERED`, is unregistered; a 404 is retried). Messages from a peer you denied are not pushed. Webhook calls carry `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">` under the `webhookSecret` returned here; the body is `{\"type\", \"timestamp\", \"data\"}`. Every topic is checked before any is registered.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = PushRegistrationBody,
    responses(
        (status = 200, description = "Registration successful", body = RegisterReply),
        (status = 400, description = "Invalid input, a refused target, or a bound reached (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "`ownerAddress` is not a wallet of yours, a `signature` is not its signature of the topic, or an XMTP topic has no `signature` (`FORBIDDEN`)"),
        (status = 404, description = "A conversation topic is not a conversation of yours (`NOT_FOUND`)"),
    ))]
pub async fn register(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<PushRegistrationBody>) -> Reply<RegisterReply> {
    let _ = &body.signed_public_key;
    let targets = consent_targets(body.registrations);
    let target = match body.target {
        PushTargetBody::Webhook { url } => pb::push_target::Target::WebhookUrl(url),
        PushTargetBody::Fcm { token } => pb::push_target::Target::FcmToken(token),
    };
    let request =
        pb::RegisterPushRequest { owner_address: body.owner_address.into(), targets, target: Some(pb::PushTarget { target: Some(target) }) };
    let answer = gateway.messaging(&account.principal).register_push(request).await?.into_inner();
    Ok(Json(RegisterReply {
        target_id: answer.target_id,
        registered: answer.registered,
        new_topics: answer.new_topics,
        webhook_secret: answer.webhook_secret,
    }))
}
