//! The bottom layer: what the gateway knows about a request before anything decides on it — its
//! id, the REST route it matched, the client's IP address and whether it is gRPC.

use std::net::SocketAddr;

use axum::{
    extract::ConnectInfo,
    http::{HeaderMap, HeaderValue, Request, header},
};
use clawx_common::grpc::{REQUEST_ID_HEADER, is_valid_request_id};
use uuid::Uuid;

tokio::task_local! {
    /// The id of the request being served, for calls made on its behalf.
    pub static REQUEST_ID: String;
}

/// The id of the request being served, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The request's id: the client's `x-request-id` when it is well-formed (see
/// [`is_valid_request_id`]), otherwise a fresh UUID. The request then carries exactly this id,
/// so a forwarded call sends it to the service.
pub fn settle_request_id(headers: &mut HeaderMap) -> String {
    let mut sent = headers.get_all(REQUEST_ID_HEADER).iter();
    let accepted = match (sent.next(), sent.next()) {
        (Some(only), None) => only.to_str().ok().filter(|id| is_valid_request_id(id)).map(str::to_string),
        _ => None,
    };
    let request_id = accepted.unwrap_or_else(|| Uuid::new_v4().to_string());
    headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(&request_id).expect("a checked id is a valid header value"));
    request_id
}

/// The REST route a response came from, for logs and metrics.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub String);

/// Whether a request is gRPC or grpc-web (any `application/grpc*` content type).
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).is_some_and(|value| value.starts_with("application/grpc"))
}

/// The client's IP address: the TCP peer or, behind a trusted proxy (`trust_forwarded_for`), the
/// address that proxy appended last to `X-Forwarded-For` (entries to its left are whatever the
/// client sent).
pub fn client_ip<B>(trust_forwarded_for: bool, request: &Request<B>) -> String {
    if trust_forwarded_for
        && let Some(forwarded) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').map(str::trim).find(|entry| !entry.is_empty()))
    {
        return forwarded.to_string();
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

pub use clawx_common::grpc::ip_limit_key;
