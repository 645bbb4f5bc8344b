//! Process roles: `ruizhu worker` (the real binary) runs the background work — the outbox relay
//! and the order sweeper here — for a deployment whose `serve` processes do not.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::harness::Options;
use crate::orders::{buyer, key, place, skus};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_worker_process_relays_events_and_sweeps_orders() {
    let app = crate::orders::app(Options {
        payment_window_secs: Some(60),
        ..Options::default()
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = &app.app.settings;
    let _worker = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_ruizhu"))
            .arg("worker")
            .env("RUIZHU_ENV", "test")
            .env("RUIZHU_DATABASE__URL", s.database.url.expose_secret())
            .env("RUIZHU_REDIS__URL", s.redis.url.expose_secret())
            .env("RUIZHU_REDIS__KEY_PREFIX", &s.redis.key_prefix)
            .env("RUIZHU_WORKERS__ADDR", format!("127.0.0.1:{port}"))
            .env("RUIZHU_KAFKA__RELAY_INTERVAL_MS", "20")
            .env("RUIZHU_ORDERS__SWEEP_INTERVAL_MS", "100")
            .env("RUIZHU_LOG__LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the ruizhu binary runs"),
    );
    let health = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = app.client.get(format!("{health}/readyz")).send().await
            && r.status().is_success()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the worker answers /readyz");
    let metrics = app
        .client
        .get(format!("{health}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(metrics.status().is_success());
    let graphql = app
        .client
        .post(format!("{health}/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(graphql.status().as_u16(), 404, "the worker serves no API");

    // this test server runs no workers: the worker process publishes its events…
    let alice = buyer(&app, "alice").await;
    let sku = skus(&app, 1).await[0].0;
    crate::orders::set_stock(&app, sku, 5).await;
    let placed = place(&app, &alice, &key(), &[(sku, 1)]).await;
    let order = crate::orders::decode_id(placed["order"]["id"].as_str().unwrap());
    let mut drained = false;
    for _ in 0..200 {
        if app.app.relay.backlog().await.unwrap() == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "the worker's relay published the outbox");

    // …and cancels the order once its deadline passes
    {
        use diesel_async::RunQueryDsl;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::sql_query(format!(
            "UPDATE orders SET payment_deadline = NOW(6) - INTERVAL 1 SECOND WHERE id = {order}"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let q = "query O($id: ID!) { order(id: $id) { status } }";
    let mut status = String::new();
    for _ in 0..100 {
        let body = app
            .post_as(&alice.token, q, json!({ "id": placed["order"]["id"] }))
            .await
            .1;
        status = body["data"]["order"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "CANCELLED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, "CANCELLED",
        "the worker's sweeper cancelled the expired order"
    );
}

fn ruizhu(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ruizhu"));
    cmd.args(args).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the ruizhu binary runs")
}

#[test]
fn check_config_refuses_what_the_process_would_refuse() {
    let ok = ruizhu(
        &["check-config"],
        &[
            ("RUIZHU_ENV", "test"),
            ("RUIZHU_WORKERS__IN_SERVE", "false"),
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    let summary = String::from_utf8_lossy(&ok.stdout);
    assert!(summary.contains("\"workers_in_serve\":false"), "{summary}");
    // what Kubernetes injects for a Service named ruizhu-… when enableServiceLinks is on
    let linked = ruizhu(
        &["check-config"],
        &[
            ("RUIZHU_ENV", "test"),
            ("RUIZHU_API_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    assert!(!linked.status.success());
    assert!(
        String::from_utf8_lossy(&linked.stderr).contains("api_service_host"),
        "{linked:?}"
    );
    let weak = ruizhu(
        &["check-config"],
        &[("RUIZHU_ENV", "test"), ("RUIZHU_JWT__SECRET", "short")],
    );
    assert!(!weak.status.success(), "a short JWT key is refused");
}

#[tokio::test]
async fn probe_is_the_container_health_check() {
    let app = crate::harness::TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let url = |path: &str| app.url(path);
    let (healthy, missing) = tokio::task::spawn_blocking({
        let (h, m) = (url("/readyz"), url("/nope"));
        move || (ruizhu(&["probe", &h], &[]), ruizhu(&["probe", &m], &[]))
    })
    .await
    .unwrap();
    assert!(healthy.status.success(), "{healthy:?}");
    assert!(!missing.status.success(), "a 404 is not healthy");
}
