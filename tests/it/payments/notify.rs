//! `POST /webhooks/wechatpay/notify`: a valid notification pays the order exactly once, however
//! many copies arrive at once; every forged or mismatched one is refused with 4xx + FAIL and
//! changes nothing.

use serde_json::json;

use super::*;
use crate::fake_wechatpay::Notify;

#[tokio::test]
async fn fifty_concurrent_copies_make_one_transition() {
    let (app, fake) = merchant_app().await;
    let alice = new_buyer(&app, "alice").await;
    let order = unpaid_order(&app, &alice).await;
    create_payment(&app, &alice, &order).await;
    let tx = fake.pay(&order.order_no);

    // identical retries and separately signed copies, all at once
    let (headers, body) = fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default());
    let copies: Vec<_> = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                (headers.clone(), body.clone())
            } else {
                fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default())
            }
        })
        .collect();
    let answers = futures::future::join_all(
        copies
            .iter()
            .map(|(h, b)| post_notification(&app, "/webhooks/wechatpay/notify", h, b)),
    )
    .await;
    for (status, text) in &answers {
        assert_eq!(*status, 204, "{text}");
        assert!(text.is_empty());
    }
    assert_eq!(
        paid_records(&app, order.id).await,
        (1, 1),
        "one payment row, one PAID event"
    );
    let view = order_view(&app, &alice, &order).await;
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["payment"]["status"], "PAID");
    assert_eq!(view["payment"]["transactionId"], tx["transaction_id"]);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ruizhu_payments_recorded_total{outcome=\"duplicate\""),
        "duplicates are counted"
    );
}

#[tokio::test]
async fn every_bad_notification_is_refused_and_changes_nothing() {
    let (app, fake) = merchant_app().await;
    let bob = new_buyer(&app, "bob").await;
    let order = unpaid_order(&app, &bob).await;
    create_payment(&app, &bob, &order).await;
    let tx = fake.pay(&order.order_no);

    let mut cases: Vec<(&str, crate::fake_wechatpay::Headers, String)> = Vec::new();
    let mut add = |name: &'static str, resource: &serde_json::Value, how: Notify| {
        let (h, b) = fake.notification("TRANSACTION.SUCCESS", resource, &how);
        cases.push((name, h, b));
    };
    add(
        "SIGNTEST probe",
        &tx,
        Notify {
            signature: Some("WECHATPAY/SIGNTEST/AAAAAAAAAA==".into()),
            ..Notify::default()
        },
    );
    add(
        "timestamp 301 s old",
        &tx,
        Notify {
            timestamp_offset_secs: -301,
            ..Notify::default()
        },
    );
    add(
        "timestamp 310 s ahead",
        &tx,
        Notify {
            timestamp_offset_secs: 310,
            ..Notify::default()
        },
    );
    add(
        "unknown serial",
        &tx,
        Notify {
            serial: Some("PUB_KEY_ID_0000000000000000000000000000".into()),
            ..Notify::default()
        },
    );
    add(
        "signed by another key",
        &tx,
        Notify {
            sign_with_stranger: true,
            ..Notify::default()
        },
    );
    add(
        "body changed after signing",
        &tx,
        Notify {
            change_body_after_signing: true,
            ..Notify::default()
        },
    );
    add(
        "wrong AAD",
        &tx,
        Notify {
            aad: Some("refund".into()),
            ..Notify::default()
        },
    );
    add(
        "wrong nonce",
        &tx,
        Notify {
            wrong_nonce: true,
            ..Notify::default()
        },
    );
    let mut off_by_one = tx.clone();
    off_by_one["amount"]["total"] = json!(order.total - 1);
    add("amount off by 1 fen", &off_by_one, Notify::default());
    let mut foreign_mch = tx.clone();
    foreign_mch["mchid"] = json!("1900000002");
    add("foreign mchid", &foreign_mch, Notify::default());
    let mut foreign_app = tx.clone();
    foreign_app["appid"] = json!("wxanotherapp00000");
    add("foreign appid", &foreign_app, Notify::default());
    let unknown = crate::fake_wechatpay::FakeWechatPay::transaction(
        "R2099010100000001",
        order.total,
        "4200000000000000000000000001",
    );
    add("unknown out_trade_no", &unknown, Notify::default());
    let mut notpay = tx.clone();
    notpay["trade_state"] = json!("NOTPAY");
    add("trade_state NOTPAY", &notpay, Notify::default());
    // genuinely signed, but not the envelope
    cases.push((
        "not JSON",
        fake.sign_raw("{not json"),
        "{not json".to_owned(),
    ));
    let no_resource = r#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS"}"#;
    cases.push((
        "no resource",
        fake.sign_raw(no_resource),
        no_resource.to_owned(),
    ));
    // no signature headers at all
    cases.push((
        "no headers",
        vec![],
        fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default())
            .1,
    ));

    for (name, headers, body) in &cases {
        let (status, text) =
            post_notification(&app, "/webhooks/wechatpay/notify", headers, body).await;
        assert!((400..500).contains(&status), "{name}: {status} {text}");
        let answer: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: {text}"));
        assert_eq!(answer["code"], "FAIL", "{name}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert_eq!(
            paid_records(&app, order.id).await,
            (0, 0),
            "{name} changed state"
        );
    }
    assert_eq!(
        order_view(&app, &bob, &order).await["status"],
        "PENDING_PAYMENT"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in [
        "amount_mismatch",
        "foreign_mchid",
        "foreign_appid",
        "probe_signature",
        "bad_signature",
        "stale_timestamp",
        "unknown_serial",
    ] {
        assert!(
            metrics.contains(&format!(
                "ruizhu_wechatpay_security_events_total{{kind=\"{kind}\"}}"
            )),
            "{kind} not counted"
        );
    }
    assert!(!crate::harness::captured_logs().contains(crate::fake_wechatpay::APIV3_KEY));

    // the genuine one still works afterwards
    let (headers, body) = fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default());
    let (status, _) = post_notification(&app, "/webhooks/wechatpay/notify", &headers, &body).await;
    assert_eq!(status, 204);
    assert_eq!(paid_records(&app, order.id).await, (1, 1));
}

#[tokio::test]
async fn without_a_merchant_notifications_are_refused() {
    let app = crate::orders::app(Options::default()).await;
    let fake = crate::fake_wechatpay::FakeWechatPay::start().await;
    let tx = crate::fake_wechatpay::FakeWechatPay::transaction(
        "R2026112500000001",
        100,
        "4200000000000000000000000002",
    );
    let (headers, body) = fake.notification("TRANSACTION.SUCCESS", &tx, &Notify::default());
    let (status, text) =
        post_notification(&app, "/webhooks/wechatpay/notify", &headers, &body).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("FAIL"));
}
