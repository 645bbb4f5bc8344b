//! Staff logins, throttling and role guards.

use super::*;

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
