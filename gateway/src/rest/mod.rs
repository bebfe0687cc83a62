//! The REST face of Clawx: the exact paths and JSON shapes of the seed APIs, each route calling
//! the owning service over gRPC.

mod system;

use std::sync::Arc;

use axum::{Router, routing::get};

use crate::{Gateway, error::ApiError};

/// Every REST route.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/health", get(system::health))
        .route("/status", get(system::status))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(clawx_common::ErrorCode::MethodNotAllowed, "method not allowed on this path")
        })
        .with_state(gateway)
}
