//! Membership end to end: points never overdrawn and given back exactly once, coupons never
//! over-issued or used twice, one price computation for the cart quote and the order, tiers
//! upgraded on payment and reviewed yearly, tier-gated products, expiry, birthdays and guards.

use chrono::Datelike as _;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::harness::{Options, TestApp};
use crate::harness_id;
use crate::orders::{Buyer, buyer, decode_id, key, payload, set_stock, staff_token};

const ADJUST: &str = r#"mutation A($m: ID!, $d: Int!, $r: String!) {
  adjustPoints(memberId: $m, delta: $d, reason: $r) { balance entry { kind delta balanceAfter reason } errors { code field } } }"#;
const PLACE: &str = r#"mutation P($i: PlaceOrderInput!) {
  placeOrder(input: $i) {
    order { id orderNo status subtotal { amount } discount { amount } tierDiscount { amount }
            couponDiscount { amount } pointsDiscount { amount } pointsUsed shipping { amount }
            total { amount } coupon { code status } lines { unitPrice { amount } quantity } }
    errors { code field message skuId } } }"#;
const NEW_TEMPLATE: &str = r#"mutation T($i: CouponTemplateInput!) {
  createCouponTemplate(input: $i) { template { id name remaining } errors { code field message } } }"#;
const ISSUE: &str = r#"mutation I($t: ID!, $m: [ID!]) {
  issueCoupons(templateId: $t, memberIds: $m) { issued skipped soldOut errors { code field } } }"#;
const CLAIM: &str = r#"mutation C($t: ID!) { claimCoupon(templateId: $t) { coupon { code status } errors { code field } } }"#;
const ME: &str = r#"{ me { points tier { tier { code } qualifyingSpend { amount } nextTier { code }
  amountToNextTier { amount } progress } coupons { edges { node { code status } } }
  pointsHistory(first: 50) { edges { node { kind delta balanceAfter reason } } } } }"#;
const CONFIRM: &str =
    "mutation D($id: ID!) { devConfirmPayment(orderId: $id) { order { status } errors { code } } }";

async fn app() -> TestApp {
    crate::orders::app(Options::default()).await
}

/// An active SKU whose list price is between `min` and `max` fen, given 500 units of stock.
async fn sku_priced(app: &TestApp, min: i64, max: i64) -> (u64, i64) {
    use domain::schema::{products, skus};
    let mut conn = app.app.db.conn().await.unwrap();
    let (sku, price): (u64, i64) = skus::table
        .inner_join(products::table)
        .filter(products::status.eq("PUBLISHED"))
        .filter(products::min_tier_rank.is_null())
        .filter(skus::status.eq("ACTIVE"))
        .filter(skus::price_fen.between(min, max))
        .order(skus::id)
        .select((skus::id, skus::price_fen))
        .first(&mut conn)
        .await
        .unwrap_or_else(|_| panic!("a demo SKU priced {min}–{max} fen"));
    drop(conn);
    set_stock(app, sku, 500).await;
    (sku, price)
}

async fn sql(app: &TestApp, statement: &str) {
    let mut conn = app.app.db.conn().await.unwrap();
    diesel::sql_query(statement)
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn grant(app: &TestApp, ops: &str, b: &Buyer, points: i64) {
    let body = app
        .post_as(
            ops,
            ADJUST,
            json!({ "m": harness_id("Member", b.member_id), "d": points, "r": "welcome gift" }),
        )
        .await
        .1;
    assert_eq!(body["data"]["adjustPoints"]["errors"], json!([]), "{body}");
}

/// Balance, Σ delta and Σ remaining of a member's ledger: the three must always agree.
async fn ledger(app: &TestApp, member: u64) -> (i64, i64, i64) {
    use domain::schema::{members, points_ledger};
    let mut conn = app.app.db.conn().await.unwrap();
    let balance: i64 = members::table
        .find(member)
        .select(members::points_balance)
        .first(&mut conn)
        .await
        .unwrap();
    let sums: (Option<i64>, Option<i64>) = points_ledger::table
        .filter(points_ledger::member_id.eq(member))
        .select((
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(delta) AS SIGNED)",
            ),
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(remaining) AS SIGNED)",
            ),
        ))
        .first(&mut conn)
        .await
        .unwrap();
    (balance, sums.0.unwrap_or(0), sums.1.unwrap_or(0))
}

async fn assert_ledger_consistent(app: &TestApp, member: u64) -> i64 {
    let (balance, delta, remaining) = ledger(app, member).await;
    assert!(balance >= 0, "balance {balance}");
    assert_eq!(
        (delta, remaining),
        (balance, balance),
        "Σ delta and Σ remaining equal the balance"
    );
    balance
}

fn order_input(b: &Buyer, lines: &[(u64, i32)], extra: Value) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({ "skuId": harness_id("Sku", *s), "quantity": q }))
        .collect();
    let mut input = json!({ "idempotencyKey": key(), "lines": lines, "addressId": b.address });
    if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
        input.extend(extra.clone());
    }
    input
}

async fn place_with(app: &TestApp, b: &Buyer, lines: &[(u64, i32)], extra: Value) -> Value {
    let body = app
        .post_as(
            &b.token,
            PLACE,
            json!({ "i": order_input(b, lines, extra) }),
        )
        .await
        .1;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["placeOrder"].clone()
}

/// A fixed coupon template made by `ops`; returns its id.
async fn template(app: &TestApp, ops: &str, input: Value) -> String {
    let mut base = json!({
        "name": "测试券", "validFrom": "2020-01-01T00:00:00Z", "validUntil": "2099-01-01T00:00:00Z",
    });
    if let (Some(b), Some(extra)) = (base.as_object_mut(), input.as_object()) {
        b.extend(extra.clone());
    }
    let body = app.post_as(ops, NEW_TEMPLATE, json!({ "i": base })).await.1;
    let payload = &body["data"]["createCouponTemplate"];
    assert_eq!(payload["errors"], json!([]), "{body}");
    payload["template"]["id"].as_str().unwrap().to_owned()
}

