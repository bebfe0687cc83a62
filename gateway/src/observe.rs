//! Access logs and Prometheus metrics for every request the gateway answers.

use std::{sync::OnceLock, time::Instant};

use axum::{extract::Request, middleware::Next, response::Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{proxy::is_grpc_request, rest::RouteLabel, upstream::Upstream};

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

/// A bounded label for a gRPC path: the service name when Clawx knows it.
fn grpc_label(path: &str) -> String {
    let known = path.starts_with("/grpc.") || Upstream::of_grpc_path(path).is_some();
    match path.rsplit_once('/') {
        Some((service, _)) if known => service.to_string(),
        _ => "grpc:unknown".to_string(),
    }
}

/// Middleware: one access-log line and two metrics per request.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let grpc = is_grpc_request(request.headers());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    let response = next.run(request).await;
    let route = match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel(route)) => route.clone(),
        None if grpc => grpc_label(&path),
        None => "unmatched".to_string(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!("clawx_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("clawx_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if matches!(route.as_str(), "/health" | "/metrics" | "/status") {
        tracing::debug!(target: "clawx::access", %method, %route, %path, status, latency_ms, %request_id, "request");
    } else {
        tracing::info!(target: "clawx::access", %method, %route, %path, status, latency_ms, %request_id, "request");
    }
    response
}
