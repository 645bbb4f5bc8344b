//! The payments worker and late payments: a missing callback is found by the active query; an
//! expired order with a prepay is closed before it is cancelled (or found paid by the close);
//! a payment for an order that was already cancelled is honoured when the stock is still there
//! and refunded in full automatically when it is not — exactly once either way.

use serde_json::json;

use super::*;
use crate::fake_wechatpay::Notify;
use crate::orders::{assert_ledger_matches, set_stock, stock_of};

#[tokio::test]
async fn a_missing_callback_is_resolved_by_the_active_query() {
    let (app, fake) = merchant_app_with(|s| s.query_after_secs = vec![0]).await;
    let alice = new_buyer(&app, "alice").await;
    let order = unpaid_order(&app, &alice).await;
    create_payment(&app, &alice, &order).await;

    // not paid yet: the query finds NOTPAY and schedules the next one before the deadline
    let round = app.app.payments.run_once().await.unwrap();
    assert_eq!((round.queried, round.found_paid), (1, 0));
    assert_eq!(
        order_view(&app, &alice, &order).await["status"],
        "PENDING_PAYMENT"
    );
    let again = app.app.payments.run_once().await.unwrap();
    assert_eq!(again.queried, 0, "the next query waits for its time");

    // paid at WeChat, callback lost
    let tx = fake.pay(&order.order_no);
    sql(
        &app,
        &format!(
            "UPDATE payments SET next_query_at = NOW(6) WHERE order_id = {}",
            order.id
        ),
    )
    .await;
    let round = app.app.payments.run_once().await.unwrap();
    assert_eq!((round.queried, round.found_paid), (1, 1));
    let view = order_view(&app, &alice, &order).await;
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["payment"]["transactionId"], tx["transaction_id"]);
    // the late callback is then a duplicate
    let (headers, body) = fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default());
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/notify", &headers, &body)
            .await
            .0,
        204
    );
    assert_eq!(paid_records(&app, order.id).await, (1, 1));
}

async fn expire(app: &TestApp, order: &Unpaid, prepay_minutes_ago: i64) {
    sql(
        app,
        &format!(
            "UPDATE orders SET payment_deadline = NOW(6) - INTERVAL 1 SECOND WHERE id = {}",
            order.id
        ),
    )
    .await;
    sql(app, &format!(
        "UPDATE payments SET prepay_at = NOW(6) - INTERVAL {prepay_minutes_ago} MINUTE WHERE order_id = {}", order.id)).await;
}

#[tokio::test]
async fn an_expired_prepay_is_closed_before_the_order_is_cancelled() {
    let (app, fake) = merchant_app().await;
    let bob = new_buyer(&app, "bob").await;
    let order = unpaid_order(&app, &bob).await;
    let stock_before = stock_of(&app, order.sku).await;
    create_payment(&app, &bob, &order).await;

    // younger than 5 minutes: WeChat Pay would refuse the close, so nothing happens yet
    expire(&app, &order, 1).await;
    assert_eq!(
        app.app.orders.sweep_expired().await.unwrap(),
        0,
        "the plain sweeper leaves prepaid orders alone"
    );
    assert_eq!(app.app.payments.run_once().await.unwrap().closed, 0);
    assert_eq!(
        order_view(&app, &bob, &order).await["status"],
        "PENDING_PAYMENT"
    );
    assert!(!fake.with(|s| s.requests.iter().any(|r| r.1.ends_with("/close"))));

    expire(&app, &order, 6).await;
    sql(
        &app,
        &format!(
            "UPDATE payments SET next_query_at = NULL WHERE order_id = {}",
            order.id
        ),
    )
    .await;
    let round = app.app.payments.run_once().await.unwrap();
    assert_eq!(round.closed, 1);
    assert_eq!(
        fake.with(|s| s.orders[&order.order_no].state.clone()),
        "CLOSED"
    );
    let view = order_view(&app, &bob, &order).await;
    assert_eq!(view["status"], "CANCELLED");
    assert_eq!(view["payment"]["status"], "CLOSED");
    assert_eq!(
        stock_of(&app, order.sku).await,
        stock_before + 1,
        "stock released once"
    );
    assert_ledger_matches(&app, order.sku).await;
    assert_eq!(app.app.payments.run_once().await.unwrap().closed, 0);
}

