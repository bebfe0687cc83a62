//! REST errors. Handlers return [`ApiError`]; a middleware that knows the request path renders it
//! in the JSON shape of the path's API family, so every error of a family looks the same:
//!
//! - ClawXmtp (`/account`, `/users`, `/messages`, `/groups`): `{"ok": false, "error", "code"}`
//! - verification (`/agents`, `/verify`): `{"error", "code", "statusCode"}`
//! - everything else: `{"error", "code"}`
//!
//! Validation errors add `"field"`.

use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use clawx_common::{ErrorCode, ServiceError};
use serde_json::{Map, Value, json};

/// An error answered to a REST client.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds to wait, for `RATE_LIMITED`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), field: None, retry_after: None }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError { field: Some(field.to_string()), ..ApiError::new(ErrorCode::ValidationFailed, message) }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "not found")
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        ApiError { code: error.code, message: error.message, field: error.field, retry_after: error.retry_after_secs }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        if !matches!(
            status.code(),
            tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::AlreadyExists
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::FailedPrecondition
                | tonic::Code::ResourceExhausted
                | tonic::Code::OutOfRange
        ) {
            tracing::warn!(grpc.code = ?status.code(), grpc.message = status.message(), "upstream call failed");
        }
        ApiError::from(ServiceError::from_status(&status))
    }
}

/// The API family of a REST path, which decides the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    ClawXmtp,
    Verification,
    Messaging,
}

impl Family {
    pub fn of_path(path: &str) -> Family {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "account" | "users" | "messages" | "groups" | "health" => Family::ClawXmtp,
            "agents" | "verify" => Family::Verification,
            _ => Family::Messaging,
        }
    }
}

/// Renders an error body in `family`'s shape.
pub fn error_body(error: &ApiError, family: Family) -> Value {
    let mut body = Map::new();
    if family == Family::ClawXmtp {
        body.insert("ok".into(), Value::Bool(false));
    }
    body.insert("error".into(), Value::String(error.message.clone()));
    body.insert("code".into(), Value::String(error.code.as_str().to_string()));
    if family == Family::Verification {
        body.insert("statusCode".into(), json!(error.code.http_status()));
    }
    if let Some(field) = &error.field {
        body.insert("field".into(), Value::String(field.clone()));
    }
    Value::Object(body)
}

/// Marker stored in the response extensions: the body still has to be rendered.
#[derive(Clone, Debug)]
struct PendingError(ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

/// Middleware: renders pending errors in the family shape of the request path, keeping the
/// response's status, headers and extensions.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let family = Family::of_path(request.uri().path());
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let Some(PendingError(error)) = parts.extensions.remove::<PendingError>() else {
        return Response::from_parts(parts, body);
    };
    let bytes = serde_json::to_vec(&error_body(&error, family)).expect("JSON of a JSON value");
    parts.headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.extensions.insert(error.code);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_has_its_shape() {
        let error = ApiError::invalid("handle", "handle is required");
        assert_eq!(
            error_body(&error, Family::of_path("/account/register")),
            json!({"ok": false, "error": "handle is required", "code": "VALIDATION_FAILED", "field": "handle"})
        );
        let error = ApiError::new(ErrorCode::VerificationExpired, "code expired");
        assert_eq!(
            error_body(&error, Family::of_path("/verify/complete")),
            json!({"error": "code expired", "code": "VERIFICATION_EXPIRED", "statusCode": 400})
        );
        assert_eq!(error_body(&ApiError::not_found(), Family::of_path("/push/group")), json!({"error": "not found", "code": "NOT_FOUND"}));
    }
}
