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

pub(super) const LOGIN: &str = r#"mutation L($code: String!) {
  loginWithWeChat(code: $code) { accessToken refreshToken expiresIn member { id nickname phoneMasked } staff { id } }
}"#;
pub(super) const REFRESH: &str = r#"mutation R($t: String!) {
  refreshSession(refreshToken: $t) { accessToken refreshToken expiresIn member { id } staff { id role } }
}"#;
pub(super) const STAFF_LOGIN: &str = r#"mutation S($u: String!, $p: String!) {
  staffLogin(username: $u, password: $p) { accessToken refreshToken staff { id username role } member { id } }
}"#;
pub(super) const ME: &str =
    "{ me { id nickname avatarUrl phoneMasked addresses { id recipient phoneMasked isDefault } } }";

pub(super) async fn app_with_wechat() -> (TestApp, FakeWechat) {
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
pub(super) async fn login(app: &TestApp, openid: &str) -> (String, String, String) {
    let code = format!("ok:{openid}:{}", uuid::Uuid::new_v4().simple());
    let data = app.data(LOGIN, json!({ "code": code })).await;
    let p = &data["loginWithWeChat"];
    (
        p["accessToken"].as_str().unwrap().to_owned(),
        p["refreshToken"].as_str().unwrap().to_owned(),
        p["member"]["id"].as_str().unwrap().to_owned(),
    )
}

pub(super) async fn staff_account(
    app: &TestApp,
    username: &str,
    role: domain::identity::Role,
) -> String {
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

pub(super) fn code_of(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// Signs claims as the server would, with a chosen header and key.
pub(super) fn forge(header: &Value, claims: &Value, key: &[u8]) -> String {
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

pub(super) fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub(super) const MEMBER_ONLY: &[(&str, &str)] = &[
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

pub(super) const ADD: &str = r#"mutation A($input: AddressInput!) {
  addAddress(input: $input) { address { id recipient phoneMasked isDefault postalCode } errors { code field message } }
}"#;

pub(super) fn address(recipient: &str, default: bool) -> Value {
    json!({ "recipient": recipient, "phone": "13912345678", "province": "上海市", "city": "上海市",
            "district": "静安区", "detail": "南京西路 1266 号", "postalCode": "200040", "isDefault": default })
}

mod login;
mod profile;
mod staff;
mod tokens;
