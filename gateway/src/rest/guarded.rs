//! A REST route behind the edge guard: the guard decides on it as on the gRPC method its
//! handler calls, hands the handler the caller, and settles the call before the answer leaves.

use std::sync::Arc;

use axum::{
    extract::Request,
    http::HeaderValue,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use clawx_common::cache::RateDecision;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::{
    error::ApiError,
    guard::{Gateway, Refusal},
};

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
