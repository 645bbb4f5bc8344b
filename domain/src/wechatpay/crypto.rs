//! The cryptography of WeChat Pay API v3 (§3.1, §3.3, §3.4, §3.6): the exact messages that are
//! signed, RSA-PKCS1v1.5-SHA256 signatures, and AES-256-GCM resource encryption.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use super::VerifyError;

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

pub(super) fn nonce_str() -> String {
    crate::crypto::random_token()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect()
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
        let s = crate::wechatpay::WechatPaySettings {
            notify_url: "https://bff.example.com/webhooks/wechatpay/notify".into(),
            ..crate::wechatpay::WechatPaySettings::default()
        };
        assert_eq!(
            s.refund_notify_url(),
            "https://bff.example.com/webhooks/wechatpay/refund-notify"
        );
    }
}
