//! Resources: the caller's profile (`clawx://me`) and inbox (`clawx://inbox`) as JSON, read
//! through the edge guard of the REST route that answers the same (`GET /account/me`,
//! `GET /messages/inbox`).
//!
//! The inbox can be followed: a `subscriptions/listen` request (protocol revision 2026-07-28)
//! naming `clawx://inbox` gets `notifications/resources/updated` for it at every new direct
//! message of the caller, fed by the messaging stream (live from the moment of the request),
//! until the client cancels it, the server shuts down, or the request's credentials stop
//! authenticating (a revoked key ends its subscriptions at once). A subscription holds one of
//! the client address's stream slots, like `GET /messages/stream`.

use std::sync::Arc;

use clawx_common::ErrorCode;
use clawx_proto::{identity as identity_pb, messaging as messaging_pb};
use futures::StreamExt;
use rmcp::{
    ErrorData,
    model::{
        ReadResourceResult, Resource, ResourceContents, ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification,
        SubscriptionFilter,
    },
    service::SubscriptionContext,
};
use serde_json::{Value, json};

use super::{ClawxTools, DEFAULT_PAGE, MAX_OUTPUT_BYTES, STREAM_RPC, revoked};
use crate::{
    error::ApiError,
    rest::{
        account::Profile,
        messages::{Message, open_message_stream},
    },
};

const ME: &str = "clawx://me";
const INBOX: &str = "clawx://inbox";
const JSON: &str = "application/json";

/// The resources every account has.
pub fn list() -> Vec<Resource> {
    vec![
        Resource::new(ME, "me")
            .with_title("Your Clawx profile")
            .with_description("Your own profile, as the whoami tool answers it")
            .with_mime_type(JSON),
        Resource::new(INBOX, "inbox")
            .with_title("Your Clawx inbox")
            .with_description("The latest message of each of your conversations, newest first (the first 20)")
            .with_mime_type(JSON),
    ]
}

/// The resources whose changes a subscription announces (the profile changes only when its
/// owner changes it).
const SUBSCRIBABLE: &[&str] = &[INBOX];

/// What Clawx accepts of a `subscriptions/listen` filter: updates of the subscribable resources
/// it names, nothing else.
pub fn accepted(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let uris = requested.resource_subscriptions.iter().flatten().filter(|uri| SUBSCRIBABLE.contains(&uri.as_str())).cloned();
    SubscriptionFilter::builder().resource_subscriptions(uris).build()
}

/// Runs one `subscriptions/listen` request (see the module documentation). `Ok` ends it
/// gracefully (the client cancelled, the server shuts down, or the messaging stream ended, e.g.
/// a slow client dropped: listen again and read the inbox); a revoked key ends it with an error
/// carrying `UNAUTHORIZED`.
pub async fn listen(tools: &ClawxTools, context: SubscriptionContext) -> Result<(), ErrorData> {
    let Some(parts) = context.request_context().extensions.get::<http::request::Parts>().cloned() else {
        return Err(ErrorData::internal_error("the request's HTTP parts are missing", None));
    };
    let follows_inbox = context.accepted().resource_subscriptions.iter().flatten().any(|uri| uri == INBOX);
    if !follows_inbox {
        // Nothing Clawx announces was asked for: the subscription ends at once (gracefully)
        // rather than holding a connection that will never carry a notification.
        return Ok(());
    }
    let gateway = Arc::clone(&tools.gateway);
    // Listening before the credentials are checked: a revocation in between is not missed.
    let revocations = gateway.authenticator.cache.revocations();
    let stream_gateway = Arc::clone(&gateway);
    let (account_id, _slot, mut upstream) = tools
        .admitted(&parts, STREAM_RPC, |principal| async move {
            let account_id = principal.account_id.ok_or_else(|| ApiError::unauthorized("authentication required"))?;
            let (slot, upstream) = open_message_stream(&stream_gateway, &principal, 0).await?;
            Ok((account_id, slot, upstream))
        })
        .await
        .map_err(|error| resource_error(&error))?;
    let revoked = revoked(&gateway, &parts, account_id, revocations);
    tokio::pin!(revoked);
    loop {
        let next = tokio::select! {
            () = context.cancelled() => return Ok(()),
            () = gateway.shutdown.cancelled() => return Ok(()),
            () = &mut revoked => return Err(resource_error(&ApiError::unauthorized("the API key of this subscription was revoked"))),
            next = upstream.next() => next,
        };
        match next {
            None => return Ok(()),
            Some(Err(status)) => return Err(resource_error(&ApiError::from(status))),
            // Group messages are not part of the inbox.
            Some(Ok(message)) if message.group_id.is_some() => {}
            Some(Ok(_)) => {
                let updated = ResourceUpdatedNotification::new(ResourceUpdatedNotificationParam::new(INBOX));
                if context.sink().send(ServerNotification::ResourceUpdatedNotification(updated)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// A Clawx error as a JSON-RPC error (a resource read has no error result): the Clawx code in
/// `data.code`.
fn resource_error(error: &ApiError) -> ErrorData {
    let data = Some(json!({"code": error.code.as_str(), "error": error.message}));
    match error.code {
        ErrorCode::NotFound => ErrorData::resource_not_found(error.message.clone(), data),
        ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::RateLimited => ErrorData::invalid_request(error.message.clone(), data),
        _ if error.code.http_status() >= 500 => ErrorData::internal_error(error.message.clone(), data),
        _ => ErrorData::invalid_params(error.message.clone(), data),
    }
}

/// Reads the resource `uri` for the request's caller.
pub async fn read(tools: &ClawxTools, parts: &http::request::Parts, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let gateway = std::sync::Arc::clone(&tools.gateway);
    let value: Value = match uri {
        ME => tools
            .admitted(parts, "/clawx.identity.v1.IdentityService/GetMe", |principal| async move {
                let profile = gateway.identity(&principal).get_me(identity_pb::GetMeRequest {}).await?.into_inner();
                Ok(json!(Profile::from(profile)))
            })
            .await
            .map_err(|error| resource_error(&error))?,
        INBOX => tools
            .admitted(parts, "/clawx.messaging.v1.MessagingService/ListInbox", |principal| async move {
                let request = messaging_pb::ListInboxRequest { consent: messaging_pb::Consent::Unspecified.into(), limit: DEFAULT_PAGE, offset: 0 };
                let conversations = gateway.messaging(&principal).list_inbox(request).await?.into_inner().conversations;
                Ok(json!({ "conversations": conversations.into_iter().map(Message::from).collect::<Vec<_>>() }))
            })
            .await
            .map_err(|error| resource_error(&error))?,
        _ => return Err(resource_error(&ApiError::new(ErrorCode::NotFound, format!("no resource {uri}: read clawx://me or clawx://inbox")))),
    };
    let text = value.to_string();
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(resource_error(&ApiError::new(
            ErrorCode::ValidationFailed,
            "the resource is too large: use the read_inbox tool with a smaller limit",
        )));
    }
    let contents = ResourceContents::TextResourceContents { uri: uri.to_string(), mime_type: Some(JSON.to_string()), text, meta: None };
    Ok(ReadResourceResult::new(vec![contents]))
}
