//! The one table of machine-readable error codes. Each code knows its gRPC code and its HTTP
//! status, so a service raises `ServiceError` and the gateway turns the resulting `tonic::Status`
//! back into the same HTTP answer through this table.

use std::fmt;

use tonic::{Code, Status, metadata::MetadataValue};

/// gRPC metadata key carrying the machine-readable error code on every error a service returns.
pub const ERROR_CODE_METADATA: &str = "clawx-error-code";
/// gRPC metadata key naming the offending request field, for validation errors.
pub const ERROR_FIELD_METADATA: &str = "clawx-error-field";
/// gRPC metadata key with the seconds to wait, for `RATE_LIMITED` errors.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

macro_rules! error_codes {
    ($($variant:ident => ($text:literal, $grpc:ident, $http:literal)),+ $(,)?) => {
        /// A machine-readable error code, as sent to clients in the `code` field.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant),+
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as clients see it, e.g. `HANDLE_TAKEN`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text),+ }
            }

            /// The gRPC status code this error travels as.
            pub const fn grpc_code(self) -> Code {
                match self { $(ErrorCode::$variant => Code::$grpc),+ }
            }

            /// The HTTP status the gateway answers with.
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $http),+ }
            }

            /// Parses a code from its client-facing text.
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text { $($text => Some(ErrorCode::$variant),)+ _ => None }
            }
        }
    };
}

error_codes! {
    // generic
    Unauthorized => ("UNAUTHORIZED", Unauthenticated, 401),
    Forbidden => ("FORBIDDEN", PermissionDenied, 403),
    NotFound => ("NOT_FOUND", NotFound, 404),
    ValidationFailed => ("VALIDATION_FAILED", InvalidArgument, 400),
    InvalidJson => ("INVALID_JSON", InvalidArgument, 400),
    Conflict => ("CONFLICT", AlreadyExists, 409),
    RateLimited => ("RATE_LIMITED", ResourceExhausted, 429),
    PayloadTooLarge => ("PAYLOAD_TOO_LARGE", OutOfRange, 413),
    UnsupportedMediaType => ("UNSUPPORTED_MEDIA_TYPE", InvalidArgument, 415),
    MethodNotAllowed => ("METHOD_NOT_ALLOWED", Unimplemented, 405),
    Unimplemented => ("UNIMPLEMENTED", Unimplemented, 501),
    Unavailable => ("UNAVAILABLE", Unavailable, 503),
    Timeout => ("TIMEOUT", DeadlineExceeded, 504),
    Internal => ("INTERNAL", Internal, 500),
    LimitExceeded => ("LIMIT_EXCEEDED", FailedPrecondition, 409),
    // identity
    HandleTaken => ("HANDLE_TAKEN", AlreadyExists, 409),
    AlreadyRegistered => ("ALREADY_REGISTERED", AlreadyExists, 409),
    NotRegistered => ("NOT_REGISTERED", FailedPrecondition, 403),
    // credential management (API keys, wallets, domains) refuses signed-expiry requests
    ApiKeyRequired => ("API_KEY_REQUIRED", PermissionDenied, 403),
    LastKey => ("LAST_KEY", FailedPrecondition, 400),
    WalletAlreadyLinked => ("WALLET_ALREADY_LINKED", AlreadyExists, 409),
    ChallengeInvalid => ("CHALLENGE_INVALID", InvalidArgument, 400),
    ChallengeExpired => ("CHALLENGE_EXPIRED", FailedPrecondition, 400),
    SignatureExpired => ("SIGNATURE_EXPIRED", Unauthenticated, 401),
    SignatureMalformed => ("SIGNATURE_MALFORMED", Unauthenticated, 401),
    SignatureNotCanonical => ("SIGNATURE_NOT_CANONICAL", Unauthenticated, 401),
    SignatureMismatch => ("SIGNATURE_MISMATCH", Unauthenticated, 401),
    DomainNotFound => ("DOMAIN_NOT_FOUND", Unauthenticated, 401),
    // messaging
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", AlreadyExists, 409),
    RecipientNotOnXmtp => ("RECIPIENT_NOT_ON_XMTP", FailedPrecondition, 400),
    // groups
    HandleRequired => ("HANDLE_REQUIRED", PermissionDenied, 403),
    OwnerCannotLeave => ("OWNER_CANNOT_LEAVE", FailedPrecondition, 400),
    NotAMember => ("NOT_A_MEMBER", FailedPrecondition, 400),
    // verification
    VerificationExpired => ("VERIFICATION_EXPIRED", FailedPrecondition, 400),
    InvalidTweet => ("INVALID_TWEET", InvalidArgument, 400),
    TwitterAlreadyUsed => ("TWITTER_ALREADY_USED", AlreadyExists, 400),
    NotVerified => ("NOT_VERIFIED", PermissionDenied, 403),
    AlreadyVerified => ("ALREADY_VERIFIED", FailedPrecondition, 400),
    NoVerificationCode => ("NO_VERIFICATION_CODE", FailedPrecondition, 400),
    TweetSourceUnavailable => ("TWEET_SOURCE_UNAVAILABLE", Unavailable, 503),
    // badges
    ChainUnavailable => ("CHAIN_UNAVAILABLE", Unavailable, 503),
}

