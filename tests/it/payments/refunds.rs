//! `refundOrder` (operations): partial and full refunds with deterministic `out_refund_no`s,
//! the order REFUNDING until WeChat Pay confirms (notification or query), back to where it was
//! after a partial refund or a failure, never more than was paid, retried when WeChat Pay is down.

use serde_json::json;

use super::*;
use crate::fake_wechatpay::Notify;
use crate::orders::staff_token;

pub(crate) const REFUND: &str = r#"mutation R($id: ID!, $amount: Int!, $reason: String!) {
  refundOrder(orderId: $id, amount: $amount, reason: $reason) {
    refund { outRefundNo status amount { amount } automatic } order { status refunded { amount } }
    errors { code field message } } }"#;

async fn paid_order(
    app: &TestApp,
    fake: &crate::fake_wechatpay::FakeWechatPay,
    name: &str,
) -> (Buyer, Unpaid) {
    let b = new_buyer(app, name).await;
    let order = unpaid_order(app, &b).await;
    create_payment(app, &b, &order).await;
    pay_and_notify(app, fake, &order).await;
    (b, order)
}

pub(crate) fn refund_notice(
    fake: &crate::fake_wechatpay::FakeWechatPay,
    order: &Unpaid,
    out_refund_no: &str,
    status: &str,
    how: &Notify,
) -> (crate::fake_wechatpay::Headers, String) {
    let refund = fake.with(|s| s.refunds[out_refund_no].clone());
    let body = json!({ "mchid": crate::fake_wechatpay::MCH_ID, "out_trade_no": order.order_no,
        "out_refund_no": out_refund_no, "refund_id": refund.refund_id, "refund_status": status,
        "amount": { "total": order.total, "refund": refund.amount, "payer_total": order.total, "payer_refund": refund.amount } });
    fake.notification(&format!("REFUND.{status}"), &body, how)
}

