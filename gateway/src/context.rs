//! The bottom layer: what the gateway knows about a request before anything decides on it — its
//! id, the REST route it matched, the client's IP address and whether it is gRPC.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

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

/// Who a per-IP limit counts for `client_ip`: an IPv4 address itself (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address by its /64, since one subscriber is handed at
/// least a /64 and can rotate through its addresses at will. Text that is not an IP address
/// (an odd forwarded entry) counts as sent.
pub fn ip_limit_key(client_ip: &str) -> Cow<'_, str> {
    match client_ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => Cow::Owned(address.to_string()),
        Ok(IpAddr::V6(address)) => match address.to_ipv4_mapped() {
            Some(mapped) => Cow::Owned(mapped.to_string()),
            None => {
                let network = Ipv6Addr::from_bits(address.to_bits() & (u128::MAX << 64));
                Cow::Owned(format!("{network}/64"))
            }
        },
        Err(_) => Cow::Borrowed(client_ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limits_count_ipv6_clients_by_their_64() {
        assert_eq!(ip_limit_key("192.0.2.1"), "192.0.2.1");
        assert_eq!(ip_limit_key("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(ip_limit_key("2001:db8:0:1:abcd::9"), "2001:db8:0:1::/64");
        assert_eq!(ip_limit_key("2001:0db8:0000:0001::1"), "2001:db8:0:1::/64");
        assert_eq!(ip_limit_key("::1"), "::/64");
        assert_eq!(ip_limit_key("unknown"), "unknown");
    }
}
