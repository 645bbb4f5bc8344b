//! Subscriptions over WebSocket with both subprotocols.

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{Options, TestApp};

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, protocol: &str) -> Socket {
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

pub(crate) async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON message, skipping keep-alives; fails after 5 s.
pub(crate) async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .expect("valid frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "ka" || value["type"] == "ping" || value["type"] == "pong" {
                continue;
            }
            return value;
        }
    }
}

/// A server and a socket past `connection_init` / `connection_ack` (anonymous).
async fn acknowledged(protocol: &str) -> (TestApp, Socket) {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let mut socket = connect(&app, protocol).await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(next(&mut socket).await["type"], "connection_ack");
    (app, socket)
}

const HEARTBEAT: &str = "subscription { heartbeat(intervalMs: 100, count: 3) { sequence at } }";

#[tokio::test]
async fn graphql_transport_ws_protocol() {
    let (_app, mut socket) = acknowledged("graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": HEARTBEAT } }),
    )
    .await;
    for expected in 1..=3 {
        let message = next(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], "1");
        assert_eq!(
            message["payload"]["data"]["heartbeat"]["sequence"],
            expected
        );
    }
    assert_eq!(
        next(&mut socket).await,
        json!({ "id": "1", "type": "complete" })
    );

    // a bad subscription is an error message, not a dropped socket
    send(&mut socket, json!({ "id": "2", "type": "subscribe", "payload": { "query": "subscription { heartbeat(intervalMs: 1) { sequence } }" } })).await;
    let message = next(&mut socket).await;
    assert_eq!(message["id"], "2");
    assert!(
        message["type"] == "next" || message["type"] == "error",
        "{message}"
    );
    let text = message.to_string();
    assert!(text.contains("BAD_USER_INPUT"), "{text}");
}

#[tokio::test]
async fn legacy_graphql_ws_protocol() {
    let (_app, mut socket) = acknowledged("graphql-ws").await;
    send(
        &mut socket,
        json!({ "id": "a", "type": "start", "payload": { "query": HEARTBEAT } }),
    )
    .await;
    for expected in 1..=3 {
        let message = next(&mut socket).await;
        assert_eq!(message["type"], "data", "{message}");
        assert_eq!(
            message["payload"]["data"]["heartbeat"]["sequence"],
            expected
        );
    }
    assert_eq!(
        next(&mut socket).await,
        json!({ "id": "a", "type": "complete" })
    );
}

#[tokio::test]
async fn mutations_are_refused_over_websocket() {
    let (_app, mut socket) = acknowledged("graphql-transport-ws").await;
    let mutation = r#"mutation { refreshSession(refreshToken: "x") { accessToken } }"#;
    send(
        &mut socket,
        json!({ "id": "m", "type": "subscribe", "payload": { "query": mutation } }),
    )
    .await;
    let message = next(&mut socket).await;
    assert_eq!(message["id"], "m");
    assert!(
        message.to_string().contains("only accepted over HTTP POST"),
        "{message}"
    );
    // queries still work
    send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    let mut message = next(&mut socket).await;
    while message["id"] != "q" {
        message = next(&mut socket).await;
    }
    assert_eq!(
        message["payload"]["data"]["__typename"], "Query",
        "{message}"
    );
}
