//! The Clawx gateway: one listener serving REST (axum), native gRPC and grpc-web (told apart by
//! content type), authenticating callers at the edge and calling the services over gRPC with a
//! short-lived internal JWT.

//!
//! Layers, each using only those below it: [`context`] (request id, route label, client IP,
//! gRPC detection); [`upstream`] (typed clients), [`limiter`] and [`auth`] (the authenticator);
//! [`guard`] (one decision per operation, for REST and gRPC alike); [`rest`] and [`proxy`] on
//! top. This file composes them.

pub mod auth;
pub mod config;
pub mod context;
pub mod error;
pub mod guard;
pub mod limiter;
pub mod mcp;
pub mod observe;
pub mod proxy;
pub mod rest;
pub mod upstream;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderName, Request, Response},
};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt, util::BoxCloneSyncService};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use config::{Config, Limits, UpstreamUrls};
pub use guard::Gateway;
pub use upstream::Upstreams;

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
        let service = if context::is_grpc_request(request.headers()) { self.grpc.clone() } else { self.rest.clone() };
        Box::pin(service.oneshot(request))
    }
}

const EXPOSED_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

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
    auth::AuthCache::listen(&auth_cache, &config.backends.pubsub, shutdown.clone());
    let gateway = Arc::new(Gateway {
        authenticator: auth::Authenticator::new(auth_cache, config.backends.cache.clone(), upstreams.clone()),
        limiter: limiter::Limiter::new(config.backends.limiter.clone(), config.limits.clone()),
        upstreams,
        backends: config.backends.clone(),
        config: config.clone(),
        started: Instant::now(),
        streams: limiter::StreamSlots::new(config.limits.xmtp_streams_per_ip),
        shutdown,
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
        .merge(mcp::router(&gateway))
        .fallback_service(edge)
        .layer(tower::ServiceBuilder::new().layer(axum::middleware::from_fn(observe::observe)).layer(cors(&config))))
}

/// Serves the gateway on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = app(config, shutdown.clone()).await?;
    tracing::info!(address = %listener.local_addr()?, "gateway serving REST, gRPC and grpc-web");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}
