//! The merchant client: signed requests, verified responses, retries, and the calls of §3.2–3.5.

use std::sync::Arc;
use std::time::Duration;

use rsa::pkcs1v15::{SigningKey, VerifyingKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::crypto::{
    decrypt_resource, nonce_str, pay_sign_message, private_key_from_pem, public_key_from_pem,
    request_message, sign_base64, signed_message, verify_base64,
};
use super::{
    CloseOutcome, Notification, PayError, PayParams, RefundRequest, RefundState, SignedHeaders,
    Transaction, VerifyError, WechatPaySettings,
};

/// The merchant client.
#[derive(Clone)]
pub struct WechatPay {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    app_id: String,
    mch_id: String,
    api_base: String,
    serial: String,
    signing_key: SigningKey<Sha256>,
    platform_keys: Vec<(String, VerifyingKey<Sha256>)>,
    apiv3_key: SecretString,
    notify_url: String,
    refund_notify_url: String,
    retries: u32,
    max_skew: u64,
}

impl std::fmt::Debug for WechatPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPay")
            .field("mch_id", &self.inner.mch_id)
            .field("api_base", &self.inner.api_base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl WechatPay {
    /// Loads the keys named by the settings and builds the client.
    pub fn new(settings: &WechatPaySettings, app_id: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let key_path = settings
            .merchant_key_path
            .as_ref()
            .context("no merchant key path")?;
        let key_pem = std::fs::read_to_string(key_path)
            .with_context(|| format!("reading the merchant key {}", key_path.display()))?;
        let pub_path = settings
            .platform_public_key_path
            .as_ref()
            .context("no platform public key path")?;
        let pub_pem = std::fs::read_to_string(pub_path)
            .with_context(|| format!("reading the platform key {}", pub_path.display()))?;
        Self::from_keys(
            settings,
            app_id,
            private_key_from_pem(&key_pem)?,
            public_key_from_pem(&pub_pem)?,
        )
    }

    /// Builds the client from keys already in memory.
    pub fn from_keys(
        settings: &WechatPaySettings,
        app_id: &str,
        merchant_key: RsaPrivateKey,
        platform_key: RsaPublicKey,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("ruizhu-bff")
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                app_id: app_id.to_owned(),
                mch_id: settings.mch_id.clone(),
                api_base: settings.api_base.trim_end_matches('/').to_owned(),
                serial: settings.merchant_serial.clone(),
                signing_key: SigningKey::<Sha256>::new(merchant_key),
                platform_keys: vec![(
                    settings.platform_key_id.clone(),
                    VerifyingKey::<Sha256>::new(platform_key),
                )],
                apiv3_key: settings.apiv3_key.clone(),
                notify_url: settings.notify_url.clone(),
                refund_notify_url: settings.refund_notify_url(),
                retries: settings.retries,
                // WeChat's rule is 5 minutes; a looser setting is not honoured
                max_skew: settings.max_clock_skew_secs.min(300),
            }),
        })
    }

    /// Our merchant id.
    pub fn mch_id(&self) -> &str {
        &self.inner.mch_id
    }

    /// The AppID payments are made in.
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The `Authorization` header for one request.
    pub fn authorization(&self, method: &str, canonical_url: &str, body: &str) -> String {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce = nonce_str();
        let message = request_message(method, canonical_url, &timestamp, &nonce, body);
        let signature = sign_base64(&self.inner.signing_key, message.as_bytes());
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.inner.mch_id, self.inner.serial
        )
    }

    /// `wx.requestPayment` parameters for a prepay, freshly signed.
    pub fn pay_params(&self, prepay_id: &str) -> PayParams {
        let time_stamp = chrono::Utc::now().timestamp().to_string();
        let nonce_str = nonce_str();
        let package = format!("prepay_id={prepay_id}");
        let message = pay_sign_message(&self.inner.app_id, &time_stamp, &nonce_str, &package);
        PayParams {
            app_id: self.inner.app_id.clone(),
            pay_sign: sign_base64(&self.inner.signing_key, message.as_bytes()),
            time_stamp,
            nonce_str,
            package,
            sign_type: "RSA".to_owned(),
        }
    }

    /// Verification steps 1–4 of §3.4 over a signed body (notification or response).
    pub fn verify(&self, headers: &SignedHeaders, body: &[u8]) -> Result<(), VerifyError> {
        let (Some(timestamp), Some(nonce), Some(signature), Some(serial)) = (
            headers.timestamp.as_deref(),
            headers.nonce.as_deref(),
            headers.signature.as_deref(),
            headers.serial.as_deref(),
        ) else {
            return Err(VerifyError::MissingHeaders);
        };
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::MissingHeaders)?;
        if chrono::Utc::now().timestamp().abs_diff(ts) > self.inner.max_skew {
            return Err(VerifyError::StaleTimestamp);
        }
        if signature.starts_with("WECHATPAY/SIGNTEST/") {
            return Err(VerifyError::ProbeSignature);
        }
        let key = self
            .inner
            .platform_keys
            .iter()
            .find(|(id, _)| id == serial.trim())
            .map(|(_, key)| key)
            .ok_or(VerifyError::UnknownSerial)?;
        let message = signed_message(timestamp, nonce, body);
        if verify_base64(key, &message, signature) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    /// All five steps of §3.4: verifies the notification and decrypts its resource, which must
    /// carry `expected_aad` (`transaction` or `refund`). Returns the envelope and the plaintext.
    pub fn open_notification(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
        expected_aad: &str,
    ) -> Result<(Notification, Vec<u8>), VerifyError> {
        self.verify(headers, body)?;
        let envelope: Notification =
            serde_json::from_slice(body).map_err(|_| VerifyError::Malformed)?;
        if envelope.resource.algorithm != "AEAD_AES_256_GCM"
            || envelope.resource.associated_data != expected_aad
        {
            return Err(VerifyError::Decrypt);
        }
        let plaintext = decrypt_resource(
            self.inner.apiv3_key.expose_secret().as_bytes(),
            &envelope.resource.nonce,
            &envelope.resource.associated_data,
            &envelope.resource.ciphertext,
        )?;
        Ok((envelope, plaintext))
    }

    /// One signed call with retries on 5xx, 429 and transport failures (same parameters);
    /// returns the status and the verified body.
    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
        op: &'static str,
    ) -> Result<(u16, Vec<u8>), PayError> {
        let body_text = body.map(ToString::to_string).unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = self
                .call_once(method.clone(), path_and_query, &body_text)
                .await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(PayError::Rejected { .. }) => "rejected",
                Err(PayError::Unverified(_)) => "unverified",
                Err(PayError::Unavailable(_)) => "unavailable",
            };
            metrics::counter!("ruizhu_wechatpay_requests_total", "op" => op, "outcome" => outcome)
                .increment(1);
            metrics::histogram!("ruizhu_wechatpay_request_seconds", "op" => op)
                .record(started.elapsed().as_secs_f64());
            match result {
                Err(PayError::Unavailable(reason)) if attempt <= self.inner.retries => {
                    tracing::warn!(op, attempt, %reason, "WeChat Pay call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: &str,
    ) -> Result<(u16, Vec<u8>), PayError> {
        let authorization = self.authorization(method.as_str(), path_and_query, body);
        let mut request = self
            .inner
            .http
            .request(method, format!("{}{path_and_query}", self.inner.api_base))
            .header("Authorization", authorization)
            .header("Accept", "application/json");
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        let response = request
            .send()
            .await
            .map_err(|e| PayError::Unavailable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let headers = SignedHeaders::from_headers(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PayError::Unavailable(e.without_url().to_string()))?;
        if status >= 500 || status == 429 {
            return Err(PayError::Unavailable(format!("HTTP {status}")));
        }
        if let Err(e) = self.verify(&headers, &bytes) {
            tracing::warn!(reason = e.label(), status, "unverified WeChat Pay response");
            metrics::counter!("ruizhu_wechatpay_security_events_total", "kind" => "unverified_response")
                .increment(1);
            return Err(PayError::Unverified(e.label()));
        }
        if status >= 400 {
            let error: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
                code: String::new(),
                message: String::new(),
            });
            return Err(PayError::Rejected {
                status,
                code: error.code,
                message: error.message,
            });
        }
        Ok((status, bytes.to_vec()))
    }

    fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PayError> {
        serde_json::from_slice(bytes)
            .map_err(|_| PayError::Unavailable("unexpected response body".to_owned()))
    }

    /// `POST /v3/pay/transactions/jsapi` (§3.2) → prepay id.
    pub async fn prepay(
        &self,
        out_trade_no: &str,
        description: &str,
        total_fen: i64,
        openid: &str,
        time_expire: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, PayError> {
        let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
        let body = serde_json::json!({
            "appid": self.inner.app_id,
            "mchid": self.inner.mch_id,
            "description": description,
            "out_trade_no": out_trade_no,
            "time_expire": time_expire.with_timezone(&china).format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            "notify_url": self.inner.notify_url,
            "amount": { "total": total_fen, "currency": "CNY" },
            "payer": { "openid": openid },
        });
        let (_, bytes) = self
            .call(
                reqwest::Method::POST,
                "/v3/pay/transactions/jsapi",
                Some(&body),
                "prepay",
            )
            .await?;
        #[derive(Deserialize)]
        struct Prepay {
            prepay_id: String,
        }
        Ok(Self::parse::<Prepay>(&bytes)?.prepay_id)
    }

    /// `GET /v3/pay/transactions/out-trade-no/{no}`; `None` when WeChat Pay has no such order.
    pub async fn query_order(&self, out_trade_no: &str) -> Result<Option<Transaction>, PayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.inner.mch_id
        );
        match self.call(reqwest::Method::GET, &path, None, "query").await {
            Ok((_, bytes)) => Ok(Some(Self::parse(&bytes)?)),
            Err(PayError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v3/pay/transactions/out-trade-no/{no}/close`.
    pub async fn close_order(&self, out_trade_no: &str) -> Result<CloseOutcome, PayError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.inner.mch_id });
        match self
            .call(reqwest::Method::POST, &path, Some(&body), "close")
            .await
        {
            Ok(_) => Ok(CloseOutcome::Closed),
            Err(PayError::Rejected { code, .. }) if code == "ORDERPAID" => {
                Ok(CloseOutcome::AlreadyPaid)
            }
            Err(PayError::Rejected { code, .. })
                if code == "ORDER_CLOSED" || code == "ORDER_NOT_EXIST" =>
            {
                Ok(CloseOutcome::Closed)
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /v3/refund/domestic/refunds`.
    pub async fn refund(&self, request: &RefundRequest<'_>) -> Result<RefundState, PayError> {
        let body = serde_json::json!({
            "out_trade_no": request.out_trade_no,
            "out_refund_no": request.out_refund_no,
            "reason": request.reason,
            "notify_url": self.inner.refund_notify_url,
            "amount": {
                "refund": request.refund_fen,
                "total": request.total_fen,
                "currency": "CNY",
            },
        });
        let (_, bytes) = self
            .call(
                reqwest::Method::POST,
                "/v3/refund/domestic/refunds",
                Some(&body),
                "refund",
            )
            .await?;
        Self::parse(&bytes)
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`; `None` when WeChat Pay has no such refund.
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Option<RefundState>, PayError> {
        let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        match self
            .call(reqwest::Method::GET, &path, None, "refund_query")
            .await
        {
            Ok((_, bytes)) => Ok(Some(Self::parse(&bytes)?)),
            Err(PayError::Rejected { code, .. })
                if code == "RESOURCE_NOT_EXISTS" || code == "ORDER_NOT_EXIST" =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