async fn issue_one(app: &TestApp, ops: &str, template: &str, b: &Buyer) -> String {
    let body = app
        .post_as(
            ops,
            ISSUE,
            json!({ "t": template, "m": [harness_id("Member", b.member_id)] }),
        )
        .await
        .1;
    assert_eq!(body["data"]["issueCoupons"]["issued"], 1, "{body}");
    let me = app.post_as(&b.token, ME, json!({})).await.1;
    me["data"]["me"]["coupons"]["edges"][0]["node"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn set_rank(app: &TestApp, b: &Buyer, rank: i32) {
    sql(
        app,
        &format!(
            "UPDATE members SET tier_rank = {rank}, tier_since = NOW(6) WHERE id = {}",
            b.member_id
        ),
    )
    .await;
}

#[tokio::test]
async fn the_cart_quote_and_the_order_charge_the_same() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let alice = buyer(&app, "alice").await;
    set_rank(&app, &alice, 1).await; // silver: 3 %, free shipping from ¥500
    grant(&app, &ops, &alice, 5_000).await;
    let (sku, price) = sku_priced(&app, 30_000, 5_000_000).await;
    let t = template(
        &app,
        &ops,
        json!({ "amountOffFen": 10_000, "minSpendFen": 20_000 }),
    )
    .await;
    let code = issue_one(&app, &ops, &t, &alice).await;

    let add = r#"mutation A($s: ID!) { addCartLine(skuId: $s, quantity: 2) { errors { code } } }"#;
    let added = app
        .post_as(&alice.token, add, json!({ "s": harness_id("Sku", sku) }))
        .await
        .1;
    assert_eq!(added["data"]["addCartLine"]["errors"], json!([]), "{added}");
    let quote_q = r#"query Q($c: String, $p: Int) { me { cart { lines { id } subtotal { amount } discount { amount } total { amount }
      quote(couponCode: $c, pointsToUse: $p) { quote { subtotal { amount } tierDiscount { amount } couponDiscount { amount }
        pointsDiscount { amount } pointsUsed discount { amount } shipping { amount } total { amount } } errors { code } } } } }"#;
    let body = app
        .post_as(&alice.token, quote_q, json!({ "c": code, "p": 3_000 }))
        .await
        .1;
    let cart = &body["data"]["me"]["cart"];
    let q = &cart["quote"]["quote"];
    assert_eq!(cart["quote"]["errors"], json!([]), "{body}");

    // what the rules say, computed here independently
    let subtotal = price * 2;
    let tier = subtotal * 300 / 10_000;
    let coupon = 10_000;
    let points_discount = 3_000_i64.min((subtotal - tier - coupon) / 2);
    let goods = subtotal - tier - coupon - points_discount;
    let shipping = if goods >= 50_000 { 0 } else { 2_000 };
    assert_eq!(q["subtotal"]["amount"], subtotal);
    assert_eq!(q["tierDiscount"]["amount"], tier);
    assert_eq!(q["couponDiscount"]["amount"], coupon);
    assert_eq!(q["pointsDiscount"]["amount"], points_discount);
    assert_eq!(q["pointsUsed"], points_discount);
    assert_eq!(q["shipping"]["amount"], shipping);
    assert_eq!(q["total"]["amount"], goods + shipping);
    assert_eq!(
        cart["discount"]["amount"], tier,
        "the plain cart shows the tier discount"
    );

    let line = cart["lines"][0]["id"].as_str().unwrap();
    let placed = place_with(
        &app,
        &alice,
        &[],
        json!({ "lines": null, "cartLineIds": [line], "couponCode": code, "pointsToUse": 3_000 }),
    )
    .await;
    assert_eq!(placed["errors"], json!([]), "{placed}");
    let order = &placed["order"];
    for field in [
        "subtotal",
        "tierDiscount",
        "couponDiscount",
        "pointsDiscount",
        "discount",
        "shipping",
        "total",
    ] {
        assert_eq!(
            order[field], q[field],
            "{field} of the order equals the quote"
        );
    }
    assert_eq!(order["pointsUsed"], q["pointsUsed"]);
    assert_eq!(order["coupon"]["status"], "RESERVED");
    assert_eq!(
        assert_ledger_consistent(&app, alice.member_id).await,
        5_000 - points_discount
    );

    // paying uses the coupon for good
    let paid = app
        .post_as(&alice.token, CONFIRM, json!({ "id": order["id"] }))
        .await
        .1;
    assert_eq!(
        paid["data"]["devConfirmPayment"]["order"]["status"], "PAID",
        "{paid}"
    );
    let me = app.post_as(&alice.token, ME, json!({})).await.1;
    assert_eq!(
        me["data"]["me"]["coupons"]["edges"][0]["node"]["status"],
        "USED"
    );
}

#[tokio::test]
async fn concurrent_spends_of_the_same_points_never_overdraw() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let bob = buyer(&app, "bob").await;
    grant(&app, &ops, &bob, 1_000).await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;

    let outcomes: Vec<Value> = futures::stream::iter(0..10)
        .map(|_| async { place_with(&app, &bob, &[(sku, 1)], json!({ "pointsToUse": 300 })).await })
        .buffer_unordered(10)
        .collect()
        .await;
    let placed = outcomes.iter().filter(|o| o["errors"] == json!([])).count();
    let short = outcomes
        .iter()
        .filter(|o| o["errors"][0]["code"] == "POINTS_INSUFFICIENT")
        .count();
    assert_eq!((placed, short), (3, 7), "{outcomes:?}");
    for o in outcomes.iter().filter(|o| o["errors"] == json!([])) {
        assert_eq!(o["order"]["pointsUsed"], 300);
    }
    assert_eq!(assert_ledger_consistent(&app, bob.member_id).await, 100);

    // cancelling gives the points back, once
    let first = outcomes.iter().find(|o| o["errors"] == json!([])).unwrap();
    let id = first["order"]["id"].as_str().unwrap();
    for _ in 0..2 {
        app.post_as(&bob.token, crate::orders::CANCEL, json!({ "id": id }))
            .await;
    }
    assert_eq!(assert_ledger_consistent(&app, bob.member_id).await, 400);
}

