//! `/health`, `/status` and `/metrics`.

use std::sync::Arc;

use axum::{Json, extract::State};
use clawx_common::Principal;
use clawx_proto::common::GetStatusRequest;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::types::always_true;
use crate::guard::Gateway;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(schema_with = always_true)]
    ok: bool,
    /// Seconds since start
    uptime: f64,
}

/// `GET /health`: the gateway is up.
#[utoipa::path(get, path = "/health", tag = "Status", summary = "Health check", responses((status = 200, description = "The gateway is up", body = Health)))]
pub async fn health(State(gateway): State<Arc<Gateway>>) -> Json<Health> {
    Json(Health { ok: true, uptime: gateway.started.elapsed().as_secs_f64() })
}

/// How long a `/status` answer is reused: probes stay cheap however often they come.
const STATUS_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Serialize, ToSchema)]
pub struct Components {
    http: bool,
    db: bool,
    redis: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    status: Components,
}

/// `GET /status`: live checks of the services' databases and of Redis.
#[utoipa::path(get, path = "/status", tag = "Status", summary = "Status probe: live checks of the databases and Redis",
    responses((status = 200, description = "Component status", body = Status)))]
pub async fn status(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    if let Some((at, answer)) = gateway.status_cache.lock().expect("status lock").as_ref()
        && at.elapsed() < STATUS_REUSE
    {
        return Json(answer.clone());
    }
    let answer = serde_json::to_value(check_status(&gateway).await).expect("a plain struct");
    *gateway.status_cache.lock().expect("status lock") = Some((std::time::Instant::now(), answer.clone()));
    Json(answer)
}

async fn check_status(gateway: &Gateway) -> Status {
    let principal = Principal::service();
    let database_ok = |reply: Result<tonic::Response<clawx_proto::common::ServiceStatus>, tonic::Status>| {
        reply.map(|reply| reply.into_inner().database_ok).unwrap_or(false)
    };
    let (mut identity, mut messaging, mut groups, mut verify) =
        (gateway.identity(&principal), gateway.messaging(&principal), gateway.groups(&principal), gateway.verify(&principal));
    let checks = async {
        let (identity, messaging, groups, verify) = tokio::join!(
            identity.get_status(GetStatusRequest {}),
            messaging.get_status(GetStatusRequest {}),
            groups.get_status(GetStatusRequest {}),
            verify.get_status(GetStatusRequest {}),
        );
        [identity, messaging, groups, verify].map(database_ok)
    };
    let (databases, redis) = tokio::join!(checks, async {
        match &gateway.backends.cache {
            clawx_common::Cache::Redis(_) => gateway.backends.cache.ping().await,
            clawx_common::Cache::Memory(_) => false,
        }
    });
    let db = databases.iter().all(|ok| *ok);
    Status { status: Components { http: true, db, redis } }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "Status", summary = "Prometheus metrics: requests by route and status, latency histograms",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics() -> impl axum::response::IntoResponse {
    let handle = crate::observe::prometheus();
    handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}
