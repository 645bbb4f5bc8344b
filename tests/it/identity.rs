//! Identity: WeChat login against a local fake WeChat, tokens and their forgeries, refresh
//! rotation, revocation across replicas, staff logins and throttling, guards, the profile,
//! phone encryption and the address book, and logs free of secrets.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fake_wechat::FakeWechat;
use crate::harness::{Options, TestApp, captured_logs};

const LOGIN: &str = r#"mutation L($code: String!) {
  loginWithWeChat(code: $code) { accessToken refreshToken expiresIn member { id nickname phoneMasked } staff { id } }
}"#;
const REFRESH: &str = r#"mutation R($t: String!) {
  refreshSession(refreshToken: $t) { accessToken refreshToken expiresIn member { id } staff { id role } }
}"#;
const STAFF_LOGIN: &str = r#"mutation S($u: String!, $p: String!) {
  staffLogin(username: $u, password: $p) { accessToken refreshToken staff { id username role } member { id } }
}"#;
const ME: &str =
    "{ me { id nickname avatarUrl phoneMasked addresses { id recipient phoneMasked isDefault } } }";

async fn app_with_wechat() -> (TestApp, FakeWechat) {
    let fake = FakeWechat::start().await;
    let app = TestApp::spawn_with(Options {
        seed: false,
        wechat_base: Some(fake.base.clone()),
        ..Options::default()
    })
    .await;
    (app, fake)
}