#[tokio::test]
async fn a_coupon_of_quantity_n_is_issued_at_most_n_times_under_ten_times_n_claims() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let n = 5;
    let t = template(
        &app,
        &ops,
        json!({ "amountOffFen": 5_000, "totalQuantity": n, "claimable": true }),
    )
    .await;
    let members = crate::orders::buyers(&app, 10 * n).await;
    let outcomes: Vec<Value> = futures::stream::iter(members.iter())
        .map(|b| {
            let t = t.clone();
            let app = &app;
            async move { app.post_as(&b.token, CLAIM, json!({ "t": t })).await.1 }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let won = outcomes
        .iter()
        .filter(|o| o["data"]["claimCoupon"]["coupon"].is_object())
        .count();
    let sold_out = outcomes
        .iter()
        .filter(|o| o["data"]["claimCoupon"]["errors"][0]["code"] == "COUPON_SOLD_OUT")
        .count();
    assert_eq!((won, sold_out), (n, 9 * n), "{outcomes:?}");
    use domain::schema::{coupon_templates, coupons};
    let mut conn = app.app.db.conn().await.unwrap();
    let id = decode_id(&t);
    let issued: i32 = coupon_templates::table
        .find(id)
        .select(coupon_templates::issued_count)
        .first(&mut conn)
        .await
        .unwrap();
    let rows: i64 = coupons::table
        .filter(coupons::template_id.eq(id))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!((issued, rows), (n as i32, n as i64));

    // the per-member limit (1) holds for a second claim of another template
    let unlimited = template(&app, &ops, json!({ "percentOff": 10, "claimable": true })).await;
    let again: Vec<Value> = futures::stream::iter(0..4)
        .map(|_| {
            let t = unlimited.clone();
            let (app, b) = (&app, &members[0]);
            async move { app.post_as(&b.token, CLAIM, json!({ "t": t })).await.1 }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let ok = again
        .iter()
        .filter(|o| o["data"]["claimCoupon"]["coupon"].is_object())
        .count();
    assert_eq!(ok, 1, "{again:?}");
    assert!(
        again
            .iter()
            .any(|o| o["data"]["claimCoupon"]["errors"][0]["code"] == "LIMIT_REACHED")
    );
}

#[tokio::test]
async fn a_single_use_coupon_in_two_concurrent_orders_is_used_once() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let carol = buyer(&app, "carol").await;
    let (sku, _) = sku_priced(&app, 30_000, 50_000_000).await;
    let t = template(&app, &ops, json!({ "amountOffFen": 8_800 })).await;
    let code = issue_one(&app, &ops, &t, &carol).await;

    let outcomes: Vec<Value> = futures::stream::iter(0..2)
        .map(|_| async {
            place_with(&app, &carol, &[(sku, 1)], json!({ "couponCode": code })).await
        })
        .buffer_unordered(2)
        .collect()
        .await;
    let won: Vec<&Value> = outcomes
        .iter()
        .filter(|o| o["errors"] == json!([]))
        .collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    let lost = outcomes.iter().find(|o| o["errors"] != json!([])).unwrap();
    assert_eq!(lost["errors"][0]["code"], "COUPON_USED", "{lost}");
    assert_eq!(won[0]["order"]["couponDiscount"]["amount"], 8_800);

    // a third order while it is held: refused; after cancelling the first, it works again
    let third = place_with(&app, &carol, &[(sku, 1)], json!({ "couponCode": code })).await;
    assert_eq!(third["errors"][0]["code"], "COUPON_USED");
    let id = won[0]["order"]["id"].as_str().unwrap();
    let cancelled = app
        .post_as(&carol.token, crate::orders::CANCEL, json!({ "id": id }))
        .await
        .1;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["order"]["status"],
        "CANCELLED"
    );
    let fourth = place_with(&app, &carol, &[(sku, 1)], json!({ "couponCode": code })).await;
    assert_eq!(fourth["errors"], json!([]), "{fourth}");

    // typed refusals
    let unknown = place_with(
        &app,
        &carol,
        &[(sku, 1)],
        json!({ "couponCode": "NOPE1234" }),
    )
    .await;
    assert_eq!(unknown["errors"][0]["code"], "COUPON_NOT_FOUND");
    let dave = buyer(&app, "dave").await;
    let not_his = place_with(&app, &dave, &[(sku, 1)], json!({ "couponCode": code })).await;
    assert_eq!(
        not_his["errors"][0]["code"], "COUPON_NOT_FOUND",
        "another member's code"
    );
    let big = template(
        &app,
        &ops,
        json!({ "amountOffFen": 100, "minSpendFen": 900_000_000 }),
    )
    .await;
    let big_code = issue_one(&app, &ops, &big, &dave).await;
    let short = place_with(&app, &dave, &[(sku, 1)], json!({ "couponCode": big_code })).await;
    assert_eq!(short["errors"][0]["code"], "COUPON_MIN_SPEND");
    sql(
        &app,
        &format!(
            "UPDATE coupons SET valid_until = NOW(6) - INTERVAL 1 SECOND WHERE code = '{big_code}'"
        ),
    )
    .await;
    let expired = place_with(&app, &dave, &[(sku, 1)], json!({ "couponCode": big_code })).await;
    assert_eq!(expired["errors"][0]["code"], "COUPON_EXPIRED");
    let elsewhere = template(
        &app,
        &ops,
        json!({ "amountOffFen": 100, "productIds": [harness_id("Product", 999_999)] }),
    )
    .await;
    let elsewhere_code = issue_one(&app, &ops, &elsewhere, &dave).await;
    let na = place_with(
        &app,
        &dave,
        &[(sku, 1)],
        json!({ "couponCode": elsewhere_code }),
    )
    .await;
    assert_eq!(na["errors"][0]["code"], "COUPON_NOT_APPLICABLE");
}

#[tokio::test]
async fn a_completed_order_earns_once_even_when_its_event_comes_twice() {
    let app = crate::orders::app(Options {
        events: true,
        ..Options::default()
    })
    .await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let erin = buyer(&app, "erin").await;
    set_rank(&app, &erin, 2).await; // gold: 2 points per yuan, free shipping
    let (sku, price) = sku_priced(&app, 10_000, 50_000_000).await;
    let placed = place_with(&app, &erin, &[(sku, 1)], json!({})).await;
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    let total = placed["order"]["total"]["amount"].as_i64().unwrap();
    assert_eq!(total, price - price * 500 / 10_000);
    app.post_as(&erin.token, CONFIRM, json!({ "id": id })).await;
    app.post_as(&ops, crate::orders::SHIP, json!({ "id": id }))
        .await;
    app.post_as(&erin.token, crate::orders::RECEIVED, json!({ "id": id }))
        .await;
    let order_id = decode_id(&id);
    sql(
        &app,
        &format!("UPDATE orders SET delivered_at = NOW(6) - INTERVAL 8 DAY WHERE id = {order_id}"),
    )
    .await;
    assert_eq!(app.app.orders.auto_complete().await.unwrap(), 1);

    let expected = (total / 100) * 2;
    let mut balance = 0;
    for _ in 0..100 {
        balance = ledger(&app, erin.member_id).await.0;
        if balance > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(balance, expected, "earned by the points consumer");

    // the same event delivered again, and the same completion under another event id
    use domain::schema::outbox_events;
    let event_id: String = {
        let mut conn = app.app.db.conn().await.unwrap();
        outbox_events::table
            .filter(outbox_events::event_type.eq("order.completed"))
            .filter(outbox_events::aggregate_id.eq(order_id.to_string()))
            .select(outbox_events::event_id)
            .first(&mut conn)
            .await
            .unwrap()
    };
    let m = &app.app.membership;
    assert_eq!(
        m.earn_for_completed_order(&event_id, order_id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        m.earn_for_completed_order("0190aaaa-0000-7000-8000-000000000001", order_id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        assert_ledger_consistent(&app, erin.member_id).await,
        expected
    );
    let me = app.post_as(&erin.token, ME, json!({})).await.1;
    let history = &me["data"]["me"]["pointsHistory"]["edges"];
    assert_eq!(history.as_array().unwrap().len(), 1, "{me}");
    assert_eq!(history[0]["node"]["kind"], "EARN");
}

#[tokio::test]
async fn refunds_give_points_back_in_proportion_and_once() {
    let (app, fake) = crate::payments::merchant_app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let fay = buyer(&app, "fay").await;
    grant(&app, &ops, &fay, 10_000).await;
    let (sku, _) = sku_priced(&app, 100_000, 50_000_000).await;
    let placed = place_with(&app, &fay, &[(sku, 1)], json!({ "pointsToUse": 10_000 })).await;
    assert_eq!(placed["errors"], json!([]), "{placed}");
    let o = &placed["order"];
    assert_eq!(o["pointsUsed"], 10_000);
    let order = crate::payments::Unpaid {
        gid: o["id"].as_str().unwrap().to_owned(),
        id: decode_id(o["id"].as_str().unwrap()),
        order_no: o["orderNo"].as_str().unwrap().to_owned(),
        total: o["total"]["amount"].as_i64().unwrap(),
        sku,
    };
    crate::payments::create_payment(&app, &fay, &order).await;
    crate::payments::pay_and_notify(&app, &fake, &order).await;
    assert_eq!(assert_ledger_consistent(&app, fay.member_id).await, 0);

    // a quarter refunded: a quarter of the points back, however often WeChat Pay says so
    let quarter = order.total / 4;
    let r = crate::payments::refunds::refund(&app, &ops, &order, quarter, "部分退款").await;
    assert_eq!(r["data"]["refundOrder"]["errors"], json!([]), "{r}");
    let no = format!("{}R1", order.order_no);
    let (h, b) = crate::payments::refunds::refund_notice(
        &fake,
        &order,
        &no,
        "SUCCESS",
        &crate::fake_wechatpay::Notify::default(),
    );
    for _ in 0..2 {
        let (status, _) =
            crate::payments::post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
                .await;
        assert_eq!(status, 204);
    }
    let back = 10_000 * quarter / order.total;
    assert_eq!(assert_ledger_consistent(&app, fay.member_id).await, back);

    // the rest refunded: every point is back
    let r = crate::payments::refunds::refund(&app, &ops, &order, order.total - quarter, "全部退款")
        .await;
    assert_eq!(r["data"]["refundOrder"]["errors"], json!([]), "{r}");
    let no = format!("{}R2", order.order_no);
    let (h, b) = crate::payments::refunds::refund_notice(
        &fake,
        &order,
        &no,
        "SUCCESS",
        &crate::fake_wechatpay::Notify::default(),
    );
    for _ in 0..2 {
        crate::payments::post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b).await;
    }
    assert_eq!(assert_ledger_consistent(&app, fay.member_id).await, 10_000);
}

#[tokio::test]
async fn a_payment_raises_the_tier_at_once_and_the_yearly_review_lowers_it() {
    let app = app().await;
    let admin = staff_token(&app, "admin", domain::identity::Role::Admin).await;
    let gus = buyer(&app, "gus").await;
    let (sku, price) = sku_priced(&app, 10_000, 50_000_000).await;
    // silver from ¥100 of spend, for this test
    let upsert = r#"mutation U($i: TierInput!) { upsertTier(input: $i) { tier { code minSpend { amount } } errors { code field message } } }"#;
    let body = app
        .post_as(
            &admin,
            upsert,
            json!({ "i": { "code": "SILVER", "rank": 1, "name": "银卡", "nameEn": "Silver",
                "minSpendFen": 10_000, "discountBasisPoints": 300, "pointsPerYuan": 1,
                "vipConsultation": false, "freeShippingThresholdFen": 50_000 } }),
        )
        .await
        .1;
    assert_eq!(body["data"]["upsertTier"]["errors"], json!([]), "{body}");
    let moved = app
        .post_as(
            &admin,
            upsert,
            json!({ "i": { "code": "SILVER", "rank": 5, "name": "银卡", "nameEn": "Silver",
                "minSpendFen": 10_000, "discountBasisPoints": 300, "pointsPerYuan": 1, "vipConsultation": false } }),
        )
        .await
        .1;
    assert_eq!(
        moved["data"]["upsertTier"]["errors"][0]["field"], "input.rank",
        "a rank is fixed"
    );

    let me = app.post_as(&gus.token, ME, json!({})).await.1;
    assert_eq!(me["data"]["me"]["tier"]["tier"]["code"], "STANDARD");
    assert_eq!(me["data"]["me"]["tier"]["nextTier"]["code"], "SILVER");
    let placed = place_with(&app, &gus, &[(sku, 1)], json!({})).await;
    let id = placed["order"]["id"].as_str().unwrap();
    app.post_as(&gus.token, CONFIRM, json!({ "id": id })).await;
    let me = app.post_as(&gus.token, ME, json!({})).await.1;
    let tier = &me["data"]["me"]["tier"];
    assert_eq!(tier["tier"]["code"], "SILVER", "{me}");
    assert!(tier["qualifyingSpend"]["amount"].as_i64().unwrap() >= price);

    // the next order already gets silver's discount
    let next = place_with(&app, &gus, &[(sku, 1)], json!({})).await;
    assert_eq!(
        next["order"]["tierDiscount"]["amount"],
        price * 300 / 10_000
    );

    // a year on, with that spend outside the window: the review moves gus back down, once
    sql(
        &app,
        &format!(
            "UPDATE orders SET paid_at = NOW(6) - INTERVAL 400 DAY WHERE member_id = {}",
            gus.member_id
        ),
    )
    .await;
    sql(
        &app,
        &format!(
            "UPDATE members SET tier_review_at = NOW(6) - INTERVAL 1 SECOND WHERE id = {}",
            gus.member_id
        ),
    )
    .await;
    let changes = app.app.membership.review_due(100).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].from_rank, changes[0].to_rank), (1, 0));
    assert!(app.app.membership.review_due(100).await.unwrap().is_empty());
    let me = app.post_as(&gus.token, ME, json!({})).await.1;
    assert_eq!(me["data"]["me"]["tier"]["tier"]["code"], "STANDARD");
}