impl ErrorCode {
    /// The code that best describes a `Status` that carries no Clawx code (e.g. from a
    /// transport failure or another gRPC server).
    pub fn from_grpc_code(code: Code) -> ErrorCode {
        match code {
            Code::Unauthenticated => ErrorCode::Unauthorized,
            Code::PermissionDenied => ErrorCode::Forbidden,
            Code::NotFound => ErrorCode::NotFound,
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::ValidationFailed,
            Code::AlreadyExists | Code::Aborted => ErrorCode::Conflict,
            Code::ResourceExhausted => ErrorCode::RateLimited,
            Code::Unimplemented => ErrorCode::Unimplemented,
            Code::Unavailable => ErrorCode::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => ErrorCode::Timeout,
            Code::FailedPrecondition => ErrorCode::ValidationFailed,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client can act on: a code, a human message and, for validation errors, the field.
/// Internal failures carry a fixed message; their details are logged where they happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds to wait before retrying, for `RATE_LIMITED`.
    pub retry_after_secs: Option<u64>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError { code, message: message.into(), field: None, retry_after_secs: None }
    }

    /// A `RATE_LIMITED` error asking to retry in `seconds` (at least 1).
    pub fn rate_limited(seconds: u64) -> Self {
        let seconds = seconds.max(1);
        ServiceError {
            retry_after_secs: Some(seconds),
            ..ServiceError::new(ErrorCode::RateLimited, format!("rate limit exceeded: retry in {seconds} s"))
        }
    }

    /// A `VALIDATION_FAILED` error naming the field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ServiceError { code: ErrorCode::ValidationFailed, message: message.into(), field: Some(field.to_string()), retry_after_secs: None }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::Forbidden, message)
    }

    /// An internal failure. The cause is logged here, with its full chain, and never sent.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ServiceError::new(ErrorCode::Internal, "internal error")
    }

    /// Converts to a `Status` carrying the code (and field) as metadata.
    pub fn into_status(self) -> Status {
        let mut status = Status::new(self.code.grpc_code(), self.message);
        status.metadata_mut().insert(ERROR_CODE_METADATA, MetadataValue::from_static(self.code.as_str()));
        if let Some(field) = self.field
            && let Ok(value) = MetadataValue::try_from(field.as_str())
        {
            status.metadata_mut().insert(ERROR_FIELD_METADATA, value);
        }
        if let Some(seconds) = self.retry_after_secs {
            status.metadata_mut().insert(RETRY_AFTER_METADATA, MetadataValue::from(seconds));
        }
        status
    }

    /// Recovers the error from a `Status` produced by `into_status`, or derives one from the
    /// gRPC code. Messages of internal and transport errors are replaced, so they never leak.
    pub fn from_status(status: &Status) -> Self {
        let code = status.metadata().get(ERROR_CODE_METADATA).and_then(|value| value.to_str().ok()).and_then(ErrorCode::parse);
        match code {
            Some(code) if code != ErrorCode::Internal => ServiceError {
                code,
                message: status.message().to_string(),
                field: status.metadata().get(ERROR_FIELD_METADATA).and_then(|value| value.to_str().ok()).map(str::to_string),
                retry_after_secs: status.metadata().get(RETRY_AFTER_METADATA).and_then(|value| value.to_str().ok()?.parse().ok()),
            },
            Some(_) => ServiceError::new(ErrorCode::Internal, "internal error"),
            None => {
                let code = ErrorCode::from_grpc_code(status.code());
                let message = match code {
                    ErrorCode::Internal => "internal error".to_string(),
                    ErrorCode::Unavailable => "a backing service is unavailable".to_string(),
                    ErrorCode::Timeout => "a backing service timed out".to_string(),
                    _ => status.message().to_string(),
                };
                ServiceError::new(code, message)
            }
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        error.into_status()
    }
}

/// Result of a domain operation.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_text_and_status() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let status = ServiceError::new(code, "boom").into_status();
            assert_eq!(status.code(), code.grpc_code());
            let back = ServiceError::from_status(&status);
            assert_eq!(back.code, code);
            if code != ErrorCode::Internal {
                assert_eq!(back.message, "boom");
            } else {
                assert_eq!(back.message, "internal error");
            }
            assert!((400..600).contains(&code.http_status()));
        }
    }

    #[test]
    fn retry_after_travels_with_rate_limits() {
        let back = ServiceError::from_status(&ServiceError::rate_limited(42).into_status());
        assert_eq!((back.code, back.retry_after_secs), (ErrorCode::RateLimited, Some(42)));
    }

    #[test]
    fn field_travels_with_validation_errors() {
        let status = ServiceError::invalid("handle", "handle must be 2-32 characters").into_status();
        let back = ServiceError::from_status(&status);
        assert_eq!(back.code, ErrorCode::ValidationFailed);
        assert_eq!(back.field.as_deref(), Some("handle"));
    }

    #[test]
    fn foreign_statuses_never_leak_internal_messages() {
        let back = ServiceError::from_status(&Status::internal("db password=hunter2 failed"));
        assert_eq!(back.code, ErrorCode::Internal);
        assert_eq!(back.message, "internal error");
        let back = ServiceError::from_status(&Status::unavailable("tcp connect error 10.0.0.3"));
        assert_eq!(back.code, ErrorCode::Unavailable);
        assert!(!back.message.contains("10.0.0.3"));
    }
}
