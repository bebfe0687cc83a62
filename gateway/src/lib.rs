//! The Clawx gateway: one listener serving REST (axum), native gRPC and grpc-web (told apart by
//! content type), authenticating callers at the edge and calling the services over gRPC with a
//! short-lived internal JWT.

pub mod auth;
pub mod error;
pub mod observe;
pub mod proxy;
pub mod rest;
pub mod upstream;

use std::{
    borrow::Cow,
    convert::Infallible,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderName, Request, Response},
};
use clawx_common::{Backends, InternalAuth, Principal, ServiceError};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt, util::BoxCloneSyncService};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use upstream::{UpstreamUrls, Upstreams};

/// Rate limits, per minute; 0 disables a limit.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per account (`CLAWX_RATE_LIMIT_PER_MINUTE`).
    pub per_account_per_minute: u32,
    /// Account creations per client IP (`CLAWX_RATE_LIMIT_CREATE_PER_MINUTE`).
    pub create_per_minute: u32,
    /// Unauthenticated requests per client IP (`CLAWX_RATE_LIMIT_IP_PER_MINUTE`).
    pub per_ip_per_minute: u32,
    /// XMTP node calls per client IP (`CLAWX_RATE_LIMIT_XMTP_PER_MINUTE`).
    pub xmtp_per_minute: u32,
    /// Credentials per client IP that had to be checked with the identity service (cache
    /// misses, which is where bad credentials land) (`CLAWX_RATE_LIMIT_AUTH_PER_MINUTE`).
    pub auth_checks_per_minute: u32,
    /// Concurrent long-lived streams per client IP: XMTP subscriptions, health `Watch` and
    /// reflection (`CLAWX_XMTP_STREAMS_PER_IP`).
    pub xmtp_streams_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_account_per_minute: 600,
            create_per_minute: 30,
            per_ip_per_minute: 1200,
            xmtp_per_minute: 6000,
            auth_checks_per_minute: 300,
            xmtp_streams_per_ip: 200,
        }
    }
}

/// What the gateway needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub upstreams: UpstreamUrls,
    pub backends: Backends,
    pub auth: InternalAuth,
    pub limits: Limits,
    /// Largest accepted REST body.
    pub max_body_bytes: usize,
    /// Deadline of each upstream call made for a REST request.
    pub upstream_timeout: Duration,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Origins allowed by CORS; empty means any.
    pub cors_origins: Vec<String>,
}

impl Config {
    pub fn new(upstreams: UpstreamUrls, backends: Backends, auth: InternalAuth) -> Config {
        Config {
            upstreams,
            backends,
            auth,
            limits: Limits::default(),
            max_body_bytes: 1024 * 1024,
            upstream_timeout: Duration::from_secs(15),
            trust_forwarded_for: false,
            cors_origins: Vec::new(),
        }
    }
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub upstreams: Upstreams,
    pub backends: Backends,
    pub config: Config,
    pub started: Instant,
    pub auth_cache: Arc<auth::AuthCache>,
    /// Counts requests when the shared limiter (Redis) is unreachable.
    pub fallback_limiter: clawx_common::RateLimiter,
    /// Open XMTP subscription streams per client IP.
    pub streams: Arc<proxy::StreamSlots>,
    /// The last `/status` answer, reused for a second.
    pub status_cache: std::sync::Mutex<Option<(Instant, serde_json::Value)>>,
}

/// The client's IP address: the TCP peer or, behind a trusted proxy, the address that proxy
/// appended last to `X-Forwarded-For` (entries to its left are whatever the client sent).
pub fn client_ip<B>(gateway: &Gateway, request: &Request<B>) -> String {
    if gateway.config.trust_forwarded_for
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

/// The limiter key for a limit key. Per-IP keys are written `<scope>:<client ip>` by every
/// caller; their address part becomes its [`ip_limit_key`]. Other keys (`acct:<id>`) are kept.
fn limiter_key(key: &str) -> Cow<'_, str> {
    let Some((scope, rest)) = key.split_once(':') else {
        return Cow::Borrowed(key);
    };
    if rest.parse::<IpAddr>().is_err() {
        return Cow::Borrowed(key);
    }
    Cow::Owned(format!("{scope}:{}", ip_limit_key(rest)))
}

/// A refused rate-limit check.
pub type Refused = clawx_common::cache::RateDecision;

impl Gateway {
    /// Counts one request against `key`; refuses past `limit` per minute (0: no limit). Per-IP
    /// keys (`<scope>:<client ip>`) count an IPv6 client by its /64 (see [`ip_limit_key`]). A
    /// limiter outage lets requests through (logged) rather than failing every call.
    pub async fn limit(&self, key: &str, limit: u32) -> Result<Option<clawx_common::cache::RateDecision>, Refused> {
        if limit == 0 {
            return Ok(None);
        }
        let key = limiter_key(key);
        let key = key.as_ref();
        let window = Duration::from_secs(60);
        let decision = match self.backends.limiter.check(key, limit, window).await {
            Ok(decision) => decision,
            Err(error) => {
                // Limits stay enforced per replica while the shared limiter is down.
                tracing::warn!(%error, "shared rate limiter unavailable; counting on this replica");
                self.fallback_limiter.check(key, limit, window).await.expect("the memory limiter cannot fail")
            }
        };
        if decision.allowed { Ok(Some(decision)) } else { Err(decision) }
    }

