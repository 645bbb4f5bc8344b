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

pub(super) const LOGIN: &str =
    r#"mutation L($c: String!) { loginWithWeChat(code: $c) { accessToken member { id } } }"#;
pub(super) const ADD_ADDRESS: &str =
    r#"mutation A($i: AddressInput!) { addAddress(input: $i) { address { id } errors { code } } }"#;
pub(super) const PLACE: &str = r#"mutation P($i: PlaceOrderInput!) {
  placeOrder(input: $i) {
    replayed
    order { id orderNo status total { amount } subtotal { amount } lines { skuCode quantity unitPrice { amount } lineTotal { amount } productName }
            shippingAddress { recipient phoneMasked city } paymentDeadline events { fromStatus toStatus actor } }
    errors { code field message skuId }
  }
}"#;

pub(super) struct Buyer {
    pub(super) token: String,
    pub(super) member_id: u64,
    pub(super) address: String,
}

pub(super) async fn app(options: Options) -> TestApp {
    TestApp::spawn_with(Options {
        dev_login: true,
        ..options
    })
    .await
}

pub(super) async fn buyer(app: &TestApp, name: &str) -> Buyer {
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

pub(super) fn decode_id(id: &str) -> u64 {
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
pub(super) async fn skus(app: &TestApp, n: usize) -> Vec<(u64, i32)> {
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
pub(super) async fn skus_of_distinct_products(app: &TestApp, n: usize) -> Vec<u64> {
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
pub(super) async fn set_stock(app: &TestApp, sku: u64, target: i32) {
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

pub(super) async fn stock_of(app: &TestApp, sku: u64) -> i32 {
    use domain::schema::skus;
    let mut conn = app.app.db.conn().await.unwrap();
    skus::table
        .find(sku)
        .select(skus::stock)
        .first(&mut conn)
        .await
        .unwrap()
}

pub(super) async fn assert_ledger_matches(app: &TestApp, sku: u64) {
    let stock = stock_of(app, sku).await;
    assert!(stock >= 0);
    assert_eq!(
        app.app.catalog.ledger_sum(sku).await.unwrap(),
        i64::from(stock),
        "ledger of SKU {sku}"
    );
}

pub(super) async fn place(app: &TestApp, b: &Buyer, key: &str, lines: &[(u64, i32)]) -> Value {
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

pub(super) fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(super) async fn buyers(app: &TestApp, n: usize) -> Vec<Buyer> {
    futures::stream::iter(0..n)
        .map(|i| async move { buyer(app, &format!("b{i}")).await })
        .buffer_unordered(32)
        .collect()
        .await
}

pub(super) const SHIP: &str = r#"mutation S($id: ID!) { shipOrder(orderId: $id, carrier: "SF Express", trackingNo: "SF1234567890") { order { status carrier trackingNo } errors { code } } }"#;
pub(super) const CANCEL: &str =
    r#"mutation C($id: ID!) { cancelOrder(orderId: $id) { order { status } errors { code } } }"#;
pub(super) const RECEIVED: &str =
    r#"mutation R($id: ID!) { confirmReceipt(orderId: $id) { order { status } errors { code } } }"#;

pub(super) async fn staff_token(
    app: &TestApp,
    username: &str,
    role: domain::identity::Role,
) -> String {
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

pub(super) fn payload(body: &Value) -> Value {
    body["data"]
        .as_object()
        .and_then(|d| d.values().next().cloned())
        .unwrap_or(Value::Null)
}

pub(super) const CART: &str = "{ me { cart { lines { id quantity available unitPrice { amount } sku { id code } } subtotal { amount } total { amount } } } }";

mod cart;
mod checkout;
mod lifecycle;
mod stock;
