//! Stock adjustments by operations.

use super::*;

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
