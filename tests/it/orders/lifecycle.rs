//! After checkout: the sweeper, transitions, guards and order lists.

use super::*;

#[tokio::test]
async fn expired_orders_are_cancelled_once_by_concurrent_sweepers() {
    let app = app(Options {
        payment_window_secs: Some(1),
        ..Options::default()
    })
    .await;
    let list = skus(&app, 2).await;
    let (a, b_sku) = (list[0].0, list[1].0);
    set_stock(&app, a, 30).await;
    set_stock(&app, b_sku, 30).await;
    let b = buyer(&app, "late").await;
    for _ in 0..12 {
        let r = place(&app, &b, &key(), &[(a, 2), (b_sku, 1)]).await;
        assert!(r["order"].is_object(), "{r}");
    }
    assert_eq!(stock_of(&app, a).await, 6);
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let orders = app.app.orders.clone();
    let (x, y) = tokio::join!(orders.sweep_expired(), app.app.orders.sweep_expired());
    let (x, y) = (x.unwrap(), y.unwrap());
    let again = app.app.orders.sweep_expired().await.unwrap();
    assert_eq!(
        x + y + again,
        12,
        "each order cancelled once ({x} + {y} + {again})"
    );
    assert_eq!(again, 0);
    assert_eq!(stock_of(&app, a).await, 30, "stock released exactly once");
    assert_eq!(stock_of(&app, b_sku).await, 30);
    assert_ledger_matches(&app, a).await;
    assert_ledger_matches(&app, b_sku).await;
    let mine = app
        .post_as(&b.token, "{ me { orders(first: 50) { totalCount edges { node { status events { toStatus actor } } } } } }", json!({}))
        .await
        .1;
    let edges = mine["data"]["me"]["orders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 12);
    for e in edges {
        assert_eq!(e["node"]["status"], "CANCELLED");
        let events = e["node"]["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "placed, then cancelled once: {events:?}");
        assert_eq!(events[1]["actor"], "SYSTEM");
    }
}

#[tokio::test]
async fn lifecycle_follows_the_state_machine_and_guards_hold() {
    use domain::identity::Role;
    let app = app(Options::default()).await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 20).await;
    let alice = buyer(&app, "alice").await;
    let bob = buyer(&app, "bob").await;
    let ops = staff_token(&app, "ops1", Role::Ops).await;
    let advisor = staff_token(&app, "adv1", Role::Advisor).await;
    let placed = place(&app, &alice, &key(), &[(sku, 1)]).await;
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    let vars = json!({ "id": id });

    // other people's orders
    let seen = app
        .post_as(
            &bob.token,
            "query O($id: ID!) { order(id: $id) { id } }",
            vars.clone(),
        )
        .await
        .1;
    assert!(
        seen["data"]["order"].is_null(),
        "another member sees nothing: {seen}"
    );
    let r = payload(&app.post_as(&bob.token, CANCEL, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "NOT_FOUND");
    let (_, r) = app.post(CANCEL, vars.clone()).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let (_, r) = app.post_as(&advisor, CANCEL, vars.clone()).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "advisors do not cancel orders"
    );
    // customers and advisors cannot ship; nobody ships an unpaid order
    for token in [&alice.token, &advisor] {
        let (_, r) = app.post_as(token, SHIP, vars.clone()).await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    let r = payload(&app.post_as(&ops, SHIP, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "INVALID_ORDER_TRANSITION", "{r}");
    let r = payload(&app.post_as(&alice.token, RECEIVED, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "INVALID_ORDER_TRANSITION");
    // staff see it
    let seen = app
        .post_as(
            &advisor,
            "query O($id: ID!) { order(id: $id) { id status } }",
            vars.clone(),
        )
        .await
        .1;
    assert_eq!(seen["data"]["order"]["status"], "PENDING_PAYMENT");

    // paid (development payments: the notification path without WeChat) → shipped → delivered
    let paid = app
        .post_as(
            &alice.token,
            "mutation D($id: ID!) { devConfirmPayment(orderId: $id) { order { status } errors { code } } }",
            vars.clone(),
        )
        .await
        .1;
    assert_eq!(payload(&paid)["order"]["status"], "PAID", "{paid}");
    let r = payload(&app.post_as(&alice.token, CANCEL, vars.clone()).await.1);
    assert_eq!(
        r["errors"][0]["code"], "INVALID_ORDER_TRANSITION",
        "paid orders are refunded, not cancelled"
    );
    let r = payload(&app.post_as(&ops, SHIP, vars.clone()).await.1);
    assert_eq!(r["order"]["status"], "SHIPPED", "{r}");
    assert_eq!(r["order"]["trackingNo"], "SF1234567890");
    let r = payload(&app.post_as(&ops, SHIP, vars.clone()).await.1);
    assert_eq!(
        r["errors"][0]["code"], "INVALID_ORDER_TRANSITION",
        "shipped twice"
    );
    let r = payload(&app.post_as(&bob.token, RECEIVED, vars.clone()).await.1);
    assert_eq!(r["errors"][0]["code"], "NOT_FOUND");
    let r = payload(&app.post_as(&alice.token, RECEIVED, vars.clone()).await.1);
    assert_eq!(r["order"]["status"], "DELIVERED");
    let timeline = app
        .post_as(
            &alice.token,
            "query O($id: ID!) { order(id: $id) { events { fromStatus toStatus actor } } }",
            vars.clone(),
        )
        .await
        .1;
    let statuses: Vec<&str> = timeline["data"]["order"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["toStatus"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED"]
    );
    assert_eq!(
        app.app.orders.auto_complete().await.unwrap(),
        0,
        "not due for a week"
    );

    // the owner cancels an unpaid order; stock comes back once; a second cancel is refused
    let second = place(&app, &alice, &key(), &[(sku, 3)]).await;
    let before = stock_of(&app, sku).await;
    let vars2 = json!({ "id": second["order"]["id"] });
    let r = payload(&app.post_as(&alice.token, CANCEL, vars2.clone()).await.1);
    assert_eq!(r["order"]["status"], "CANCELLED");
    assert_eq!(stock_of(&app, sku).await, before + 3);
    let r = payload(&app.post_as(&ops, CANCEL, vars2).await.1);
    assert_eq!(r["errors"][0]["code"], "INVALID_ORDER_TRANSITION");
    assert_ledger_matches(&app, sku).await;

    // staff lists: members are refused, staff filter by status
    let list = r#"{ orders(first: 10, filter: { status: [DELIVERED] }) { totalCount edges { node { status } } } }"#;
    let (_, r) = app.post_as(&alice.token, list, json!({})).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let r = app.post_as(&advisor, list, json!({})).await.1;
    assert_eq!(r["data"]["orders"]["totalCount"], 1, "{r}");
}

#[tokio::test]
async fn order_lists_cost_the_same_statements_for_any_page_size() {
    use domain::identity::Role;
    let app = TestApp::spawn_with(Options {
        dev_login: true,
        loader_delay_us: Some(20_000),
        ..Options::default()
    })
    .await;
    let sku = skus(&app, 1).await[0].0;
    set_stock(&app, sku, 100).await;
    let b = buyer(&app, "lists").await;
    for _ in 0..20 {
        assert!(place(&app, &b, &key(), &[(sku, 1)]).await["order"].is_object());
    }
    let staff = staff_token(&app, "lister", Role::Advisor).await;
    let q = "query Q($n: Int) { orders(first: $n) { edges { node { orderNo lines { skuCode sku { code } } events { toStatus } } } } }";
    // the first request with a token also looks its session up (cached afterwards)
    app.post_as(&staff, "{ staffMe { id } }", json!({})).await;
    let mut counts = Vec::new();
    for n in [5, 20, 5, 20] {
        let before = app.statements();
        let r = app.post_as(&staff, q, json!({ "n": n })).await.1;
        assert_eq!(
            r["data"]["orders"]["edges"].as_array().unwrap().len(),
            n,
            "{r}"
        );
        counts.push(app.statements() - before);
    }
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "statements per request: {counts:?}"
    );
    assert!(counts[0] <= 6, "{counts:?}");
}
