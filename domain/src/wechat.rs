//! WeChat server APIs the BFF calls (formats in `shared/docs/wechat.md` §1–2): `code2Session`
//! for login, the shared `stable_token` access token, and `getuserphonenumber`.
//!
//! Nothing here logs a code, an openid, a `session_key`, a token or the app secret; reqwest
//! errors are stripped of their URL (which carries the secret) before they go anywhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::redis::Redis;

/// `[wechat]` settings (`RUIZHU_WECHAT__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatSettings {
    /// Mini-program AppID.
    pub app_id: String,
    /// Mini-program AppSecret.
    pub app_secret: SecretString,
    /// Base URL of the WeChat API (tests point it at a local fake).
    pub api_base: String,
    /// Upper bound on one WeChat call, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for WechatSettings {
    fn default() -> Self {
        Self {
            app_id: "wx0000000000000000".to_owned(),
            app_secret: SecretString::from(""),
            api_base: "https://api.weixin.qq.com".to_owned(),
            timeout_ms: 3_000,
        }
    }
}

/// How a WeChat call failed, in the terms callers act on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WechatError {
    /// The code is invalid, expired or already used (40029, 40163).
    #[error("invalid or used code")]
    InvalidCode,
    /// WeChat's per-user rate limit (45011).
    #[error("rate limited by WeChat")]
    RateLimited,
    /// WeChat flags the user as high risk (40226).
    #[error("user blocked by WeChat")]
    Blocked,
    /// System busy (-1), a timeout or a transport failure: retry later.
    #[error("WeChat unavailable: {0}")]
    Unavailable(String),
    /// Any other WeChat error code.
    #[error("WeChat error {0}")]
    Other(i64),
}

/// The result of `code2Session`.
#[derive(Clone)]
pub struct WechatSession {
    /// The user's id in this mini-program.
    pub openid: String,
    /// The user's id across the brand's apps, when the app is bound to an Open Platform account.
    pub unionid: Option<String>,
    /// Never leaves the server.
    pub session_key: SecretString,
}

impl std::fmt::Debug for WechatSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WechatSession(..)")
    }
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    errcode: i64,
}

fn classify(errcode: i64) -> WechatError {
    match errcode {
        40029 | 40163 => WechatError::InvalidCode,
        45011 => WechatError::RateLimited,
        40226 => WechatError::Blocked,
        -1 => WechatError::Unavailable("system busy".to_owned()),
        other => WechatError::Other(other),
    }
}

fn transport(e: reqwest::Error) -> WechatError {
    WechatError::Unavailable(e.without_url().to_string())
}

