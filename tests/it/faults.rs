//! What a dependency failing looks like from the API (the fault drills in `bench/` exercise
//! the same paths under load, with real restarts): a request stuck behind MySQL is answered
//! at its deadline with a retryable error and its retry makes exactly one order; connections
//! MySQL dropped cost at most one failed request, never an `INTERNAL`.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::harness::Options;
use crate::harness_id;
use crate::orders::{PLACE, app, buyer, skus};

fn short_deadline(s: &mut ruizhu::config::Settings) {
    s.http.request_timeout_ms = 1_000;
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_retryably_and_its_retry_makes_one_order() {
    let t = app(Options {
        tweak: Some(short_deadline),
        ..Options::default()
    })
    .await;
    let b = buyer(&t, "deadline").await;
    let (sku, stock_before) = skus(&t, 1).await[0];

    // another session holds the SKU's row lock, so the checkout's stock update waits on it
    let mut locker = t.app.db.conn().await.unwrap();
    diesel::sql_query("START TRANSACTION")
        .execute(&mut locker)
        .await
        .unwrap();
    diesel::sql_query(format!("SELECT id FROM skus WHERE id = {sku} FOR UPDATE"))
        .execute(&mut locker)
        .await
        .unwrap();

    let input = json!({ "i": { "idempotencyKey": "deadline-1", "addressId": b.address,
        "lines": [{ "skuId": harness_id("Sku", sku), "quantity": 1 }] } });
    let started = Instant::now();
    let response = t
        .client
        .post(t.url("/graphql"))
        .bearer_auth(&b.token)
        .json(&json!({ "query": PLACE, "variables": input }))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["reason"], "TIMEOUT",
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(1_000) && waited < Duration::from_millis(3_000),
        "answered after {waited:?}"
    );

    diesel::sql_query("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    drop(locker);

    // the client retries with the same key: one order, one unit of stock
    let mut order_no = None;
    for _ in 0..20 {
        let (status, body) = t.post_as(&b.token, PLACE, input.clone()).await;
        if status == 200 && body["data"]["placeOrder"]["order"]["orderNo"].is_string() {
            order_no = body["data"]["placeOrder"]["order"]["orderNo"]
                .as_str()
                .map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let order_no = order_no.expect("the retry placed the order");
    let (again, body) = t.post_as(&b.token, PLACE, input.clone()).await;
    assert_eq!(again, 200);
    assert_eq!(body["data"]["placeOrder"]["replayed"], true, "{body}");
    assert_eq!(
        body["data"]["placeOrder"]["order"]["orderNo"],
        order_no.as_str()
    );

    use domain::schema::{orders, skus as sku_table};
    let mut conn = t.app.db.conn().await.unwrap();
    let count: i64 = orders::table
        .filter(orders::member_id.eq(b.member_id))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "one order for the key");
    let stock: i32 = sku_table::table
        .find(sku)
        .select(sku_table::stock)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(stock, stock_before - 1, "one unit reserved");
}

#[tokio::test]
async fn connections_mysql_dropped_cost_at_most_one_retryable_failure() {
    let t = app(Options {
        cache: false,
        pool_size: Some(4),
        ..Options::default()
    })
    .await;
    let query = "{ products(first: 3) { edges { node { id skus { id } } } } }";
    // open every pooled connection
    let warm: Vec<_> = (0..8).map(|_| t.post(query, json!({}))).collect();
    for (status, body) in futures::future::join_all(warm).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(t.app.db.pool_usage().0, 4, "all four connections open");

    // MySQL drops them all (as a restart does), from a connection of its own
    let database: String = {
        let mut conn = t.app.db.conn().await.unwrap();
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        diesel::sql_query("SELECT DATABASE() AS name")
            .get_result::<Name>(&mut conn)
            .await
            .unwrap()
            .name
    };
    let base = crate::harness::mysql_base();
    let mut admin =
        <diesel_async::AsyncMysqlConnection as diesel_async::AsyncConnection>::establish(&base)
            .await
            .unwrap();
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let ids: Vec<Id> = diesel::sql_query(format!(
        "SELECT CAST(id AS SIGNED) AS id FROM information_schema.processlist WHERE db = '{database}' AND id <> CONNECTION_ID()"
    ))
    .load(&mut admin)
    .await
    .unwrap();
    assert!(
        ids.len() >= 4,
        "found the pool's connections: {}",
        ids.len()
    );
    let killed: Vec<String> = ids.iter().map(|Id { id }| id.to_string()).collect();
    for id in &killed {
        let _ = diesel::sql_query(format!("KILL {id}"))
            .execute(&mut admin)
            .await;
    }
    // KILL only marks a session: wait until MySQL has really closed them, as after a restart
    let gone = format!(
        "SELECT COUNT(*) AS id FROM information_schema.processlist WHERE id IN ({})",
        killed.join(",")
    );
    for _ in 0..100 {
        let left: Id = diesel::sql_query(&gone)
            .get_result(&mut admin)
            .await
            .unwrap();
        if left.id == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut failures = Vec::new();
    for _ in 0..12 {
        let (status, body) = t.post(query, json!({})).await;
        if body["errors"].is_array() {
            failures.push((
                status,
                body["errors"][0]["extensions"]["code"].clone(),
                body["errors"][0]["message"].clone(),
            ));
        } else {
            assert_eq!(status, 200, "{body}");
            assert!(body["data"]["products"]["edges"][0]["node"]["id"].is_string());
        }
    }
    assert!(failures.len() <= 1, "more than one failure: {failures:?}");
    for (_, code, _) in &failures {
        assert_eq!(
            code, "SERVICE_UNAVAILABLE",
            "a lost connection is retryable, not INTERNAL"
        );
    }
}
