//! The response cache of `/graphql`: hot catalog queries answered from memory without SQL,
//! shared by APQ and plain requests of the same text, stale after any catalog change, never
//! shared between tiers, never holding errors or anything about the caller, and never a way
//! around the operation limits.

use serde_json::{Value, json};

use crate::harness::{Options, TestApp};
use crate::harness_id;
use crate::orders::{buyer, staff_token};

const HOT: &str = r#"query ResponseCacheHot($first: Int) {
  products(first: $first) {
    edges { node { id name locked priceRange { min { amount } }
      skus { id code price { amount } memberPrice { amount } available stockStatus }
      images { url alt } } }
  }
}"#;

const ONE: &str = r#"query ResponseCacheOne($id: ID!) {
  product(id: $id) { id locked requiredTier { code } skus { id memberPrice { amount } } } }"#;

async fn app() -> TestApp {
    crate::orders::app(Options::default()).await
}

/// POSTs `body` (a whole GraphQL request) with an optional token; status, cache header, body.
async fn send(app: &TestApp, token: Option<&str>, body: Value) -> (u16, Option<String>, Value) {
    let mut request = app.client.post(app.url("/graphql")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-ruizhu-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cache, response.json().await.unwrap())
}

fn operations_ok(metrics: &str, operation: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("ruizhu_graphql_operations_total{")
                && l.contains(&format!("operation=\"{operation}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(app: &TestApp) -> String {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_hot_catalog_query_is_served_from_memory_without_sql() {
    let app = app().await;
    let request = json!({ "query": HOT, "variables": { "first": 20 } });
    let (status, cache, cold) = send(&app, None, request.clone()).await;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")), "{cold}");
    assert!(cold.get("errors").is_none(), "{cold}");
    assert_eq!(
        cold["data"]["products"]["edges"].as_array().unwrap().len(),
        20
    );

    let before = app.statements();
    let ok_before = operations_ok(&metrics(&app).await, "ResponseCacheHot");
    let (status, cache, warm) = send(&app, None, request.clone()).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    assert_eq!(warm, cold, "the same answer");
    assert_eq!(app.statements(), before, "a hit sends no SQL");
    assert!(
        operations_ok(&metrics(&app).await, "ResponseCacheHot") > ok_before,
        "a hit is counted per operation like an executed query"
    );

    // the same text as an automatic persisted query: registered, then by hash alone
    let hash = domain::apq::sha256_hex(HOT);
    let apq = json!({ "version": 1, "sha256Hash": hash });
    let (_, cache, body) = send(
        &app,
        None,
        json!({ "query": HOT, "variables": { "first": 20 }, "extensions": { "persistedQuery": apq } }),
    )
    .await;
    assert_eq!(cache.as_deref(), Some("hit"), "{body}");
    let (_, cache, body) = send(
        &app,
        None,
        json!({ "variables": { "first": 20 }, "extensions": { "persistedQuery": apq } }),
    )
    .await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(body, cold);
    assert_eq!(app.statements(), before, "still no SQL");

    // other variables are another entry; GET shares the entry of POST
    let (_, cache, _) = send(
        &app,
        None,
        json!({ "query": HOT, "variables": { "first": 5 } }),
    )
    .await;
    assert_eq!(cache.as_deref(), Some("miss"));
    let url = format!(
        "{}?query={}&variables={}",
        app.url("/graphql"),
        urlencode(HOT),
        urlencode(r#"{"first":5}"#)
    );
    let r = app
        .client
        .get(url)
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-ruizhu-cache"], "hit");
    assert_eq!(
        r.headers()["content-type"],
        "application/graphql-response+json; charset=utf-8",
        "media type negotiated per request, not cached"
    );
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn a_catalog_change_by_ops_makes_cached_answers_stale() {
    let app = app().await;
    let ops = staff_token(&app, "rc-ops", domain::identity::Role::Ops).await;
    let request = json!({ "query": HOT, "variables": { "first": 50 } });
    let (_, _, before) = send(&app, None, request.clone()).await;
    let (_, cache, _) = send(&app, None, request.clone()).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    let first = before["data"]["products"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // ops hide the first product from everyone below gold
    let gate = r#"mutation G($p: ID!) { setProductTierGate(productId: $p, requiredTierCode: "GOLD", gate: HIDE) { errors { code } } }"#;
    let body = app.post_as(&ops, gate, json!({ "p": first })).await.1;
    assert_eq!(
        body["data"]["setProductTierGate"]["errors"],
        json!([]),
        "{body}"
    );

    let (_, cache, after) = send(&app, None, request.clone()).await;
    assert_eq!(cache.as_deref(), Some("miss"), "stale after the change");
    let ids: Vec<&str> = after["data"]["products"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&first.as_str()), "the hidden product is gone");

    // a stock change (any catalog invalidation, here from the domain) does the same
    let (_, cache, _) = send(&app, None, request.clone()).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    app.app.catalog.invalidate_products(&[1]).await;
    let (_, cache, _) = send(&app, None, request).await;
    assert_eq!(cache.as_deref(), Some("miss"));
}

#[tokio::test]
async fn tiers_do_not_share_entries() {
    let app = app().await;
    let standard = buyer(&app, "rc-standard").await;
    let gold = buyer(&app, "rc-gold").await;
    let mut conn = app.app.db.conn().await.unwrap();
    {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(format!(
            "UPDATE members SET tier_rank = 2 WHERE id = {}",
            gold.member_id
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // the demo seed locks one published product to gold
    let locked: u64 = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use domain::schema::products;
        products::table
            .filter(products::min_tier_rank.eq(2))
            .filter(products::tier_gate.eq("LOCK"))
            .select(products::id)
            .first(&mut conn)
            .await
            .unwrap()
    };
    drop(conn);
    let request = json!({ "query": ONE, "variables": { "id": harness_id("Product", locked) } });
    for (who, token, expect_locked) in [
        ("anonymous", None, true),
        ("standard", Some(standard.token.as_str()), true),
        ("gold", Some(gold.token.as_str()), false),
    ] {
        let (status, cache, body) = send(&app, token, request.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(cache.as_deref(), Some("miss"), "{who}: its own entry");
        assert_eq!(body["data"]["product"]["locked"], expect_locked, "{who}");
        let (_, cache, again) = send(&app, token, request.clone()).await;
        assert_eq!(cache.as_deref(), Some("hit"), "{who}");
        assert_eq!(again, body, "{who}");
    }

    // a member whose tier changes gets the new tier's answer at once
    {
        use diesel_async::RunQueryDsl;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::sql_query(format!(
            "UPDATE members SET tier_rank = 2 WHERE id = {}",
            standard.member_id
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let (_, cache, body) = send(&app, Some(&standard.token), request.clone()).await;
    assert_eq!(cache.as_deref(), Some("hit"), "gold's entry");
    assert_eq!(body["data"]["product"]["locked"], false);

    // staff see everything and staff-only fields: never cached
    let staff = staff_token(&app, "rc-staff", domain::identity::Role::Advisor).await;
    for _ in 0..2 {
        let (status, cache, body) = send(&app, Some(&staff), request.clone()).await;
        assert_eq!((status, cache), (200, None), "{body}");
    }
}

#[tokio::test]
async fn errors_and_caller_fields_are_never_cached() {
    let app = app().await;
    // a request error from a resolver (page size out of range)
    let bad = json!({ "query": HOT, "variables": { "first": 51 } });
    for _ in 0..2 {
        let (status, cache, body) = send(&app, None, bad.clone()).await;
        assert_eq!((status, cache.as_deref()), (200, None), "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    // a partial answer: data with a field error (staff-only stock, anonymously)
    let partial =
        json!({ "query": "{ products(first: 2) { edges { node { id skus { stock } } } } }" });
    for _ in 0..2 {
        let (_, cache, body) = send(&app, None, partial.clone()).await;
        assert_eq!(cache, None, "{body}");
        assert!(body["errors"].is_array(), "{body}");
    }
    // anything beside catalog reads: the caller's own data, or no catalog field at all
    let member = buyer(&app, "rc-me").await;
    let mixed =
        json!({ "query": "{ products(first: 1) { edges { node { id } } } me { nickname } }" });
    for _ in 0..2 {
        let (status, cache, body) = send(&app, Some(&member.token), mixed.clone()).await;
        assert_eq!((status, cache), (200, None), "{body}");
    }
    for _ in 0..2 {
        let (_, cache, body) = send(&app, None, json!({ "query": "{ __typename }" })).await;
        assert_eq!(cache, None, "{body}");
    }
    // mutations are never stored (and never served from the cache)
    let login =
        json!({ "query": r#"mutation { loginWithWeChat(code: "dev:rc-again") { accessToken } }"# });
    for _ in 0..2 {
        let (_, cache, body) = send(&app, None, login.clone()).await;
        assert_eq!(cache, None, "{body}");
    }
}

#[tokio::test]
async fn limits_still_refuse_what_they_refused() {
    let app = TestApp::spawn_with(Options {
        tweak: Some(|s| s.graphql.max_depth = 6),
        ..Options::default()
    })
    .await;
    let shallow = "query Tree { categories { id children { id children { id } } } }";
    let (_, _, body) = send(&app, None, json!({ "query": shallow })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let (_, cache, _) = send(&app, None, json!({ "query": shallow })).await;
    assert_eq!(cache.as_deref(), Some("hit"));

    // the same operation one level too deep, under the same name: refused, not served
    let deep = format!(
        "query Tree {{ categories {{ id {}id{} }} }}",
        "children { ".repeat(8),
        " }".repeat(8)
    );
    for _ in 0..2 {
        let statements = app.statements();
        let (status, cache, body) = send(&app, None, json!({ "query": deep })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(cache, None);
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "DEPTH_LIMIT_EXCEEDED",
            "{body}"
        );
        assert_eq!(app.statements(), statements, "nothing ran");
    }
}

#[tokio::test]
async fn the_switch_turns_it_off() {
    let app = TestApp::spawn_with(Options {
        tweak: Some(|s| s.cache.responses = false),
        ..Options::default()
    })
    .await;
    let request = json!({ "query": HOT, "variables": { "first": 3 } });
    for _ in 0..2 {
        let (status, cache, body) = send(&app, None, request.clone()).await;
        assert_eq!((status, cache), (200, None), "{body}");
    }
}
