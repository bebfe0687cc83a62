//! The REST face of Clawx: the exact paths and JSON shapes of the seed APIs, each route calling
//! the owning service over gRPC.
//!
//! Modules, each using only those listed before it: [`types`] and [`extract`] (what bodies,
//! parameters and callers are made of), [`guarded`] (a route behind the edge guard), the
//! handler files (`account`, `messages`, `chat`, `groups`, `system`), [`openapi`] (what every operation shares);
//! this file composes them.

pub(crate) mod account;
mod badges;
mod chat;
pub mod extract;
pub(crate) mod groups;
pub mod guarded;
pub(crate) mod messages;
pub mod openapi;
mod system;
pub mod types;
pub(crate) mod verify;

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
};
use clawx_common::ErrorCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{context::RouteLabel, error::ApiError, guard::Gateway};

/// Every REST route, and the OpenAPI document generated from their declarations.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let (routes, api) = OpenApiRouter::new()
        .merge(account::routes(&gateway))
        .merge(messages::routes(&gateway))
        .merge(chat::routes(&gateway))
        .merge(verify::routes(&gateway))
        .merge(badges::routes(&gateway))
        .merge(groups::routes(&gateway))
        .routes(routes!(system::health))
        .routes(routes!(system::status))
        .routes(routes!(system::metrics))
        .routes(routes!(openapi::document))
        .split_for_parts();
    let document = Arc::new(openapi::finish(api));
    routes
        .merge(openapi::swagger_ui(&document))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this path") })
        .route_layer(middleware::from_fn(label_route))
        .layer(DefaultBodyLimit::max(gateway.config.max_body_bytes))
        .layer(Extension(document))
        .with_state(gateway)
}

async fn label_route(request: Request, next: Next) -> Response {
    let label = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(label) = label {
        response.extensions_mut().insert(RouteLabel(label));
    }
    response
}
