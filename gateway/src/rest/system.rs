//! `/health` and `/status`.

use std::sync::Arc;

use axum::{Json, extract::State};
use clawx_common::Principal;
use clawx_proto::common::GetStatusRequest;
use serde_json::{Value, json};

use crate::guard::Gateway;

/// `GET /health`: the gateway is up.
pub async fn health(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!({"ok": true, "uptime": gateway.started.elapsed().as_secs_f64()}))
}

/// How long a `/status` answer is reused: probes stay cheap however often they come.
const STATUS_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /status`: live checks of the services' databases and of Redis.
pub async fn status(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    if let Some((at, answer)) = gateway.status_cache.lock().expect("status lock").as_ref()
        && at.elapsed() < STATUS_REUSE
    {
        return Json(answer.clone());
    }
    let answer = check_status(&gateway).await;
    *gateway.status_cache.lock().expect("status lock") = Some((std::time::Instant::now(), answer.clone()));
    Json(answer)
}

async fn check_status(gateway: &Gateway) -> Value {
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
    json!({"status": {"http": true, "db": db, "redis": redis}})
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> impl axum::response::IntoResponse {
    let handle = crate::observe::prometheus();
    handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}