    /// The per-account (or, for anonymous calls, per-IP) limit.
    pub async fn limit_principal(&self, principal: &Principal) -> Result<Option<clawx_common::cache::RateDecision>, Refused> {
        match (principal.account_id, &principal.client_ip) {
            (Some(account), _) => self.limit(&format!("acct:{account}"), self.config.limits.per_account_per_minute).await,
            (None, Some(ip)) => self.limit(&format!("ip:{ip}"), self.config.limits.per_ip_per_minute).await,
            (None, None) => Ok(None),
        }
    }
}

/// The error of a refused rate-limit check.
pub fn refused_error(decision: &Refused) -> ServiceError {
    ServiceError::rate_limited(decision.retry_after.as_secs_f64().ceil() as u64)
}

type EdgeService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Sends gRPC and grpc-web requests to the gRPC stack and everything else to REST.
#[derive(Clone)]
struct Edge {
    rest: EdgeService,
    grpc: EdgeService,
}

impl Service<Request<Body>> for Edge {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let service = if proxy::is_grpc_request(request.headers()) { self.grpc.clone() } else { self.rest.clone() };
        Box::pin(service.oneshot(request))
    }
}

const EXPOSED_HEADERS: &[&str] =
    &["grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"];

fn cors(config: &Config) -> CorsLayer {
    let origins = if config.cors_origins.is_empty() {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(config.cors_origins.iter().filter_map(|origin| origin.parse().ok()))
    };
    // Headers are mirrored rather than `*`: a wildcard never covers Authorization.
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(Any)
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers(EXPOSED_HEADERS.iter().map(|name| HeaderName::from_static(name)).collect::<Vec<_>>())
        .max_age(Duration::from_secs(600))
}

/// The whole edge as one service: REST, gRPC and grpc-web. Background listeners stop with
/// `shutdown`.
pub async fn app(config: Config, shutdown: CancellationToken) -> anyhow::Result<Router> {
    let upstreams = Upstreams::new(&config.upstreams, config.auth.clone(), config.upstream_timeout)?;
    observe::prometheus();
    let auth_cache = Arc::new(auth::AuthCache::default());
    auth::AuthCache::listen(&auth_cache, &config.backends.pubsub, shutdown);
    let gateway = Arc::new(Gateway {
        upstreams,
        backends: config.backends.clone(),
        config: config.clone(),
        started: Instant::now(),
        auth_cache,
        fallback_limiter: clawx_common::RateLimiter::memory(),
        streams: proxy::StreamSlots::new(config.limits.xmtp_streams_per_ip),
        status_cache: std::sync::Mutex::default(),
    });

    let rest = rest::router(Arc::clone(&gateway)).layer(axum::middleware::from_fn(error::render_errors));

    let mut public_services: Vec<&str> = clawx_proto::PUBLIC_SERVICES.to_vec();
    public_services.extend(clawx_proto::XMTP_SERVICES);
    let (_reporter, health) = clawx_common::grpc::health_service(&public_services).await;
    let (reflection_v1, reflection_v1alpha) = clawx_common::grpc::reflection_services()?;
    let grpc_routes = tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        .fallback_service(proxy::GrpcProxy { gateway: Arc::clone(&gateway) });
    let grpc_routes = proxy::StreamCap { gateway: Arc::clone(&gateway), inner: grpc_routes };
    let grpc_web = tower::ServiceBuilder::new().layer(tonic_web::GrpcWebLayer::new()).service(grpc_routes);
    let grpc = tower::service_fn(move |request: Request<Body>| {
        let grpc_web = grpc_web.clone();
        async move {
            let response = grpc_web.oneshot(request).await.unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(response.map(Body::new))
        }
    });

    let edge = Edge { rest: BoxCloneSyncService::new(rest), grpc: BoxCloneSyncService::new(grpc) };
    Ok(Router::new()
        .fallback_service(edge)
        .layer(tower::ServiceBuilder::new().layer(axum::middleware::from_fn(observe::observe)).layer(cors(&config))))
}

/// Serves the gateway on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = app(config, shutdown.clone()).await?;
    tracing::info!(address = %listener.local_addr()?, "gateway serving REST, gRPC and grpc-web");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
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
        assert_eq!(limiter_key("xmtp:2001:db8::7"), "xmtp:2001:db8::/64");
        assert_eq!(limiter_key("create:192.0.2.1"), "create:192.0.2.1");
        assert_eq!(limiter_key("acct:42"), "acct:42");
        assert_eq!(limiter_key("ip:unknown"), "ip:unknown");
    }
}
