//! Access tokens, refresh rotation, revocation and WebSocket authentication.

use super::*;

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
