//! HTTP: the router, its middleware stack and the server loop.

mod client_ip;
mod graphiql;
mod graphql;
mod health;
mod partner;
pub mod response_cache;
mod webhooks;
mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::App;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route of the service with the production middleware stack.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.settings.http.body_limit_bytes;
    // exported as 0 from the start, not missing until the first WebSocket
    metrics::gauge!("ruizhu_websocket_connections").increment(0.0);
    let mut routes = Router::new()
        .route(
            "/graphql",
            get(graphql::get_handler).post(graphql::post_handler),
        )
        .route("/graphql/ws", get(ws::handler))
        .route(
            "/partner/graphql",
            get(partner::get_handler).post(partner::post_handler),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/webhooks/wechatpay/notify", post(webhooks::payment))
        .route("/webhooks/wechatpay/refund-notify", post(webhooks::refund));
    if app.settings.http.graphiql {
        routes = routes
            .route("/graphiql", get(graphiql::page))
            .route("/graphiql/assets/{file}", get(graphiql::asset));
    }
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Duration::from_millis(app.settings.http.request_timeout_ms),
            deadline,
        ))
        .layer(middleware::from_fn(record_http_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // the path only: query strings may carry documents and variables
                    tracing::info_span!("request", request_id, method = %req.method(),
                        path = req.uri().path(), graphql.operation = tracing::field::Empty)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("handler panicked");
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                })),
        )
        .with_state(app)
}

/// The worker role's listener: health, readiness and metrics only.
pub fn ops_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Answers every request within `limit`: past it the handler's future is dropped (a
/// transaction in flight is rolled back with its connection) and the caller gets 503 with a
/// GraphQL-shaped `SERVICE_UNAVAILABLE` error (`reason: TIMEOUT`) and `Retry-After`. A client that retries a mutation with the
/// same idempotency key gets the first attempt's result if it had committed.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("ruizhu_http_timeouts_total").increment(1);
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "request past its deadline"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (axum::http::header::CONTENT_TYPE, "application/json"),
                    (axum::http::header::RETRY_AFTER, "1"),
                ],
                r#"{"errors":[{"message":"the request took too long and was abandoned; retry it","extensions":{"code":"SERVICE_UNAVAILABLE","reason":"TIMEOUT"}}]}"#,
            )
                .into_response()
        }
    }
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    // labels borrowed from static strings where they can be: no allocation per request
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = status_label(response.status());
    metrics::counter!("ruizhu_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("ruizhu_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The routes `router` serves, as `MatchedPath` spells them.
const ROUTES: &[&str] = &[
    "/graphql",
    "/graphql/ws",
    "/partner/graphql",
    "/healthz",
    "/readyz",
    "/metrics",
    "/webhooks/wechatpay/notify",
    "/webhooks/wechatpay/refund-notify",
    "/graphiql",
    "/graphiql/assets/{file}",
];

fn route_label(path: Option<&MatchedPath>) -> metrics::SharedString {
    match path {
        None => metrics::SharedString::const_str("unmatched"),
        Some(p) => match ROUTES.iter().find(|r| **r == p.as_str()) {
            Some(r) => metrics::SharedString::const_str(r),
            None => metrics::SharedString::from_owned(p.as_str().to_owned()),
        },
    }
}

fn method_label(method: &axum::http::Method) -> metrics::SharedString {
    const KNOWN: &[&str] = &["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"];
    match KNOWN.iter().find(|m| **m == method.as_str()) {
        Some(m) => metrics::SharedString::const_str(m),
        None => metrics::SharedString::from_owned(method.as_str().to_owned()),
    }
}

fn status_label(status: StatusCode) -> metrics::SharedString {
    match status.as_u16() {
        200 => metrics::SharedString::const_str("200"),
        204 => metrics::SharedString::const_str("204"),
        400 => metrics::SharedString::const_str("400"),
        401 => metrics::SharedString::const_str("401"),
        404 => metrics::SharedString::const_str("404"),
        429 => metrics::SharedString::const_str("429"),
        503 => metrics::SharedString::const_str("503"),
        _ => metrics::SharedString::from_owned(status.as_str().to_owned()),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for up to the configured grace period.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = Duration::from_millis(app.settings.http.shutdown_grace_ms);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let service = router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // TCP_NODELAY: the tail of a larger answer goes out at once instead of waiting (Nagle) for
    // the client's delayed ACK, which cost up to 40 ms per answer (docs/performance.md)
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx = stop_rx;
    tokio::select! {
        result = server => result.map_err(anyhow::Error::from),
        () = async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; closing remaining connections");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining");
}
