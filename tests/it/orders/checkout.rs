//! Checkout: contention, idempotency, refusals and key retention.

use super::*;

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
