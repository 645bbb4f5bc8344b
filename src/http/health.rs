//! Probes and metrics: `/healthz` (the process answers), `/readyz` (MySQL answers; Redis is
//! reported but does not decide), `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

/// Liveness: the process is up and serving HTTP.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: MySQL answers within a second. Redis is reported too, but a Redis outage only
/// costs the cache (the service keeps serving from MySQL), so it must not take every replica
/// out of its load balancer at once: the answer stays 200 with `"redis": "down"`.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let limit = Duration::from_secs(1);
    let (mysql, redis) = tokio::join!(
        tokio::time::timeout(limit, app.db.ping()),
        tokio::time::timeout(limit, app.redis.ping())
    );
    let mysql_up = matches!(mysql, Ok(Ok(())));
    let redis_up = matches!(redis, Ok(true));
    let status = if mysql_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    (
        status,
        Json(json!({ "mysql": word(mysql_up), "redis": word(redis_up) })),
    )
        .into_response()
}

/// Prometheus scrape endpoint.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let (open, idle, max) = app.db.pool_usage();
    metrics::gauge!("ruizhu_db_pool_connections", "state" => "open").set(open as f64);
    metrics::gauge!("ruizhu_db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("ruizhu_db_pool_connections", "state" => "in_use")
        .set(open.saturating_sub(idle) as f64);
    metrics::gauge!("ruizhu_db_pool_max_connections").set(max as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
