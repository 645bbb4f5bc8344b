//! WeChat Pay end to end, against a local fake WeChat Pay (`fake_wechatpay`) that checks our
//! signatures and signs its answers: prepay and `paySign`, notifications (valid, duplicated,
//! forged in every documented way), paid-after-cancel, refunds, close and active queries.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

use crate::fake_wechatpay::FakeWechatPay;
use crate::harness::{Options, TestApp};
use crate::orders::{Buyer, buyer, decode_id, key, place, skus};

mod notify;
mod prepay;
mod reconcile;
pub(crate) mod refunds;

pub(super) const CREATE: &str = r#"mutation C($id: ID!) { createWeChatPayment(orderId: $id) {
  params { appId timeStamp nonceStr package signType paySign } development errors { code field message } } }"#;
pub(super) const ORDER: &str = r#"query O($id: ID!) { order(id: $id) { status total { amount } refunded { amount }
  payment { status transactionId amount { amount } } refunds { outRefundNo status amount { amount } automatic }
  events { fromStatus toStatus note } } }"#;

/// A server with a merchant pointed at a fresh fake WeChat Pay.
pub(super) async fn merchant_app() -> (TestApp, FakeWechatPay) {
    merchant_app_with(|_| {}).await
}

pub(super) async fn merchant_app_with(
    tweak: impl FnOnce(&mut domain::wechatpay::WechatPaySettings),
) -> (TestApp, FakeWechatPay) {
    let fake = FakeWechatPay::start().await;
    let mut settings = fake.settings();
    tweak(&mut settings);
    let app = crate::orders::app(Options {
        wechatpay: Some(settings),
        ..Options::default()
    })
    .await;
    (app, fake)
}

/// An unpaid order of one unit of the first SKU with stock.
pub(super) struct Unpaid {
    pub(super) gid: String,
    pub(super) id: u64,
    pub(super) order_no: String,
    pub(super) total: i64,
    pub(super) sku: u64,
}

pub(super) async fn unpaid_order(app: &TestApp, b: &Buyer) -> Unpaid {
    let sku = skus(app, 1).await[0].0;
    if crate::orders::stock_of(app, sku).await < 1 {
        crate::orders::set_stock(app, sku, 10).await;
    }
    let placed = place(app, b, &key(), &[(sku, 1)]).await;
    let order = &placed["order"];
    let gid = order["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed}"))
        .to_owned();
    Unpaid {
        id: decode_id(&gid),
        gid,
        order_no: order["orderNo"].as_str().unwrap().to_owned(),
        total: order["total"]["amount"].as_i64().unwrap(),
        sku,
    }
}

/// `createWeChatPayment` that must succeed; returns `params`.
pub(super) async fn create_payment(app: &TestApp, b: &Buyer, order: &Unpaid) -> Value {
    let body = app
        .post_as(&b.token, CREATE, json!({ "id": order.gid }))
        .await
        .1;
    let payload = &body["data"]["createWeChatPayment"];
    assert_eq!(payload["errors"], json!([]), "{body}");
    payload["params"].clone()
}

/// Posts a notification to `path`; returns (status, body).
pub(super) async fn post_notification(
    app: &TestApp,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, String) {
    let mut request = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub(super) async fn order_view(app: &TestApp, b: &Buyer, order: &Unpaid) -> Value {
    let body = app
        .post_as(&b.token, ORDER, json!({ "id": order.gid }))
        .await
        .1;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["order"].clone()
}

/// Rows in `payments` with a transaction, and PENDING→PAID timeline entries, of an order.
pub(super) async fn paid_records(app: &TestApp, order_id: u64) -> (i64, i64) {
    use domain::schema::{order_events, payments};
    let mut conn = app.app.db.conn().await.unwrap();
    let payments: i64 = payments::table
        .filter(payments::order_id.eq(order_id))
        .filter(payments::transaction_id.is_not_null())
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    let events: i64 = order_events::table
        .filter(order_events::order_id.eq(order_id))
        .filter(order_events::to_status.eq("PAID"))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    (payments, events)
}

/// Runs SQL against the test database (to move clocks: deadlines, prepay times).
pub(super) async fn sql(app: &TestApp, statement: &str) {
    let mut conn = app.app.db.conn().await.unwrap();
    diesel::sql_query(statement)
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Pays through the fake and delivers a valid notification; asserts 204.
pub(super) async fn pay_and_notify(app: &TestApp, fake: &FakeWechatPay, order: &Unpaid) -> Value {
    let tx = fake.pay(&order.order_no);
    let (headers, body) = fake.notification(
        "TRANSACTION.SUCCESS",
        &tx,
        &crate::fake_wechatpay::Notify::default(),
    );
    let (status, text) =
        post_notification(app, "/webhooks/wechatpay/notify", &headers, &body).await;
    assert_eq!(status, 204, "{text}");
    assert!(text.is_empty());
    tx
}

pub(super) async fn new_buyer(app: &TestApp, name: &str) -> Buyer {
    buyer(app, name).await
}

/// The owner cancels the order (it must succeed).
pub(super) async fn cancel(app: &TestApp, b: &Buyer, order: &Unpaid) {
    let (_, body) = app
        .post_as(&b.token, crate::orders::CANCEL, json!({ "id": order.gid }))
        .await;
    assert_eq!(
        body["data"]["cancelOrder"]["order"]["status"], "CANCELLED",
        "{body}"
    );
}
