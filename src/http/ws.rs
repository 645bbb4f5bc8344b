//! `GET /graphql/ws`: GraphQL subscriptions over WebSocket, both the `graphql-transport-ws`
//! protocol and the legacy `graphql-ws` (subscriptions-transport-ws) one.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocket as GraphQLSession, WebSocketProtocols, WsMessage};
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
        // most sockets sit idle waiting for an order update: small buffers (they grow for a
        // large message) keep an idle connection cheap
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        // exactly the protocol this session speaks (the client's first one we know)
        .protocols([protocol.sec_websocket_protocol()])
        .on_upgrade(move |socket| serve(app, socket, protocol))
}

/// What the transport knows about one connection besides the GraphQL session.
#[derive(Default)]
struct Connection {
    /// `connection_init` was accepted.
    initialised: bool,
    /// The token's expiry and session, once authenticated.
    expires_at: Option<u64>,
    session_id: Option<String>,
    /// Ids of running subscriptions.
    active: std::collections::HashSet<String>,
}

fn error_message(protocol: WebSocketProtocols, id: &str, message: &str, code: &str) -> Message {
    let error = serde_json::json!({ "message": message, "extensions": { "code": code } });
    let body = match protocol {
        WebSocketProtocols::GraphQLWS => {
            serde_json::json!({ "id": id, "type": "error", "payload": [error] })
        }
        WebSocketProtocols::SubscriptionsTransportWS => {
            serde_json::json!({ "id": id, "type": "error", "payload": error })
        }
    };
    Message::Text(body.to_string().into())
}

/// A close frame; the reason is cut to WebSocket's 123-byte limit (on a character boundary).
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }))
}

/// Counts this process's open GraphQL WebSockets in `ruizhu_websocket_connections` for as long
/// as it lives.
struct OpenSocket;

impl OpenSocket {
    fn new() -> Self {
        metrics::gauge!("ruizhu_websocket_connections").increment(1.0);
        Self
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("ruizhu_websocket_connections").decrement(1.0);
    }
}

async fn serve(app: Arc<App>, socket: WebSocket, protocol: WebSocketProtocols) {
    let _open = OpenSocket::new();
    let http = &app.settings.http;
    let max_subscriptions = http.ws_max_subscriptions;
    let ping_every = Duration::from_millis(http.ws_ping_interval_ms.max(100));
    let init_deadline =
        tokio::time::Instant::now() + Duration::from_millis(http.ws_init_timeout_ms);
    let state = Arc::new(std::sync::Mutex::new(Connection::default()));
    let (inject, mut injected) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let last_heard = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));

    let (mut sink, stream) = socket.split();
    let (input_state, input_inject, input_heard) =
        (state.clone(), inject.clone(), last_heard.clone());
    let input = stream
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(move |r| {
            *input_heard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
            let bytes = match r {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            };
            let bytes = bytes.and_then(|b| {
                admit(&b, protocol, max_subscriptions, &input_state, &input_inject).then_some(b)
            });
            futures::future::ready(bytes)
        });
    let init_state = state.clone();
    let schema = app.schema.clone();
    let init_app = app.clone();
    let session = GraphQLSession::new(schema, input, protocol)
        .on_connection_init(move |payload| async move {
            let result = connection_data(&init_app, payload).await;
            if let Ok((_, subject)) = &result {
                let mut s = init_state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.initialised = true;
                if let Some(subject) = subject {
                    s.expires_at = Some(subject.expires_at);
                    s.session_id = Some(subject.session_id.clone());
                }
            }
            result.map(|(data, _)| data)
        })
        .map(|message| match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(_, reason) if reason.starts_with(REFUSED) => close(4403, "Forbidden"),
            WsMessage::Close(code, reason) => close(code, &reason),
        });
    futures::pin_mut!(session);
    // a peer that stops reading must not hold this task (and its keepalive and expiry checks)
    let write_timeout = ping_every;
    macro_rules! send {
        ($message:expr) => {
            matches!(
                tokio::time::timeout(write_timeout, sink.send($message)).await,
                Ok(Ok(()))
            )
        };
    }
    let mut pinger = tokio::time::interval(ping_every);
    pinger.tick().await;
    loop {
        let (initialised, expires_at) = {
            let s = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (s.initialised, s.expires_at)
        };
        let deadline = if initialised {
            expires_at.map_or(init_deadline + Duration::from_secs(86_400 * 365), |exp| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now))
            })
        } else {
            init_deadline
        };
        let outgoing = tokio::select! {
            message = session.next() => match message {
                Some(message) => {
                    if let Message::Text(text) = &message {
                        note_completion(text.as_str(), &state);
                    }
                    message
                }
                None => break,
            },
            Some(message) = injected.recv() => message,
            _ = tokio::time::sleep_until(deadline) => {
                let message = if initialised {
                    close(4403, "Forbidden: the access token expired")
                } else {
                    close(4408, "Connection initialisation timeout")
                };
                let _ = send!(message);
                break;
            }
            _ = pinger.tick() => {
                let silent = last_heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed();
                if silent > ping_every * 2 + Duration::from_secs(1) {
                    let _ = send!(close(1001, "keepalive timeout"));
                    break;
                }
                let session_id = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).session_id.clone();
                if let Some(sid) = session_id
                    && matches!(app.identity.session_active(&sid).await, Ok(false))
                {
                    let _ = send!(close(4403, "Forbidden: the session was revoked"));
                    break;
                }
                if protocol == WebSocketProtocols::SubscriptionsTransportWS
                    && !send!(Message::Text(r#"{"type":"ka"}"#.into()))
                {
                    break;
                }
                Message::Ping(Vec::new().into())
            }
        };
        let closing = matches!(outgoing, Message::Close(_));
        if !send!(outgoing) || closing {
            break;
        }
    }
}

