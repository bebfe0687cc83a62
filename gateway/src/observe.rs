//! Access logs and Prometheus metrics for every request the gateway answers.

use std::{sync::OnceLock, time::Instant};

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
use clawx_common::grpc::REQUEST_ID_HEADER;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::context::{REQUEST_ID, RouteLabel, is_grpc_request, settle_request_id};

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("clawx_http_request_duration_seconds".into()), LATENCY_BUCKETS)
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// gRPC services whose calls get their own metrics label; anything else is `grpc:unknown`, so
/// clients cannot create label values at will.
const KNOWN_GRPC_SERVICES: &[&str] = &["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// A bounded label for a gRPC path: the service name when Clawx serves it.
fn grpc_label(path: &str) -> String {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let known =
        KNOWN_GRPC_SERVICES.contains(&service) || clawx_proto::PUBLIC_SERVICES.contains(&service) || clawx_proto::XMTP_SERVICES.contains(&service);
    if known { service.to_string() } else { "grpc:unknown".to_string() }
}

/// A bounded label for an HTTP method.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware: settles the request id, then one access-log line and two metrics per request.
/// Log fields are recorded as values, never spliced into the message, so what a client sends
/// cannot pass for other fields.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let path = request.uri().path().to_string();
    let grpc = is_grpc_request(request.headers());
    let request_id = settle_request_id(request.headers_mut());
    // Everything logged while serving the request carries its id, and calls to services send it.
    let span = tracing::info_span!("request", request_id = request_id.as_str());
    let mut response = REQUEST_ID.scope(request_id.clone(), next.run(request)).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, HeaderValue::from_str(&request_id).expect("a checked id is a valid header value"));
    let route = match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel(route)) => route.clone(),
        None if grpc => grpc_label(&path),
        None => "unmatched".to_string(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!("clawx_http_requests_total", "method" => method, "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("clawx_http_request_duration_seconds", "method" => method, "route" => route.clone()).record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let (route, path, request_id) = (route.as_str(), path.as_str(), request_id.as_str());
    if matches!(route, "/health" | "/metrics" | "/status") {
        tracing::debug!(target: "clawx::access", method, route, path, status, latency_ms, request_id, "request");
    } else {
        tracing::info!(target: "clawx::access", method, route, path, status, latency_ms, request_id, "request");
    }
    response
}