/// Every product the caller can list, walking all pages: (id, locked).
async fn listed(app: &TestApp, token: Option<&str>) -> Vec<(String, bool)> {
    let list = r#"query L($a: String) { products(first: 50, after: $a) {
      pageInfo { hasNextPage endCursor } edges { node { id locked } } } }"#;
    let mut out = Vec::new();
    let mut after = Value::Null;
    loop {
        let vars = json!({ "a": after });
        let body = match token {
            None => app.post(list, vars).await.1,
            Some(t) => app.post_as(t, list, vars).await.1,
        };
        let page = &body["data"]["products"];
        for e in page["edges"].as_array().unwrap() {
            out.push((
                e["node"]["id"].as_str().unwrap().to_owned(),
                e["node"]["locked"].as_bool().unwrap(),
            ));
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return out;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

#[tokio::test]
async fn tier_gated_products_are_hidden_or_locked_below_their_tier() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let hal = buyer(&app, "hal").await;
    let ida = buyer(&app, "ida").await;
    set_rank(&app, &ida, 2).await;
    let (hidden_sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    let hidden_product: u64 = {
        use domain::schema::skus;
        let mut conn = app.app.db.conn().await.unwrap();
        skus::table
            .find(hidden_sku)
            .select(skus::product_id)
            .first(&mut conn)
            .await
            .unwrap()
    };
    let gate = r#"mutation G($p: ID!) { setProductTierGate(productId: $p, requiredTierCode: "GOLD", gate: HIDE) {
      product { id requiredTier { code } } errors { code } } }"#;
    let body = app
        .post_as(
            &ops,
            gate,
            json!({ "p": harness_id("Product", hidden_product) }),
        )
        .await
        .1;
    assert_eq!(
        body["data"]["setProductTierGate"]["product"]["requiredTier"]["code"], "GOLD",
        "{body}"
    );
    let price = r#"mutation M($s: ID!) { setMemberPrice(skuId: $s, tierCode: "GOLD", priceFen: 100) { errors { code } } }"#;
    app.post_as(&ops, price, json!({ "s": harness_id("Sku", hidden_sku) }))
        .await;
    // the demo seed locks its last published product to gold
    let locked_product: u64 = {
        use domain::schema::products;
        let mut conn = app.app.db.conn().await.unwrap();
        products::table
            .filter(products::min_tier_rank.eq(2))
            .filter(products::tier_gate.eq("LOCK"))
            .select(products::id)
            .first(&mut conn)
            .await
            .unwrap()
    };

    let one = r#"query O($id: ID!) { product(id: $id) { id locked requiredTier { code } skus { id memberPrice { amount } } } }"#;
    let hidden_gid = harness_id("Product", hidden_product);
    let locked_gid = harness_id("Product", locked_product);
    for (who, token) in [("anonymous", None), ("standard member", Some(&hal.token))] {
        let (detail, locked) = match token {
            None => (
                app.post(one, json!({ "id": hidden_gid })).await.1,
                app.post(one, json!({ "id": locked_gid })).await.1,
            ),
            Some(t) => (
                app.post_as(t, one, json!({ "id": hidden_gid })).await.1,
                app.post_as(t, one, json!({ "id": locked_gid })).await.1,
            ),
        };
        let seen = listed(&app, token.map(String::as_str)).await;
        assert!(
            !seen.iter().any(|(id, _)| *id == hidden_gid),
            "{who}: hidden"
        );
        assert!(seen.contains(&(locked_gid.clone(), true)), "{who}: locked");
        assert!(detail["data"]["product"].is_null(), "{who}: {detail}");
        assert_eq!(locked["data"]["product"]["locked"], true, "{who}");
        assert_eq!(locked["data"]["product"]["requiredTier"]["code"], "GOLD");
    }
    let refused = place_with(&app, &hal, &[(hidden_sku, 1)], json!({})).await;
    assert_eq!(refused["errors"][0]["code"], "TIER_REQUIRED", "{refused}");
    assert_eq!(refused["errors"][0]["skuId"], harness_id("Sku", hidden_sku));

    // gold sees both, unlocked, with its member price, and buys at it
    let seen = listed(&app, Some(&ida.token)).await;
    assert!(seen.contains(&(hidden_gid.clone(), false)));
    assert!(seen.contains(&(locked_gid.clone(), false)));
    let detail = app
        .post_as(&ida.token, one, json!({ "id": hidden_gid }))
        .await
        .1;
    let skus = detail["data"]["product"]["skus"].as_array().unwrap();
    let mine = skus
        .iter()
        .find(|s| s["id"] == harness_id("Sku", hidden_sku))
        .unwrap();
    assert_eq!(mine["memberPrice"]["amount"], 100);
    let bought = place_with(&app, &ida, &[(hidden_sku, 1)], json!({})).await;
    assert_eq!(bought["errors"], json!([]), "{bought}");
    assert_eq!(bought["order"]["subtotal"]["amount"], 100);
    assert_eq!(
        bought["order"]["tierDiscount"]["amount"], 0,
        "no tier discount on top of a member price"
    );
}