/// Looks at one client message before the session does: counts subscriptions (at most
/// `max` at once; more get an `error` for that id), refuses a second subscription under an id
/// already running (graphql-transport-ws: close 4409). Returns whether to pass it on.
fn admit(
    bytes: &[u8],
    protocol: WebSocketProtocols,
    max: usize,
    state: &std::sync::Mutex<Connection>,
    inject: &tokio::sync::mpsc::UnboundedSender<Message>,
) -> bool {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return true; // the session answers malformed messages itself
    };
    let id = message["id"].as_str().unwrap_or_default().to_owned();
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match message["type"].as_str() {
        Some("subscribe" | "start") if s.initialised => {
            if s.active.contains(&id) {
                if protocol == WebSocketProtocols::GraphQLWS {
                    let _ =
                        inject.send(close(4409, &format!("Subscriber for {id} already exists")));
                    return false;
                }
                // legacy graphql-ws: a repeated `start` replaces the running operation
                return true;
            }
            if s.active.len() >= max {
                let _ = inject.send(error_message(
                    protocol,
                    &id,
                    &format!("at most {max} subscriptions per connection"),
                    "RATE_LIMITED",
                ));
                return false;
            }
            s.active.insert(id);
        }
        Some("complete" | "stop") => {
            s.active.remove(&id);
        }
        _ => {}
    }
    true
}

/// A subscription the server completed (or failed) frees its slot.
fn note_completion(text: &str, state: &std::sync::Mutex<Connection>) {
    if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
        return;
    }
    if let Ok(message) = serde_json::from_str::<serde_json::Value>(text)
        && matches!(message["type"].as_str(), Some("complete" | "error"))
        && let Some(id) = message["id"].as_str()
    {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .active
            .remove(id);
    }
}

/// `connection_init` carries `{"Authorization": "Bearer <token>"}` (any capitalisation of the
/// key). No token is an anonymous connection; a bad token refuses the connection (closed with
/// 4403 Forbidden), just as HTTP answers 401.
async fn connection_data(
    app: &App,
    payload: serde_json::Value,
) -> async_graphql::Result<(Data, Option<domain::identity::TokenSubject>)> {
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
    let subject = match &viewer {
        Viewer::Authenticated(subject) => Some(subject.clone()),
        Viewer::Anonymous => None,
    };
    let mut data = Data::default();
    data.insert(viewer);
    // the viewer is fixed for the connection's life: changes go over HTTP, where every request
    // is authenticated afresh (see `resolvers::observe::WebSocketTransport`)
    data.insert(resolvers::observe::WebSocketTransport);
    Ok((data, subject))
}
