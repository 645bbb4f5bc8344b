//! `createWeChatPayment`: a signed prepay per §3.2, `paySign` per §3.3 (checked with OpenSSL and
//! with the `rsa` crate), one prepay per order however often and concurrently it is asked for,
//! retries on 5xx, signatures enforced in both directions, and the guards.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use domain::wechatpay::{PayError, WechatPay};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::VerifyingKey;
use serde_json::json;
use sha2::Sha256;

use super::*;
use crate::fake_wechatpay::KEYS;
use crate::orders::{Buyer, staff_token};

fn openssl_verifies(public_pem: &std::path::Path, message: &str, signature_b64: &str) -> bool {
    let dir = std::env::temp_dir().join(format!("rz-paysign-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("msg"), message).unwrap();
    std::fs::write(dir.join("sig"), B64.decode(signature_b64).unwrap()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_pem)
        .arg("-signature")
        .arg(dir.join("sig"))
        .arg(dir.join("msg"))
        .output()
        .expect("openssl is installed");
    let _ = std::fs::remove_dir_all(&dir);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[tokio::test]
async fn pay_sign_verifies_independently_and_one_prepay_serves_every_call() {
    let (app, fake) = merchant_app().await;
    let alice = new_buyer(&app, "alice").await;
    let order = unpaid_order(&app, &alice).await;

    let params = create_payment(&app, &alice, &order).await;
    assert_eq!(params["appId"], crate::fake_wechat::APP_ID);
    assert_eq!(params["signType"], "RSA");
    let ts = params["timeStamp"].as_str().unwrap();
    assert_eq!(ts.len(), 10);
    assert!((chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap()).abs() < 60);
    let nonce = params["nonceStr"].as_str().unwrap();
    assert!(!nonce.is_empty() && nonce.len() <= 32);
    let prepay = fake.with(|s| s.orders[&order.order_no].clone());
    assert_eq!(params["package"], format!("prepay_id={}", prepay.prepay_id));
    assert_eq!(prepay.total, order.total);
    assert_eq!(prepay.openid, "dev-alice");
    let first_line = app
        .post_as(
            &alice.token,
            "query O($id: ID!) { order(id: $id) { lines { productName } } }",
            json!({ "id": order.gid }),
        )
        .await
        .1;
    assert_eq!(
        prepay.description,
        first_line["data"]["order"]["lines"][0]["productName"]
            .as_str()
            .unwrap()
    );
    // time_expire = the order's payment deadline, in China time
    let view = app
        .post_as(
            &alice.token,
            "query O($id: ID!) { order(id: $id) { paymentDeadline } }",
            json!({ "id": order.gid }),
        )
        .await
        .1;
    let deadline = chrono::DateTime::parse_from_rfc3339(
        view["data"]["order"]["paymentDeadline"].as_str().unwrap(),
    )
    .unwrap();
    let expire = chrono::DateTime::parse_from_rfc3339(&prepay.time_expire).unwrap();
    assert_eq!(expire.timestamp(), deadline.timestamp());
    assert!(
        prepay.time_expire.ends_with("+08:00"),
        "{}",
        prepay.time_expire
    );

    // paySign over "appId\ntimeStamp\nnonceStr\npackage\n" with the merchant key
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        params["appId"].as_str().unwrap(),
        ts,
        nonce,
        params["package"].as_str().unwrap()
    );
    let pay_sign = params["paySign"].as_str().unwrap();
    assert!(
        openssl_verifies(&fake.merchant_public_pem(), &message, pay_sign),
        "openssl rejects paySign"
    );
    let key = VerifyingKey::<Sha256>::new(RsaPublicKey::from(&KEYS.merchant));
    assert!(domain::wechatpay::verify_base64(
        &key,
        message.as_bytes(),
        pay_sign
    ));
    assert!(!openssl_verifies(
        &fake.merchant_public_pem(),
        &message.replace("prepay_id", "prepay_iD"),
        pay_sign
    ));

    // again, and 10 at once: the same prepay, one request to WeChat Pay
    let again = create_payment(&app, &alice, &order).await;
    assert_eq!(again["package"], params["package"]);
    let many =
        futures::future::join_all((0..10).map(|_| create_payment(&app, &alice, &order))).await;
    assert!(many.iter().all(|p| p["package"] == params["package"]));
    assert_eq!(fake.with(|s| s.prepay_calls[&order.order_no]), 1);
}

#[tokio::test]
async fn concurrent_first_calls_make_one_prepay() {
    let (app, fake) = merchant_app().await;
    let bob = new_buyer(&app, "bob").await;
    let order = unpaid_order(&app, &bob).await;
    let all = futures::future::join_all((0..12).map(|_| create_payment(&app, &bob, &order))).await;
    assert!(all.iter().all(|p| p["package"] == all[0]["package"]));
    assert_eq!(
        fake.with(|s| s.prepay_calls[&order.order_no]),
        1,
        "one prepay for 12 concurrent calls"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_exhaustion_is_a_retryable_error() {
    let (app, fake) = merchant_app().await;
    let carol = new_buyer(&app, "carol").await;
    let order = unpaid_order(&app, &carol).await;
    fake.with(|s| s.fail_next = 2);
    create_payment(&app, &carol, &order).await;
    let jsapi = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.1 == "/v3/pay/transactions/jsapi")
            .count()
    });
    assert_eq!(jsapi, 3, "two 500s, then success");

    let other = unpaid_order(&app, &carol).await;
    fake.with(|s| s.fail_next = 100);
    let (status, body) = app
        .post_as(&carol.token, CREATE, json!({ "id": other.gid }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{body}"
    );
    fake.with(|s| s.fail_next = 0);
    // the claim was released: the next call succeeds
    create_payment(&app, &carol, &other).await;
}

#[tokio::test]
async fn signatures_are_enforced_both_ways() {
    let (app, fake) = merchant_app().await;
    let dave = new_buyer(&app, "dave").await;
    let order = unpaid_order(&app, &dave).await;

    // a client with the wrong merchant key: WeChat Pay (the fake) refuses it
    let impostor = WechatPay::from_keys(
        &fake.settings(),
        crate::fake_wechat::APP_ID,
        KEYS.stranger.clone(),
        RsaPublicKey::from(&KEYS.platform),
    )
    .unwrap();
    let refused = impostor
        .prepay(
            &order.order_no,
            "x",
            order.total,
            "o",
            chrono::Utc::now() + chrono::Duration::minutes(5),
        )
        .await;
    assert!(
        matches!(refused, Err(PayError::Rejected { status: 401, ref code, .. }) if code == "SIGN_ERROR"),
        "{refused:?}"
    );
    assert_eq!(fake.with(|s| s.sign_errors), 1);

    // responses signed by someone else are not believed
    fake.with(|s| s.forge_responses = true);
    let (_, body) = app
        .post_as(&dave.token, CREATE, json!({ "id": order.gid }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{body}"
    );
    let pay = match app.app.payments.mode() {
        domain::payment::PaymentMode::Merchant(pay) => pay.clone(),
        other => panic!("{other:?}"),
    };
    let forged = pay.query_order(&order.order_no).await;
    assert!(
        matches!(forged, Err(PayError::Unverified("bad_signature"))),
        "{forged:?}"
    );
    fake.with(|s| s.forge_responses = false);
    create_payment(&app, &dave, &order).await;
}

#[tokio::test]
async fn guards_and_business_refusals() {
    let (app, _fake) = merchant_app().await;
    let erin = new_buyer(&app, "erin").await;
    let frank: Buyer = new_buyer(&app, "frank").await;
    let order = unpaid_order(&app, &erin).await;
    let vars = json!({ "id": order.gid });

    let (_, anon) = app.post(CREATE, vars.clone()).await;
    assert_eq!(anon["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let ops = staff_token(&app, "ops1", domain::identity::Role::Ops).await;
    let (_, staff) = app.post_as(&ops, CREATE, vars.clone()).await;
    assert_eq!(staff["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let (_, other) = app.post_as(&frank.token, CREATE, vars.clone()).await;
    assert_eq!(
        other["data"]["createWeChatPayment"]["errors"][0]["code"],
        "NOT_FOUND"
    );

    // a cancelled order cannot be paid
    let (_, cancelled) = app
        .post_as(&erin.token, crate::orders::CANCEL, vars.clone())
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["order"]["status"],
        "CANCELLED"
    );
    let (_, late) = app.post_as(&erin.token, CREATE, vars.clone()).await;
    assert_eq!(
        late["data"]["createWeChatPayment"]["errors"][0]["code"],
        "INVALID_ORDER_TRANSITION"
    );

    // devConfirmPayment does not exist where a merchant is configured
    let (_, dev) = app
        .post_as(
            &erin.token,
            "mutation D($id: ID!) { devConfirmPayment(orderId: $id) { errors { code } } }",
            vars.clone(),
        )
        .await;
    assert_eq!(dev["errors"][0]["extensions"]["code"], "FORBIDDEN", "{dev}");
    let fields = app
        .data(
            "{ __type(name: \"Mutation\") { fields { name } } }",
            json!({}),
        )
        .await;
    let names: Vec<&str> = fields["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"createWeChatPayment") && !names.contains(&"devConfirmPayment"),
        "{names:?}"
    );
}

#[tokio::test]
async fn development_payments_are_clearly_fake_and_use_the_notification_path() {
    let app = crate::orders::app(Options::default()).await;
    let gina = new_buyer(&app, "gina").await;
    let order = unpaid_order(&app, &gina).await;
    let body = app
        .post_as(&gina.token, CREATE, json!({ "id": order.gid }))
        .await
        .1;
    let payload = &body["data"]["createWeChatPayment"];
    assert_eq!(payload["development"], true, "{body}");
    assert!(
        payload["params"]["package"]
            .as_str()
            .unwrap()
            .contains("DEV-NOT-A-REAL-PREPAY")
    );
    assert!(
        payload["params"]["paySign"]
            .as_str()
            .unwrap()
            .starts_with("DEVELOPMENT-ONLY")
    );
    let q = "mutation D($id: ID!) { devConfirmPayment(orderId: $id) { order { status payment { status transactionId } } errors { code } } }";
    let confirmed = app
        .post_as(&gina.token, q, json!({ "id": order.gid }))
        .await
        .1;
    assert_eq!(
        confirmed["data"]["devConfirmPayment"]["order"]["status"], "PAID",
        "{confirmed}"
    );
    assert_eq!(
        confirmed["data"]["devConfirmPayment"]["order"]["payment"]["status"],
        "PAID"
    );
    // twice is a duplicate: still one payment and one PAID entry
    let again = app
        .post_as(&gina.token, q, json!({ "id": order.gid }))
        .await
        .1;
    assert_eq!(
        again["data"]["devConfirmPayment"]["errors"],
        json!([]),
        "{again}"
    );
    assert_eq!(paid_records(&app, order.id).await, (1, 1));
    // visible to introspection here
    let fields = app
        .data(
            "{ __type(name: \"Mutation\") { fields { name } } }",
            json!({}),
        )
        .await;
    assert!(fields.to_string().contains("devConfirmPayment"));
}
