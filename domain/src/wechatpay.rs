//! WeChat Pay API v3 merchant client (formats in `shared/docs/wechat.md` §3): every request
//! signed with `WECHATPAY2-SHA256-RSA2048`, every response and notification verified against the
//! platform public key, notification resources decrypted with the APIv3 key (AES-256-GCM).
//!
//! This module speaks the protocol only; what a payment means for an order lives in
//! [`crate::payment`]. Nothing here logs a key, a signature input or a payer's openid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// `[wechatpay]` settings (`RUIZHU_WECHATPAY__*`). With `mch_id` empty no merchant is configured:
/// outside production, payments then run in development mode (fake parameters and
/// `devConfirmPayment`); production refuses to start that way.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatPaySettings {
    /// Merchant id (`mchid`); empty = no merchant configured.
    #[serde(deserialize_with = "text")]
    pub mch_id: String,
    /// Base URL of WeChat Pay (tests point it at a local fake).
    pub api_base: String,
    /// PEM file with the merchant API private key (`apiclient_key.pem`, PKCS#8 or PKCS#1).
    pub merchant_key_path: Option<PathBuf>,
    /// Serial number of the merchant API certificate (goes into every `Authorization`).
    #[serde(deserialize_with = "text")]
    pub merchant_serial: String,
    /// PEM file with the WeChat Pay platform public key (verifies responses and notifications).
    pub platform_public_key_path: Option<PathBuf>,
    /// Id of that public key, `PUB_KEY_ID_…`, as sent in `Wechatpay-Serial`.
    pub platform_key_id: String,
    /// The 32-byte APIv3 key (decrypts notification resources).
    #[serde(deserialize_with = "secret_text")]
    pub apiv3_key: SecretString,
    /// Where WeChat Pay posts payment notifications (https, no query string).
    pub notify_url: String,
    /// Where it posts refund notifications; defaults to `notify_url` with its last path segment
    /// replaced by `refund-notify`.
    pub refund_notify_url: Option<String>,
    /// Upper bound on one request, in milliseconds.
    pub timeout_ms: u64,
    /// Extra attempts after a 5xx, 429 or transport failure (same parameters each time).
    pub retries: u32,
    /// Development payments (fake parameters, `devConfirmPayment`) when no merchant is
    /// configured. Defaults to on outside production; refused in production.
    pub dev_payments: Option<bool>,
    /// Seconds after a prepay at which an unpaid order is queried actively (besides once
    /// shortly before its payment deadline).
    pub query_after_secs: Vec<u64>,
    /// WeChat Pay refuses to close an order younger than this (seconds since the prepay).
    pub close_after_secs: u64,
    /// Accepted clock difference for notification timestamps, in seconds.
    pub max_clock_skew_secs: u64,
}

/// Environment values that look like numbers (`RUIZHU_WECHATPAY__MCH_ID=1900000001`) arrive as
/// numbers; these ids are text.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Text(String),
    Unsigned(u64),
    Signed(i64),
}

impl TextOrNumber {
    fn into_text(self) -> String {
        match self {
            TextOrNumber::Text(s) => s,
            TextOrNumber::Unsigned(n) => n.to_string(),
            TextOrNumber::Signed(n) => n.to_string(),
        }
    }
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    TextOrNumber::deserialize(d).map(TextOrNumber::into_text)
}

fn secret_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    text(d).map(SecretString::from)
}

impl Default for WechatPaySettings {
    fn default() -> Self {
        Self {
            mch_id: String::new(),
            api_base: "https://api.mch.weixin.qq.com".to_owned(),
            merchant_key_path: None,
            merchant_serial: String::new(),
            platform_public_key_path: None,
            platform_key_id: String::new(),
            apiv3_key: SecretString::from(""),
            notify_url: "https://localhost/webhooks/wechatpay/notify".to_owned(),
            refund_notify_url: None,
            timeout_ms: 5_000,
            retries: 2,
            dev_payments: None,
            query_after_secs: vec![120, 600],
            close_after_secs: 300,
            max_clock_skew_secs: 300,
        }
    }
}

impl WechatPaySettings {
    /// Whether a merchant is configured.
    pub fn merchant_configured(&self) -> bool {
        !self.mch_id.is_empty()
    }

