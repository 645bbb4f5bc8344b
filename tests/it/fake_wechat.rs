//! A local stand-in for WeChat's servers, answering exactly in the formats of
//! `shared/docs/wechat.md` §1–2 (the real ones are unreachable from tests).
//!
//! Login codes script the answer: `ok:<openid>` or `ok:<openid>:<unionid>` succeed (once: a
//! second use is `40163`, as on WeChat), `err:<errcode>` fails with that code, `slow` answers
//! after 5 s, `http500` fails at the HTTP level. Phone codes: `phone:<digits>` or `err:<errcode>`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const APP_ID: &str = "wxfake0123456789";
pub const APP_SECRET: &str = "fake-app-secret-value";

#[derive(Default)]
pub struct FakeState {
    used_codes: HashSet<String>,
    pub stable_token_calls: u32,
    pub session_keys: Vec<String>,
    pub access_tokens: Vec<String>,
    /// Subscription messages sent (request bodies).
    pub messages: Vec<Value>,
    /// Shipping uploads (request bodies).
    pub shipping_uploads: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeWechat {
    pub base: String,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeWechat {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new()
            .route("/sns/jscode2session", get(code2session))
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/wxa/business/getuserphonenumber", post(phone_number))
            .route("/cgi-bin/message/subscribe/send", post(subscribe_send))
            .route("/wxa/sec/order/upload_shipping_info", post(upload_shipping))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, state }
    }

    pub fn stable_token_calls(&self) -> u32 {
        self.state.lock().unwrap().stable_token_calls
    }

    /// Every secret this fake handed out (for the log-leak check).
    pub fn secrets(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.session_keys
            .iter()
            .chain(s.access_tokens.iter())
            .cloned()
            .collect()
    }
}

fn wechat_error(errcode: i64) -> Response {
    Json(json!({ "errcode": errcode, "errmsg": format!("fake error {errcode}") })).into_response()
}

async fn code2session(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if q.get("appid").map(String::as_str) != Some(APP_ID) {
        return wechat_error(40013);
    }
    if q.get("secret").map(String::as_str) != Some(APP_SECRET) {
        return wechat_error(40125);
    }
    if q.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return wechat_error(40002);
    }
    let code = q.get("js_code").cloned().unwrap_or_default();
    match code.as_str() {
        "slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            return wechat_error(-1);
        }
        "http500" => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => {}
    }
    if let Some(n) = code.strip_prefix("err:") {
        return wechat_error(n.parse().unwrap_or(40029));
    }
    let Some(rest) = code.strip_prefix("ok:") else {
        return wechat_error(40029);
    };
    let mut s = state.lock().unwrap();
    if !s.used_codes.insert(code.clone()) {
        return wechat_error(40163);
    }
    let session_key = format!("SK{}", uuid::Uuid::new_v4().simple());
    s.session_keys.push(session_key.clone());
    let mut parts = rest.splitn(2, ':');
    let openid = parts.next().unwrap_or_default();
    let mut body = json!({ "openid": openid, "session_key": session_key, "errcode": 0 });
    if let Some(unionid) = parts.next() {
        body["unionid"] = json!(unionid);
    }
    Json(body).into_response()
}

async fn stable_token(
    State(state): State<Arc<Mutex<FakeState>>>,
    Json(body): Json<Value>,
) -> Response {
    if body["appid"] != APP_ID
        || body["secret"] != APP_SECRET
        || body["grant_type"] != "client_credential"
    {
        return wechat_error(40013);
    }
    if body["force_refresh"] != json!(false) {
        return wechat_error(45009);
    }
    // a slow answer makes concurrent callers overlap, so a missing single-flight would show
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut s = state.lock().unwrap();
    s.stable_token_calls += 1;
    let token = format!("AT{}", uuid::Uuid::new_v4().simple());
    s.access_tokens.push(token.clone());
    Json(json!({ "access_token": token, "expires_in": 7200 })).into_response()
}

async fn phone_number(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let token = q.get("access_token").cloned().unwrap_or_default();
    if !state.lock().unwrap().access_tokens.contains(&token) {
        return wechat_error(40001);
    }
    let code = body["code"].as_str().unwrap_or_default();
    if let Some(n) = code.strip_prefix("err:") {
        return wechat_error(n.parse().unwrap_or(40029));
    }
    let Some(number) = code.strip_prefix("phone:") else {
        return wechat_error(40029);
    };
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": number,
            "purePhoneNumber": number,
            "countryCode": "86",
            "watermark": { "timestamp": 1_700_000_000, "appid": APP_ID }
        }
    }))
    .into_response()
}

fn token_ok(state: &Arc<Mutex<FakeState>>, q: &std::collections::HashMap<String, String>) -> bool {
    let token = q.get("access_token").cloned().unwrap_or_default();
    state.lock().unwrap().access_tokens.contains(&token)
}

/// Subscription messages: `touser` starting with `noquota` answers 43101, as WeChat does for a
/// user with no consent left.
async fn subscribe_send(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    if !token_ok(&state, &q) {
        return wechat_error(40001);
    }
    if body["touser"]
        .as_str()
        .unwrap_or_default()
        .starts_with("dev-noquota")
    {
        return wechat_error(43101);
    }
    if body["template_id"].as_str().unwrap_or_default().is_empty() || !body["data"].is_object() {
        return wechat_error(47003);
    }
    state.lock().unwrap().messages.push(body);
    Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
}

async fn upload_shipping(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    if !token_ok(&state, &q) {
        return wechat_error(40001);
    }
    let ok = body["order_key"]["order_number_type"] == 2
        && body["order_key"]["transaction_id"].is_string()
        && body["logistics_type"] == 1
        && body["shipping_list"][0]["tracking_no"].is_string()
        && body["payer"]["openid"].is_string()
        && chrono::DateTime::parse_from_rfc3339(body["upload_time"].as_str().unwrap_or_default())
            .is_ok();
    if !ok {
        return wechat_error(47001);
    }
    state.lock().unwrap().shipping_uploads.push(body);
    Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
}
