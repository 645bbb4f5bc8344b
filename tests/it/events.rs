//! Events end to end: the outbox is written in the transaction of each change; the relay
//! publishes to a real Kafka-protocol broker (tansu) in order per aggregate; consumers apply
//! effects once however often an event is delivered; subscriptions see changes made through
//! another replica; the WebSocket transport enforces its limits.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use serde_json::{Value, json};

use crate::fake_wechat::FakeWechat;
use crate::harness::{Options, TestApp, kafka_brokers};
use crate::orders::{Buyer, buyer, key, place, skus, staff_token};
use crate::websocket::{connect, next, send};

const CONFIRM: &str =
    "mutation D($id: ID!) { devConfirmPayment(orderId: $id) { order { status } errors { code } } }";

async fn paid_order(app: &TestApp, b: &Buyer) -> (String, u64) {
    let sku = skus(app, 1).await[0].0;
    crate::orders::set_stock(app, sku, 50).await;
    let placed = place(app, b, &key(), &[(sku, 1)]).await;
    let gid = placed["order"]["id"].as_str().unwrap().to_owned();
    let paid = app.post_as(&b.token, CONFIRM, json!({ "id": gid })).await.1;
    assert_eq!(
        paid["data"]["devConfirmPayment"]["order"]["status"], "PAID",
        "{paid}"
    );
    (gid.clone(), crate::orders::decode_id(&gid))
}

async fn outbox(app: &TestApp) -> Vec<domain::events::OutboxRow> {
    use domain::schema::outbox_events;
    let mut conn = app.app.db.conn().await.unwrap();
    outbox_events::table
        .order(outbox_events::id)
        .select(domain::events::OutboxRow::as_select())
        .load(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_change_writes_its_event_in_the_same_transaction() {
    let app = crate::orders::app(Options::default()).await;
    let alice = buyer(&app, "alice").await;
    let (gid, order_id) = paid_order(&app, &alice).await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let shipped = app
        .post_as(&ops, crate::orders::SHIP, json!({ "id": gid }))
        .await
        .1;
    assert_eq!(shipped["data"]["shipOrder"]["order"]["status"], "SHIPPED");

    let rows = outbox(&app).await;
    let of_order: Vec<&str> = rows
        .iter()
        .filter(|r| r.aggregate_type == "order" && r.aggregate_id == order_id.to_string())
        .map(|r| r.event_type.as_str())
        .collect();
    assert_eq!(of_order, ["order.placed", "order.paid", "order.shipped"]);
    assert!(
        rows.iter()
            .any(|r| r.event_type == "payment.recorded" && r.aggregate_id == order_id.to_string())
    );
    let stock: Vec<_> = rows
        .iter()
        .filter(|r| r.event_type == "inventory.stock_changed")
        .collect();
    assert!(
        stock.iter().any(|r| r.payload.contains("\"reserve\"")),
        "checkout reserves stock"
    );
    for row in &rows {
        let event = row.event();
        assert_eq!(event.schema_version, 1);
        assert_eq!(
            uuid::Uuid::parse_str(&event.event_id)
                .unwrap()
                .get_version_num(),
            7
        );
        assert!(
            !row.payload.contains("13812345678") && !row.payload.contains("中山东一路"),
            "no personal data in events: {}",
            row.payload
        );
        assert!(!row.payload.contains("dev-alice"), "no openid in events");
    }
    // a refused change writes nothing
    let before = rows.len();
    let again = app
        .post_as(&ops, crate::orders::SHIP, json!({ "id": gid }))
        .await
        .1;
    assert_eq!(
        again["data"]["shipOrder"]["errors"][0]["code"],
        "INVALID_ORDER_TRANSITION"
    );
    assert_eq!(outbox(&app).await.len(), before);
}

/// Everything on `<prefix>order-events` so far, from the beginning.
async fn read_topic(app: &TestApp, topic: &str, want: usize) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let name = format!("{}{topic}", app.app.settings.kafka.topic_prefix);
    consumer.subscribe(&[&name]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < want {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} events on {name}", out.len()))
            .unwrap();
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        out.push((
            key,
            serde_json::from_slice(message.payload().unwrap()).unwrap(),
        ));
    }
    out
}

#[tokio::test]
async fn the_relay_publishes_each_event_once_in_order_per_order() {
    let app = crate::orders::app(Options {
        kafka: Some(kafka_brokers()),
        events: true,
        ..Options::default()
    })
    .await;
    let alice = buyer(&app, "alice").await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let (gid, id) = paid_order(&app, &alice).await;
        let shipped = app
            .post_as(&ops, crate::orders::SHIP, json!({ "id": gid }))
            .await
            .1;
        assert_eq!(shipped["data"]["shipOrder"]["order"]["status"], "SHIPPED");
        orders.push(id);
    }
    let events = read_topic(&app, "order-events", 9).await;
    let mut ids = std::collections::HashSet::new();
    for (key, event) in &events {
        assert_eq!(
            key,
            event["aggregate_id"].as_str().unwrap(),
            "keyed by aggregate id"
        );
        assert!(
            ids.insert(event["event_id"].as_str().unwrap().to_owned()),
            "published once"
        );
    }
    for id in orders {
        let types: Vec<&str> = events
            .iter()
            .filter(|(k, _)| *k == id.to_string())
            .map(|(_, e)| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["order.placed", "order.paid", "order.shipped"],
            "order {id}"
        );
    }
    // all marked published
    for _ in 0..100 {
        if app.app.relay.backlog().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.app.relay.backlog().await.unwrap(), 0);
}