    /// The refund notification URL in force.
    pub fn refund_notify_url(&self) -> String {
        self.refund_notify_url
            .clone()
            .unwrap_or_else(|| match self.notify_url.rsplit_once('/') {
                Some((base, _)) => format!("{base}/refund-notify"),
                None => self.notify_url.clone(),
            })
    }

    /// Checks a configured merchant is complete and well-formed.
    pub fn validate(&self, production: bool) -> anyhow::Result<()> {
        if !self.merchant_configured() {
            return Ok(());
        }
        anyhow::ensure!(
            self.merchant_key_path.is_some(),
            "set RUIZHU_WECHATPAY__MERCHANT_KEY_PATH"
        );
        anyhow::ensure!(
            !self.merchant_serial.is_empty(),
            "set RUIZHU_WECHATPAY__MERCHANT_SERIAL"
        );
        anyhow::ensure!(
            self.platform_public_key_path.is_some(),
            "set RUIZHU_WECHATPAY__PLATFORM_PUBLIC_KEY_PATH"
        );
        anyhow::ensure!(
            !self.platform_key_id.is_empty(),
            "set RUIZHU_WECHATPAY__PLATFORM_KEY_ID"
        );
        anyhow::ensure!(
            self.apiv3_key.expose_secret().len() == 32,
            "RUIZHU_WECHATPAY__APIV3_KEY must be exactly 32 bytes"
        );
        for (name, url) in [
            ("notify_url", self.notify_url.clone()),
            ("refund_notify_url", self.refund_notify_url()),
        ] {
            let parsed = url::Url::parse(&url)
                .map_err(|e| anyhow::anyhow!("wechatpay.{name} is not a URL: {e}"))?;
            anyhow::ensure!(
                parsed.query().is_none(),
                "wechatpay.{name} must not have a query string"
            );
            anyhow::ensure!(
                !production || parsed.scheme() == "https",
                "wechatpay.{name} must be https in production"
            );
        }
        Ok(())
    }
}

/// How a WeChat Pay call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PayError {
    /// Transport failure, timeout, 5xx or 429 after the retries: try again later with the same
    /// parameters.
    #[error("WeChat Pay unavailable: {0}")]
    Unavailable(String),
    /// WeChat Pay refused the request (4xx) with this code.
    #[error("WeChat Pay refused the request: {status} {code}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// WeChat Pay's error code, e.g. `PARAM_ERROR`, `ORDER_NOT_EXIST`, `ORDERPAID`.
        code: String,
        /// WeChat Pay's message.
        message: String,
    },
    /// The response's signature did not verify: it did not come from WeChat Pay.
    #[error("WeChat Pay response failed verification: {0}")]
    Unverified(&'static str),
}

/// Why a signed message (notification or response) was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A required header is missing or malformed.
    #[error("missing or malformed signature headers")]
    MissingHeaders,
    /// `Wechatpay-Timestamp` is too far from now.
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// A `WECHATPAY/SIGNTEST/` probe signature.
    #[error("probe signature")]
    ProbeSignature,
    /// `Wechatpay-Serial` names no key we know.
    #[error("unknown platform key serial")]
    UnknownSerial,
    /// The RSA signature does not match the message.
    #[error("signature mismatch")]
    BadSignature,
    /// The resource could not be decrypted (wrong key, nonce, AAD or tampered ciphertext).
    #[error("resource decryption failed")]
    Decrypt,
    /// The body is not the notification envelope.
    #[error("malformed notification body")]
    Malformed,
}

impl VerifyError {
    /// Stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            VerifyError::MissingHeaders => "missing_headers",
            VerifyError::StaleTimestamp => "stale_timestamp",
            VerifyError::ProbeSignature => "probe_signature",
            VerifyError::UnknownSerial => "unknown_serial",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Decrypt => "decrypt_failed",
            VerifyError::Malformed => "malformed",
        }
    }
}

/// The `Wechatpay-*` headers of a notification or response.
#[derive(Debug, Clone, Default)]
pub struct SignedHeaders {
    /// `Wechatpay-Timestamp`.
    pub timestamp: Option<String>,
    /// `Wechatpay-Nonce`.
    pub nonce: Option<String>,
    /// `Wechatpay-Signature` (base64).
    pub signature: Option<String>,
    /// `Wechatpay-Serial`.
    pub serial: Option<String>,
}

