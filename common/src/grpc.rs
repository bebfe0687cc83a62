//! gRPC plumbing shared by every service: health, reflection and serving on a listener until
//! shutdown.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

/// A lazily connected channel to another Clawx service at `url`, as services call each other:
/// 5 s to connect, 15 s per call.
pub fn service_channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|error| anyhow::anyhow!("invalid service URL {url:?}: {error}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15));
    Ok(endpoint.connect_lazy())
}

/// Metadata in which the gateway tells the XMTP node the client's IP address (as it computed it
/// for per-IP limits, from the TCP peer or a trusted proxy). The gateway removes any value the
/// client sent, so the node may trust it on calls that came through the gateway.
pub const CLIENT_IP_METADATA: &str = "clawx-client-ip";

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

/// The header (and gRPC metadata) that names the request a call is made for.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id accepted from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id may be used as sent: 1 to 128 characters among
/// `A-Z a-z 0-9 . _ : -`. Anything else (spaces, `key=value` text, kilobytes of it) could forge
/// or flood log lines, so the gateway replaces it with an id of its own.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
}

/// The largest gRPC message a Clawx server accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A `grpc.health.v1.Health` server reporting SERVING for the server as a whole and for each
/// named service.
pub async fn health_service(
    services: &[&str],
) -> (HealthReporter, tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) {
    let (reporter, server) = tonic_health::server::health_reporter();
    for service in services {
        reporter.set_service_status(*service, ServingStatus::Serving).await;
    }
    (reporter, server)
}

/// Server reflection (v1 and v1alpha) over every Clawx and XMTP service definition.
pub fn reflection_services() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
)> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(clawx_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(clawx_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// A server builder with the settings every Clawx gRPC server shares. Each call runs in a span
/// carrying the `x-request-id` the gateway sent, so service logs join the gateway's.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .trace_fn(|request| {
            // Ports are private to the gateway, which only forwards well-formed ids; a malformed
            // one here came around it and is not logged.
            let request_id =
                request.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()).filter(|id| is_valid_request_id(id)).unwrap_or("");
            tracing::info_span!("grpc", request_id, path = request.uri().path())
        })
}

/// Serves `router` on `listener` until `shutdown` fires, then lets requests in flight finish.
pub async fn serve(router: Router, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await?;
    Ok(())
}

/// A router with health (SERVING for each of `services`) and reflection, ready for the
/// service's own servers.
pub async fn base_router(services: &[&str]) -> anyhow::Result<Router> {
    let (_reporter, health) = health_service(services).await;
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;
    Ok(server_builder().add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha))
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

    #[test]
    fn request_ids_are_short_plain_tokens() {
        for valid in ["a", "abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "req.7:B_9", "x".repeat(128).as_str()] {
            assert!(is_valid_request_id(valid), "{valid:?}");
        }
        for invalid in ["", "two words", "a=b", "line\nbreak", "caf\u{e9}", "quote\"", "x".repeat(129).as_str()] {
            assert!(!is_valid_request_id(invalid), "{invalid:?}");
        }
    }
}
