//! `notify`: WeChat Pay payment notifications against a running server, signed and encrypted
//! the way WeChat Pay does (`wechat.md` §3.4), each for its own unpaid order
//! `<prefix><index:010>` (the benchmark script creates them with SQL). Prints JSON.
//!
//! - `--mode throughput`: `concurrency` clients post as fast as answers come, for `duration` s;
//! - `--mode rate`: an open-loop schedule of `rate` notifications per second (latency under a
//!   fixed load, e.g. the brief's peak of 100 payments/s);
//! - `--mode crypto`: no server; verify + decrypt in-process `count` times (the cryptographic
//!   share of the work, per notification).
//!
//! Notifications are built before the timed part. Every answer must be 204 with no body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bench::wxpay::{Notification, Platform};
use clap::Parser;
use domain::wechatpay::{SignedHeaders, WechatPay, WechatPaySettings};
use secrecy::SecretString;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "WeChat Pay notification load generator")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// throughput | rate | crypto
    #[arg(long, default_value = "throughput")]
    mode: String,
    /// Platform private key (PEM) that signs notifications.
    #[arg(long)]
    platform_key: std::path::PathBuf,
    /// Platform public key (PEM), for `crypto` mode.
    #[arg(long)]
    platform_public_key: Option<std::path::PathBuf>,
    /// Merchant private key (PEM), for `crypto` mode.
    #[arg(long)]
    merchant_key: Option<std::path::PathBuf>,
    #[arg(long, default_value = "PUB_KEY_ID_0114232134912410000000000000")]
    key_id: String,
    #[arg(long)]
    apiv3_key: String,
    #[arg(long, default_value = "1900000001")]
    mch_id: String,
    #[arg(long)]
    app_id: String,
    /// Order number prefix; order i is `<prefix><i:010>`.
    #[arg(long, default_value = "B")]
    prefix: String,
    /// First order index to pay.
    #[arg(long, default_value_t = 1)]
    first: usize,
    /// Notifications to prepare (at most this many are sent).
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Order total in fen (every benchmark order has the same).
    #[arg(long, default_value_t = 100)]
    total: i64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 8)]
    duration: u64,
    /// Notifications per second in `rate` mode.
    #[arg(long, default_value_t = 100)]
    rate: u64,
}

fn report(value: serde_json::Value) {
    #[allow(clippy::print_stdout)]
    {
        println!("{value}");
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    key_id: &str,
    p: &Notification,
) -> anyhow::Result<()> {
    let response = p.request(client, url, key_id).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    anyhow::ensure!(
        status == 204 && text.is_empty(),
        "unexpected answer {status}: {text}"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pem = std::fs::read_to_string(&args.platform_key)?;
    let platform = Platform::new(
        &args.app_id,
        &args.mch_id,
        &args.apiv3_key,
        &args.key_id,
        &pem,
    )?;
    let prepared_started = Instant::now();
    let prepared: Vec<Notification> = (args.first..args.first + args.count)
        .map(|i| {
            platform.payment(
                &format!("{}{:010}", args.prefix, i),
                &format!("4200{:028}", i),
                args.total,
                i as u64,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let prepare_secs = prepared_started.elapsed().as_secs_f64();

    if args.mode == "crypto" {
        let settings = WechatPaySettings {
            mch_id: args.mch_id.clone(),
            merchant_key_path: args.merchant_key.clone(),
            merchant_serial: "BENCH".into(),
            platform_public_key_path: args.platform_public_key.clone(),
            platform_key_id: args.key_id.clone(),
            apiv3_key: SecretString::from(args.apiv3_key.clone()),
            ..WechatPaySettings::default()
        };
        let pay = WechatPay::new(&settings, &args.app_id)?;
        let started = Instant::now();
        for p in &prepared {
            let headers = SignedHeaders {
                timestamp: Some(p.timestamp.clone()),
                nonce: Some(p.nonce.clone()),
                signature: Some(p.signature.clone()),
                serial: Some(args.key_id.clone()),
            };
            pay.open_notification(&headers, p.body.as_bytes(), "transaction")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let secs = started.elapsed().as_secs_f64();
        report(json!({ "mode": "crypto", "count": prepared.len(),
            "us_per_notification": secs * 1e6 / prepared.len() as f64 }));
        return Ok(());
    }

    let url = format!(
        "{}/webhooks/wechatpay/notify",
        args.url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let prepared = Arc::new(prepared);
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    if args.mode == "rate" {
        // open loop: notification k leaves at k / rate seconds, whether or not earlier ones returned
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let total = usize::try_from(args.rate * args.duration)?.min(prepared.len());
        for k in 0..total {
            let at = started + interval * u32::try_from(k)?;
            tokio::time::sleep_until(at.into()).await;
            let (client, url, prepared, key_id) = (
                client.clone(),
                url.clone(),
                prepared.clone(),
                args.key_id.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                post(&client, &url, &key_id, &prepared[k]).await?;
                let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
                h.record(u64::try_from(t.elapsed().as_micros())?)?;
                Ok::<_, anyhow::Error>(h)
            }));
        }
    } else {
        for _ in 0..args.concurrency {
            let (client, url, prepared, next, sent, key_id) = (
                client.clone(),
                url.clone(),
                prepared.clone(),
                next.clone(),
                sent.clone(),
                args.key_id.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
                while Instant::now() < deadline {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = prepared.get(k) else { break };
                    let t = Instant::now();
                    post(&client, &url, &key_id, p).await?;
                    h.record(u64::try_from(t.elapsed().as_micros())?)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(h)
            }));
        }
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let done = all.len();
    anyhow::ensure!(
        args.mode == "rate" || usize::try_from(done)? < prepared.len(),
        "ran out of prepared notifications: raise --count"
    );
    report(json!({
        "mode": args.mode, "concurrency": args.concurrency, "seconds": secs, "notifications": done,
        "per_sec": done as f64 / secs, "p50_ms": all.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": all.value_at_quantile(0.99) as f64 / 1000.0, "max_ms": all.max() as f64 / 1000.0,
        "prepare_secs": prepare_secs,
    }));
    Ok(())
}
