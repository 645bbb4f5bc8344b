//! `GET /graphql/ws`: GraphQL subscriptions over WebSocket, both the `graphql-transport-ws`
//! protocol and the legacy `graphql-ws` (subscriptions-transport-ws) one.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{
    ALL_WEBSOCKET_PROTOCOLS, WebSocket as GraphQLSession, WebSocketProtocols, WsMessage,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use futures::{SinkExt as _, StreamExt as _};
use resolvers::auth::Viewer;

use crate::app::App;

/// Marks a refused `connection_init`, so the socket closes with 4403 as the protocol recommends.
const REFUSED: &str = "UNAUTHENTICATED";

/// Upgrades to a GraphQL WebSocket session in the first subprotocol offered that we speak.
pub async fn handler(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let protocol = offered
        .split(',')
        .map(str::trim)
        .find_map(|p| WebSocketProtocols::from_str(p).ok());
    let Some(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    let limit = app.settings.http.body_limit_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(app, socket, protocol))
}

async fn serve(app: Arc<App>, socket: WebSocket, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(|r| {
            futures::future::ready(match r {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        });
    let schema = app.schema.clone();
    let session = GraphQLSession::new(schema, input, protocol)
        .keepalive_timeout(Duration::from_secs(30))
        .on_connection_init(move |payload| async move { connection_data(&app, payload).await })
        .map(|message| match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(_, reason) if reason.starts_with(REFUSED) => {
                Message::Close(Some(CloseFrame {
                    code: 4403,
                    reason: "Forbidden".into(),
                }))
            }
            WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        });
    futures::pin_mut!(session);
    while let Some(message) = session.next().await {
        if sink.send(message).await.is_err() {
            break;
        }
    }
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
                    return Err(async_graphql::Error::new(format!(
                        "{REFUSED}: the access token is invalid, expired or revoked"
                    )));
                }
            }
        }
    };
    let mut data = Data::default();
    data.insert(viewer);
    // the viewer is fixed for the connection's life: changes go over HTTP, where every request
    // is authenticated afresh (see `resolvers::observe::WebSocketTransport`)
    data.insert(resolvers::observe::WebSocketTransport);
    Ok(data)
}
