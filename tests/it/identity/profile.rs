//! The member profile, phone and address book, and logs free of personal data.

use super::*;

#[tokio::test]
async fn address_book_rules_and_ownership() {
    let (app, _fake) = app_with_wechat().await;
    let (alice, _, _) = login(&app, "o-addr-a").await;
    let (bob, _, _) = login(&app, "o-addr-b").await;
    let add = |token: String, input: Value| {
        let app = &app;
        async move {
            let body = app.post_as(&token, ADD, json!({ "input": input })).await.1;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["addAddress"].clone()
        }
    };
    let first = add(alice.clone(), address("李雷", false)).await;
    assert!(first["errors"].as_array().unwrap().is_empty(), "{first}");
    assert_eq!(
        first["address"]["isDefault"], true,
        "the first address is the default"
    );
    assert_eq!(first["address"]["phoneMasked"], "139****5678");
    let second = add(alice.clone(), address("韩梅梅", true)).await;
    assert_eq!(second["address"]["isDefault"], true);
    let me = app.post_as(&alice, ME, json!({})).await.1;
    let list = me["data"]["me"]["addresses"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list.iter().filter(|a| a["isDefault"] == true).count(),
        1,
        "one default"
    );
    assert_eq!(list[0]["id"], second["address"]["id"], "default first");

    // validation: every bad field named
    let bad = add(
        alice.clone(),
        json!({ "recipient": "", "phone": "12345", "province": "x", "city": "y", "district": "z", "detail": "d", "postalCode": "12" }),
    )
    .await;
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "input.recipient",
        "input.phone",
        "input.detail",
        "input.postalCode",
    ] {
        assert!(fields.contains(&f), "{f} missing in {fields:?}");
    }
    assert!(bad["address"].is_null());

    // bob cannot touch alice's address
    let target = first["address"]["id"].clone();
    for query in [
        r#"mutation M($id: ID!) { removeAddress(id: $id) { removedId errors { code } } }"#,
        r#"mutation M($id: ID!) { setDefaultAddress(id: $id) { address { id } errors { code } } }"#,
    ] {
        let body = app.post_as(&bob, query, json!({ "id": target })).await.1;
        let payload = body["data"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone();
        assert_eq!(payload["errors"][0]["code"], "NOT_FOUND", "{body}");
    }
    let body = app
        .post_as(&bob, r#"mutation M($id: ID!, $i: AddressInput!) { updateAddress(id: $id, input: $i) { errors { code } } }"#,
            json!({ "id": target, "i": address("Mallory", false) }))
        .await
        .1;
    assert_eq!(
        body["data"]["updateAddress"]["errors"][0]["code"],
        "NOT_FOUND"
    );
    let me = app.post_as(&alice, ME, json!({})).await.1;
    assert_eq!(
        me["data"]["me"]["addresses"].as_array().unwrap().len(),
        2,
        "untouched"
    );

    // removing the default promotes another
    let body = app
        .post_as(
            &alice,
            r#"mutation M($id: ID!) { removeAddress(id: $id) { removedId errors { code } } }"#,
            json!({ "id": second["address"]["id"] }),
        )
        .await
        .1;
    assert_eq!(
        body["data"]["removeAddress"]["removedId"],
        second["address"]["id"]
    );
    let me = app.post_as(&alice, ME, json!({})).await.1;
    assert_eq!(me["data"]["me"]["addresses"][0]["isDefault"], true);

    // the limit holds under concurrency: 30 adds racing, 20 kept
    let adds = (0..30).map(|i| add(bob.clone(), address(&format!("R{i}"), i % 3 == 0)));
    let results = futures::future::join_all(adds).await;
    let ok = results
        .iter()
        .filter(|r| r["errors"].as_array().unwrap().is_empty())
        .count();
    let limited = results
        .iter()
        .filter(|r| r["errors"][0]["code"] == "LIMIT_REACHED")
        .count();
    assert_eq!((ok, limited), (20, 10));
    let me = app.post_as(&bob, ME, json!({})).await.1;
    let list = me["data"]["me"]["addresses"].as_array().unwrap();
    assert_eq!(list.len(), 20);
    assert_eq!(list.iter().filter(|a| a["isDefault"] == true).count(), 1);
}

