//! `/xmtp/*`: consent and the spam check, in the bodies of the Unstoppable-style Chat API —
//! the messaging service's `SetConsent` and `CheckSpam`. Errors are `{"error", "code"}`.
//!
//! Topics: a Clawx conversation topic (`/clawx/dm/1/<conversation id>`, the `topic` of every
//! message the API returns) names that conversation; any other topic (an XMTP topic such as
//! `/xmtp/mls/1/g-<hex group id>/proto`) needs `peerAddress`, which names the peer: a wallet,
//! or the account here owning it.

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
    /// Your server-held wallet (403 otherwise)
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

async fn set_consent(gateway: &Gateway, account: &Account, consent: pb::Consent, body: RegistrationBody) -> Reply<ConsentReply> {
    // accept/block flags and signedPublicKey are read for compatibility only.
    let _ = &body.signed_public_key;
    let targets = body
        .registrations
        .into_iter()
        .map(|registration| {
            let _ = (registration.accept, registration.block);
            pb::ConsentTarget {
                topic: registration.topic,
                peer_address: registration.peer_address.map(String::from),
                signature: registration.signature,
            }
        })
        .collect();
    let request = pb::SetConsentRequest { owner_address: body.owner_address.into(), consent: consent as i32, targets };
    let answer = gateway.messaging(&account.principal).set_consent(request).await?.into_inner();
    Ok(Json(ConsentReply { conversations: answer.conversations, reports: answer.reports }))
}

#[utoipa::path(post, path = "/xmtp/topics/accept", tag = "Chat", summary = "Accept chat requests",
    description = "Sets your consent to `allowed` for each topic: a Clawx conversation topic of yours, or a peer named by `peerAddress` (you need a conversation with it). Accepted conversations are listed by `GET /messages/inbox?consent=allowed`. Every topic is checked before any is changed.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = RegistrationBody,
    responses(
        (status = 200, description = "Accept successful", body = ConsentReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "`ownerAddress` is not your wallet, or a `signature` is not its signature of the topic (`FORBIDDEN`)"),
        (status = 404, description = "A topic is not a conversation of yours, or you have no conversation with the peer (`NOT_FOUND`)"),
    ))]
pub async fn accept(State(gateway): State<Arc<Gateway>>, account: Account, JsonBody(body): JsonBody<RegistrationBody>) -> Reply<ConsentReply> {
    set_consent(&gateway, &account, pb::Consent::Allowed, body).await
}

#[utoipa::path(post, path = "/xmtp/topics/block", tag = "Chat", summary = "Block conversations and report them as spam",
    description = "Sets your consent to `denied` for each topic and files one spam report per peer (once per reporter and peer; a peer named by `peerAddress` is reported even without a conversation). A denied peer's messages are still stored (listed by `GET /messages/inbox?consent=denied`) but not streamed to you.",
    security(("ApiKey" = []), ("Bearer" = []), ("SignedDomain" = [], "SignedExpires" = [], "SignedSignature" = [])),
    request_body = RegistrationBody,
    responses(
        (status = 200, description = "Block successful", body = ConsentReply),
        (status = 400, description = "Invalid input (`VALIDATION_FAILED` naming the field)"),
        (status = 403, description = "`ownerAddress` is not your wallet, or a `signature` is not its signature of the topic (`FORBIDDEN`)"),
        (status = 404, description = "A topic is not a conversation of yours and names no peer (`NOT_FOUND`)"),
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
