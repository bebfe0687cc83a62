//! Request extractors that answer bad input with the right code: 415 for a body that is not
//! JSON, 413 for one over the limit, 400 `INVALID_JSON` for broken JSON and 400
//! `VALIDATION_FAILED` (naming the field) for missing, unknown or mistyped fields.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::JsonRejection},
    http::request::Parts,
};
use clawx_common::{ErrorCode, Principal};
use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, IgnoredAny},
};

use crate::error::ApiError;

/// The field a serde error names: `missing field `x``, `unknown field `x``, or a
/// `path.to.field: ...` prefix.
fn field_of(message: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    let (path, _) = message.split_once(": ")?;
    (!path.is_empty() && !path.contains(' ')).then(|| path.to_string())
}

/// Turns a serde message into a short human one: no "at line 1 column 5".
fn tidy(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    message.replace('`', "")
}

fn data_error(detail: &str) -> ApiError {
    match field_of(detail) {
        Some(field) => {
            let reason = tidy(detail.strip_prefix(&format!("{field}: ")).unwrap_or(detail));
            // The formats of `types` say why a value was refused as `must be ...`.
            let message = if reason.starts_with("must ") { format!("{field} {reason}") } else { reason };
            ApiError::invalid(&field, message)
        }
        None => ApiError::new(ErrorCode::ValidationFailed, tidy(detail)),
    }
}

/// A JSON object read as [`JsonBody`] reads a request body (an MCP tool input that is a REST
/// body): 400 `VALIDATION_FAILED` naming the field for missing, unknown or mistyped fields.
pub fn body_from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| data_error(&error.to_string()))
}

/// A JSON body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType, "send the body as JSON with Content-Type: application/json"));
        }
        let bytes = match Bytes::from_request(request, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large"));
            }
            Err(rejection) => return Err(ApiError::new(ErrorCode::InvalidJson, format!("unreadable body: {}", rejection.body_text()))),
        };
        // serde reads a struct from an array too (`[]` is a valid PATCH body to it): every body
        // here is an object, so well-formed JSON of any other kind is refused as such.
        if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') && serde_json::from_slice::<IgnoredAny>(&bytes).is_ok() {
            return Err(ApiError::new(ErrorCode::ValidationFailed, "the body must be a JSON object"));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or `application/<anything>+json`, as axum's own `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
        }
        JsonRejection::JsonSyntaxError(error) => {
            let text = error.body_text();
            let detail = text.split("as JSON: ").nth(1).unwrap_or(&text);
            ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {}", tidy(detail)))
        }
        JsonRejection::JsonDataError(error) => {
            let text = error.body_text();
            let detail = text.split("target type: ").nth(1).unwrap_or(&text);
            let top_level = field_of(detail).is_none_or(|field| field.starts_with('['));
            if top_level && detail.contains("invalid type") {
                return ApiError::new(ErrorCode::ValidationFailed, "the body must be a JSON object");
            }
            data_error(detail)
        }
        JsonRejection::BytesRejection(error) if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        other if other.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        other => ApiError::new(ErrorCode::InvalidJson, format!("unreadable body: {}", other.body_text())),
    }
}

/// Query parameters.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text.split("Failed to deserialize query string: ").nth(1).unwrap_or(&text);
                Err(data_error(detail))
            }
        }
    }
}

/// A path parameter; one that is not valid UTF-8 (or not of the expected type) is a coded 400.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::ValidationFailed, format!("invalid path: {}", tidy(&rejection.body_text())))),
        }
    }
}

/// Whoever is calling (set by the auth middleware).
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let principal = parts.extensions.get::<Principal>().cloned().unwrap_or_else(|| Principal::anonymous(None));
        Ok(Caller(principal))
    }
}

/// An authenticated caller: 401 `UNAUTHORIZED` otherwise.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: i64,
    pub principal: Principal,
}

impl<S: Send + Sync> FromRequestParts<S> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        match principal.account_id {
            Some(id) => Ok(Account { id, principal }),
            None => Err(ApiError::unauthorized("authentication required: send X-Api-Key (or Authorization: Bearer) or a signed request")),
        }
    }
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or a value.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_serde_messages() {
        assert_eq!(field_of("missing field `handle` at line 1 column 2").as_deref(), Some("handle"));
        assert_eq!(field_of("unknown field `nope`, expected one of `a`, `b`").as_deref(), Some("nope"));
        assert_eq!(field_of("limit: invalid digit found in string").as_deref(), Some("limit"));
        assert_eq!(field_of("invalid type: integer `5`, expected a string"), None);
        assert_eq!(tidy("invalid type: integer `5`, expected a string at line 1 column 12"), "invalid type: integer 5, expected a string");
    }
}
