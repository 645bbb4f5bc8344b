//! The catalog read path: pagination, filters, sorting, lookups, DataLoader batching (N+1) and
//! the cache layers, including Redis going away.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::harness::{Options, OwnRedis, TestApp};

const PAGE: &str = r#"
query Page($first: Int, $after: String, $filter: ProductFilterInput, $sort: ProductSort) {
  products(first: $first, after: $after, filter: $filter, sort: $sort) {
    totalCount
    edges { cursor node { id slug name nameEn priceRange { min { amount currency } } tags } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"#;

async fn page(app: &TestApp, vars: Value) -> Value {
    app.data(PAGE, vars).await["products"].clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Walks every page of a listing; returns the nodes in order.
async fn walk(app: &TestApp, first: i64, filter: Value, sort: &str) -> Vec<Value> {
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    for _ in 0..100 {
        let p = page(
            app,
            json!({ "first": first, "after": after, "filter": filter, "sort": sort }),
        )
        .await;
        let edges = p["edges"].as_array().unwrap();
        assert!(edges.len() as i64 <= first);
        nodes.extend(edges.iter().map(|e| e["node"].clone()));
        if !p["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            assert_eq!(nodes.len() as i64, p["totalCount"].as_i64().unwrap());
            return nodes;
        }
        assert_eq!(edges.len() as i64, first, "a page before the last is full");
        after = p["pageInfo"]["endCursor"].clone();
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn first_page_defaults_and_shape() {
    let app = TestApp::spawn().await;
    let p = page(&app, json!({})).await;
    assert_eq!(
        p["edges"].as_array().unwrap().len(),
        20,
        "default page size is 20"
    );
    assert_eq!(
        p["totalCount"], 62,
        "62 published demo products (2 drafts hidden)"
    );
    assert_eq!(p["pageInfo"]["hasNextPage"], true);
    assert_eq!(p["pageInfo"]["hasPreviousPage"], false);
    let first = &p["edges"][0]["node"];
    assert_eq!(first["priceRange"]["min"]["currency"], "CNY");
    assert!(first["priceRange"]["min"]["amount"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn walking_every_sort_visits_each_product_once_in_order() {
    let app = TestApp::spawn().await;
    for sort in ["FEATURED", "NEWEST", "PRICE_ASC", "PRICE_DESC"] {
        let nodes = walk(&app, 7, json!(null), sort).await;
        assert_eq!(nodes.len(), 62, "{sort}");
        let unique: HashSet<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(unique.len(), 62, "{sort}: no product twice");
        let prices: Vec<i64> = nodes
            .iter()
            .map(|n| n["priceRange"]["min"]["amount"].as_i64().unwrap())
            .collect();
        match sort {
            "PRICE_ASC" => assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}"),
            "PRICE_DESC" => assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}"),
            _ => {}
        }
    }
    // the last page: exactly the remainder, and no next page
    let all = page(&app, json!({ "first": 50 })).await;
    let rest = page(
        &app,
        json!({ "first": 50, "after": all["pageInfo"]["endCursor"] }),
    )
    .await;
    assert_eq!(rest["edges"].as_array().unwrap().len(), 12);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    assert_eq!(rest["pageInfo"]["hasPreviousPage"], true);
    // an empty page is allowed
    let none = page(&app, json!({ "first": 0 })).await;
    assert!(none["edges"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_pagination_input_is_bad_user_input() {
    let app = TestApp::spawn().await;
    for vars in [
        json!({ "first": 500 }),
        json!({ "first": 51 }),
        json!({ "first": -1 }),
        json!({ "after": "not-a-cursor" }),
        json!({ "after": "eyJ4Ijp0cnVlfQ" }),
    ] {
        assert_eq!(
            app.error_code(PAGE, vars.clone()).await,
            "BAD_USER_INPUT",
            "{vars}"
        );
    }
    // a cursor of one ordering cannot continue another
    let p = page(&app, json!({ "first": 2, "sort": "NEWEST" })).await;
    let code = app
        .error_code(
            PAGE,
            json!({ "after": p["pageInfo"]["endCursor"], "sort": "PRICE_ASC" }),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
}

#[tokio::test]
async fn filters_narrow_the_list() {
    let app = TestApp::spawn().await;
    let tree = app
        .data("{ categories { id slug children { id slug } } }", json!({}))
        .await;
    let roots = tree["categories"].as_array().unwrap();
    assert!(roots.len() >= 8, "at least 8 top-level categories");
    let handbags = roots.iter().find(|c| c["slug"] == "handbags").unwrap();
    let totes = handbags["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == "totes")
        .unwrap();

    // a parent category includes its children's products
    let in_handbags = walk(
        &app,
        50,
        json!({ "categoryId": handbags["id"] }),
        "FEATURED",
    )
    .await;
    let in_totes = walk(&app, 50, json!({ "categoryId": totes["id"] }), "FEATURED").await;
    assert!(!in_totes.is_empty() && in_handbags.len() > in_totes.len());
    assert!(in_handbags.iter().all(|n| {
        let en = n["nameEn"].as_str().unwrap();
        en.ends_with("Tote") || en.ends_with("Shoulder Bag") || en.ends_with("Clutch")
    }));

    // text search in either language, literal (no LIKE wildcards)
    let lotus = walk(&app, 50, json!({ "search": "lotus" }), "FEATURED").await;
    assert!(
        !lotus.is_empty()
            && lotus
                .iter()
                .all(|n| n["nameEn"].as_str().unwrap().starts_with("Lotus"))
    );
    let zh = walk(&app, 50, json!({ "search": "青莲" }), "FEATURED").await;
    assert_eq!(zh.len(), lotus.len());
    assert!(
        walk(&app, 50, json!({ "search": "%" }), "FEATURED")
            .await
            .is_empty()
    );
    assert!(
        walk(&app, 50, json!({ "search": "_" }), "FEATURED")
            .await
            .is_empty()
    );

    // price range in fen: some SKU inside the range
    let cheap = walk(&app, 50, json!({ "maxPrice": 500_000 }), "PRICE_ASC").await;
    assert!(!cheap.is_empty());
    assert!(
        cheap
            .iter()
            .all(|n| n["priceRange"]["min"]["amount"].as_i64().unwrap() <= 500_000)
    );
    let band = walk(
        &app,
        50,
        json!({ "minPrice": 1_000_000, "maxPrice": 3_000_000 }),
        "PRICE_ASC",
    )
    .await;
    assert!(!band.is_empty() && band.len() < 62);

    // tags: every listed tag must be present
    let limited = walk(&app, 50, json!({ "tags": ["limited"] }), "FEATURED").await;
    assert!(!limited.is_empty());
    assert!(
        limited
            .iter()
            .all(|n| n["tags"].as_array().unwrap().contains(&json!("limited")))
    );
    let both = walk(&app, 50, json!({ "tags": ["limited", "new"] }), "FEATURED").await;
    assert!(both.len() <= limited.len());
    assert!(both.iter().all(|n| {
        let t = n["tags"].as_array().unwrap();
        t.contains(&json!("limited")) && t.contains(&json!("new"))
    }));

    // filters combine
    let combo = walk(
        &app,
        50,
        json!({ "categoryId": handbags["id"], "search": "Lotus" }),
        "FEATURED",
    )
    .await;
    assert!(combo.len() <= in_handbags.len() && combo.len() <= lotus.len());

    // bad filter input
    for filter in [
        json!({ "minPrice": -1 }),
        json!({ "minPrice": 10, "maxPrice": 5 }),
        json!({ "search": "x".repeat(65) }),
        json!({ "categoryId": "garbage" }),
        json!({ "tags": (0..11).map(|i| format!("t{i}")).collect::<Vec<_>>() }),
    ] {
        let code = app
            .error_code(PAGE, json!({ "filter": filter.clone() }))
            .await;
        assert_eq!(code, "BAD_USER_INPUT", "{filter}");
    }
}

const DETAIL: &str = r#"
query Detail($id: ID!) {
  product(id: $id) {
    id name nameEn description available tags
    skus { id code color size material attributes { name value } price { amount currency } available stockStatus product { id } }
    images { url alt }
    categories { slug name parent { slug } }
  }
}"#;

#[tokio::test]
async fn product_lookup_by_id() {
    let app = TestApp::spawn().await;
    let first = ids(&page(&app, json!({ "first": 1 })).await).remove(0);
    let p = app.data(DETAIL, json!({ "id": first })).await["product"].clone();
    assert_eq!(p["id"], first);
    assert!(!p["skus"].as_array().unwrap().is_empty());
    assert_eq!(p["skus"][0]["product"]["id"], first);
    assert_eq!(p["images"].as_array().unwrap().len(), 3);
    assert!(
        p["images"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://cdn.ruizhu.com/")
    );
    assert!(!p["categories"].as_array().unwrap().is_empty());

    // unknown → null, malformed or wrong-kind id → BAD_USER_INPUT
    let unknown = base64_id("Product", 999_999);
    assert_eq!(
        app.data(DETAIL, json!({ "id": unknown })).await["product"],
        Value::Null
    );
    assert_eq!(
        app.error_code(DETAIL, json!({ "id": "zzz" })).await,
        "BAD_USER_INPUT"
    );
    assert_eq!(
        app.error_code(DETAIL, json!({ "id": base64_id("Category", 1) }))
            .await,
        "BAD_USER_INPUT"
    );

    // drafts are invisible
    let mut conn = app.app.db.conn().await.unwrap();
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let draft: u64 = domain::schema::products::table
        .filter(domain::schema::products::status.eq("DRAFT"))
        .select(domain::schema::products::id)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        app.data(DETAIL, json!({ "id": base64_id("Product", draft) }))
            .await["product"],
        Value::Null
    );
}

fn base64_id(kind: &str, id: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

const NESTED: &str = r#"
query Nested($first: Int) {
  products(first: $first) {
    edges { node { id name
      skus { id code color size price { amount } available stockStatus }
      images { url alt }
      categories { id slug name }
    } }
  }
}"#;

#[tokio::test]
async fn nested_lists_cost_the_same_statements_for_5_and_50_products() {
    // Caches off: this measures the DataLoader batching alone. The batching window is widened
    // because an unoptimised test build may take longer than the production window to walk 50
    // nodes; what the window costs in latency is measured by the benchmarks, not here.
    let app = TestApp::spawn_with(Options {
        cache: false,
        loader_delay_us: Some(20_000),
        ..Options::default()
    })
    .await;
    let mut counts = Vec::new();
    for first in [5, 50, 5, 50] {
        let before = app.statements();
        let data = app.data(NESTED, json!({ "first": first })).await;
        let after = app.statements();
        let edges = data["products"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), first);
        assert!(
            edges
                .iter()
                .all(|e| !e["node"]["skus"].as_array().unwrap().is_empty())
        );
        assert!(
            edges
                .iter()
                .all(|e| !e["node"]["categories"].as_array().unwrap().is_empty())
        );
        counts.push(after - before);
    }
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "statements per request differ: {counts:?}"
    );
    assert!(
        counts[0] <= 5,
        "page + skus + images + categories of products + tree: {counts:?}"
    );
}

#[tokio::test]
async fn warm_cache_serves_product_detail_without_sql() {
    let app = TestApp::spawn().await;
    let id = ids(&page(&app, json!({ "first": 1, "sort": "PRICE_DESC" })).await).remove(0);
    let cold = app.data(DETAIL, json!({ "id": id })).await;
    let before = app.statements();
    let warm = app.data(DETAIL, json!({ "id": id })).await;
    assert_eq!(
        app.statements() - before,
        0,
        "a warm product(id) sends no SQL"
    );
    assert_eq!(cold, warm);

    // a second process (same database, same Redis, empty in-process cache) is served by Redis
    let replica = ruizhu::app::App::build(app.app.settings.clone()).unwrap();
    let request = async_graphql::Request::new(DETAIL)
        .variables(async_graphql::Variables::from_json(json!({ "id": id })));
    let response = replica.schema.execute(request).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    assert_eq!(response.data.into_json().unwrap(), warm);
    assert_eq!(
        replica.db.statements().get(),
        0,
        "served from Redis, not MySQL"
    );
}

#[tokio::test]
async fn catalog_is_served_from_mysql_when_redis_dies() {
    let mut redis = OwnRedis::start().await;
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url.clone()),
        ..Options::default()
    })
    .await;
    let listing = page(&app, json!({ "first": 10 })).await;
    let ids = ids(&listing);
    app.data(DETAIL, json!({ "id": ids[0] })).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    redis.kill();

    // cached in process, and not cached anywhere: both answer from MySQL or memory
    for id in &ids {
        let p = app.data(DETAIL, json!({ "id": id })).await;
        assert_eq!(p["product"]["id"], *id);
    }
    let again = page(
        &app,
        json!({ "first": 10, "after": listing["pageInfo"]["endCursor"] }),
    )
    .await;
    assert_eq!(again["edges"].as_array().unwrap().len(), 10);
    let started = std::time::Instant::now();
    for _ in 0..20 {
        app.data(NESTED, json!({ "first": 20 })).await;
    }
    // the breaker keeps Redis out of the request path: 20 requests never wait 20 timeouts
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // still ready: a Redis outage must not take every replica out of its load balancer
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["redis"], "down");
    assert_eq!(body["mysql"], "up");
}

#[tokio::test]
async fn starts_and_serves_with_no_redis_at_all() {
    // nothing listens on this port
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(Options {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..Options::default()
    })
    .await;
    let p = page(&app, json!({ "first": 3 })).await;
    assert_eq!(p["edges"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn demo_seed_is_idempotent() {
    let app = TestApp::spawn().await;
    let mut conn = app.app.db.conn().await.unwrap();
    let second = domain::catalog::seed::seed_demo_catalog(&mut conn)
        .await
        .unwrap();
    let third = domain::catalog::seed::seed_demo_catalog(&mut conn)
        .await
        .unwrap();
    assert_eq!(second, third);
    assert!(second.categories >= 8 && second.products >= 60 && second.skus >= 200);
    let p = page(&app, json!({})).await;
    assert_eq!(p["totalCount"], 62);
}