#[tokio::test]
async fn closing_a_paid_order_marks_it_paid_instead() {
    let (app, fake) = merchant_app().await;
    let carol = new_buyer(&app, "carol").await;
    let order = unpaid_order(&app, &carol).await;
    create_payment(&app, &carol, &order).await;
    let stock = stock_of(&app, order.sku).await;
    let tx = fake.pay(&order.order_no); // callback lost
    expire(&app, &order, 10).await;
    sql(
        &app,
        &format!(
            "UPDATE payments SET next_query_at = NULL WHERE order_id = {}",
            order.id
        ),
    )
    .await;
    let round = app.app.payments.run_once().await.unwrap();
    assert_eq!((round.closed, round.found_paid), (0, 1));
    let view = order_view(&app, &carol, &order).await;
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["payment"]["transactionId"], tx["transaction_id"]);
    assert_eq!(stock_of(&app, order.sku).await, stock, "stock stays sold");
    assert_eq!(
        fake.with(|s| s.orders[&order.order_no].state.clone()),
        "SUCCESS"
    );
}

#[tokio::test]
async fn paid_after_cancel_with_stock_reserves_it_again() {
    let (app, fake) = merchant_app().await;
    let dave = new_buyer(&app, "dave").await;
    let order = unpaid_order(&app, &dave).await;
    create_payment(&app, &dave, &order).await;
    let stock = stock_of(&app, order.sku).await;
    cancel(&app, &dave, &order).await;
    assert_eq!(stock_of(&app, order.sku).await, stock + 1);

    let tx = pay_and_notify(&app, &fake, &order).await;
    let view = order_view(&app, &dave, &order).await;
    assert_eq!(view["status"], "PAID", "{view}");
    assert_eq!(stock_of(&app, order.sku).await, stock, "reserved again");
    assert_ledger_matches(&app, order.sku).await;
    let (headers, body) = fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default());
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/notify", &headers, &body)
            .await
            .0,
        204
    );
    assert_eq!(stock_of(&app, order.sku).await, stock, "exactly once");
    assert_eq!(paid_records(&app, order.id).await, (1, 1));
    assert!(
        view["events"]
            .to_string()
            .contains("paid after cancellation")
    );
}

#[tokio::test]
async fn paid_after_cancel_without_stock_is_refunded_in_full_once() {
    let (app, fake) = merchant_app().await;
    let erin = new_buyer(&app, "erin").await;
    let order = unpaid_order(&app, &erin).await;
    create_payment(&app, &erin, &order).await;
    cancel(&app, &erin, &order).await;
    set_stock(&app, order.sku, 0).await;

    let tx = pay_and_notify(&app, &fake, &order).await;
    // a burst of duplicates while the refund is on its way
    let (headers, body) = fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default());
    for _ in 0..5 {
        assert_eq!(
            post_notification(&app, "/webhooks/wechatpay/notify", &headers, &body)
                .await
                .0,
            204
        );
    }
    let out_refund_no = format!("{}A", order.order_no);
    // the refund goes out in the background (the worker would send it too): wait until
    // WeChat Pay's answer is recorded
    for _ in 0..100 {
        let view = order_view(&app, &erin, &order).await;
        if view["refunds"][0]["status"] == "PROCESSING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.app.payments.run_once().await.unwrap();
    let refunds = fake.with(|s| s.refunds.clone());
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[&out_refund_no].amount, order.total);
    let view = order_view(&app, &erin, &order).await;
    assert_eq!(view["status"], "CANCELLED");
    assert_eq!(
        view["refunds"].as_array().unwrap().len(),
        1,
        "one refund row: {view}"
    );
    assert_eq!(view["refunds"][0]["automatic"], true);
    assert_eq!(view["refunds"][0]["status"], "PROCESSING");
    assert_eq!(stock_of(&app, order.sku).await, 0, "nothing oversold");
    assert_ledger_matches(&app, order.sku).await;

    // WeChat Pay closes it: the money is still owed; operations send it again
    let notice = |no: &str, status: &str| {
        let refund = fake.with(|s| s.refunds[no].clone());
        let body = json!({ "mchid": crate::fake_wechatpay::MCH_ID, "out_trade_no": order.order_no,
            "out_refund_no": no, "refund_id": refund.refund_id, "refund_status": status,
            "amount": { "total": order.total, "refund": order.total, "payer_total": order.total,
            "payer_refund": order.total } });
        fake.notification(&format!("REFUND.{status}"), &body, &Notify::default())
    };
    fake.with(|s| s.refunds.get_mut(&out_refund_no).unwrap().status = "CLOSED".into());
    let (h, b) = notice(&out_refund_no, "CLOSED");
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    let view = order_view(&app, &erin, &order).await;
    assert_eq!(view["refunds"][0]["status"], "CLOSED");
    assert_eq!(view["refunded"]["amount"], 0);
    let ops = crate::orders::staff_token(&app, "ops-late", domain::identity::Role::Ops).await;
    let q = r#"mutation R($id: ID!, $a: Int!) { refundOrder(orderId: $id, amount: $a, reason: "自动退款失败，重新退款") {
        refund { outRefundNo automatic status } order { status } errors { code } } }"#;
    let retry = app
        .post_as(&ops, q, json!({ "id": order.gid, "a": order.total }))
        .await
        .1;
    let r = &retry["data"]["refundOrder"];
    assert_eq!(r["errors"], json!([]), "{retry}");
    assert_eq!(r["order"]["status"], "CANCELLED");
    assert_eq!(r["refund"]["automatic"], true);
    let second = r["refund"]["outRefundNo"].as_str().unwrap().to_owned();
    assert_eq!(second, format!("{}R2", order.order_no));
    let twice = app
        .post_as(&ops, q, json!({ "id": order.gid, "a": 1 }))
        .await
        .1;
    assert_eq!(
        twice["data"]["refundOrder"]["errors"][0]["code"], "INVALID_ORDER_TRANSITION",
        "one at a time"
    );

    // WeChat Pay finishes the second one
    let (h, b) = notice(&second, "SUCCESS");
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    let view = order_view(&app, &erin, &order).await;
    assert_eq!(view["refunds"][1]["status"], "SUCCESS");
    assert_eq!(view["refunded"]["amount"], order.total);
    assert_eq!(view["status"], "CANCELLED");
    let over = app
        .post_as(&ops, q, json!({ "id": order.gid, "a": 1 }))
        .await
        .1;
    assert_eq!(
        over["data"]["refundOrder"]["errors"][0]["code"], "INVALID_INPUT",
        "nothing left to refund"
    );
}