#[tokio::test]
async fn points_expire_and_birthday_coupons_come_once_a_year() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let jo = buyer(&app, "jo").await;
    grant(&app, &ops, &jo, 700).await;
    grant(&app, &ops, &jo, 300).await;
    // the first grant is past its expiry
    sql(
        &app,
        &format!(
            "UPDATE points_ledger SET expires_at = NOW(6) - INTERVAL 1 DAY WHERE member_id = {} AND delta = 700",
            jo.member_id
        ),
    )
    .await;
    assert_eq!(app.app.membership.expire_due(100).await.unwrap(), 700);
    assert_eq!(app.app.membership.expire_due(100).await.unwrap(), 0);
    assert_eq!(assert_ledger_consistent(&app, jo.member_id).await, 300);

    // birthdays: set once, a coupon on the day for tiers that have one (gold in the demo)
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .date_naive();
    let born = today.with_year(1990).unwrap_or(today);
    let profile = r#"mutation U($b: NaiveDate) { updateProfile(input: { birthday: $b }) { member { birthday } errors { code field } } }"#;
    let set = app
        .post_as(&jo.token, profile, json!({ "b": born.to_string() }))
        .await
        .1;
    assert_eq!(
        set["data"]["updateProfile"]["member"]["birthday"],
        born.to_string(),
        "{set}"
    );
    let again = app
        .post_as(&jo.token, profile, json!({ "b": "1991-01-01" }))
        .await
        .1;
    assert_eq!(
        again["data"]["updateProfile"]["errors"][0]["field"],
        "input.birthday"
    );
    let future = app
        .post_as(&jo.token, profile, json!({ "b": "2999-01-01" }))
        .await
        .1;
    assert_eq!(
        future["data"]["updateProfile"]["errors"][0]["code"],
        "INVALID_INPUT"
    );

    assert_eq!(
        app.app
            .membership
            .issue_birthday_coupons(today)
            .await
            .unwrap(),
        0,
        "standard tier has no birthday coupon"
    );
    set_rank(&app, &jo, 2).await;
    assert_eq!(
        app.app
            .membership
            .issue_birthday_coupons(today)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        app.app
            .membership
            .issue_birthday_coupons(today)
            .await
            .unwrap(),
        0
    );
    let me = app.post_as(&jo.token, ME, json!({})).await.1;
    assert_eq!(
        me["data"]["me"]["coupons"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{me}"
    );
}

