//! Rate limits: a partner's cost-weighted bucket and the per-member and per-address buckets of
//! expensive mutations trigger at the configured rate, recover, are shared by replicas through
//! Redis, and fall back to per-process buckets while Redis is down.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Options, OwnRedis, TestApp};
use crate::partner::{GQL, call, manifest_of, partner_with};

/// Costs 3: three fields.
const THREE: &str = "query Three { __typename a: __typename b: __typename }";

fn three() -> Value {
    json!({ "documentId": format!("sha256:{}", domain::apq::sha256_hex(THREE)) })
}

/// A partner with a bucket of 9 refilled at 6 a second: three calls of `THREE` at once.
async fn tight_partner(app: &TestApp) -> String {
    let key = partner_with(app, "tight", Some(360), Some(9)).await;
    ruizhu::partners::register(&app.app, "tight", &manifest_of(&[("Three", THREE)]))
        .await
        .unwrap();
    key
}

fn assert_limited(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], 1);
    assert!(body.get("data").is_none(), "{body}");
}

#[tokio::test]
async fn a_partner_budget_is_spent_by_cost_recovers_and_is_shared_by_replicas() {
    let a = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let b = a.replica().await;
    let key = tight_partner(&a).await;

    // 3 + 3 + 3 through two replicas, then the bucket is empty on both
    for server in [&a, &b, &a] {
        let (status, _, body) = call(server, Some(&key), GQL, three()).await;
        assert_eq!(status, 200, "{body}");
    }
    for server in [&b, &a] {
        let (status, headers, body) = call(server, Some(&key), GQL, three()).await;
        assert_limited(status, &headers, &body);
    }
    // 6 tokens a second: 3 are back within 0.5 s
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _, body) = call(&b, Some(&key), GQL, three()).await;
    assert_eq!(status, 200, "{body}");

    let metrics = a.app.metrics.render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ruizhu_rate_limit_hits_total")
                && l.contains("scope=\"partner\"")
                && l.contains("backend=\"redis\"")),
        "rate-limit hits are counted"
    );
    assert!(metrics.contains("ruizhu_graphql_rejections_total{code=\"RATE_LIMITED\"}"));
}

#[tokio::test]
async fn without_redis_each_replica_falls_back_to_a_bucket_of_its_own() {
    let mut redis = OwnRedis::start().await;
    let app = TestApp::spawn_with(Options {
        seed: false,
        redis_url: Some(redis.url.clone()),
        ..Options::default()
    })
    .await;
    let key = tight_partner(&app).await;
    redis.kill();
    for _ in 0..3 {
        let (status, _, body) = call(&app, Some(&key), GQL, three()).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) = call(&app, Some(&key), GQL, three()).await;
    assert_limited(status, &headers, &body);
    assert!(
        app.app
            .metrics
            .render()
            .lines()
            .any(|l| l.starts_with("ruizhu_rate_limit_hits_total")
                && l.contains("backend=\"local\""))
    );
}

const LOGIN: &str = "mutation L($c: String!) { loginWithWeChat(code: $c) { accessToken } }";
const ADD: &str = "mutation A($s: ID!) { addCartLine(skuId: $s, quantity: 1) { errors { code } } }";

async fn post(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn listed_mutations_are_limited_per_member_and_per_address_across_replicas() {
    let a = TestApp::spawn_with(Options {
        dev_login: true,
        tweak: Some(|s| {
            s.rate_limits.mutations = vec!["loginWithWeChat".into(), "addCartLine".into()];
            s.rate_limits.member_burst = 2;
            s.rate_limits.member_per_minute = 60;
            s.rate_limits.ip_burst = 3;
            s.rate_limits.ip_per_minute = 60;
        }),
        ..Options::default()
    })
    .await;
    let b = a.replica().await;

    // three sign-ins from one address through two replicas, then the address is refused
    let mut tokens = Vec::new();
    for (server, name) in [(&a, "ann"), (&b, "bob"), (&a, "cy")] {
        let (status, body) = post(server, None, LOGIN, json!({ "c": format!("dev:{name}") })).await;
        assert_eq!(status, 200, "{body}");
        tokens.push(
            body["data"]["loginWithWeChat"]["accessToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let statements = b.statements();
    let (status, body) = post(&b, None, LOGIN, json!({ "c": "dev:dee" })).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("address")
    );
    assert_eq!(b.statements(), statements, "the refused login never ran");

    // a member's own bucket: two adds, the third refused (the address still has room)
    let sku = a
        .data(
            "{ products(first: 1) { edges { node { skus { id } } } } }",
            json!({}),
        )
        .await["products"]["edges"][0]["node"]["skus"][0]["id"]
        .clone();
    for server in [&a, &b] {
        let (status, body) = post(server, Some(&tokens[0]), ADD, json!({ "s": sku })).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(&a, Some(&tokens[0]), ADD, json!({ "s": sku })).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("member")
    );
    // mutations not on the list are not limited
    let (status, body) = post(&a, Some(&tokens[2]), "mutation { logout }", json!({})).await;
    assert_eq!(status, 200, "{body}");

    // aliases count: three adds in one request are more than a bucket of two
    let triple = "mutation T($s: ID!) { x: addCartLine(skuId: $s, quantity: 1) { errors { code } } y: addCartLine(skuId: $s, quantity: 1) { errors { code } } z: addCartLine(skuId: $s, quantity: 1) { errors { code } } }";
    let (status, body) = post(&b, Some(&tokens[1]), triple, json!({ "s": sku })).await;
    assert_eq!(status, 429, "{body}");

    // a second later the member has one token back
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = post(&b, Some(&tokens[0]), ADD, json!({ "s": sku })).await;
    assert_eq!(status, 200, "{body}");
}
