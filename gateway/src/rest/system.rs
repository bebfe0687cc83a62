//! `/health` and `/status`.

use std::sync::Arc;

use axum::{Json, extract::State};
use clawx_common::Principal;
use clawx_proto::common::GetStatusRequest;
use serde_json::{Value, json};

use crate::{Gateway, upstream::Upstream};

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
    let upstreams = &gateway.upstreams;
    let checks = Upstream::ALL.map(|upstream| {
        let request = upstreams.request(upstream, &principal, GetStatusRequest {});
        async move {
            let reply = match upstream {
                Upstream::Identity => upstreams.identity().get_status(request).await,
                Upstream::Messaging => upstreams.messaging().get_status(request).await,
                Upstream::Groups => upstreams.groups().get_status(request).await,
                Upstream::Verify => upstreams.verify().get_status(request).await,
            };
            reply.map(|reply| reply.into_inner().database_ok).unwrap_or(false)
        }
    });
    let (databases, redis) = tokio::join!(futures::future::join_all(checks), async {
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
