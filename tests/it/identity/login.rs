//! WeChat and development login.

use super::*;

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