/// A private tansu on a free port, killed when dropped (the shared broker stays up).
struct OwnBroker {
    child: Option<std::process::Child>,
}

impl OwnBroker {
    fn port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn start(port: u16) -> Self {
        let tansu = std::env::var("TANSU").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            let installed = format!("{home}/.cargo/bin/tansu");
            if std::path::Path::new(&installed).exists() {
                installed
            } else {
                "tansu".to_owned()
            }
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu is installed (scripts/services.sh)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { child: Some(child) }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn while_the_broker_is_down_orders_succeed_and_nothing_is_lost() {
    let port = OwnBroker::port();
    let brokers = format!("127.0.0.1:{port}");
    // the broker is not running yet
    let app = crate::orders::app(Options {
        kafka: Some(brokers.clone()),
        events: true,
        ..Options::default()
    })
    .await;
    let alice = buyer(&app, "alice").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, id) = paid_order(&app, &alice).await;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog = app.app.relay.backlog().await.unwrap();
    assert!(backlog >= 10, "the outbox holds the events: {backlog}");

    let broker = OwnBroker::start(port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.app.relay.backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&format!(
            "{}order-events",
            app.app.settings.kafka.topic_prefix
        )])
        .unwrap();
    let mut seen = std::collections::HashMap::<String, Vec<String>>::new();
    while seen.values().map(Vec::len).sum::<usize>() < 10 {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let e: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        seen.entry(e["aggregate_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["type"].as_str().unwrap().to_owned());
    }
    for id in ids {
        assert_eq!(
            seen[&id.to_string()],
            ["order.placed", "order.paid"],
            "order {id}"
        );
    }
    // consumers leave their groups while the broker still answers; then the broker goes
    drop(consumer);
    drop(app);
    drop(broker);
}

#[tokio::test]
async fn redelivered_events_change_nothing() {
    let wechat = FakeWechat::start().await;
    let app = crate::orders::app(Options {
        kafka: Some(kafka_brokers()),
        events: true,
        wechat_base: Some(wechat.base.clone()),
        tweak: Some(|s| {
            s.notifications.order_paid_template = "TPL-PAID".into();
            s.notifications.order_shipped_template = "TPL-SHIPPED".into();
        }),
        ..Options::default()
    })
    .await;
    let bob = buyer(&app, "bob").await;
    let accepted = app
        .post_as(&bob.token, r#"mutation { acceptSubscriptionMessages(templateIds: ["TPL-PAID", "TPL-SHIPPED", "OTHER"]) }"#, json!({}))
        .await
        .1;
    assert_eq!(
        accepted["data"]["acceptSubscriptionMessages"], 2,
        "{accepted}"
    );
    let (gid, _) = paid_order(&app, &bob).await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    app.post_as(&ops, crate::orders::SHIP, json!({ "id": gid }))
        .await;
    let settle = || async {
        for _ in 0..200 {
            let done = {
                let s = wechat.state.lock().unwrap();
                s.messages.len() >= 2 && !s.shipping_uploads.is_empty()
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    };
    settle().await;
    let counts = || {
        let s = wechat.state.lock().unwrap();
        (s.messages.len(), s.shipping_uploads.len())
    };
    assert_eq!(
        counts(),
        (2, 1),
        "paid + shipped messages, one shipping upload"
    );
    {
        let s = wechat.state.lock().unwrap();
        assert_eq!(s.messages[0]["touser"], "dev-bob");
        assert_eq!(s.messages[0]["template_id"], "TPL-PAID");
        assert!(
            s.messages[0]["page"]
                .as_str()
                .unwrap()
                .starts_with("pages/order/detail?id=")
        );
        assert_eq!(
            s.shipping_uploads[0]["shipping_list"][0]["tracking_no"],
            "SF1234567890"
        );
    }

    // the relay "crashed" before marking: everything is published again
    let consumed = |metrics: &str, consumer: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "ruizhu_events_consumed_total{{consumer=\"{consumer}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = metrics().await;
    let republished = outbox(&app)
        .await
        .iter()
        .filter(|r| r.topic == "order-events")
        .count() as f64;
    {
        use domain::schema::outbox_events;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::update(outbox_events::table)
            .set(outbox_events::published_at.eq(None::<chrono::NaiveDateTime>))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    settle().await;
    assert_eq!(app.app.relay.backlog().await.unwrap(), 0, "republished");
    let after = metrics().await;
    for consumer in ["notifications", "shipping"] {
        assert!(
            consumed(&after, consumer) - consumed(&before, consumer) >= republished,
            "{consumer} received the redelivered events"
        );
    }
    assert_eq!(counts(), (2, 1), "duplicates absorbed");

    // no consent left: the next paid order is skipped without error
    paid_order(&app, &bob).await;
    settle().await;
    assert_eq!(counts().0, 2);
}

const WATCH: &str = "subscription W($id: ID!) { orderStatusChanged(orderId: $id) { type fromStatus toStatus order { id status } } }";

async fn member_socket(app: &TestApp, token: &str) -> crate::websocket::Socket {
    let mut socket = connect(app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    assert_eq!(next(&mut socket).await["type"], "connection_ack");
    socket
}

#[tokio::test]
async fn a_change_through_one_replica_reaches_a_subscriber_on_another() {
    let a = crate::orders::app(Options {
        kafka: Some(kafka_brokers()),
        events: true,
        ..Options::default()
    })
    .await;
    let b = a.replica().await;
    let carol = buyer(&a, "carol").await;
    let dave = buyer(&a, "dave").await;
    let (gid, _) = paid_order(&a, &carol).await;
    let ops = staff_token(&a, "ops", domain::identity::Role::Ops).await;

    let mut socket = member_socket(&a, &carol.token).await;
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": WATCH, "variables": { "id": gid } } })).await;
    // someone else's order: refused
    let mut other = member_socket(&a, &dave.token).await;
    send(&mut other, json!({ "id": "9", "type": "subscribe", "payload": { "query": WATCH, "variables": { "id": gid } } })).await;
    let refused = next(&mut other).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    // give the fan-out consumers time to join their groups
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = std::time::Instant::now();
    let shipped = b
        .post_as(&ops, crate::orders::SHIP, json!({ "id": gid }))
        .await
        .1;
    assert_eq!(shipped["data"]["shipOrder"]["order"]["status"], "SHIPPED");
    let message = next(&mut socket).await;
    let elapsed = started.elapsed();
    assert_eq!(message["type"], "next", "{message}");
    let change = &message["payload"]["data"]["orderStatusChanged"];
    assert_eq!(change["type"], "order.shipped");
    assert_eq!(change["fromStatus"], "PAID");
    assert_eq!(change["toStatus"], "SHIPPED");
    assert_eq!(change["order"]["status"], "SHIPPED");
    assert!(elapsed < Duration::from_secs(1), "delivered in {elapsed:?}");
}

#[tokio::test]
async fn websocket_limits_and_guards() {
    let app = crate::orders::app(Options {
        events: true,
        tweak: Some(|s| {
            s.http.ws_init_timeout_ms = 300;
            s.http.ws_max_subscriptions = 2;
        }),
        ..Options::default()
    })
    .await;
    let erin = buyer(&app, "erin").await;

    // no connection_init in time: 4408
    let mut idle = connect(&app, "graphql-transport-ws").await;
    assert_eq!(close_code(&mut idle, Duration::from_secs(3)).await, 4408);

    // staff-only and member-only subscriptions refuse the wrong caller
    let mut socket = member_socket(&app, &erin.token).await;
    send(&mut socket, json!({ "id": "s", "type": "subscribe", "payload": { "query": "subscription { orderEvents { type } }" } })).await;
    let refused = next(&mut socket).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert_eq!(next(&mut socket).await["type"], "complete");
    let mut anon = connect(&app, "graphql-transport-ws").await;
    send(
        &mut anon,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(next(&mut anon).await["type"], "connection_ack");
    send(&mut anon, json!({ "id": "a", "type": "subscribe", "payload": { "query": WATCH, "variables": { "id": crate::harness_id("Order", 1) } } })).await;
    let anonymous = next(&mut anon).await;
    assert_eq!(
        anonymous["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{anonymous}"
    );

    // at most 2 running subscriptions per connection
    let hb = |id: &str| json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { heartbeat(intervalMs: 60000) { sequence } }" } });
    send(&mut socket, hb("h1")).await;
    assert_eq!(next(&mut socket).await["id"], "h1");
    send(&mut socket, hb("h2")).await;
    assert_eq!(next(&mut socket).await["id"], "h2");
    send(&mut socket, hb("h3")).await;
    let limited = next(&mut socket).await;
    assert_eq!(
        (limited["id"].as_str(), limited["type"].as_str()),
        (Some("h3"), Some("error")),
        "{limited}"
    );
    assert_eq!(limited["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // a duplicate id closes the socket with 4409, as graphql-transport-ws requires
    send(&mut socket, hb("h1")).await;
    assert_eq!(close_code(&mut socket, Duration::from_secs(3)).await, 4409);
}

async fn close_code(socket: &mut crate::websocket::Socket, within: Duration) -> u16 {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                    return u16::from(frame.code);
                }
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires_or_its_session_ends() {
    let app = crate::orders::app(Options {
        tweak: Some(|s| s.http.ws_ping_interval_ms = 200),
        ..Options::default()
    })
    .await;
    let fay = buyer(&app, "fay").await;
    // the same session's token, re-issued to expire in 2 s (tokens live ≥ 60 s otherwise)
    let claims: Value = {
        use base64::Engine as _;
        let part = fay.token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let mut short = claims.clone();
    short["exp"] = json!(chrono::Utc::now().timestamp() + 2);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &short,
        &jsonwebtoken::EncodingKey::from_secret(
            domain::identity::tokens::DEV_JWT_SECRET.as_bytes(),
        ),
    )
    .unwrap();
    let mut expiring = member_socket(&app, &token).await;
    let started = std::time::Instant::now();
    assert_eq!(
        close_code(&mut expiring, Duration::from_secs(6)).await,
        4403
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "not before the token expired"
    );

    // logout ends the session: its sockets close at the next keepalive check
    let mut socket = member_socket(&app, &fay.token).await;
    let out = app
        .post_as(&fay.token, "mutation { logout }", json!({}))
        .await
        .1;
    assert_eq!(out["data"]["logout"], true, "{out}");
    assert_eq!(close_code(&mut socket, Duration::from_secs(3)).await, 4403);
}
