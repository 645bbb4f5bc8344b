//! WeChat Pay payment notifications as WeChat Pay sends them: the transaction encrypted with
//! AES-256-GCM under the APIv3 key, the body signed with the platform's RSA key.

use base64::Engine as _;
use domain::wechatpay;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::json;
use sha2::Sha256;

/// The merchant as WeChat Pay sees it, plus the platform key that signs notifications.
pub struct Platform {
    /// The mini-program's app id.
    pub app_id: String,
    /// The merchant id.
    pub mch_id: String,
    /// The APIv3 key (32 bytes).
    pub apiv3_key: String,
    /// The platform public key id sent as `Wechatpay-Serial`.
    pub key_id: String,
    signer: SigningKey<Sha256>,
}

/// One notification, ready to post (and to post again: WeChat Pay retries the same one).
#[derive(Clone, Debug)]
pub struct Notification {
    /// `Wechatpay-Timestamp`.
    pub timestamp: String,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
    /// `Wechatpay-Signature`.
    pub signature: String,
    /// The JSON body.
    pub body: String,
}

impl Platform {
    /// A platform signing with the RSA private key in `platform_key_pem`.
    pub fn new(
        app_id: &str,
        mch_id: &str,
        apiv3_key: &str,
        key_id: &str,
        platform_key_pem: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            app_id: app_id.to_owned(),
            mch_id: mch_id.to_owned(),
            apiv3_key: apiv3_key.to_owned(),
            key_id: key_id.to_owned(),
            signer: SigningKey::<Sha256>::new(wechatpay::private_key_from_pem(platform_key_pem)?),
        })
    }

    /// A `TRANSACTION.SUCCESS` notification for `out_trade_no`, paid `total` fen under
    /// `transaction_id`; `serial` makes the nonces unique.
    pub fn payment(
        &self,
        out_trade_no: &str,
        transaction_id: &str,
        total: i64,
        serial: u64,
    ) -> anyhow::Result<Notification> {
        let tx = json!({
            "appid": self.app_id, "mchid": self.mch_id, "out_trade_no": out_trade_no,
            "transaction_id": transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
            "success_time": "2026-11-25T10:00:00+08:00", "payer": { "openid": "o-bench" },
            "amount": { "total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY" }
        });
        let nonce = format!("{:012}", serial % 1_000_000_000_000);
        let ciphertext = wechatpay::encrypt_resource(
            self.apiv3_key.as_bytes(),
            &nonce,
            "transaction",
            tx.to_string().as_bytes(),
        )?;
        let body = json!({
            "id": format!("EV-{serial}"), "create_time": "2026-11-25T10:00:01+08:00",
            "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": { "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                          "ciphertext": ciphertext, "associated_data": "transaction", "nonce": nonce }
        })
        .to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let header_nonce = format!("n{serial:031}");
        let message = wechatpay::signed_message(&timestamp, &header_nonce, body.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(self.signer.sign(&message).to_bytes());
        Ok(Notification {
            timestamp,
            nonce: header_nonce,
            signature,
            body,
        })
    }
}

impl Notification {
    /// The POST to `url` with WeChat Pay's headers.
    pub fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        key_id: &str,
    ) -> reqwest::RequestBuilder {
        client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Wechatpay-Timestamp", &self.timestamp)
            .header("Wechatpay-Nonce", &self.nonce)
            .header("Wechatpay-Signature", &self.signature)
            .header("Wechatpay-Serial", key_id)
            .header("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
            .body(self.body.clone())
    }
}
