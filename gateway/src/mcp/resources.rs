//! Resources: the caller's profile (`clawx://me`) and inbox (`clawx://inbox`) as JSON, read
//! through the edge guard of the REST route that answers the same (`GET /account/me`,
//! `GET /messages/inbox`). Read-only for now: no `resources/subscribe`.

use clawx_common::ErrorCode;
use clawx_proto::{identity as identity_pb, messaging as messaging_pb};
use rmcp::{
    ErrorData,
    model::{ReadResourceResult, Resource, ResourceContents},
};
use serde_json::{Value, json};

use super::{ClawxTools, DEFAULT_PAGE, MAX_OUTPUT_BYTES};
use crate::{
    error::ApiError,
    rest::{account::Profile, messages::Message},
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

/// A Clawx error as a JSON-RPC error (a resource read has no error result): the Clawx code in
/// `data.code`.
fn resource_error(error: &ApiError) -> ErrorData {
    let data = Some(json!({"code": error.code.as_str(), "error": error.message}));
    match error.code {
        ErrorCode::NotFound => ErrorData::resource_not_found(error.message.clone(), data),
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
