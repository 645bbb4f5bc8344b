//! `fanout`: N members, each watching their own order with `orderStatusChanged` over
//! `graphql-transport-ws`, on one server, while orders are paid at a fixed rate (each payment is
//! an `order.paid` event for one watcher among N sockets); reports delivery latency from the
//! event's commit (`at`) to the client, and the server's resident memory per idle connection
//! (read from `/proc/<pid>/status` before and after the sockets open). Prints JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

#[derive(Parser, Debug)]
#[command(about = "WebSocket fan-out benchmark")]
struct Args {
    /// Server base URL (http://host:port).
    #[arg(long)]
    url: String,
    /// Server process id (for its memory).
    #[arg(long)]
    pid: u32,
    /// Subscribers.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Orders placed per second while measuring.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of events.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value = "bench-ops")]
    ops_user: String,
    #[arg(long, default_value = "bench-ops-password")]
    ops_password: String,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn gql(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let mut req = client
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body: Value = req.send().await?.json().await?;
    anyhow::ensure!(body["errors"].is_null(), "errors: {body}");
    Ok(body["data"].clone())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let url = args.url.trim_end_matches('/').to_owned();
    let ops = gql(&client, &url, None,
        "mutation S($u: String!, $p: String!) { staffLogin(username: $u, password: $p) { accessToken } }",
        json!({ "u": args.ops_user, "p": args.ops_password })).await?["staffLogin"]["accessToken"]
        .as_str().unwrap_or_default().to_owned();
    let sku = gql(
        &client,
        &url,
        None,
        "{ products(first: 1) { edges { node { skus { id } } } } }",
        json!({}),
    )
    .await?["products"]["edges"][0]["node"]["skus"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    gql(&client, &url, Some(&ops), r#"mutation A($s: ID!) { adjustStock(skuId: $s, delta: 100000, reason: "fan-out benchmark") { stock } }"#, json!({ "s": sku })).await?;
    // members, each with one unpaid order: max(subscribers, events) of them; the first
    // `subscribers` watch their own order
    let total = args.rate * args.duration;
    let members = args.subscribers.max(usize::try_from(total)?);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let setup: Vec<anyhow::Result<(String, String)>> = futures::stream::iter(0..members)
        .map(|i| {
            let (client, url, sku, tag) = (client.clone(), url.clone(), sku.clone(), tag.clone());
            async move {
                let login = gql(&client, &url, None, "mutation L($c: String!) { loginWithWeChat(code: $c) { accessToken } }",
                    json!({ "c": format!("dev:f{}-{i}", &tag[..8]) })).await?;
                let token = login["loginWithWeChat"]["accessToken"].as_str().unwrap_or_default().to_owned();
                let address = gql(&client, &url, Some(&token),
                    r#"mutation { addAddress(input: { recipient: "Bench", phone: "13812345678", province: "上海市", city: "上海市", district: "静安区", detail: "南京西路 1266 号" }) { address { id } } }"#,
                    json!({})).await?["addAddress"]["address"]["id"].as_str().unwrap_or_default().to_owned();
                let input = json!({ "i": { "idempotencyKey": uuid::Uuid::new_v4().to_string(), "lines": [{ "skuId": sku, "quantity": 1 }], "addressId": address } });
                let order = gql(&client, &url, Some(&token), "mutation P($i: PlaceOrderInput!) { placeOrder(input: $i) { order { id } errors { code } } }", input).await?
                    ["placeOrder"]["order"]["id"].as_str().unwrap_or_default().to_owned();
                anyhow::ensure!(!order.is_empty(), "order not placed");
                Ok((token, order))
            }
        })
        .buffered(32)
        .collect()
        .await;
    let setup: Vec<(String, String)> = setup.into_iter().collect::<anyhow::Result<_>>()?;

    let rss_before = rss_kib(args.pid);
    let ws_url = format!("{}/graphql/ws", url.replacen("http", "ws", 1));
    let received = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut sockets = Vec::new();
    for (token, order) in setup.iter().take(args.subscribers) {
        let mut request = ws_url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        socket.send(Message::Text(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }).to_string().into())).await?;
        socket.send(Message::Text(json!({ "id": "1", "type": "subscribe", "payload": {
            "query": "subscription W($id: ID!) { orderStatusChanged(orderId: $id) { type at } }", "variables": { "id": order } } }).to_string().into())).await?;
        let (tx, received) = (tx.clone(), received.clone());
        sockets.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if v["type"] == "next" {
                        if let Some(at) = v["payload"]["data"]["orderStatusChanged"]["at"].as_str()
                            && let Ok(at) = chrono::DateTime::parse_from_rfc3339(at)
                        {
                            let us = (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
                                .num_microseconds()
                                .unwrap_or(0)
                                .max(0);
                            let _ = tx.send(u64::try_from(us).unwrap_or(0));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if v["type"] == "ping" {
                        let _ = socket
                            .send(Message::Text(r#"{"type":"pong"}"#.into()))
                            .await;
                    }
                }
            }
        }));
    }
    drop(tx);
    // let the connections settle (acks, subscriptions registered) and measure idle memory
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(args.pid);

    // payments at `rate`/s (development payments: the notification path), order k for event k
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut payers = Vec::new();
    for (k, (token, order)) in setup.iter().take(usize::try_from(total)?).enumerate() {
        tokio::time::sleep_until((started + interval * u32::try_from(k)?).into()).await;
        let (client, url, token, order) =
            (client.clone(), url.clone(), token.clone(), order.clone());
        payers.push(tokio::spawn(async move {
            gql(
                &client,
                &url,
                Some(&token),
                "mutation D($id: ID!) { devConfirmPayment(orderId: $id) { order { status } } }",
                json!({ "id": order }),
            )
            .await
        }));
    }
    for p in payers {
        let data = p.await??;
        anyhow::ensure!(
            data["devConfirmPayment"]["order"]["status"] == "PAID",
            "not paid: {data}"
        );
    }
    let expected = (args.subscribers as u64).min(total);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    while let Ok(us) = rx.try_recv() {
        hist.record(us.max(1))?;
    }
    let delivered = received.load(Ordering::Relaxed);
    for s in sockets {
        s.abort();
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}",
            json!({
                "subscribers": args.subscribers, "events": total, "rate": args.rate,
                "deliveries_expected": expected, "deliveries": delivered,
                "p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
                "p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
                "max_ms": hist.max() as f64 / 1000.0,
                "rss_before_kib": rss_before, "rss_idle_kib": rss_idle,
                "kib_per_idle_connection": (rss_idle.saturating_sub(rss_before)) as f64 / args.subscribers as f64,
            })
        );
    }
    Ok(())
}