impl SignedHeaders {
    /// Reads them from an HTTP header map.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            timestamp: get("wechatpay-timestamp"),
            nonce: get("wechatpay-nonce"),
            signature: get("wechatpay-signature"),
            serial: get("wechatpay-serial"),
        }
    }
}

/// The encrypted `resource` of a notification.
#[derive(Debug, Clone, Deserialize)]
pub struct EncryptedResource {
    /// `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// base64 of ciphertext ‖ 16-byte tag.
    pub ciphertext: String,
    /// Additional authenticated data (`transaction` or `refund`).
    #[serde(default)]
    pub associated_data: String,
    /// The 12-byte IV, as text.
    pub nonce: String,
}

/// A notification envelope (§3.4).
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    /// WeChat's event id.
    pub id: String,
    /// e.g. `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`.
    pub event_type: String,
    /// The encrypted payload.
    pub resource: EncryptedResource,
}

/// Payer's amounts in a transaction.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TransactionAmount {
    /// Order amount in fen.
    #[serde(default)]
    pub total: i64,
    /// What the payer paid in fen.
    #[serde(default)]
    pub payer_total: Option<i64>,
    /// `CNY`.
    #[serde(default)]
    pub currency: Option<String>,
}

/// A transaction, as decrypted from a notification or returned by a query.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Transaction {
    /// The mini-program's AppID.
    #[serde(default)]
    pub appid: String,
    /// The merchant id.
    #[serde(default)]
    pub mchid: String,
    /// Our order number.
    #[serde(default)]
    pub out_trade_no: String,
    /// WeChat's transaction id (absent until paid).
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// `SUCCESS`, `NOTPAY`, `CLOSED`, …
    #[serde(default)]
    pub trade_state: String,
    /// When it was paid (RFC 3339).
    #[serde(default)]
    pub success_time: Option<String>,
    /// Amounts.
    #[serde(default)]
    pub amount: TransactionAmount,
}

/// A refund's state, from the refund API, a refund query or a refund notification.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RefundState {
    /// Our refund number.
    #[serde(default)]
    pub out_refund_no: String,
    /// Our order number.
    #[serde(default)]
    pub out_trade_no: String,
    /// WeChat's refund id.
    #[serde(default)]
    pub refund_id: Option<String>,
    /// `SUCCESS`, `PROCESSING`, `CLOSED` or `ABNORMAL` (the API says `status`, notifications
    /// `refund_status`).
    #[serde(default, alias = "refund_status")]
    pub status: String,
}

/// A refund to request.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    /// The order.
    pub out_trade_no: &'a str,
    /// Deterministic: a retry reuses it, so WeChat Pay refunds once.
    pub out_refund_no: &'a str,
    /// Shown to the payer.
    pub reason: &'a str,
    /// Fen to refund.
    pub refund_fen: i64,
    /// The order's total in fen.
    pub total_fen: i64,
}

/// Parameters for `wx.requestPayment` (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayParams {
    /// The mini-program's AppID (signed, not sent to `wx.requestPayment`).
    pub app_id: String,
    /// Seconds since the epoch, as a string.
    pub time_stamp: String,
    /// Random string, ≤ 32 characters.
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// `RSA`.
    pub sign_type: String,
    /// base64 RSA-SHA256 signature over `appId\ntimeStamp\nnonceStr\npackage\n`.
    pub pay_sign: String,
}

/// What closing an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed (or already closed): it can no longer be paid.
    Closed,
    /// It was paid before it could be closed (`ORDERPAID`).
    AlreadyPaid,
}

/// Decrypts a notification resource (§3.4 step 5): AES-256-GCM with the APIv3 key, IV = the
/// nonce bytes, AAD = the `associated_data` bytes, input = ciphertext ‖ tag.
pub fn decrypt_resource(
    apiv3_key: &[u8],
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, VerifyError> {
    if apiv3_key.len() != 32 || nonce.len() != 12 {
        return Err(VerifyError::Decrypt);
    }
    let cipher = Aes256Gcm::new_from_slice(apiv3_key).map_err(|_| VerifyError::Decrypt)?;
    let data = B64
        .decode(ciphertext_b64.as_bytes())
        .map_err(|_| VerifyError::Decrypt)?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: &data,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| VerifyError::Decrypt)
}

