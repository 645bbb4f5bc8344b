//! Cart, checkout and orders over real HTTP: stock is never oversold under contention,
//! checkout is idempotent, the sweeper releases stock exactly once, transitions follow the
//! state machine, guards hold, and the inventory ledger always sums to the stock.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::{Options, TestApp};
use crate::harness_id;

const LOGIN: &str =
    r#"mutation L($c: String!) { loginWithWeChat(code: $c) { accessToken member { id } } }"#;
const ADD_ADDRESS: &str =
    r#"mutation A($i: AddressInput!) { addAddress(input: $i) { address { id } errors { code } } }"#;
const PLACE: &str = r#"mutation P($i: PlaceOrderInput!) {
  placeOrder(input: $i) {
    replayed
    order { id orderNo status total { amount } subtotal { amount } lines { skuCode quantity unitPrice { amount } lineTotal { amount } productName }
            shippingAddress { recipient phoneMasked city } paymentDeadline events { fromStatus toStatus actor } }
    errors { code field message skuId }
  }
}"#;

struct Buyer {
    token: String,
    member_id: u64,
    address: String,
}

async fn app(options: Options) -> TestApp {
    TestApp::spawn_with(Options {
        dev_login: true,
        ..options
    })
    .await
}

async fn buyer(app: &TestApp, name: &str) -> Buyer {
    let data = app.data(LOGIN, json!({ "c": format!("dev:{name}") })).await;
    let token = data["loginWithWeChat"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = data["loginWithWeChat"]["member"]["id"].as_str().unwrap();
    let member_id = decode_id(member);
    let input = json!({ "recipient": name, "phone": "13812345678", "province": "上海市", "city": "上海市",
                        "district": "黄浦区", "detail": "中山东一路 18 号" });
    let body = app
        .post_as(&token, ADD_ADDRESS, json!({ "i": input }))
        .await
        .1;
    let address = body["data"]["addAddress"]["address"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    Buyer {
        token,
        member_id,
        address,
    }
}

fn decode_id(id: &str) -> u64 {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap();
    String::from_utf8(raw)
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// Active SKUs of published products, with their stock.
async fn skus(app: &TestApp, n: usize) -> Vec<(u64, i32)> {
    use domain::schema::{products, skus};
    let mut conn = app.app.db.conn().await.unwrap();
    skus::table
        .inner_join(products::table)
        .filter(products::status.eq("PUBLISHED"))
        .filter(skus::status.eq("ACTIVE"))
        .order(skus::id)
        .limit(i64::try_from(n).unwrap())
        .select((skus::id, skus::stock))
        .load(&mut conn)
        .await
        .unwrap()
}

/// One active SKU from each of `n` different published products.
async fn skus_of_distinct_products(app: &TestApp, n: usize) -> Vec<u64> {
    let all = skus(app, 500).await;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (sku, _) in all {
        use domain::schema::skus;
        let mut conn = app.app.db.conn().await.unwrap();
        let product: u64 = skus::table
            .find(sku)
            .select(skus::product_id)
            .first(&mut conn)
            .await
            .unwrap();
        if seen.insert(product) {
            out.push(sku);
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// Sets a SKU's stock through the ledger (as operations would).
async fn set_stock(app: &TestApp, sku: u64, target: i32) {
    let current = stock_of(app, sku).await;
    if current != target {
        app.app
            .catalog
            .adjust_stock(sku, target - current, "test setup", 1)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn stock_of(app: &TestApp, sku: u64) -> i32 {
    use domain::schema::skus;
    let mut conn = app.app.db.conn().await.unwrap();
    skus::table
        .find(sku)
        .select(skus::stock)
        .first(&mut conn)
        .await
        .unwrap()
}

async fn assert_ledger_matches(app: &TestApp, sku: u64) {
    let stock = stock_of(app, sku).await;
    assert!(stock >= 0);
    assert_eq!(
        app.app.catalog.ledger_sum(sku).await.unwrap(),
        i64::from(stock),
        "ledger of SKU {sku}"
    );
}

async fn place(app: &TestApp, b: &Buyer, key: &str, lines: &[(u64, i32)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({ "skuId": harness_id("Sku", *s), "quantity": q }))
        .collect();
    let input = json!({ "idempotencyKey": key, "lines": lines, "addressId": b.address });
    let (status, body) = app.post_as(&b.token, PLACE, json!({ "i": input })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "no top-level errors: {body}");
    body["data"]["placeOrder"].clone()
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn buyers(app: &TestApp, n: usize) -> Vec<Buyer> {
    futures::stream::iter(0..n)
        .map(|i| async move { buyer(app, &format!("b{i}")).await })
        .buffer_unordered(32)
        .collect()
        .await
}

#[tokio::test]
async fn four_hundred_buyers_never_oversell_one_hundred_units() {
    let app = app(Options {
        pool_size: Some(24),
        ..Options::default()
    })
    .await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 100).await;
    let buyers = buyers(&app, 400).await;
    let results: Vec<(i32, Value)> =
        futures::future::join_all(buyers.iter().enumerate().map(|(i, b)| {
            let app = &app;
            async move {
                let q = i32::try_from(i % 3 + 1).unwrap();
                (q, place(app, b, &key(), &[(sku, q)]).await)
            }
        }))
        .await;
    let mut sold = 0;
    let mut failures = 0;
    for (q, r) in &results {
        if r["order"].is_null() {
            assert_eq!(r["errors"][0]["code"], "OUT_OF_STOCK", "{r}");
            assert_eq!(r["errors"][0]["skuId"], harness_id("Sku", sku));
            failures += 1;
        } else {
            assert_eq!(r["order"]["status"], "PENDING_PAYMENT");
            assert_eq!(
                r["order"]["lines"][0]["quantity"], *q,
                "every success has its units"
            );
            sold += q;
        }
    }
    let remaining = stock_of(&app, sku).await;
    assert_eq!(sold + remaining, 100, "sold {sold} + remaining {remaining}");
    assert!(
        (0..3).contains(&remaining),
        "sold out to the last possible unit: {remaining} left"
    );
    assert!(failures > 0);
    assert_ledger_matches(&app, sku).await;
}

#[tokio::test]
async fn multi_sku_orders_under_contention_do_not_deadlock_fail() {
    let app = app(Options {
        pool_size: Some(24),
        ..Options::default()
    })
    .await;
    let hot: Vec<u64> = skus(&app, 3).await.into_iter().map(|s| s.0).collect();
    for &s in &hot {
        set_stock(&app, s, 40).await;
    }
    let buyers = buyers(&app, 90).await;
    let results = futures::future::join_all(buyers.iter().enumerate().map(|(i, b)| {
        let app = &app;
        let hot = &hot;
        async move {
            // every buyer takes two of the three hot SKUs, listed in varying order
            let mut lines = vec![(hot[i % 3], 1), (hot[(i + 1) % 3], 1)];
            if i % 2 == 0 {
                lines.reverse();
            }
            place(app, b, &key(), &lines).await
        }
    }))
    .await;
    let mut sold: HashMap<String, i32> = HashMap::new();
    for r in &results {
        match r["order"].as_object() {
            Some(order) => {
                for line in order["lines"].as_array().unwrap() {
                    *sold
                        .entry(line["skuCode"].as_str().unwrap().to_owned())
                        .or_default() += 1;
                }
            }
            None => assert_eq!(
                r["errors"][0]["code"], "OUT_OF_STOCK",
                "only stock may refuse: {r}"
            ),
        }
    }
    let total_sold: i32 = sold.values().sum();
    let mut remaining = 0;
    for &s in &hot {
        remaining += stock_of(&app, s).await;
        assert_ledger_matches(&app, s).await;
    }
    assert_eq!(total_sold + remaining, 120);
}

#[tokio::test]
async fn one_key_fifty_concurrent_requests_one_order() {
    let app = app(Options::default()).await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 50).await;
    let b = buyer(&app, "idem").await;
    let k = key();
    let lines = [(sku, 2)];
    let results = futures::future::join_all((0..50).map(|_| place(&app, &b, &k, &lines))).await;
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["order"]["id"].as_str().unwrap_or_else(|| panic!("{r}")))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one order for one key");
    assert_eq!(results.iter().filter(|r| r["replayed"] == false).count(), 1);
    assert_eq!(stock_of(&app, sku).await, 48, "stock reserved once");
    {
        use domain::schema::orders;
        let mut conn = app.app.db.conn().await.unwrap();
        let n: i64 = orders::table
            .filter(orders::member_id.eq(b.member_id))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // a replay later returns the identical order
    let replay = place(&app, &b, &k, &[(sku, 2)]).await;
    let first = results.iter().find(|r| r["replayed"] == false).unwrap();
    assert_eq!(replay["order"], first["order"]);
    assert_eq!(replay["replayed"], true);
    // the same key with different input is refused
    let other = place(&app, &b, &k, &[(sku, 3)]).await;
    assert_eq!(other["errors"][0]["code"], "IDEMPOTENCY_KEY_REUSED");
    assert!(other["order"].is_null());
    // another member may use the same key string for their own checkout
    let c = buyer(&app, "idem2").await;
    let theirs = place(&app, &c, &k, &[(sku, 1)]).await;
    assert!(theirs["order"].is_object(), "{theirs}");
    assert_ledger_matches(&app, sku).await;
}

#[tokio::test]
async fn expired_orders_are_cancelled_once_by_concurrent_sweepers() {
    let app = app(Options {
        payment_window_secs: Some(1),
        ..Options::default()
    })
    .await;
    let list = skus(&app, 2).await;
    let (a, b_sku) = (list[0].0, list[1].0);
    set_stock(&app, a, 30).await;
    set_stock(&app, b_sku, 30).await;
    let b = buyer(&app, "late").await;
    for _ in 0..12 {
        let r = place(&app, &b, &key(), &[(a, 2), (b_sku, 1)]).await;
        assert!(r["order"].is_object(), "{r}");
    }
    assert_eq!(stock_of(&app, a).await, 6);
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let orders = app.app.orders.clone();
    let (x, y) = tokio::join!(orders.sweep_expired(), app.app.orders.sweep_expired());
    let (x, y) = (x.unwrap(), y.unwrap());
    let again = app.app.orders.sweep_expired().await.unwrap();
    assert_eq!(
        x + y + again,
        12,
        "each order cancelled once ({x} + {y} + {again})"
    );
    assert_eq!(again, 0);
    assert_eq!(stock_of(&app, a).await, 30, "stock released exactly once");
    assert_eq!(stock_of(&app, b_sku).await, 30);
    assert_ledger_matches(&app, a).await;
    assert_ledger_matches(&app, b_sku).await;
    let mine = app
        .post_as(&b.token, "{ me { orders(first: 50) { totalCount edges { node { status events { toStatus actor } } } } } }", json!({}))
        .await
        .1;
    let edges = mine["data"]["me"]["orders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 12);
    for e in edges {
        assert_eq!(e["node"]["status"], "CANCELLED");
        let events = e["node"]["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "placed, then cancelled once: {events:?}");
        assert_eq!(events[1]["actor"], "SYSTEM");
    }
}

const SHIP: &str = r#"mutation S($id: ID!) { shipOrder(orderId: $id, carrier: "SF Express", trackingNo: "SF1234567890") { order { status carrier trackingNo } errors { code } } }"#;
const CANCEL: &str =
    r#"mutation C($id: ID!) { cancelOrder(orderId: $id) { order { status } errors { code } } }"#;
const RECEIVED: &str =
    r#"mutation R($id: ID!) { confirmReceipt(orderId: $id) { order { status } errors { code } } }"#;

async fn staff_token(app: &TestApp, username: &str, role: domain::identity::Role) -> String {
    let pw = format!("{username}-pass-12345");
    app.app
        .identity
        .create_staff(username, &SecretString::from(pw.clone()), role, "")
        .await
        .unwrap();
    let q = r#"mutation S($u: String!, $p: String!) { staffLogin(username: $u, password: $p) { accessToken } }"#;
    app.data(q, json!({ "u": username, "p": pw })).await["staffLogin"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn payload(body: &Value) -> Value {
    body["data"]
        .as_object()
        .and_then(|d| d.values().next().cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn lifecycle_follows_the_state_machine_and_guards_hold() {
    use domain::identity::Role;
    let app = app(Options::default()).await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 20).await;
    let alice = buyer(&app, "alice").await;
    let bob = buyer(&app, "bob").await;
    let ops = staff_token(&app, "ops1", Role::Ops).await;
    let advisor = staff_token(&app, "adv1", Role::Advisor).await;
    let placed = place(&app, &alice, &key(), &[(sku, 1)]).await;
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    let vars = json!({ "id": id });

    // other people's orders
    let seen = app
        .post_as(
            &bob.token,
            "query O($id: ID!) { order(id: $id) { id } }",
            vars.clone(),
        )
        .await
        .1;
    assert!(
        seen["data"]["order"].is_null(),
        "another member sees nothing: {seen}"
    );
    let r = payload(&app.post_as(&bob.token, CANCEL, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "NOT_FOUND");
    let (_, r) = app.post(CANCEL, vars.clone()).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let (_, r) = app.post_as(&advisor, CANCEL, vars.clone()).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "advisors do not cancel orders"
    );
    // customers and advisors cannot ship; nobody ships an unpaid order
    for token in [&alice.token, &advisor] {
        let (_, r) = app.post_as(token, SHIP, vars.clone()).await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    let r = payload(&app.post_as(&ops, SHIP, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "INVALID_ORDER_TRANSITION", "{r}");
    let r = payload(&app.post_as(&alice.token, RECEIVED, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "INVALID_ORDER_TRANSITION");
    // staff see it
    let seen = app
        .post_as(
            &advisor,
            "query O($id: ID!) { order(id: $id) { id status } }",
            vars.clone(),
        )
        .await
        .1;
    assert_eq!(seen["data"]["order"]["status"], "PENDING_PAYMENT");

    // paid (payments call this) → shipped → delivered
    app.app
        .orders
        .mark_paid(decode_id(&id), Some("test payment".into()))
        .await
        .unwrap()
        .unwrap();
    let r = payload(&app.post_as(&alice.token, CANCEL, vars.clone()).await.1);
    assert_eq!(
        r["errors"][0]["code"], "INVALID_ORDER_TRANSITION",
        "paid orders are refunded, not cancelled"
    );
    let r = payload(&app.post_as(&ops, SHIP, vars.clone()).await.1);
    assert_eq!(r["order"]["status"], "SHIPPED", "{r}");
    assert_eq!(r["order"]["trackingNo"], "SF1234567890");
    let r = payload(&app.post_as(&ops, SHIP, vars.clone()).await.1);
    assert_eq!(
        r["errors"][0]["code"], "INVALID_ORDER_TRANSITION",
        "shipped twice"
    );
    let r = payload(&app.post_as(&bob.token, RECEIVED, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "NOT_FOUND");
    let r = payload(&app.post_as(&alice.token, RECEIVED, vars.clone()).await.1);
    assert_eq!(r["order"]["status"], "DELIVERED");
    let timeline = app
        .post_as(
            &alice.token,
            "query O($id: ID!) { order(id: $id) { events { fromStatus toStatus actor } } }",
            vars.clone(),
        )
        .await
        .1;
    let statuses: Vec<&str> = timeline["data"]["order"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["toStatus"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED"]
    );
    assert_eq!(
        app.app.orders.auto_complete().await.unwrap(),
        0,
        "not due for a week"
    );

    // the owner cancels an unpaid order; stock comes back once; a second cancel is refused
    let second = place(&app, &alice, &key(), &[(sku, 3)]).await;
    let before = stock_of(&app, sku).await;
    let vars2 = json!({ "id": second["order"]["id"] });
    let r = payload(&app.post_as(&alice.token, CANCEL, vars2.clone()).await.1);
    assert_eq!(r["order"]["status"], "CANCELLED");
    assert_eq!(stock_of(&app, sku).await, before + 3);
    let r = payload(&app.post_as(&ops, CANCEL, vars2).await.1);
    assert_eq!(r["errors"][0]["code"], "INVALID_ORDER_TRANSITION");
    assert_ledger_matches(&app, sku).await;

    // staff lists: members are refused, staff filter by status
    let list = r#"{ orders(first: 10, filter: { status: [DELIVERED] }) { totalCount edges { node { status } } } }"#;
    let (_, r) = app.post_as(&alice.token, list, json!({})).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let r = app.post_as(&advisor, list, json!({})).await.1;
    assert_eq!(r["data"]["orders"]["totalCount"], 1, "{r}");
}

#[tokio::test]
async fn checkout_refusals_are_typed_and_leave_nothing_behind() {
    let app = app(Options::default()).await;
    let list = skus(&app, 2).await;
    let (sku, other) = (list[0].0, list[1].0);
    set_stock(&app, sku, 10).await;
    let alice = buyer(&app, "refuse-a").await;
    let bob = buyer(&app, "refuse-b").await;
    let input = |key: &str, lines: Value, address: &str| json!({ "i": { "idempotencyKey": key, "lines": lines, "addressId": address } });
    let cases = vec![
        ("EMPTY_ORDER", input(&key(), json!([]), &alice.address)),
        (
            "ADDRESS_NOT_FOUND",
            input(
                &key(),
                json!([{ "skuId": harness_id("Sku", sku), "quantity": 1 }]),
                &bob.address,
            ),
        ),
        (
            "OUT_OF_STOCK",
            input(
                &key(),
                json!([{ "skuId": harness_id("Sku", sku), "quantity": 11 }]),
                &alice.address,
            ),
        ),
        (
            "INVALID_INPUT",
            input(
                &key(),
                json!([{ "skuId": harness_id("Sku", sku), "quantity": 0 }]),
                &alice.address,
            ),
        ),
        (
            "INVALID_INPUT",
            input(
                &key(),
                json!([{ "skuId": harness_id("Sku", sku), "quantity": 100 }]),
                &alice.address,
            ),
        ),
        (
            "INVALID_INPUT",
            input(
                "short",
                json!([{ "skuId": harness_id("Sku", sku), "quantity": 1 }]),
                &alice.address,
            ),
        ),
        (
            "SKU_UNAVAILABLE",
            input(
                &key(),
                json!([{ "skuId": harness_id("Sku", 9_999_999), "quantity": 1 }]),
                &alice.address,
            ),
        ),
    ];
    for (code, vars) in cases {
        let body = app.post_as(&alice.token, PLACE, vars.clone()).await.1;
        assert_eq!(
            body["data"]["placeOrder"]["errors"][0]["code"], code,
            "{vars}: {body}"
        );
        assert!(body["data"]["placeOrder"]["order"].is_null());
    }
    // a malformed id is a top-level BAD_USER_INPUT
    let body = app
        .post_as(
            &alice.token,
            PLACE,
            input(
                &key(),
                json!([{ "skuId": "nope", "quantity": 1 }]),
                &alice.address,
            ),
        )
        .await
        .1;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(stock_of(&app, sku).await, 10, "refusals reserve nothing");

    // multi-line: the second line lacking stock refuses the whole order, first line untouched
    set_stock(&app, other, 1).await;
    let r = place(&app, &alice, &key(), &[(sku, 2), (other, 2)]).await;
    assert_eq!(r["errors"][0]["code"], "OUT_OF_STOCK");
    assert_eq!(r["errors"][0]["skuId"], harness_id("Sku", other));
    assert_eq!(stock_of(&app, sku).await, 10);

    // purchase limit across orders
    {
        use domain::schema::skus;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::update(skus::table.find(sku))
            .set(skus::purchase_limit.eq(Some(2)))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    assert!(place(&app, &alice, &key(), &[(sku, 2)]).await["order"].is_object());
    let r = place(&app, &alice, &key(), &[(sku, 1)]).await;
    assert_eq!(r["errors"][0]["code"], "PURCHASE_LIMIT_EXCEEDED");
    assert!(
        place(&app, &bob, &key(), &[(sku, 2)]).await["order"].is_object(),
        "the limit is per member"
    );

    // snapshots: a later price change does not touch the order
    let r = place(&app, &bob, &key(), &[(other, 1)]).await;
    let price = r["order"]["lines"][0]["unitPrice"]["amount"]
        .as_i64()
        .unwrap();
    assert_eq!(r["order"]["total"]["amount"], price);
    assert_eq!(r["order"]["shippingAddress"]["phoneMasked"], "138****5678");
    {
        use domain::schema::skus;
        let mut conn = app.app.db.conn().await.unwrap();
        diesel::update(skus::table.find(other))
            .set(skus::price_fen.eq(1))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let q =
        "query O($id: ID!) { order(id: $id) { lines { unitPrice { amount } } total { amount } } }";
    let seen = app
        .post_as(&bob.token, q, json!({ "id": r["order"]["id"] }))
        .await
        .1;
    assert_eq!(
        seen["data"]["order"]["lines"][0]["unitPrice"]["amount"],
        price
    );
    assert_ledger_matches(&app, sku).await;
    assert_ledger_matches(&app, other).await;
}

const CART: &str = "{ me { cart { lines { id quantity available unitPrice { amount } sku { id code } } subtotal { amount } total { amount } } } }";

#[tokio::test]
async fn cart_limits_flags_and_checkout_from_cart() {
    let app = app(Options::default()).await;
    let list: Vec<(u64, i32)> = skus_of_distinct_products(&app, 56)
        .await
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    let b = buyer(&app, "cart").await;
    let add = r#"mutation A($s: ID!, $q: Int!) { addCartLine(skuId: $s, quantity: $q) { errors { code field } cart { lines { id } } } }"#;
    let add_line = |sku: u64, q: i32| {
        let app = &app;
        let token = b.token.clone();
        async move {
            app.post_as(&token, add, json!({ "s": harness_id("Sku", sku), "q": q }))
                .await
                .1["data"]["addCartLine"]
                .clone()
        }
    };
    let (s1, s2) = (list[0].0, list[1].0);
    set_stock(&app, s1, 10).await;
    set_stock(&app, s2, 10).await;
    assert!(
        add_line(s1, 2).await["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        add_line(s1, 1).await["errors"]
            .as_array()
            .unwrap()
            .is_empty(),
        "adds to the same line"
    );
    assert!(
        add_line(s2, 1).await["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for q in [0, 100] {
        assert_eq!(add_line(s1, q).await["errors"][0]["code"], "INVALID_INPUT");
    }
    assert_eq!(
        add_line(s1, 97).await["errors"][0]["code"],
        "LIMIT_REACHED",
        "99 per line"
    );
    assert_eq!(
        add_line(9_999_999, 1).await["errors"][0]["code"],
        "NOT_FOUND"
    );
    let cart = app.post_as(&b.token, CART, json!({})).await.1["data"]["me"]["cart"].clone();
    let lines = cart["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["quantity"], 3);
    let expected: i64 = lines
        .iter()
        .map(|l| l["unitPrice"]["amount"].as_i64().unwrap() * l["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(cart["subtotal"]["amount"], expected);

    // unpublishing a product flags its line instead of dropping it
    {
        use domain::schema::{products, skus};
        let mut conn = app.app.db.conn().await.unwrap();
        let product: u64 = skus::table
            .find(s2)
            .select(skus::product_id)
            .first(&mut conn)
            .await
            .unwrap();
        diesel::update(products::table.find(product))
            .set(products::status.eq("DRAFT"))
            .execute(&mut conn)
            .await
            .unwrap();
        app.app.catalog.invalidate_products(&[product]).await;
    }
    let cart = app.post_as(&b.token, CART, json!({})).await.1["data"]["me"]["cart"].clone();
    let lines = cart["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "kept");
    assert_eq!(lines[1]["available"], false);
    assert_eq!(
        cart["subtotal"]["amount"],
        lines[0]["unitPrice"]["amount"].as_i64().unwrap() * 3,
        "left out of totals"
    );

    // update and remove, and nobody else's lines
    let line_id = lines[1]["id"].as_str().unwrap().to_owned();
    let other = buyer(&app, "cart-other").await;
    let rm = r#"mutation R($l: ID!) { removeCartLine(lineId: $l) { errors { code } } }"#;
    let r = app
        .post_as(&other.token, rm, json!({ "l": line_id }))
        .await
        .1;
    assert_eq!(
        r["data"]["removeCartLine"]["errors"][0]["code"],
        "NOT_FOUND"
    );
    let r = app.post_as(&b.token, rm, json!({ "l": line_id })).await.1;
    assert!(
        r["data"]["removeCartLine"]["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let up = r#"mutation U($l: ID!, $q: Int!) { updateCartLine(lineId: $l, quantity: $q) { errors { code } cart { lines { quantity } } } }"#;
    let first_line = lines[0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post_as(&b.token, up, json!({ "l": first_line, "q": 2 }))
        .await
        .1;
    assert_eq!(
        r["data"]["updateCartLine"]["cart"]["lines"][0]["quantity"],
        2
    );

    // checkout from the cart empties those lines
    let input = json!({ "i": { "idempotencyKey": key(), "cartLineIds": [first_line], "addressId": b.address } });
    let r = app.post_as(&b.token, PLACE, input).await.1;
    assert_eq!(
        r["data"]["placeOrder"]["order"]["lines"][0]["quantity"], 2,
        "{r}"
    );
    let cart = app.post_as(&b.token, CART, json!({})).await.1;
    assert!(
        cart["data"]["me"]["cart"]["lines"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // at most 50 lines
    for (sku, _) in list.iter().skip(2).take(50) {
        add_line(*sku, 1).await;
    }
    let cart = app.post_as(&b.token, CART, json!({})).await.1;
    assert_eq!(
        cart["data"]["me"]["cart"]["lines"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        add_line(list[55].0, 1).await["errors"][0]["code"],
        "LIMIT_REACHED"
    );
}

#[tokio::test]
async fn stock_adjustments_are_ledgered_and_guarded() {
    use domain::identity::Role;
    let app = app(Options::default()).await;
    let sku = skus(&app, 1).await[0].0;
    let ops = staff_token(&app, "ops-adj", Role::Ops).await;
    let advisor = staff_token(&app, "adv-adj", Role::Advisor).await;
    let b = buyer(&app, "adj").await;
    let q = r#"mutation A($s: ID!, $d: Int!) { adjustStock(skuId: $s, delta: $d, reason: "cycle count") { stock errors { code } } }"#;
    let before = stock_of(&app, sku).await;
    let r = app
        .post_as(&ops, q, json!({ "s": harness_id("Sku", sku), "d": 5 }))
        .await
        .1;
    assert_eq!(r["data"]["adjustStock"]["stock"], before + 5);
    let r = app
        .post_as(
            &ops,
            q,
            json!({ "s": harness_id("Sku", sku), "d": -(before + 6) }),
        )
        .await
        .1;
    assert_eq!(
        r["data"]["adjustStock"]["errors"][0]["code"], "INVALID_INPUT",
        "never below zero"
    );
    for token in [&advisor, &b.token] {
        let (_, r) = app
            .post_as(token, q, json!({ "s": harness_id("Sku", sku), "d": 1 }))
            .await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    // staff see exact stock, customers do not
    let p = "query P($s: ID!) { product(id: $s) { skus { stock } } }";
    let product = {
        use domain::schema::skus;
        let mut conn = app.app.db.conn().await.unwrap();
        skus::table
            .find(sku)
            .select(skus::product_id)
            .first::<u64>(&mut conn)
            .await
            .unwrap()
    };
    let (_, r) = app
        .post_as(&b.token, p, json!({ "s": harness_id("Product", product) }))
        .await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let (_, r) = app
        .post_as(&advisor, p, json!({ "s": harness_id("Product", product) }))
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_ledger_matches(&app, sku).await;
}

#[tokio::test]
async fn order_lists_cost_the_same_statements_for_any_page_size() {
    use domain::identity::Role;
    let app = TestApp::spawn_with(Options {
        dev_login: true,
        loader_delay_us: Some(20_000),
        ..Options::default()
    })
    .await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 100).await;
    let b = buyer(&app, "lists").await;
    for _ in 0..20 {
        assert!(place(&app, &b, &key(), &[(sku, 1)]).await["order"].is_object());
    }
    let staff = staff_token(&app, "lister", Role::Advisor).await;
    let q = "query Q($n: Int) { orders(first: $n) { edges { node { orderNo lines { skuCode sku { code } } events { toStatus } } } } }";
    // the first request with a token also looks its session up (cached afterwards)
    app.post_as(&staff, "{ staffMe { id } }", json!({})).await;
    let mut counts = Vec::new();
    for n in [5, 20, 5, 20] {
        let before = app.statements();
        let r = app.post_as(&staff, q, json!({ "n": n })).await.1;
        assert_eq!(
            r["data"]["orders"]["edges"].as_array().unwrap().len(),
            n,
            "{r}"
        );
        counts.push(app.statements() - before);
    }
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "statements per request: {counts:?}"
    );
    assert!(counts[0] <= 6, "{counts:?}");
}

#[tokio::test]
async fn idempotency_keys_are_kept_72_hours_then_purged() {
    use domain::schema::idempotency_keys;
    let app = app(Options::default()).await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 10).await;
    let b = buyer(&app, "purge").await;
    let (old, fresh) = (key(), key());
    place(&app, &b, &old, &[(sku, 1)]).await;
    place(&app, &b, &fresh, &[(sku, 1)]).await;
    let mut conn = app.app.db.conn().await.unwrap();
    let aged = chrono::Utc::now().naive_utc() - chrono::Duration::hours(73);
    diesel::update(idempotency_keys::table.find((b.member_id, &old)))
        .set(idempotency_keys::created_at.eq(aged))
        .execute(&mut conn)
        .await
        .unwrap();
    let nearly = chrono::Utc::now().naive_utc() - chrono::Duration::hours(71);
    diesel::update(idempotency_keys::table.find((b.member_id, &fresh)))
        .set(idempotency_keys::created_at.eq(nearly))
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(app.app.orders.purge_idempotency_keys().await.unwrap(), 1);
    let left: Vec<String> = idempotency_keys::table
        .filter(idempotency_keys::member_id.eq(b.member_id))
        .select(idempotency_keys::idem_key)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, vec![fresh.clone()]);
    // the 71-hour-old key still replays its order
    assert_eq!(place(&app, &b, &fresh, &[(sku, 1)]).await["replayed"], true);
}

#[tokio::test]
async fn one_cart_checked_out_twice_at_once_makes_one_order() {
    let app = app(Options::default()).await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 50).await;
    let b = buyer(&app, "double-tap").await;
    let add =
        r#"mutation A($s: ID!) { addCartLine(skuId: $s, quantity: 2) { cart { lines { id } } } }"#;
    let r = app
        .post_as(&b.token, add, json!({ "s": harness_id("Sku", sku) }))
        .await
        .1;
    let line = r["data"]["addCartLine"]["cart"]["lines"][0]["id"].clone();
    // a double tap: two different idempotency keys, the same cart line
    let submit = |k: String| {
        let app = &app;
        let b = &b;
        let line = line.clone();
        async move {
            let input = json!({ "i": { "idempotencyKey": k, "cartLineIds": [line], "addressId": b.address } });
            app.post_as(&b.token, PLACE, input).await.1["data"]["placeOrder"].clone()
        }
    };
    let (x, y) = tokio::join!(submit(key()), submit(key()));
    let placed = [&x, &y].iter().filter(|r| r["order"].is_object()).count();
    assert_eq!(placed, 1, "{x} {y}");
    let refused = if x["order"].is_object() { &y } else { &x };
    assert_eq!(
        refused["errors"][0]["code"], "NOT_FOUND",
        "the cart line is gone: {refused}"
    );
    assert_eq!(stock_of(&app, sku).await, 48);
    assert_ledger_matches(&app, sku).await;
}
