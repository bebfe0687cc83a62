//! gRPC and grpc-web pass-through: any call under a known package prefix is forwarded to the
//! owning service, with no per-method code. Clawx services get the caller's credentials checked
//! here and an internal JWT instead; XMTP node paths are forwarded without auth, rate-limited
//! per client IP, with the client IP in [`CLIENT_IP_METADATA`]. Long-lived streams of every kind
//! the port offers share one per-IP cap ([`StreamCap`]).

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum::http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use clawx_common::{ErrorCode, ServiceError, auth::INTERNAL_TOKEN_METADATA, grpc::CLIENT_IP_METADATA};
use tower::{Service, ServiceExt};

use crate::{Gateway, upstream::Upstream};

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"];

/// gRPC methods that create identities, limited per client IP like their REST routes.
const CREATION_PATHS: &[&str] = &["/clawx.identity.v1.IdentityService/CreateAccount"];
/// gRPC methods that revoke credentials: the serving replica drops the caller's cached
/// credentials before it answers, as it does for the REST routes.
const REVOKING_PATHS: &[&str] = &[
    "/clawx.identity.v1.IdentityService/RevokeApiKey",
    "/clawx.identity.v1.IdentityService/UnlinkWallet",
    "/clawx.identity.v1.IdentityService/ReleaseDomain",
];

/// Health and reflection methods that keep a stream open for as long as the client likes.
const LONG_LIVED_SERVED_PATHS: &[&str] = &[
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Whether a gRPC path opens a long-lived stream, which holds one of its client's stream slots:
/// XMTP `Subscribe*` calls, health `Watch` and reflection.
pub fn is_long_lived_stream(path: &str) -> bool {
    if LONG_LIVED_SERVED_PATHS.contains(&path) {
        return true;
    }
    path.starts_with("/xmtp.") && path.rsplit('/').next().is_some_and(|method| method.starts_with("Subscribe"))
}

/// Open long-lived streams per client (an IPv4 address or an IPv6 /64, like every per-IP limit).
#[derive(Debug)]
pub struct StreamSlots {
    open: Mutex<HashMap<String, u32>>,
    per_ip: u32,
}

impl StreamSlots {
    pub fn new(per_ip: u32) -> Arc<StreamSlots> {
        Arc::new(StreamSlots { open: Mutex::default(), per_ip })
    }

    /// A slot for one more stream from `ip`, unless its client has `per_ip` open (0: no limit).
    pub fn acquire(self: &Arc<Self>, ip: &str) -> Option<StreamSlot> {
        let client = crate::ip_limit_key(ip).into_owned();
        let mut open = self.open.lock().expect("stream slots lock");
        let count = open.entry(client.clone()).or_insert(0);
        if self.per_ip != 0 && *count >= self.per_ip {
            return None;
        }
        *count += 1;
        Some(StreamSlot { slots: Arc::clone(self), ip: client })
    }
}

/// Held by a stream's response body; frees the slot when the stream ends or the client leaves.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    ip: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("stream slots lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
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

/// Whether a request is gRPC or grpc-web (any `application/grpc*` content type).
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
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
        let client_ip = crate::client_ip(&self.gateway, &request);
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
    let client_ip = crate::client_ip(gateway, &request);
    let is_xmtp = path.starts_with("/xmtp.");
    let headers = request.headers_mut();
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    headers.remove(INTERNAL_TOKEN_METADATA);
    headers.remove(CLIENT_IP_METADATA);

    let mut revoking_account = None;
    if is_xmtp {
        // XMTP clients carry no Clawx credentials; protect the node by client IP instead.
        if let Err(refused) = gateway.limit(&format!("xmtp:{client_ip}"), gateway.config.limits.xmtp_per_minute).await {
            return error_response(crate::refused_error(&refused));
        }
        // The node keeps its own per-client bounds; it learns the client from the gateway only.
        if let Ok(value) = HeaderValue::from_str(&client_ip) {
            request.headers_mut().insert(CLIENT_IP_METADATA, value);
        }
    } else {
        let principal = match gateway.authenticate(request.headers(), &client_ip).await {
            Ok(principal) => principal,
            Err(error) => return error_response(error),
        };
        if CREATION_PATHS.contains(&path.as_str())
            && let Err(refused) = gateway.limit(&format!("create:{client_ip}"), gateway.config.limits.create_per_minute).await
        {
            return error_response(crate::refused_error(&refused));
        }
        if let Err(refused) = gateway.limit_principal(&principal).await {
            return error_response(crate::refused_error(&refused));
        }
        if REVOKING_PATHS.contains(&path.as_str()) {
            revoking_account = principal.account_id;
        }
        crate::auth::strip_credentials(request.headers_mut());
        let token = gateway.upstreams.auth().issue(upstream.name(), &principal);
        let token = HeaderValue::try_from(token).expect("a JWT is a valid header value");
        request.headers_mut().insert(INTERNAL_TOKEN_METADATA, token);
    }

    *request.version_mut() = Version::HTTP_2;
    let channel = gateway.upstreams.channel(upstream);
    let forwarded = channel.oneshot(request).await;
    if let Some(account_id) = revoking_account {
        gateway.auth_cache.revoke_account(account_id);
    }
    match forwarded {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(upstream = upstream.name(), %error, "upstream unreachable");
            error_response(ServiceError::new(ErrorCode::Unavailable, format!("the {} service is unavailable", upstream.name())))
        }
    }
}
