//! The server-side cart.

use super::*;

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
