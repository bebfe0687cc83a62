//! The REST face of Clawx: the exact paths and JSON shapes of the seed APIs, each route calling
//! the owning service over gRPC.

mod account;
pub mod extract;
pub mod openapi;
mod system;
mod views;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderValue, Method},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clawx_common::{ErrorCode, cache::RateDecision};

use crate::{Gateway, error::ApiError};

/// The route a response came from, for logs and metrics.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub String);

/// Every REST route.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let api = Router::new()
        .route("/account/create", post(account::create))
        .route("/account/register", post(account::register))
        .route("/account/me", get(account::me).patch(account::update_me))
        .route("/account/keys", get(account::keys).post(account::create_key))
        .route("/account/keys/{id}", axum::routing::delete(account::revoke_key))
        .route("/account/wallets/challenge", get(account::wallet_challenge))
        .route("/account/wallets", get(account::wallets).post(account::link_wallet))
        .route("/account/wallets/{address}", axum::routing::delete(account::unlink_wallet))
        .route("/account/domains", get(account::domains).post(account::claim_domain))
        .route("/account/domains/{name}", axum::routing::delete(account::release_domain))
        .route("/users", get(account::users))
        .route("/users/{handle}", get(account::user))
        .route("/api/user/{domain}/signature", get(account::signature_message))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&gateway), authenticate_and_limit));

    Router::new()
        .merge(api)
        .route("/health", get(system::health))
        .route("/status", get(system::status))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(openapi::swagger_ui())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this path") })
        .route_layer(middleware::from_fn(label_route))
        .layer(DefaultBodyLimit::max(gateway.config.max_body_bytes))
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

/// Routes that create identities, limited per client IP.
fn is_creation(method: &Method, path: &str) -> bool {
    method == Method::POST && matches!(path, "/account/create" | "/agents")
}

fn rate_limited(decision: &RateDecision) -> Response {
    let mut response = ApiError::from(crate::refused_error(decision)).into_response();
    add_rate_headers(&mut response, decision);
    response
}

fn add_rate_headers(response: &mut Response, decision: &RateDecision) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_after.as_secs_f64().ceil() as u64));
}

/// Authenticates the caller, applies the rate limits and hands the principal to the handler.
async fn authenticate_and_limit(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let client_ip = crate::client_ip(&gateway, &request);
    let principal = match gateway.authenticate(request.headers(), &client_ip).await {
        Ok(principal) => principal,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if is_creation(request.method(), request.uri().path())
        && let Err(decision) = gateway.limit(&format!("create:{client_ip}"), gateway.config.limits.create_per_minute).await
    {
        return rate_limited(&decision);
    }
    let decision = match gateway.limit_principal(&principal).await {
        Ok(decision) => decision,
        Err(decision) => return rate_limited(&decision),
    };
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        add_rate_headers(&mut response, &decision);
    }
    response
}