pub(crate) async fn refund(
    app: &TestApp,
    token: &str,
    order: &Unpaid,
    amount: i64,
    reason: &str,
) -> serde_json::Value {
    let (status, body) = app
        .post_as(
            token,
            REFUND,
            json!({ "id": order.gid, "amount": amount, "reason": reason }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn partial_then_full_refund_never_above_what_was_paid() {
    let (app, fake) = merchant_app().await;
    let ops = staff_token(&app, "ops1", domain::identity::Role::Ops).await;
    let (alice, order) = paid_order(&app, &fake, "alice").await;
    assert!(order.total > 200, "the demo SKU costs more than 2 yuan");

    let first = refund(
        &app,
        &ops,
        &order,
        order.total - 100,
        "尺码不合适，部分退款",
    )
    .await;
    let r = &first["data"]["refundOrder"];
    assert_eq!(r["errors"], json!([]), "{first}");
    assert_eq!(r["refund"]["outRefundNo"], format!("{}R1", order.order_no));
    assert_eq!(r["refund"]["status"], "PROCESSING");
    assert_eq!(r["order"]["status"], "REFUNDING");
    // one at a time
    let busy = refund(&app, &ops, &order, 1, "again").await;
    assert_eq!(
        busy["data"]["refundOrder"]["errors"][0]["code"],
        "INVALID_ORDER_TRANSITION"
    );

    // a refund notification for it: the partial refund is done, the order is PAID again
    let (h, b) = refund_notice(
        &fake,
        &order,
        &format!("{}R1", order.order_no),
        "SUCCESS",
        &Notify::default(),
    );
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204,
        "duplicate"
    );
    let view = order_view(&app, &alice, &order).await;
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["refunded"]["amount"], order.total - 100);

    // more than what is left: refused, nothing changes
    let too_much = refund(&app, &ops, &order, 101, "rest").await;
    assert_eq!(
        too_much["data"]["refundOrder"]["errors"][0]["code"],
        "INVALID_INPUT"
    );
    assert_eq!(
        too_much["data"]["refundOrder"]["errors"][0]["field"],
        "amount"
    );
    for bad in [0, -5] {
        let r = refund(&app, &ops, &order, bad, "x").await;
        assert_eq!(r["data"]["refundOrder"]["errors"][0]["field"], "amount");
    }
    let no_reason = refund(&app, &ops, &order, 100, "   ").await;
    assert_eq!(
        no_reason["data"]["refundOrder"]["errors"][0]["field"],
        "reason"
    );

    // the rest, confirmed synchronously this time: REFUNDED
    fake.with(|s| s.refund_status = Some("SUCCESS".into()));
    let rest = refund(&app, &ops, &order, 100, "全部退款").await;
    assert_eq!(
        rest["data"]["refundOrder"]["refund"]["outRefundNo"],
        format!("{}R2", order.order_no)
    );
    assert_eq!(
        rest["data"]["refundOrder"]["order"]["status"], "REFUNDED",
        "{rest}"
    );
    assert_eq!(
        rest["data"]["refundOrder"]["order"]["refunded"]["amount"],
        order.total
    );
    let view = order_view(&app, &alice, &order).await;
    assert_eq!(view["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(
        fake.with(|s| s.refunds.values().map(|r| r.amount).sum::<i64>()),
        order.total
    );
}

#[tokio::test]
async fn refund_outcomes_by_query_and_failure_go_back_with_an_event() {
    let (app, fake) = merchant_app().await;
    let ops = staff_token(&app, "ops2", domain::identity::Role::Admin).await;
    let (bob, order) = paid_order(&app, &fake, "bob").await;
    let r = refund(&app, &ops, &order, order.total, "质量问题").await;
    assert_eq!(
        r["data"]["refundOrder"]["order"]["status"], "REFUNDING",
        "{r}"
    );
    let no = format!("{}R1", order.order_no);

    // a refund notification with the payment AAD is refused
    let (h, b) = refund_notice(
        &fake,
        &order,
        &no,
        "SUCCESS",
        &Notify {
            aad: Some("transaction".into()),
            ..Notify::default()
        },
    );
    let (status, text) = post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b).await;
    assert!(
        (400..500).contains(&status) && text.contains("FAIL"),
        "{status} {text}"
    );

    // WeChat Pay closes it; the worker's query finds out: the order is PAID again, with an event
    fake.with(|s| s.refunds.get_mut(&no).unwrap().status = "CLOSED".into());
    sql(
        &app,
        &format!("UPDATE refunds SET next_check_at = NOW(6) WHERE out_refund_no = '{no}'"),
    )
    .await;
    let round = app.app.payments.run_once().await.unwrap();
    assert_eq!(round.refunds_checked, 1);
    let view = order_view(&app, &bob, &order).await;
    assert_eq!(view["status"], "PAID", "{view}");
    assert_eq!(view["refunds"][0]["status"], "CLOSED");
    assert_eq!(view["refunded"]["amount"], 0);
    assert!(
        view["events"].to_string().contains("refund CLOSED"),
        "{view}"
    );

    // a second full refund, confirmed by query
    let r = refund(&app, &ops, &order, order.total, "再次退款").await;
    assert_eq!(
        r["data"]["refundOrder"]["refund"]["outRefundNo"],
        format!("{}R2", order.order_no)
    );
    let no2 = format!("{}R2", order.order_no);
    fake.with(|s| s.refunds.get_mut(&no2).unwrap().status = "SUCCESS".into());
    sql(
        &app,
        &format!("UPDATE refunds SET next_check_at = NOW(6) WHERE out_refund_no = '{no2}'"),
    )
    .await;
    app.app.payments.run_once().await.unwrap();
    let view = order_view(&app, &bob, &order).await;
    assert_eq!(view["status"], "REFUNDED");
    assert_eq!(view["refunded"]["amount"], order.total);
}

#[tokio::test]
async fn a_refund_wechat_cannot_take_now_is_retried_with_the_same_number() {
    let (app, fake) = merchant_app().await;
    let ops = staff_token(&app, "ops3", domain::identity::Role::Ops).await;
    let (carol, order) = paid_order(&app, &fake, "carol").await;
    fake.with(|s| s.fail_next = 100);
    let r = refund(&app, &ops, &order, 100, "价格调整").await;
    assert_eq!(
        r["data"]["refundOrder"]["refund"]["status"], "PENDING",
        "{r}"
    );
    assert_eq!(r["data"]["refundOrder"]["order"]["status"], "REFUNDING");
    fake.with(|s| s.fail_next = 0);
    sql(&app, "UPDATE refunds SET next_check_at = NOW(6)").await;
    app.app.payments.run_once().await.unwrap();
    let no = format!("{}R1", order.order_no);
    assert_eq!(fake.with(|s| s.refunds.len()), 1);
    assert_eq!(fake.with(|s| s.refunds[&no].amount), 100);
    let view = order_view(&app, &carol, &order).await;
    assert_eq!(view["refunds"][0]["status"], "PROCESSING");
}

#[tokio::test]
async fn only_operations_refund() {
    let (app, fake) = merchant_app().await;
    let (dave, order) = paid_order(&app, &fake, "dave").await;
    let advisor = staff_token(&app, "adv1", domain::identity::Role::Advisor).await;
    for token in [dave.token.as_str(), advisor.as_str()] {
        let body = refund(&app, token, &order, 100, "x").await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
    }
    let (_, anon) = app
        .post(
            REFUND,
            json!({ "id": order.gid, "amount": 100, "reason": "x" }),
        )
        .await;
    assert_eq!(anon["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert!(fake.with(|s| s.refunds.is_empty()));
    // an unpaid order cannot be refunded
    let ops = staff_token(&app, "ops4", domain::identity::Role::Ops).await;
    let unpaid = unpaid_order(&app, &dave).await;
    let r = refund(&app, &ops, &unpaid, 100, "x").await;
    assert_eq!(
        r["data"]["refundOrder"]["errors"][0]["code"],
        "INVALID_ORDER_TRANSITION"
    );
}

#[tokio::test]
async fn an_abnormal_refund_goes_back_and_a_later_success_still_counts() {
    let (app, fake) = merchant_app().await;
    let ops = staff_token(&app, "ops5", domain::identity::Role::Ops).await;
    let (erin, order) = paid_order(&app, &fake, "erin").await;
    let (_, shipped) = app
        .post_as(&ops, crate::orders::SHIP, json!({ "id": order.gid }))
        .await;
    assert_eq!(shipped["data"]["shipOrder"]["order"]["status"], "SHIPPED");

    // a partial refund of a shipped order returns it to SHIPPED
    refund(&app, &ops, &order, 100, "运费补偿").await;
    let no1 = format!("{}R1", order.order_no);
    let (h, b) = refund_notice(&fake, &order, &no1, "SUCCESS", &Notify::default());
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    assert_eq!(order_view(&app, &erin, &order).await["status"], "SHIPPED");

    // the rest is reported ABNORMAL: back to SHIPPED, with an event
    let r = refund(&app, &ops, &order, order.total - 100, "退货").await;
    assert_eq!(
        r["data"]["refundOrder"]["order"]["status"], "REFUNDING",
        "{r}"
    );
    let no2 = format!("{}R2", order.order_no);
    let (h, b) = refund_notice(&fake, &order, &no2, "ABNORMAL", &Notify::default());
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    let view = order_view(&app, &erin, &order).await;
    assert_eq!(view["status"], "SHIPPED", "{view}");
    assert_eq!(view["refunds"][1]["status"], "ABNORMAL");
    assert_eq!(view["refunded"]["amount"], 100);
    assert!(view["events"].to_string().contains("refund ABNORMAL"));

    // handled by hand at WeChat Pay, it succeeds later: counted once, the order is REFUNDED
    let (h, b) = refund_notice(&fake, &order, &no2, "SUCCESS", &Notify::default());
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    assert_eq!(
        post_notification(&app, "/webhooks/wechatpay/refund-notify", &h, &b)
            .await
            .0,
        204
    );
    let view = order_view(&app, &erin, &order).await;
    assert_eq!(view["status"], "REFUNDED", "{view}");
    assert_eq!(view["refunded"]["amount"], order.total);
    assert_eq!(view["refunds"][1]["status"], "SUCCESS");
}