#[tokio::test]
async fn guards_refuse_the_wrong_caller_and_bad_adjustments() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let advisor = staff_token(&app, "adv", domain::identity::Role::Advisor).await;
    let kim = buyer(&app, "kim").await;
    let lee = buyer(&app, "lee").await;
    let kim_id = harness_id("Member", kim.member_id);
    let adjust = json!({ "m": kim_id, "d": 10, "r": "goodwill" });
    let t = template(&app, &ops, json!({ "amountOffFen": 100 })).await;

    let code = |body: &Value| body["errors"][0]["extensions"]["code"].clone();
    // members may not run operations
    assert_eq!(
        code(&app.post_as(&kim.token, ADJUST, adjust.clone()).await.1),
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app.post_as(&kim.token, ISSUE, json!({ "t": t, "m": [kim_id] }))
                .await
                .1
        ),
        "FORBIDDEN"
    );
    // advisors are staff but not operations
    assert_eq!(
        code(&app.post_as(&advisor, ADJUST, adjust.clone()).await.1),
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app.post_as(&advisor, r#"{ couponTemplates { totalCount } }"#, json!({}))
                .await
                .1
        ),
        "FORBIDDEN"
    );
    // operations may not redefine tiers (administrators do)
    let upsert = r#"mutation { upsertTier(input: { code: "X", rank: 9, name: "X", nameEn: "X", minSpendFen: 1,
      discountBasisPoints: 0, pointsPerYuan: 0, vipConsultation: false }) { errors { code } } }"#;
    assert_eq!(
        code(&app.post_as(&ops, upsert, json!({})).await.1),
        "FORBIDDEN"
    );
    // nobody signed in may claim
    assert_eq!(
        code(&app.post(CLAIM, json!({ "t": t })).await.1),
        "UNAUTHENTICATED"
    );
    // staff may not use member-only fields
    assert_eq!(
        code(&app.post_as(&ops, CLAIM, json!({ "t": t })).await.1),
        "FORBIDDEN"
    );
    // a member sees only their own coupons and points
    issue_one(&app, &ops, &t, &kim).await;
    let lee_me = app.post_as(&lee.token, ME, json!({})).await.1;
    assert_eq!(lee_me["data"]["me"]["coupons"]["edges"], json!([]));
    // ops see a member's ledger
    let member_q =
        r#"query M($id: ID!) { member(id: $id) { points coupons { edges { node { status } } } } }"#;
    let seen = app.post_as(&ops, member_q, json!({ "id": kim_id })).await.1;
    assert_eq!(
        seen["data"]["member"]["coupons"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        code(
            &app.post_as(&lee.token, member_q, json!({ "id": kim_id }))
                .await
                .1
        ),
        "FORBIDDEN"
    );

    // adjustments: a reason is required, a balance never goes below zero, nothing changes
    let no_reason = app
        .post_as(&ops, ADJUST, json!({ "m": kim_id, "d": 10, "r": "  " }))
        .await
        .1;
    assert_eq!(payload(&no_reason)["errors"][0]["field"], "reason");
    let overdraw = app
        .post_as(&ops, ADJUST, json!({ "m": kim_id, "d": -1, "r": "oops" }))
        .await
        .1;
    assert_eq!(
        payload(&overdraw)["errors"][0]["code"],
        "POINTS_INSUFFICIENT"
    );
    let zero = app
        .post_as(&ops, ADJUST, json!({ "m": kim_id, "d": 0, "r": "nothing" }))
        .await
        .1;
    assert_eq!(payload(&zero)["errors"][0]["code"], "INVALID_INPUT");
    let ok = app.post_as(&ops, ADJUST, adjust).await.1;
    assert_eq!(payload(&ok)["balance"], 10);
    assert_eq!(payload(&ok)["entry"]["kind"], "ADJUST");
    assert_eq!(assert_ledger_consistent(&app, kim.member_id).await, 10);

    // a template that is not valid input is refused with the field at fault
    let bad = app
        .post_as(
            &ops,
            NEW_TEMPLATE,
            json!({ "i": { "name": "bad", "amountOffFen": 100, "percentOff": 10,
                "validFrom": "2030-01-01T00:00:00Z", "validUntil": "2020-01-01T00:00:00Z" } }),
        )
        .await
        .1;
    let errors = &bad["data"]["createCouponTemplate"]["errors"];
    let fields: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"input.amountOff") && fields.contains(&"input.validUntil"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_late_payment_takes_back_the_points_of_its_cancelled_order() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let max = buyer(&app, "max").await;
    grant(&app, &ops, &max, 500).await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    let placed = place_with(&app, &max, &[(sku, 1)], json!({ "pointsToUse": 500 })).await;
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    app.post_as(&max.token, crate::orders::CANCEL, json!({ "id": id }))
        .await;
    assert_eq!(assert_ledger_consistent(&app, max.member_id).await, 500);
    // the payment arrives after the cancellation (the development path runs the same code)
    let paid = app
        .post_as(&max.token, CONFIRM, json!({ "id": id }))
        .await
        .1;
    assert_eq!(
        payload(&paid)["order"]["status"],
        "PAID",
        "stock, points and coupon were still there: {paid}"
    );
    assert_eq!(assert_ledger_consistent(&app, max.member_id).await, 0);
    // again, but the points were spent elsewhere in between: refunded, never taken twice
    grant(&app, &ops, &max, 500).await;
    let second = place_with(&app, &max, &[(sku, 1)], json!({ "pointsToUse": 500 })).await;
    let id = second["order"]["id"].as_str().unwrap().to_owned();
    app.post_as(&max.token, crate::orders::CANCEL, json!({ "id": id }))
        .await;
    let elsewhere = place_with(&app, &max, &[(sku, 1)], json!({ "pointsToUse": 500 })).await;
    assert_eq!(elsewhere["errors"], json!([]));
    let paid = app
        .post_as(&max.token, CONFIRM, json!({ "id": id }))
        .await
        .1;
    assert_eq!(payload(&paid)["order"]["status"], "CANCELLED", "{paid}");
    assert_eq!(assert_ledger_consistent(&app, max.member_id).await, 0);
    let refunds: i64 = {
        use domain::schema::refunds;
        let mut conn = app.app.db.conn().await.unwrap();
        refunds::table
            .filter(refunds::order_id.eq(decode_id(&id)))
            .filter(refunds::kind.eq("auto"))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(refunds, 1, "the late payment is refunded in full");
}

#[tokio::test]
async fn refusals_are_typed_for_odd_codes_zero_prices_and_huge_adjustments() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let nia = buyer(&app, "nia").await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    for code in ["优惠券", "Éclat", "A B", "';--"] {
        let placed = place_with(&app, &nia, &[(sku, 1)], json!({ "couponCode": code })).await;
        assert_eq!(
            placed["errors"][0]["code"], "COUPON_NOT_FOUND",
            "{code}: {placed}"
        );
    }
    let add = r#"mutation A($s: ID!) { addCartLine(skuId: $s, quantity: 1) { errors { code } } }"#;
    app.post_as(&nia.token, add, json!({ "s": harness_id("Sku", sku) }))
        .await;
    let quote = r#"{ me { cart { quote(couponCode: "优惠券") { quote { total { amount } } errors { code } } } } }"#;
    let q = app.post_as(&nia.token, quote, json!({})).await.1;
    assert_eq!(
        q["data"]["me"]["cart"]["quote"]["errors"][0]["code"], "COUPON_NOT_FOUND",
        "{q}"
    );
    let free = r#"mutation M($s: ID!) { setMemberPrice(skuId: $s, tierCode: "GOLD", priceFen: 0) { errors { code field } } }"#;
    let refused = app
        .post_as(&ops, free, json!({ "s": harness_id("Sku", sku) }))
        .await
        .1;
    assert_eq!(
        refused["data"]["setMemberPrice"]["errors"][0]["field"],
        "priceFen"
    );
    let (status, huge) = app
        .post_as(
            &ops,
            ADJUST,
            json!({ "m": harness_id("Member", nia.member_id), "d": i64::MIN, "r": "typo" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        payload(&huge)["errors"][0]["code"],
        "INVALID_INPUT",
        "{huge}"
    );
    let far = app
        .post_as(
            &ops,
            NEW_TEMPLATE,
            json!({ "i": { "name": "x", "amountOffFen": 1, "validFrom": "2020-01-01T00:00:00Z",
                "validUntil": "9999-12-31T00:00:00Z" } }),
        )
        .await
        .1;
    assert_eq!(
        far["data"]["createCouponTemplate"]["errors"][0]["field"], "input.validUntil",
        "{far}"
    );
}

#[tokio::test]
async fn swept_orders_give_back_points_with_their_expiry_and_the_coupon() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let olga = buyer(&app, "olga").await;
    grant(&app, &ops, &olga, 1_000).await;
    sql(
        &app,
        &format!(
            "UPDATE points_ledger SET expires_at = NOW(6) + INTERVAL 1 DAY WHERE member_id = {}",
            olga.member_id
        ),
    )
    .await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    let t = template(&app, &ops, json!({ "amountOffFen": 500 })).await;
    let code = issue_one(&app, &ops, &t, &olga).await;
    let placed = place_with(
        &app,
        &olga,
        &[(sku, 1)],
        json!({ "couponCode": code, "pointsToUse": 1_000 }),
    )
    .await;
    assert_eq!(placed["errors"], json!([]), "{placed}");
    // the payment deadline passes: the sweeper cancels it
    let order_id = decode_id(placed["order"]["id"].as_str().unwrap());
    sql(
        &app,
        &format!(
            "UPDATE orders SET payment_deadline = NOW(6) - INTERVAL 1 SECOND WHERE id = {order_id}"
        ),
    )
    .await;
    assert_eq!(app.app.orders.sweep_expired().await.unwrap(), 1);
    assert_eq!(assert_ledger_consistent(&app, olga.member_id).await, 1_000);
    let me = app.post_as(&olga.token, ME, json!({})).await.1;
    assert_eq!(
        me["data"]["me"]["coupons"]["edges"][0]["node"]["status"],
        "AVAILABLE"
    );
    // the points came back expiring tomorrow, as they would have, not in two years
    let soon: i64 = {
        use domain::schema::points_ledger;
        let mut conn = app.app.db.conn().await.unwrap();
        points_ledger::table
            .filter(points_ledger::member_id.eq(olga.member_id))
            .filter(points_ledger::kind.eq("REVERSE"))
            .filter(
                points_ledger::expires_at
                    .lt(chrono::Utc::now().naive_utc() + chrono::TimeDelta::days(2)),
            )
            .count()
            .get_result(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(soon, 1);
}

#[tokio::test]
async fn a_full_refund_takes_back_the_tier_that_its_payment_brought() {
    let (app, fake) = crate::payments::merchant_app().await;
    let admin = staff_token(&app, "admin", domain::identity::Role::Admin).await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let pia = buyer(&app, "pia").await;
    let upsert = r#"mutation U($i: TierInput!) { upsertTier(input: $i) { errors { code } } }"#;
    app.post_as(
        &admin,
        upsert,
        json!({ "i": { "code": "SILVER", "rank": 1, "name": "银卡", "nameEn": "Silver",
            "minSpendFen": 10_000, "discountBasisPoints": 300, "pointsPerYuan": 1, "vipConsultation": false } }),
    )
    .await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    let placed = place_with(&app, &pia, &[(sku, 1)], json!({})).await;
    let o = &placed["order"];
    let order = crate::payments::Unpaid {
        gid: o["id"].as_str().unwrap().to_owned(),
        id: decode_id(o["id"].as_str().unwrap()),
        order_no: o["orderNo"].as_str().unwrap().to_owned(),
        total: o["total"]["amount"].as_i64().unwrap(),
        sku,
    };
    crate::payments::create_payment(&app, &pia, &order).await;
    crate::payments::pay_and_notify(&app, &fake, &order).await;
    let tier = r#"{ me { tier { tier { code } } } }"#;
    let me = app.post_as(&pia.token, tier, json!({})).await.1;
    assert_eq!(me["data"]["me"]["tier"]["tier"]["code"], "SILVER");
    let r = crate::payments::refunds::refund(&app, &ops, &order, order.total, "全部退款").await;
    assert_eq!(r["data"]["refundOrder"]["errors"], json!([]), "{r}");
    let no = format!("{}R1", order.order_no);
    let (h, b) = crate::payments::refunds::refund_notice(
        &fake,
        &order,
        &no,
        "SUCCESS",
        &crate::fake_wechatpay::Notify::default(),
    );
    crate::payments::post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b).await;
    let me = app.post_as(&pia.token, tier, json!({})).await.1;
    assert_eq!(
        me["data"]["me"]["tier"]["tier"]["code"], "STANDARD",
        "a paid-and-refunded order does not buy a tier"
    );
}

#[tokio::test]
async fn missed_completion_events_are_credited_once_by_the_worker() {
    // no event pipeline: the consumer never sees `order.completed`
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let quinn = buyer(&app, "quinn").await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    let placed = place_with(&app, &quinn, &[(sku, 1)], json!({})).await;
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    let total = placed["order"]["total"]["amount"].as_i64().unwrap();
    let shipping = placed["order"]["shipping"]["amount"].as_i64().unwrap();
    app.post_as(&quinn.token, CONFIRM, json!({ "id": id }))
        .await;
    app.post_as(&ops, crate::orders::SHIP, json!({ "id": id }))
        .await;
    app.post_as(&quinn.token, crate::orders::RECEIVED, json!({ "id": id }))
        .await;
    let order_id = decode_id(&id);
    sql(
        &app,
        &format!("UPDATE orders SET delivered_at = NOW(6) - INTERVAL 8 DAY WHERE id = {order_id}"),
    )
    .await;
    app.app.orders.auto_complete().await.unwrap();
    sql(
        &app,
        &format!(
            "UPDATE orders SET completed_at = NOW(6) - INTERVAL 10 MINUTE WHERE id = {order_id}"
        ),
    )
    .await;
    assert_eq!(app.app.membership.earn_missing(100).await.unwrap(), 1);
    assert_eq!(app.app.membership.earn_missing(100).await.unwrap(), 0);
    assert_eq!(
        assert_ledger_consistent(&app, quinn.member_id).await,
        (total - shipping) / 100
    );
}

#[tokio::test]
async fn a_cart_survives_a_gate_closing_over_one_of_its_items() {
    let app = app().await;
    let ops = staff_token(&app, "ops", domain::identity::Role::Ops).await;
    let rae = buyer(&app, "rae").await;
    let (sku, _) = sku_priced(&app, 10_000, 50_000_000).await;
    let add = r#"mutation A($s: ID!) { addCartLine(skuId: $s, quantity: 1) { errors { code } } }"#;
    app.post_as(&rae.token, add, json!({ "s": harness_id("Sku", sku) }))
        .await;
    let product: u64 = {
        use domain::schema::skus;
        let mut conn = app.app.db.conn().await.unwrap();
        skus::table
            .find(sku)
            .select(skus::product_id)
            .first(&mut conn)
            .await
            .unwrap()
    };
    let gate = r#"mutation G($p: ID!) { setProductTierGate(productId: $p, requiredTierCode: "GOLD", gate: HIDE) { errors { code } } }"#;
    app.post_as(&ops, gate, json!({ "p": harness_id("Product", product) }))
        .await;
    let cart = app
        .post_as(&rae.token, crate::orders::CART, json!({}))
        .await
        .1;
    assert!(cart["errors"].is_null(), "{cart}");
    assert_eq!(cart["data"]["me"]["cart"]["total"]["amount"], 0);
    assert_eq!(cart["data"]["me"]["cart"]["lines"][0]["available"], false);
    // and a hidden product cannot be put in a cart by id
    let again = app
        .post_as(&rae.token, add, json!({ "s": harness_id("Sku", sku) }))
        .await
        .1;
    assert_eq!(
        again["data"]["addCartLine"]["errors"][0]["code"], "NOT_FOUND",
        "{again}"
    );
}
