//! Edge authentication: who is calling, from the request headers.

use axum::http::HeaderMap;
use clawx_common::{ErrorCode, Principal, ServiceError};

use crate::Gateway;

/// Headers that carry client credentials; never forwarded to services.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "x-api-key",
    "authorization",
    "x-auth-domain",
    "x-auth-expires",
    "x-auth-expiration",
    "x-auth-signature",
];

/// Removes every client credential from headers about to be forwarded.
pub fn strip_credentials(headers: &mut HeaderMap) {
    for name in CREDENTIAL_HEADERS {
        headers.remove(*name);
    }
}

fn has_credentials(headers: &HeaderMap) -> bool {
    CREDENTIAL_HEADERS.iter().any(|name| headers.contains_key(*name))
}

impl Gateway {
    /// The principal of a request: anonymous without credentials, an account with valid ones,
    /// an error with invalid ones.
    pub async fn authenticate(&self, headers: &HeaderMap, client_ip: &str) -> Result<Principal, ServiceError> {
        if !has_credentials(headers) {
            return Ok(Principal::anonymous(Some(client_ip.to_string())));
        }
        Err(ServiceError::new(ErrorCode::Unauthorized, "credentials are not accepted yet"))
    }
}
