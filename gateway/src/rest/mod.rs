//! The REST face of Clawx: the exact paths and JSON shapes of the seed APIs, each route calling
//! the owning service over gRPC.

mod account;
pub mod extract;
pub mod openapi;
mod system;
pub mod types;

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::HeaderValue,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use clawx_common::{ErrorCode, cache::RateDecision};
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouter},
    routes,
};

use crate::{
    context::RouteLabel,
    error::ApiError,
    guard::{Gateway, Refusal},
};

/// Every REST route, and the OpenAPI document generated from their declarations.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let (routes, api) = OpenApiRouter::new()
        .merge(account::routes(&gateway))
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

/// A handler's routes behind the edge guard, which decides on them as on the gRPC method `rpc`
/// the handler calls (see [`crate::guard`]).
pub fn guarded(gateway: &Arc<Gateway>, rpc: &'static str, routes: UtoipaMethodRouter<Arc<Gateway>>) -> UtoipaMethodRouter<Arc<Gateway>> {
    let (schemas, paths, route) = routes;
    let gateway = Arc::clone(gateway);
    let route = route.route_layer(middleware::from_fn(move |request: Request, next: Next| {
        let gateway = Arc::clone(&gateway);
        async move { admit(&gateway, rpc, request, next).await }
    }));
    (schemas, paths, route)
}

async fn label_route(request: Request, next: Next) -> Response {
    let label = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(label) = label {
        response.extensions_mut().insert(RouteLabel(label));
    }
    response
}

fn add_rate_headers(response: &mut Response, decision: &RateDecision) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_after.as_secs_f64().ceil() as u64));
}

/// Asks the guard about the call, hands the principal to the handler, and settles the call
/// (dropping revoked credentials) before the answer leaves.
async fn admit(gateway: &Gateway, rpc: &str, mut request: Request, next: Next) -> Response {
    let client_ip = gateway.client_ip(&request);
    let admitted = match gateway.admit(rpc, request.headers(), &client_ip).await {
        Ok(admitted) => admitted,
        Err(Refusal { error, decision }) => {
            let mut response = ApiError::from(error).into_response();
            if let Some(decision) = &decision {
                add_rate_headers(&mut response, decision);
            }
            return response;
        }
    };
    request.extensions_mut().insert(admitted.principal.clone());
    let mut response = next.run(request).await;
    gateway.settle(&admitted);
    if let Some(decision) = &admitted.decision {
        add_rate_headers(&mut response, decision);
    }
    response
}
