//! gRPC and grpc-web pass-through: any call under a known package prefix is forwarded to the
//! owning service, with no per-method code. The edge guard decides on each call by its method
//! (see [`crate::guard`]): Clawx services get the caller's credentials checked here and an
//! internal JWT instead; XMTP node paths are forwarded without auth, rate-limited per client IP,
//! with the client IP in [`CLIENT_IP_METADATA`]. Long-lived streams of every kind
//! the port offers share one per-IP cap ([`StreamCap`]).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http::{HeaderValue, Request, Response, Version};
use clawx_common::{ErrorCode, ServiceError, auth::INTERNAL_TOKEN_METADATA, grpc::CLIENT_IP_METADATA};
use tower::{Service, ServiceExt};

use crate::{
    guard::{Bucket, Gateway},
    limiter::StreamSlot,
    upstream::Upstream,
};

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"];

/// Health and reflection methods that keep a stream open for as long as the client likes.
const LONG_LIVED_SERVED_PATHS: &[&str] = &[
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Clawx methods that stream for as long as the client likes (REST serves the same streams as
/// Server-Sent Events, which hold a slot too).
const LONG_LIVED_FORWARDED_PATHS: &[&str] = &["/clawx.messaging.v1.MessagingService/StreamMessages"];

/// Whether a gRPC path opens a long-lived stream, which holds one of its client's stream slots:
/// XMTP `Subscribe*` calls, a user's message stream, health `Watch` and reflection.
pub fn is_long_lived_stream(path: &str) -> bool {
    if LONG_LIVED_SERVED_PATHS.contains(&path) || LONG_LIVED_FORWARDED_PATHS.contains(&path) {
        return true;
    }
    path.starts_with("/xmtp.") && path.rsplit('/').next().is_some_and(|method| method.starts_with("Subscribe"))
}

/// A response body that keeps a [`StreamSlot`] for as long as it is streamed.
struct SlottedBody {
    inner: axum::body::Body,
    _slot: StreamSlot,
}

impl http_body::Body for SlottedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn error_response(error: ServiceError) -> Response<tonic::body::Body> {
    error.into_status().into_http()
}

/// Wraps every gRPC path the port serves or forwards: a long-lived stream (see
/// [`is_long_lived_stream`]) holds one of its client's slots until it ends or the client
/// leaves, and is refused when the client has none left.
#[derive(Clone)]
pub struct StreamCap<S> {
    pub gateway: Arc<Gateway>,
    pub inner: S,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for StreamCap<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
    ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResponseBody::Error: Into<axum::BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let inner = self.inner.clone();
        if !is_long_lived_stream(request.uri().path()) {
            return Box::pin(async move {
                let response = inner.oneshot(request).await?;
                Ok(response.map(axum::body::Body::new))
            });
        }
        let client_ip = self.gateway.client_ip(&request);
        let Some(slot) = self.gateway.streams.acquire(&client_ip) else {
            let refusal = ServiceError::new(ErrorCode::RateLimited, "too many open streams from this address; close some first");
            return Box::pin(async move { Ok(error_response(refusal).map(axum::body::Body::new)) });
        };
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            Ok(response.map(|inner| axum::body::Body::new(SlottedBody { inner: axum::body::Body::new(inner), _slot: slot })))
        })
    }
}

/// The tower service behind every gRPC path the gateway does not serve itself.
#[derive(Clone)]
pub struct GrpcProxy {
    pub gateway: Arc<Gateway>,
}

impl Service<Request<axum::body::Body>> for GrpcProxy {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<axum::body::Body>) -> Self::Future {
        let gateway = Arc::clone(&self.gateway);
        Box::pin(async move { Ok(forward(&gateway, request.map(tonic::body::Body::new)).await) })
    }
}

async fn forward(gateway: &Gateway, mut request: Request<tonic::body::Body>) -> Response<tonic::body::Body> {
    let path = request.uri().path().to_string();
    let Some(upstream) = Upstream::of_grpc_path(&path) else {
        return error_response(ServiceError::new(ErrorCode::Unimplemented, format!("unknown service in {path}")));
    };
    let client_ip = gateway.client_ip(&request);
    let headers = request.headers_mut();
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    headers.remove(INTERNAL_TOKEN_METADATA);
    headers.remove(CLIENT_IP_METADATA);

    let admitted = match gateway.admit(&path, request.headers(), &client_ip).await {
        Ok(admitted) => admitted,
        Err(refusal) => return error_response(refusal.error),
    };
    // Clawx credentials never travel past the edge: services get the internal token instead.
    crate::auth::strip_credentials(request.headers_mut());
    if admitted.policy.bucket == Bucket::Xmtp {
        // The node keeps its own per-client bounds; it learns the client from the gateway only.
        if let Ok(value) = HeaderValue::from_str(&client_ip) {
            request.headers_mut().insert(CLIENT_IP_METADATA, value);
        }
    } else {
        let token = HeaderValue::try_from(gateway.upstreams.token(upstream, &admitted.principal)).expect("a JWT is a valid header value");
        request.headers_mut().insert(INTERNAL_TOKEN_METADATA, token);
    }

    *request.version_mut() = Version::HTTP_2;
    let channel = gateway.upstreams.channel(upstream);
    let forwarded = channel.oneshot(request).await;
    gateway.settle(&admitted);
    match forwarded {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(upstream = upstream.name(), %error, "upstream unreachable");
            error_response(ServiceError::new(ErrorCode::Unavailable, format!("the {} service is unavailable", upstream.name())))
        }
    }
}