/// Client for the WeChat server APIs.
#[derive(Clone)]
pub struct WechatClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: WechatSettings,
    redis: Redis,
    /// This process's copy of the shared access token and when it stops being used.
    token: std::sync::Mutex<Option<(SecretString, Instant)>>,
    /// One refresher per process (Redis adds one per deployment).
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for WechatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatClient")
            .field("api_base", &self.inner.settings.api_base)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl WechatClient {
    /// Builds the client with a bounded timeout on every call.
    pub fn new(settings: &WechatSettings, redis: Redis) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                settings: settings.clone(),
                redis,
                token: std::sync::Mutex::new(None),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The configured AppID.
    pub fn app_id(&self) -> &str {
        &self.inner.settings.app_id
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.inner.settings.api_base.trim_end_matches('/')
        )
    }

    async fn get_json(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, WechatError> {
        let response = request.send().await.map_err(transport)?;
        if response.status().is_server_error() {
            return Err(WechatError::Unavailable(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let body: serde_json::Value = response.json().await.map_err(transport)?;
        let errcode = serde_json::from_value::<ErrorFields>(body.clone())
            .map(|e| e.errcode)
            .unwrap_or(0);
        if errcode != 0 {
            return Err(classify(errcode));
        }
        Ok(body)
    }

    /// Exchanges a `wx.login` code for the user's openid (and unionid, session_key).
    pub async fn code2session(&self, code: &str) -> Result<WechatSession, WechatError> {
        let s = &self.inner.settings;
        let request = self
            .inner
            .http
            .get(self.url("/sns/jscode2session"))
            .query(&[
                ("appid", s.app_id.as_str()),
                ("secret", s.app_secret.expose_secret()),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ]);
        let body = self.get_json(request).await?;
        let openid = body["openid"].as_str().filter(|o| !o.is_empty());
        let session_key = body["session_key"].as_str();
        match (openid, session_key) {
            (Some(openid), Some(key)) => Ok(WechatSession {
                openid: openid.to_owned(),
                unionid: body["unionid"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned),
                session_key: SecretString::from(key.to_owned()),
            }),
            _ => Err(WechatError::Unavailable(
                "malformed code2Session answer".to_owned(),
            )),
        }
    }

    fn token_key(&self) -> String {
        self.inner.redis.key("wechat:access-token")
    }

    fn local_token(&self) -> Option<SecretString> {
        let guard = self
            .inner
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    fn keep_local(&self, token: &SecretString, ttl: Duration) {
        let mut guard = self
            .inner
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Some((token.clone(), Instant::now() + ttl));
    }

    async fn shared_token(&self) -> Option<(SecretString, Duration)> {
        let key = self.token_key();
        let found: Option<(Option<String>, i64)> = self
            .inner
            .redis
            .call("get", |mut c| async move {
                redis::pipe().get(&key).pttl(&key).query_async(&mut c).await
            })
            .await;
        match found {
            Some((Some(token), pttl)) if pttl > 0 => Some((
                SecretString::from(token),
                Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
            )),
            _ => None,
        }
    }

    /// The shared server access token: this process's copy, else the deployment's copy in
    /// Redis, else a new one from `stable_token` fetched by one caller at a time (never with
    /// `force_refresh`, which WeChat limits to 20 a day).
    pub async fn access_token(&self) -> Result<SecretString, WechatError> {
        if let Some(token) = self.local_token() {
            return Ok(token);
        }
        let _one_at_a_time = self.inner.refreshing.lock().await;
        if let Some(token) = self.local_token() {
            return Ok(token);
        }
        if let Some((token, ttl)) = self.shared_token().await {
            self.keep_local(&token, ttl.min(Duration::from_secs(300)));
            return Ok(token);
        }
        // Deployment-wide: whoever takes the lock refreshes; the others wait for its result.
        let lock_key = self.inner.redis.key("wechat:access-token:lock");
        let lock = lock_key.clone();
        let got_lock = self
            .inner
            .redis
            .call("set", |mut c| async move {
                redis::cmd("SET")
                    .arg(&lock)
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(5_000)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        if matches!(got_lock, Some(None)) {
            // another replica is refreshing: wait for its token
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some((token, ttl)) = self.shared_token().await {
                    self.keep_local(&token, ttl.min(Duration::from_secs(300)));
                    return Ok(token);
                }
            }
        }
        let s = &self.inner.settings;
        let request = self
            .inner
            .http
            .post(self.url("/cgi-bin/stable_token"))
            .json(&serde_json::json!({
                "grant_type": "client_credential",
                "appid": s.app_id,
                "secret": s.app_secret.expose_secret(),
                "force_refresh": false,
            }));
        let body = self.get_json(request).await?;
        let parsed: TokenResponse = serde_json::from_value(body)
            .map_err(|_| WechatError::Unavailable("malformed stable_token answer".to_owned()))?;
        // refresh five minutes early
        let ttl = Duration::from_secs(parsed.expires_in.saturating_sub(300).max(60));
        let token = SecretString::from(parsed.access_token);
        let key = self.token_key();
        let value = token.expose_secret().to_owned();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .redis
            .call("set", |mut c| async move {
                redis::pipe()
                    .pset_ex(&key, value, ttl_ms)
                    .ignore()
                    .del(&lock_key)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        self.keep_local(&token, ttl.min(Duration::from_secs(300)));
        Ok(token)
    }

    fn forget_token(&self) {
        *self
            .inner
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// `POST {api_base}{path}?access_token=…` with the shared token; a token WeChat calls stale
    /// (40001/42001) is dropped everywhere and fetched again, once.
    async fn post_with_token(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, WechatError> {
        for attempt in 0..2 {
            let token = self.access_token().await?;
            let request = self
                .inner
                .http
                .post(self.url(path))
                .query(&[("access_token", token.expose_secret())])
                .json(body);
            match self.get_json(request).await {
                Err(WechatError::Other(40001 | 42001)) if attempt == 0 => {
                    self.forget_token();
                    let key = self.token_key();
                    self.inner
                        .redis
                        .call("del", |mut c| async move {
                            redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await
                        })
                        .await;
                }
                other => return other,
            }
        }
        Err(WechatError::Unavailable(
            "access token rejected twice".to_owned(),
        ))
    }

    /// The phone number behind a phone-button code, as `+<country code> <number>` digits
    /// (mainland numbers come back as their 11 digits).
    pub async fn phone_number(&self, code: &str) -> Result<String, WechatError> {
        let body = self
            .post_with_token(
                "/wxa/business/getuserphonenumber",
                &serde_json::json!({ "code": code }),
            )
            .await?;
        let info = &body["phone_info"];
        let number = info["purePhoneNumber"].as_str().unwrap_or_default();
        let country = info["countryCode"].as_str().unwrap_or("86");
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            return Err(WechatError::Unavailable(
                "malformed phone answer".to_owned(),
            ));
        }
        Ok(if country == "86" {
            number.to_owned()
        } else {
            format!("+{country} {number}")
        })
    }

    /// Sends a subscription message (wechat.md §2). `43101` (no consent left) comes back as
    /// `WechatError::Other(43101)`.
    pub async fn send_subscribe_message(
        &self,
        openid: &str,
        template_id: &str,
        page: &str,
        miniprogram_state: &str,
        data: serde_json::Value,
    ) -> Result<(), WechatError> {
        self.post_with_token(
            "/cgi-bin/message/subscribe/send",
            &serde_json::json!({
                "touser": openid, "template_id": template_id, "page": page,
                "miniprogram_state": miniprogram_state, "lang": "zh_CN", "data": data,
            }),
        )
        .await
        .map(|_| ())
    }

    /// Uploads shipping information for a paid order (wechat.md §2; funds stay frozen without it).
    pub async fn upload_shipping_info(&self, body: &serde_json::Value) -> Result<(), WechatError> {
        self.post_with_token("/wxa/sec/order/upload_shipping_info", body)
            .await
            .map(|_| ())
    }
}
