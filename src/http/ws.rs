//! `GET /graphql/ws`: GraphQL subscriptions over WebSocket, both the `graphql-transport-ws`
//! protocol and the legacy `graphql-ws` (subscriptions-transport-ws) one.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use resolvers::auth::Viewer;

use crate::app::App;

/// Upgrades to a GraphQL WebSocket session.
pub async fn handler(
    State(app): State<Arc<App>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let schema = app.schema.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .keepalive_timeout(Duration::from_secs(30))
                .on_connection_init(
                    move |payload| async move { connection_data(&app, payload).await },
                )
                .serve()
        })
}

/// `connection_init` carries `{"Authorization": "Bearer <token>"}` (any capitalisation of the
/// key). No token is an anonymous connection; a bad token refuses the connection (closed with
/// 4403 Forbidden), just as HTTP answers 401.
async fn connection_data(app: &App, payload: serde_json::Value) -> async_graphql::Result<Data> {
    let header = payload
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        })
        .map(|(_, v)| v.as_str().unwrap_or_default().to_owned());
    let viewer = match header {
        None => Viewer::Anonymous,
        Some(value) => {
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_owned())
                .unwrap_or_default();
            match app.identity.authenticate(&token).await {
                Ok(subject) => Viewer::Authenticated(subject),
                Err(_) => {
                    return Err(async_graphql::Error::new(
                        "UNAUTHENTICATED: the access token is invalid, expired or revoked",
                    ));
                }
            }
        }
    };
    let mut data = Data::default();
    data.insert(viewer);
    Ok(data)
}