#[tokio::test]
async fn profile_updates_are_validated() {
    let (app, _fake) = app_with_wechat().await;
    let (token, _, _) = login(&app, "o-profile").await;
    let q = r#"mutation P($i: UpdateProfileInput!) { updateProfile(input: $i) { member { nickname avatarUrl } errors { code field } } }"#;
    let body = app
        .post_as(
            &token,
            q,
            json!({ "i": { "nickname": " 小明 ", "avatarUrl": "https://cdn.ruizhu.com/a.png" } }),
        )
        .await
        .1;
    assert_eq!(body["data"]["updateProfile"]["member"]["nickname"], "小明");
    let body = app
        .post_as(
            &token,
            q,
            json!({ "i": { "nickname": "x".repeat(33), "avatarUrl": "javascript:alert(1)" } }),
        )
        .await
        .1;
    let errors = body["data"]["updateProfile"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert!(body["data"]["updateProfile"]["member"].is_null());
}

#[tokio::test]
async fn phone_is_encrypted_bound_to_its_row_and_found_by_blind_index() {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use domain::schema::members;
    let (app, fake) = app_with_wechat().await;
    let (alice, _, alice_id) = login(&app, "o-phone-a").await;
    let (bob, _, _) = login(&app, "o-phone-b").await;
    // concurrent binds share one access token fetch
    let bind = r#"mutation B($c: String!) { bindPhone(code: $c) { phoneMasked } }"#;
    let (a, b) = tokio::join!(
        app.post_as(&alice, bind, json!({ "c": "phone:13912345678" })),
        app.post_as(&bob, bind, json!({ "c": "phone:13698765432" }))
    );
    assert_eq!(
        a.1["data"]["bindPhone"]["phoneMasked"], "139****5678",
        "{a:?}"
    );
    assert_eq!(b.1["data"]["bindPhone"]["phoneMasked"], "136****5432");
    assert_eq!(
        fake.stable_token_calls(),
        1,
        "one refresher for the shared access token"
    );
    let (_, body) = app.post_as(&alice, bind, json!({ "c": "err:40029" })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["reason"],
        "WECHAT_CODE_INVALID"
    );

    let mut conn = app.app.db.conn().await.unwrap();
    let rows: Vec<(u64, Option<String>, Option<String>)> = members::table
        .select((members::id, members::phone_enc, members::phone_bidx))
        .order(members::id)
        .load(&mut conn)
        .await
        .unwrap();
    for (_, enc, bidx) in &rows {
        let stored = format!("{}{}", enc.as_deref().unwrap(), bidx.as_deref().unwrap());
        for number in ["13912345678", "13698765432"] {
            for window in number.as_bytes().windows(5) {
                let run = std::str::from_utf8(window).unwrap();
                assert!(
                    !stored.contains(run),
                    "stored bytes contain digits {run} of the number"
                );
            }
        }
    }
    // lookup through the blind index
    let found = app
        .app
        .identity
        .member_by_phone("13912345678")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(crate::harness_id("Member", found.id), alice_id);
    assert!(
        app.app
            .identity
            .member_by_phone("13900000000")
            .await
            .unwrap()
            .is_none()
    );

    // swap the two ciphertexts: neither decrypts on the other's row
    let (a_id, a_enc) = (rows[0].0, rows[0].1.clone());
    let (b_id, b_enc) = (rows[1].0, rows[1].1.clone());
    diesel::update(members::table.find(a_id))
        .set(members::phone_enc.eq(b_enc))
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::update(members::table.find(b_id))
        .set(members::phone_enc.eq(a_enc))
        .execute(&mut conn)
        .await
        .unwrap();
    let me = app.post_as(&alice, ME, json!({})).await.1;
    assert!(me["data"]["me"]["phoneMasked"].is_null(), "{me}");
}

#[tokio::test]
async fn logs_never_contain_secrets_or_personal_data() {
    use domain::identity::Role;
    let (app, fake) = app_with_wechat().await;
    let openid = "o-secret-openid-7f3a";
    let (access, refresh, _) = login(&app, openid).await;
    let bind = r#"mutation B($c: String!) { bindPhone(code: $c) { phoneMasked } }"#;
    app.post_as(&access, bind, json!({ "c": "phone:13712344321" }))
        .await;
    app.post_as(&access, ADD, json!({ "input": address("王芳", true) }))
        .await;
    app.post(REFRESH, json!({ "t": refresh })).await;
    app.post(REFRESH, json!({ "t": refresh })).await; // reuse: logged as a security event
    let _ = staff_account(&app, "logcheck", Role::Ops).await;
    app.post(
        STAFF_LOGIN,
        json!({ "u": "logcheck", "p": "a-wrong-password-9" }),
    )
    .await;
    app.post(LOGIN, json!({ "code": "err:-1" })).await;
    app.post(LOGIN, json!({ "code": "slow" })).await;
    app.post_as(
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "{ __typename }",
        json!({}),
    )
    .await;

    let logs = captured_logs();
    assert!(
        logs.len() > 1_000,
        "logs were captured ({} bytes)",
        logs.len()
    );
    let mut forbidden = vec![
        openid.to_owned(),
        "13712344321".to_owned(),
        "13912345678".to_owned(),
        "logcheck-password-123".to_owned(),
        "a-wrong-password-9".to_owned(),
        crate::fake_wechat::APP_SECRET.to_owned(),
        "session_key".to_owned(),
        "eyJ".to_owned(), // any JWT
        refresh.clone(),
    ];
    forbidden.extend(fake.secrets());
    for needle in &forbidden {
        assert!(
            !logs.contains(needle.as_str()),
            "the logs contain {needle:?}"
        );
    }
}