/// Encrypts a resource the way WeChat Pay does (for local fakes, benchmarks and tests).
pub fn encrypt_resource(
    apiv3_key: &[u8],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> anyhow::Result<String> {
    anyhow::ensure!(
        apiv3_key.len() == 32 && nonce.len() == 12,
        "bad key or nonce"
    );
    let cipher = Aes256Gcm::new_from_slice(apiv3_key)?;
    let data = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    Ok(B64.encode(data))
}

/// Reads an RSA private key from PEM (PKCS#8 `PRIVATE KEY`, as WeChat issues, or PKCS#1).
pub fn private_key_from_pem(pem: &str) -> anyhow::Result<RsaPrivateKey> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| anyhow::anyhow!("not an RSA private key in PEM"))
}

/// Reads an RSA public key from PEM (SPKI `PUBLIC KEY`, or PKCS#1).
pub fn public_key_from_pem(pem: &str) -> anyhow::Result<RsaPublicKey> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| anyhow::anyhow!("not an RSA public key in PEM"))
}

/// RSA-PKCS1v1.5-SHA256 signature, base64 (blinded, so timing does not leak the key).
pub fn sign_base64(key: &SigningKey<Sha256>, message: &[u8]) -> String {
    let signature = key.sign_with_rng(&mut rand::rngs::OsRng, message);
    B64.encode(signature.to_bytes())
}

/// Verifies a base64 RSA-PKCS1v1.5-SHA256 signature.
pub fn verify_base64(key: &VerifyingKey<Sha256>, message: &[u8], signature_b64: &str) -> bool {
    let Ok(bytes) = B64.decode(signature_b64.trim().as_bytes()) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

/// The message WeChat Pay signs responses and notifications with.
pub fn signed_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 64);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The message a merchant signs for `Authorization` (§3.1).
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: &str,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{canonical_url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The message `paySign` covers (§3.3; `signType` is not signed).
pub fn pay_sign_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

fn nonce_str() -> String {
    crate::crypto::random_token()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The known vector of wechat.md §3.6.
    #[test]
    fn aes_gcm_known_vector() {
        let key = b"0123456789abcdef0123456789abcdef";
        let ciphertext = "Eu6myr+6GaECeJdOZPZ6BX5jiS+LtV9qLo8OrOJs/ttO5IKIXDWWxhUJ5MF69qXnvAbp9/gbJaj8gnpJ7aLlSiU0Jos6N/X1Dbc=";
        let plain = decrypt_resource(key, "abcdefghijkl", "transaction", ciphertext)
            .expect("the vector decrypts");
        assert_eq!(
            plain,
            br#"{"out_trade_no":"R20250101000001","trade_state":"SUCCESS"}"#
        );
        assert_eq!(
            encrypt_resource(key, "abcdefghijkl", "transaction", &plain).expect("encrypts"),
            ciphertext
        );
        // wrong AAD, wrong nonce, flipped byte: all refused
        assert_eq!(
            decrypt_resource(key, "abcdefghijkl", "refund", ciphertext),
            Err(VerifyError::Decrypt)
        );
        assert_eq!(
            decrypt_resource(key, "abcdefghijkm", "transaction", ciphertext),
            Err(VerifyError::Decrypt)
        );
        let mut bytes = B64.decode(ciphertext).expect("base64");
        bytes[3] ^= 1;
        assert_eq!(
            decrypt_resource(key, "abcdefghijkl", "transaction", &B64.encode(bytes)),
            Err(VerifyError::Decrypt)
        );
    }

    #[test]
    fn messages_follow_the_spec_byte_for_byte() {
        assert_eq!(
            request_message("GET", "/v3/x?mchid=1", "1554208460", "N", ""),
            "GET\n/v3/x?mchid=1\n1554208460\nN\n\n"
        );
        assert_eq!(signed_message("1", "n", b"{}"), b"1\nn\n{}\n");
        assert_eq!(
            pay_sign_message("wx1", "1554208460", "abc", "prepay_id=wx2"),
            "wx1\n1554208460\nabc\nprepay_id=wx2\n"
        );
    }

    #[test]
    fn refund_notify_url_defaults_next_to_notify_url() {
        let s = WechatPaySettings {
            notify_url: "https://bff.example.com/webhooks/wechatpay/notify".into(),
            ..WechatPaySettings::default()
        };
        assert_eq!(
            s.refund_notify_url(),
            "https://bff.example.com/webhooks/wechatpay/refund-notify"
        );
    }
}
