//! WeChat Pay API v3 merchant client (formats in `shared/docs/wechat.md` §3): every request
//! signed with `WECHATPAY2-SHA256-RSA2048`, every response and notification verified against the
//! platform public key, notification resources decrypted with the APIv3 key (AES-256-GCM).
//!
//! This module speaks the protocol only; what a payment means for an order lives in
//! [`crate::payment`]. Nothing here logs a key, a signature input or a payer's openid.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

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

mod client;
mod crypto;

pub use client::WechatPay;
pub use crypto::{
    decrypt_resource, encrypt_resource, pay_sign_message, private_key_from_pem,
    public_key_from_pem, request_message, sign_base64, signed_message, verify_base64,
};
