//! Probes, metrics, request ids and GraphiQL.

use serde_json::json;

use crate::harness::{Options, TestApp};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        json!({ "mysql": "up", "redis": "up" })
    );
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn metrics_count_operations_by_name_and_outcome() {
    let app = TestApp::spawn().await;
    app.data(
        "query MetricsProbeOk { products(first: 2) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    app.post(
        "query MetricsProbeBad { products(first: 999) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| {
        text.lines()
            .any(|l| l.starts_with("ruizhu_") && needle.split('&').all(|n| l.contains(n)))
    };
    assert!(
        has(
            "ruizhu_graphql_operations_total&operation=\"MetricsProbeOk\"&outcome=\"ok\"&type=\"query\""
        ),
        "{text}"
    );
    assert!(has(
        "ruizhu_graphql_operations_total&operation=\"MetricsProbeBad\"&outcome=\"error\""
    ));
    assert!(has("ruizhu_graphql_errors_total&code=\"BAD_USER_INPUT\""));
    assert!(has(
        "ruizhu_graphql_operation_duration_seconds_bucket&operation=\"MetricsProbeOk\""
    ));
    assert!(has(
        "ruizhu_http_requests_total&route=\"/graphql\"&status=\"200\""
    ));
    assert!(has("ruizhu_db_pool_connections&state=\"in_use\""));
    assert!(has("ruizhu_db_statements_total"));
    assert!(has(
        "ruizhu_cache_requests_total&cache=\"catalog:skus:v2\"&layer=\"local\""
    ));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn graphiql_is_served_from_the_binary() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let page = app.client.get(app.url("/graphiql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'"),
        "no third-party scripts may load: {csp}"
    );
    let html = page.text().await.unwrap();
    let scripts: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(scripts.len(), 4);
    for src in scripts.iter().chain(&[
        "graphiql/assets/graphiql.min.css",
        "graphiql/assets/ops.css",
        "graphiql/assets/recipes.json",
    ]) {
        assert!(!src.contains("://"), "asset from another host: {src}");
        let asset = app
            .client
            .get(app.url(&format!("/{src}")))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{src}");
        assert!(asset.bytes().await.unwrap().len() > 100, "{src}");
    }
    let missing = app
        .client
        .get(app.url("/graphiql/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_work() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ruizhu::http::serve(app.app.clone(), listener, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    tx.send(()).unwrap();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "server stops cleanly after the signal"
    );
    assert!(
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn kafka_probe_tells_up_from_down() {
    use crate::harness::kafka_brokers;
    let up = TestApp::spawn_with(Options {
        seed: false,
        kafka: Some(kafka_brokers()),
        ..Options::default()
    })
    .await;
    assert_eq!(
        up.app.bus.probe().await,
        Some(true),
        "the test broker answers"
    );

    // nothing listens on this port
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = TestApp::spawn_with(Options {
        seed: false,
        kafka: Some(format!("127.0.0.1:{port}")),
        tweak: Some(|s| s.kafka.timeout_ms = 1_000),
        ..Options::default()
    })
    .await;
    assert_eq!(down.app.bus.probe().await, Some(false));

    let embedded = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    assert_eq!(embedded.app.bus.probe().await, None, "no Kafka to probe");
}

#[tokio::test]
async fn operations_gauges_are_exported() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // present from the start, not only after the first socket or the first Redis failure
    for name in ["ruizhu_websocket_connections", "ruizhu_redis_up"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
}

#[tokio::test]
async fn login_limits_follow_the_forwarded_address_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        tweak: Some(|s| {
            s.http.trusted_proxy_hops = 1;
            s.auth.max_failed_logins_per_ip = 3;
        }),
        ..Options::default()
    })
    .await;
    let pw = secrecy::SecretString::from("ops-password-123".to_owned());
    app.app
        .identity
        .create_staff("olivia", &pw, domain::identity::Role::Ops, "")
        .await
        .unwrap();
    let login = |from: &'static str, user: &'static str, password: &'static str| {
        let request = app
            .client
            .post(app.url("/graphql"))
            // what the ingress appends; the client's own first entry is not believed
            .header("x-forwarded-for", format!("198.51.100.1, {from}"))
            .json(&json!({
                "query": "mutation L($u: String!, $p: String!) { staffLogin(username: $u, password: $p) { accessToken } }",
                "variables": { "u": user, "p": password },
            }));
        async move {
            let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("OK")
                .to_owned()
        }
    };
    for user in ["a1", "a2", "a3"] {
        assert_eq!(
            login("203.0.113.7", user, "wrong-password-1").await,
            "UNAUTHENTICATED"
        );
    }
    assert_eq!(
        login("203.0.113.7", "olivia", "ops-password-123").await,
        "RATE_LIMITED",
        "that address is throttled"
    );
    assert_eq!(
        login("203.0.113.8", "olivia", "ops-password-123").await,
        "OK",
        "another caller behind the same proxy is not"
    );
}