/// Logs in through the fake WeChat; returns (access, refresh, member id).
async fn login(app: &TestApp, openid: &str) -> (String, String, String) {
    let code = format!("ok:{openid}:{}", uuid::Uuid::new_v4().simple());
    let data = app.data(LOGIN, json!({ "code": code })).await;
    let p = &data["loginWithWeChat"];
    (
        p["accessToken"].as_str().unwrap().to_owned(),
        p["refreshToken"].as_str().unwrap().to_owned(),
        p["member"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn staff_account(app: &TestApp, username: &str, role: domain::identity::Role) -> String {
    let password = format!("{username}-password-123");
    app.app
        .identity
        .create_staff(
            username,
            &SecretString::from(password.clone()),
            role,
            "Test Staff",
        )
        .await
        .unwrap();
    let data = app
        .data(STAFF_LOGIN, json!({ "u": username, "p": password }))
        .await;
    data["staffLogin"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn code_of(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn wechat_login_creates_then_finds_the_member_and_keeps_unionid() {
    let (app, fake) = app_with_wechat().await;
    let first = app
        .data(LOGIN, json!({ "code": "ok:o-alice:u-alice" }))
        .await["loginWithWeChat"]
        .clone();
    assert_eq!(first["expiresIn"], 7200);
    assert!(first["staff"].is_null());
    let id = first["member"]["id"].clone();
    // same openid, no unionid this time: the same member, unionid kept
    let again = app.data(LOGIN, json!({ "code": "ok:o-alice" })).await["loginWithWeChat"].clone();
    assert_eq!(again["member"]["id"], id);
    let mut conn = app.app.db.conn().await.unwrap();
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use domain::schema::members;
    let rows: Vec<(String, Option<String>, Option<String>)> = members::table
        .select((members::openid, members::unionid, members::session_key_enc))
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.as_deref(), Some("u-alice"));
    let sealed = rows[0].2.as_deref().unwrap();
    let issued = fake
        .secrets()
        .into_iter()
        .rfind(|k| k.starts_with("SK"))
        .unwrap();
    assert!(
        sealed.starts_with("v1.") && !sealed.contains(&issued),
        "session_key is stored encrypted"
    );
    let aad = format!(
        "member-openid:{}:o-alice:session_key",
        crate::fake_wechat::APP_ID
    );
    let opened = app.app.identity.cipher().decrypt(sealed, &aad).unwrap();
    assert_eq!(
        opened,
        issued.as_bytes(),
        "and it is the latest one WeChat issued"
    );
    // the access token works
    let (status, me) = app
        .post_as(first["accessToken"].as_str().unwrap(), ME, json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["data"]["me"]["id"], id);
}

#[tokio::test]
async fn wechat_errors_map_to_typed_errors() {
    let (app, _fake) = app_with_wechat().await;
    for (code, expected, reason) in [
        ("err:40029", "UNAUTHENTICATED", Some("WECHAT_CODE_INVALID")),
        ("err:40163", "UNAUTHENTICATED", Some("WECHAT_CODE_INVALID")),
        ("err:45011", "RATE_LIMITED", None),
        ("err:40226", "FORBIDDEN", Some("WECHAT_USER_BLOCKED")),
        ("err:-1", "SERVICE_UNAVAILABLE", None),
        ("http500", "SERVICE_UNAVAILABLE", None),
        ("", "UNAUTHENTICATED", Some("WECHAT_CODE_INVALID")),
        ("dev:bob", "UNAUTHENTICATED", Some("WECHAT_CODE_INVALID")),
    ] {
        let (status, body) = app.post(LOGIN, json!({ "code": code })).await;
        assert_eq!(status, 200, "{code}");
        assert_eq!(code_of(&body), expected, "{code}: {body}");
        if let Some(reason) = reason {
            assert_eq!(body["errors"][0]["extensions"]["reason"], reason, "{code}");
        }
        assert!(body["data"].is_null(), "{code}");
    }
    let (_, body) = app.post(LOGIN, json!({ "code": "err:45011" })).await;
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], 60);
    // a code works once
    let code = "ok:o-carol";
    app.data(LOGIN, json!({ "code": code })).await;
    let (_, body) = app.post(LOGIN, json!({ "code": code })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["reason"],
        "WECHAT_CODE_INVALID"
    );
}

#[tokio::test]
async fn wechat_timeout_is_bounded_and_retryable() {
    let (app, _fake) = app_with_wechat().await;
    let started = Instant::now();
    let (_, body) = app.post(LOGIN, json!({ "code": "slow" })).await;
    assert_eq!(code_of(&body), "SERVICE_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the configured timeout"
    );
}

#[tokio::test]
async fn dev_login_only_when_switched_on() {
    let app = TestApp::spawn_with(Options {
        seed: false,
        dev_login: true,
        ..Options::default()
    })
    .await;
    let data = app.data(LOGIN, json!({ "code": "dev:alice" })).await;
    let token = data["loginWithWeChat"]["accessToken"].as_str().unwrap();
    let (status, me) = app.post_as(token, ME, json!({})).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me["data"]["me"]["id"],
        data["loginWithWeChat"]["member"]["id"]
    );
}

/// Signs claims as the server would, with a chosen header and key.
fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn forged_tokens_are_rejected() {
    let (app, _fake) = app_with_wechat().await;
    let (access, refresh, _) = login(&app, "o-forge").await;
    // the real claims of a live session: each forgery changes exactly one thing
    let real = payload_of(&access);
    let key = domain::identity::tokens::DEV_JWT_SECRET.as_bytes();
    let hs256 = json!({ "alg": "HS256", "typ": "JWT" });
    let now = chrono::Utc::now().timestamp();
    let with = |field: &str, value: Value| {
        let mut c = real.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(field);
        } else {
            c[field] = value;
        }
        c
    };

    // control: the forging code itself produces a token the server accepts
    let control = forge(&hs256, &real, key);
    let (status, body) = app.post_as(&control, "{ me { id } }", json!({})).await;
    assert_eq!(status, 200, "control token must pass: {body}");
    let within_leeway = forge(&hs256, &with("exp", json!(now - 10)), key);
    assert_eq!(
        app.post_as(&within_leeway, "{ me { id } }", json!({}))
            .await
            .0,
        200,
        "10 s of skew is tolerated"
    );

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT" }).to_string()),
        URL_SAFE_NO_PAD.encode(real.to_string())
    );
    let corpus = vec![
        ("alg none", none),
        (
            "another key",
            forge(&hs256, &real, b"another-secret-that-is-32-bytes-long!!"),
        ),
        (
            "RS256 header, HMAC signature",
            forge(&json!({ "alg": "RS256", "typ": "JWT" }), &real, key),
        ),
        (
            "HS512 header",
            forge(&json!({ "alg": "HS512", "typ": "JWT" }), &real, key),
        ),
        (
            "expired beyond leeway",
            forge(&hs256, &with("exp", json!(now - 31)), key),
        ),
        ("missing aud", forge(&hs256, &with("aud", Value::Null), key)),
        ("missing iss", forge(&hs256, &with("iss", Value::Null), key)),
        ("missing exp", forge(&hs256, &with("exp", Value::Null), key)),
        ("missing sub", forge(&hs256, &with("sub", Value::Null), key)),
        ("missing jti", forge(&hs256, &with("jti", Value::Null), key)),
        ("missing iat", forge(&hs256, &with("iat", Value::Null), key)),
        (
            "wrong aud",
            forge(&hs256, &with("aud", json!("someone-else")), key),
        ),
        ("wrong iss", forge(&hs256, &with("iss", json!("evil")), key)),
        (
            "exp as a string",
            forge(&hs256, &with("exp", json!((now + 3600).to_string())), key),
        ),
        (
            "member claiming a staff role",
            forge(&hs256, &with("role", json!("ADMIN")), key),
        ),
        (
            "unknown session",
            forge(
                &hs256,
                &with("sid", json!(uuid::Uuid::new_v4().to_string())),
                key,
            ),
        ),
        ("refresh token as access token", refresh.clone()),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in corpus {
        let (status, body) = app.post_as(&token, "{ __typename }", json!({})).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(code_of(&body), "UNAUTHENTICATED", "{name}");
        assert!(body.get("data").is_none(), "{name}: nothing executes");
    }
    // a header that is not a bearer token is not silently anonymous either
    let res = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // a revoked session
    let (status, _) = app.post_as(&access, "mutation { logout }", json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = app.post_as(&access, "{ __typename }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = app.post_as(&control, "{ __typename }", json!({})).await;
    assert_eq!(status, 401, "every token of the session is revoked");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let (app, _fake) = app_with_wechat().await;
    let (access, refresh, member) = login(&app, "o-rotate").await;

    // two concurrent refreshes with one token: at most one succeeds
    let (a, b) = tokio::join!(
        app.post(REFRESH, json!({ "t": refresh })),
        app.post(REFRESH, json!({ "t": refresh }))
    );
    let winners: Vec<&Value> = [&a.1, &b.1]
        .into_iter()
        .filter(|r| r["errors"].is_null())
        .collect();
    assert!(winners.len() <= 1, "{a:?} {b:?}");
    for loser in [&a.1, &b.1].into_iter().filter(|r| !r["errors"].is_null()) {
        assert_eq!(code_of(loser), "UNAUTHENTICATED");
    }
    // the first token was presented twice: the whole family is revoked, winner included
    if let Some(w) = winners.first() {
        let new_refresh = w["data"]["refreshSession"]["refreshToken"]
            .as_str()
            .unwrap();
        assert_eq!(w["data"]["refreshSession"]["member"]["id"], member);
        let (_, body) = app.post(REFRESH, json!({ "t": new_refresh })).await;
        assert_eq!(code_of(&body), "UNAUTHENTICATED");
        let new_access = w["data"]["refreshSession"]["accessToken"].as_str().unwrap();
        assert_eq!(
            app.post_as(new_access, "{ me { id } }", json!({})).await.0,
            401
        );
    }
    assert_eq!(
        app.post_as(&access, "{ me { id } }", json!({})).await.0,
        401
    );

    // a clean rotation chain: each token works exactly once
    let (_, mut current, _) = login(&app, "o-chain").await;
    for _ in 0..3 {
        let data = app.data(REFRESH, json!({ "t": current })).await;
        let next = data["refreshSession"]["refreshToken"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(next, current);
        let token = data["refreshSession"]["accessToken"].as_str().unwrap();
        assert_eq!(app.post_as(token, "{ me { id } }", json!({})).await.0, 200);
        current = next;
    }
    let (_, body) = app.post(REFRESH, json!({ "t": "made-up-token" })).await;
    assert_eq!(code_of(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn logout_is_seen_by_every_replica_within_a_second() {
    let (app, _fake) = app_with_wechat().await;
    let other = app.replica().await;
    let (access, _, _) = login(&app, "o-replica").await;
    // both replicas have seen the session as live
    assert_eq!(
        app.post_as(&access, "{ me { id } }", json!({})).await.0,
        200
    );
    assert_eq!(
        other.post_as(&access, "{ me { id } }", json!({})).await.0,
        200
    );
    let (status, _) = other
        .post_as(&access, "mutation { logout }", json!({}))
        .await;
    assert_eq!(status, 200);
    let started = Instant::now();
    loop {
        let (status, _) = app.post_as(&access, "{ me { id } }", json!({})).await;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "replica still accepts a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() <= Duration::from_millis(1_200),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn staff_login_and_throttling() {
    use domain::identity::Role;
    let app = TestApp::spawn_with(Options {
        seed: false,
        ..Options::default()
    })
    .await;
    let pw = SecretString::from("ops-password-123".to_owned());
    app.app
        .identity
        .create_staff("olivia", &pw, Role::Ops, "Olivia")
        .await
        .unwrap();
    // too-short passwords and bad usernames are refused at creation
    assert!(
        app.app
            .identity
            .create_staff("x", &pw, Role::Ops, "")
            .await
            .is_err()
    );
    assert!(
        app.app
            .identity
            .create_staff(
                "shorty",
                &SecretString::from("short".to_owned()),
                Role::Ops,
                ""
            )
            .await
            .is_err()
    );

    let ok = app
        .data(
            STAFF_LOGIN,
            json!({ "u": "olivia", "p": "ops-password-123" }),
        )
        .await;
    assert_eq!(ok["staffLogin"]["staff"]["role"], "OPS");
    assert!(ok["staffLogin"]["member"].is_null());
    let token = ok["staffLogin"]["accessToken"].as_str().unwrap();
    let (status, me) = app
        .post_as(token, "{ staffMe { username role } }", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["data"]["staffMe"]["username"], "olivia");
    // a staff refresh keeps the role
    let refreshed = app
        .data(REFRESH, json!({ "t": ok["staffLogin"]["refreshToken"] }))
        .await;
    assert_eq!(refreshed["refreshSession"]["staff"]["role"], "OPS");

    // unknown user and wrong password look the same
    let (_, body) = app
        .post(
            STAFF_LOGIN,
            json!({ "u": "nobody", "p": "whatever-password" }),
        )
        .await;
    assert_eq!(code_of(&body), "UNAUTHENTICATED");
    for _ in 0..5 {
        let (_, body) = app
            .post(STAFF_LOGIN, json!({ "u": "olivia", "p": "wrong-password" }))
            .await;
        assert_eq!(code_of(&body), "UNAUTHENTICATED");
    }
    // now even the right password is refused for a while
    let (_, body) = app
        .post(
            STAFF_LOGIN,
            json!({ "u": "olivia", "p": "ops-password-123" }),
        )
        .await;
    assert_eq!(code_of(&body), "RATE_LIMITED", "{body}");
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );

    // per address: failures across many usernames from one IP
    for i in 0..15 {
        app.post(STAFF_LOGIN, json!({ "u": format!("guess{i}"), "p": "x" }))
            .await;
    }
    app.app
        .identity
        .create_staff("fresh", &pw, Role::Advisor, "")
        .await
        .unwrap();
    let (_, body) = app
        .post(
            STAFF_LOGIN,
            json!({ "u": "fresh", "p": "ops-password-123" }),
        )
        .await;
    assert_eq!(
        code_of(&body),
        "RATE_LIMITED",
        "20 failures from one address: {body}"
    );
}

const MEMBER_ONLY: &[(&str, &str)] = &[
    ("me", "{ me { id } }"),
    (
        "updateProfile",
        r#"mutation { updateProfile(input: { nickname: "x" }) { errors { code } } }"#,
    ),
    (
        "bindPhone",
        r#"mutation { bindPhone(code: "phone:13800000000") { id } }"#,
    ),
    (
        "addAddress",
        r#"mutation { addAddress(input: { recipient: "a", phone: "13800000000", province: "p", city: "c", district: "d", detail: "dd" }) { errors { code } } }"#,
    ),
    (
        "updateAddress",
        r#"mutation { updateAddress(id: "QWRkcmVzczox", input: { recipient: "a", phone: "13800000000", province: "p", city: "c", district: "d", detail: "dd" }) { errors { code } } }"#,
    ),
    (
        "removeAddress",
        r#"mutation { removeAddress(id: "QWRkcmVzczox") { errors { code } } }"#,
    ),
    (
        "setDefaultAddress",
        r#"mutation { setDefaultAddress(id: "QWRkcmVzczox") { errors { code } } }"#,
    ),
];

#[tokio::test]
async fn guards_refuse_the_wrong_caller() {
    use domain::identity::Role;
    let (app, _fake) = app_with_wechat().await;
    let (member, _, _) = login(&app, "o-guard").await;
    let staff = staff_account(&app, "gina", Role::Admin).await;
    for (name, query) in MEMBER_ONLY {
        let (_, body) = app.post(query, json!({})).await;
        assert_eq!(
            code_of(&body),
            "UNAUTHENTICATED",
            "{name} anonymous: {body}"
        );
        let (_, body) = app.post_as(&staff, query, json!({})).await;
        assert_eq!(code_of(&body), "FORBIDDEN", "{name} as staff: {body}");
    }
    for (role, name) in [(Role::Advisor, "adam"), (Role::Ops, "otto")] {
        let token = staff_account(&app, name, role).await;
        let (_, body) = app.post_as(&token, "{ me { id } }", json!({})).await;
        assert_eq!(code_of(&body), "FORBIDDEN", "{role:?}");
    }
    let (_, body) = app.post("{ staffMe { id } }", json!({})).await;
    assert_eq!(code_of(&body), "UNAUTHENTICATED");
    let (_, body) = app.post_as(&member, "{ staffMe { id } }", json!({})).await;
    assert_eq!(code_of(&body), "FORBIDDEN");
    let (_, body) = app.post("mutation { logout }", json!({})).await;
    assert_eq!(code_of(&body), "UNAUTHENTICATED");
    // the public catalog stays public for everyone
    for token in [&member, &staff] {
        assert_eq!(
            app.post_as(token, "{ categories { id } }", json!({}))
                .await
                .0,
            200
        );
    }
}

const ADD: &str = r#"mutation A($input: AddressInput!) {
  addAddress(input: $input) { address { id recipient phoneMasked isDefault postalCode } errors { code field message } }
}"#;

fn address(recipient: &str, default: bool) -> Value {
    json!({ "recipient": recipient, "phone": "13912345678", "province": "上海市", "city": "上海市",
            "district": "静安区", "detail": "南京西路 1266 号", "postalCode": "200040", "isDefault": default })
}

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
async fn websocket_connection_init_authenticates() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let (app, _fake) = app_with_wechat().await;
    let (token, _, _) = login(&app, "o-ws").await;
    for (auth, accepted) in [
        (format!("Bearer {token}"), true),
        ("Bearer forged.token.value".to_owned(), false),
    ] {
        let mut request = format!("ws://{}/graphql/ws", app.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let init = json!({ "type": "connection_init", "payload": { "Authorization": auth } });
        socket
            .send(Message::Text(init.to_string().into()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap();
        match reply {
            Some(Ok(Message::Text(text))) if accepted => {
                assert_eq!(
                    serde_json::from_str::<Value>(&text).unwrap()["type"],
                    "connection_ack"
                );
            }
            Some(Ok(Message::Close(Some(frame)))) if !accepted => {
                assert_eq!(u16::from(frame.code), 4403, "{frame:?}");
            }
            other => panic!("accepted={accepted}: unexpected {other:?}"),
        }
    }
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
