//! `bench checkout`: drives `placeOrder` against a running server and prints throughput and
//! latency percentiles as JSON.
//!
//! Setup (outside the timed part): N members signed in through development login, each with
//! an address; the chosen SKUs get `stock` units each through `adjustStock`-equivalent SQL-free
//! means (an ops account must exist: pass its credentials). Then `concurrency` workers place
//! orders of one unit for `duration` seconds, closed loop, each with a fresh idempotency key.
//! Every response is checked: it must carry an order or an `OUT_OF_STOCK` error, never a
//! top-level error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Checkout load generator")]
struct Args {
    /// GraphQL endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/graphql")]
    url: String,
    /// `spread` (orders spread over many SKUs) or `hot` (every order for one SKU).
    #[arg(long, default_value = "spread")]
    mode: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Ops username and password (to give the SKUs stock).
    #[arg(long, default_value = "bench-ops")]
    ops_user: String,
    #[arg(long, default_value = "bench-ops-password")]
    ops_password: String,
}

async fn gql(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let mut req = client
        .post(url)
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body: Value = req.send().await?.json().await?;
    anyhow::ensure!(body["errors"].is_null(), "top-level errors: {body}");
    Ok(body["data"].clone())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let url = args.url.as_str();

    let ops = gql(&client, url, None,
        "mutation S($u: String!, $p: String!) { staffLogin(username: $u, password: $p) { accessToken } }",
        json!({ "u": args.ops_user, "p": args.ops_password })).await?;
    let ops = ops["staffLogin"]["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let page = gql(
        &client,
        url,
        None,
        "{ products(first: 50) { edges { node { skus { id } } } } }",
        json!({}),
    )
    .await?;
    let mut skus: Vec<String> = page["products"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["node"]["skus"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    if args.mode == "hot" {
        skus.truncate(1);
    }
    anyhow::ensure!(!skus.is_empty(), "no SKUs");
    for sku in &skus {
        gql(&client, url, Some(&ops),
            r#"mutation A($s: ID!) { adjustStock(skuId: $s, delta: 100000, reason: "benchmark stock") { stock } }"#,
            json!({ "s": sku })).await?;
    }
    let mut buyers = Vec::new();
    for i in 0..args.concurrency {
        let login = gql(
            &client,
            url,
            None,
            "mutation L($c: String!) { loginWithWeChat(code: $c) { accessToken } }",
            json!({ "c": format!("dev:b{}-{i}", &uuid::Uuid::new_v4().simple().to_string()[..8]) }),
        )
        .await?;
        let token = login["loginWithWeChat"]["accessToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let address = gql(&client, url, Some(&token),
            r#"mutation A { addAddress(input: { recipient: "Bench", phone: "13812345678", province: "上海市", city: "上海市", district: "静安区", detail: "南京西路 1266 号" }) { address { id } } }"#,
            json!({})).await?;
        let address = address["addAddress"]["address"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        buyers.push((token, address));
    }

    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let ok = Arc::new(AtomicU64::new(0));
    let out_of_stock = Arc::new(AtomicU64::new(0));
    let skus = Arc::new(skus);
    let started = Instant::now();
    let mut workers = Vec::new();
    for (w, (token, address)) in buyers.into_iter().enumerate() {
        let (client, url, skus, ok, oos) = (
            client.clone(),
            args.url.clone(),
            skus.clone(),
            ok.clone(),
            out_of_stock.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0_usize;
            while Instant::now() < deadline {
                let sku = &skus[(w + n * 7) % skus.len()];
                n += 1;
                let input = json!({ "i": { "idempotencyKey": uuid::Uuid::new_v4().to_string(),
                    "lines": [{ "skuId": sku, "quantity": 1 }], "addressId": address } });
                let t = Instant::now();
                let data = gql(&client, &url, Some(&token),
                    "mutation P($i: PlaceOrderInput!) { placeOrder(input: $i) { order { id } errors { code } } }", input).await?;
                let _ = hist.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                if data["placeOrder"]["order"]["id"].is_string() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if data["placeOrder"]["errors"][0]["code"] == "OUT_OF_STOCK" {
                    oos.fetch_add(1, Ordering::Relaxed);
                } else {
                    anyhow::bail!("unexpected answer: {data}");
                }
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    for w in workers {
        all.add(w.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let placed = ok.load(Ordering::Relaxed);
    let report = json!({
        "mode": args.mode,
        "concurrency": args.concurrency,
        "seconds": secs,
        "orders": placed,
        "out_of_stock": out_of_stock.load(Ordering::Relaxed),
        "orders_per_sec": placed as f64 / secs,
        "p50_ms": all.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_ms": all.value_at_quantile(0.99) as f64 / 1000.0,
        "max_ms": all.max() as f64 / 1000.0,
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{report}");
    }
    Ok(())
}