#[tokio::test]
async fn an_order_whose_prepay_failed_still_expires_and_releases_stock() {
    let (app, fake) = merchant_app().await;
    let gus = new_buyer(&app, "gus").await;
    let order = unpaid_order(&app, &gus).await;
    let stock = stock_of(&app, order.sku).await;
    fake.with(|s| s.fail_next = 100);
    let (_, body) = app
        .post_as(&gus.token, CREATE, json!({ "id": order.gid }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    fake.with(|s| s.fail_next = 0);
    sql(
        &app,
        &format!(
            "UPDATE orders SET payment_deadline = NOW(6) - INTERVAL 1 SECOND WHERE id = {}",
            order.id
        ),
    )
    .await;
    assert_eq!(app.app.orders.sweep_expired().await.unwrap(), 1);
    assert_eq!(order_view(&app, &gus, &order).await["status"], "CANCELLED");
    assert_eq!(stock_of(&app, order.sku).await, stock + 1);
    assert_ledger_matches(&app, order.sku).await;
}

#[tokio::test]
async fn a_close_wechat_keeps_refusing_is_given_up_after_the_grace_period() {
    let (app, fake) = merchant_app().await;
    let hal = new_buyer(&app, "hal").await;
    let order = unpaid_order(&app, &hal).await;
    create_payment(&app, &hal, &order).await;
    fake.with(|s| s.refuse_close = true);
    expire(&app, &order, 10).await;
    sql(
        &app,
        &format!(
            "UPDATE payments SET next_query_at = NULL WHERE order_id = {}",
            order.id
        ),
    )
    .await;
    assert_eq!(
        app.app.payments.run_once().await.unwrap().closed,
        0,
        "within the grace period: retried later"
    );
    assert_eq!(
        order_view(&app, &hal, &order).await["status"],
        "PENDING_PAYMENT"
    );
    sql(
        &app,
        &format!(
            "UPDATE orders SET payment_deadline = NOW(6) - INTERVAL 6 MINUTE WHERE id = {}",
            order.id
        ),
    )
    .await;
    sql(
        &app,
        &format!(
            "UPDATE payments SET next_query_at = NULL WHERE order_id = {}",
            order.id
        ),
    )
    .await;
    assert_eq!(app.app.payments.run_once().await.unwrap().closed, 1);
    assert_eq!(order_view(&app, &hal, &order).await["status"], "CANCELLED");
}

#[tokio::test]
async fn the_prepay_of_a_cancelled_order_is_closed_so_it_cannot_be_paid() {
    let (app, fake) = merchant_app().await;
    let fay = new_buyer(&app, "fay").await;
    let order = unpaid_order(&app, &fay).await;
    create_payment(&app, &fay, &order).await;
    cancel(&app, &fay, &order).await;
    sql(&app, &format!(
        "UPDATE payments SET prepay_at = NOW(6) - INTERVAL 6 MINUTE, next_query_at = NULL WHERE order_id = {}",
        order.id
    ))
    .await;
    let round = app.app.payments.run_once().await.unwrap();
    assert_eq!(round.closed, 1);
    assert_eq!(
        fake.with(|s| s.orders[&order.order_no].state.clone()),
        "CLOSED"
    );
    let view = order_view(&app, &fay, &order).await;
    assert_eq!(view["status"], "CANCELLED");
    assert_eq!(view["payment"]["status"], "CLOSED");
    assert_eq!(app.app.payments.run_once().await.unwrap().closed, 0);
}
