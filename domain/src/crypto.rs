//! Field encryption and hashing for personal data and credentials.
//!
//! - [`FieldCipher`]: AES-256-GCM envelopes `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
//!   The key id makes rotation possible (new writes use the active key; old rows still decrypt),
//!   and callers bind each value to its row with associated data (`member:42:phone`), so a
//!   ciphertext copied onto another row does not decrypt.
//! - [`BlindIndex`]: HMAC-SHA256 of a normalised value, for equality lookup without decrypting.
//! - Opaque tokens: 256 random bits, stored only as SHA-256.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Keys for personal data (`[crypto]`, `RUIZHU_CRYPTO__*`). Each key is 32 bytes, base64.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CryptoSettings {
    /// Encryption keys by id, e.g. `RUIZHU_CRYPTO__FIELD_KEYS__K2=<base64>`. Keep old ids
    /// until every row written with them has been re-encrypted.
    pub field_keys: BTreeMap<String, SecretString>,
    /// Id of the key new values are encrypted with.
    pub active_field_key: String,
    /// Key of the blind indexes (changing it means recomputing every index).
    pub blind_index_key: SecretString,
}

/// Development keys, refused in production.
pub const DEV_FIELD_KEY: &str = "ZGV2LW9ubHktZmllbGQta2V5LTAwMDAwMDAwMDAwMDA=";
const DEV_INDEX_KEY: &str = "ZGV2LW9ubHktYmxpbmQtaW5kZXgta2V5LTAwMDAwMDA=";

impl Default for CryptoSettings {
    fn default() -> Self {
        Self {
            field_keys: BTreeMap::from([("dev".to_owned(), SecretString::from(DEV_FIELD_KEY))]),
            active_field_key: "dev".to_owned(),
            blind_index_key: SecretString::from(DEV_INDEX_KEY),
        }
    }
}

impl CryptoSettings {
    /// Whether any development key is still configured.
    pub fn uses_development_keys(&self) -> bool {
        self.field_keys
            .values()
            .any(|k| k.expose_secret() == DEV_FIELD_KEY)
            || self.blind_index_key.expose_secret() == DEV_INDEX_KEY
    }
}

/// Why a value could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Not an envelope this code writes.
    #[error("malformed ciphertext envelope")]
    Malformed,
    /// The envelope names a key this process does not have.
    #[error("unknown key id")]
    UnknownKey,
    /// Wrong key, wrong associated data, or tampered bytes.
    #[error("ciphertext does not authenticate")]
    Unauthentic,
}

fn decode_key(name: &str, b64: &SecretString) -> anyhow::Result<[u8; 32]> {
    let bytes = STANDARD
        .decode(b64.expose_secret().trim())
        .map_err(|_| anyhow::anyhow!("crypto key {name} is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("crypto key {name} must be 32 bytes"))
}

/// AES-256-GCM field encryption with key ids.
#[derive(Clone)]
pub struct FieldCipher {
    keys: BTreeMap<String, Aes256Gcm>,
    active: String,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCipher")
            .field("key_ids", &self.keys.keys())
            .finish()
    }
}

impl FieldCipher {
    /// Builds the cipher; fails when a key is malformed or the active key is missing.
    pub fn new(settings: &CryptoSettings) -> anyhow::Result<Self> {
        let mut keys = BTreeMap::new();
        for (id, key) in &settings.field_keys {
            anyhow::ensure!(
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "crypto key ids are alphanumeric"
            );
            let key = decode_key(id, key)?;
            keys.insert(id.clone(), Aes256Gcm::new(&key.into()));
        }
        anyhow::ensure!(
            keys.contains_key(&settings.active_field_key),
            "crypto.active_field_key names no configured key"
        );
        Ok(Self {
            keys,
            active: settings.active_field_key.clone(),
        })
    }

    /// Encrypts `plaintext`, bound to `aad`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> String {
        let cipher = &self.keys[&self.active];
        let mut nonce = [0_u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // encryption with a valid key and a 12-byte nonce cannot fail
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("v1.{}.{}", self.active, URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts an envelope written by [`encrypt`](Self::encrypt) with the same `aad`.
    pub fn decrypt(&self, envelope: &str, aad: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = envelope.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Malformed);
        };
        let cipher = self.keys.get(kid).ok_or(CryptoError::UnknownKey)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Malformed)?;
        if bytes.len() < 12 + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Unauthentic)
    }
}

/// Keyed hash for equality lookups of encrypted values.
#[derive(Clone)]
pub struct BlindIndex {
    key: [u8; 32],
}

impl std::fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindIndex(..)")
    }
}

impl BlindIndex {
    /// Builds the index from its configured key.
    pub fn new(settings: &CryptoSettings) -> anyhow::Result<Self> {
        Ok(Self {
            key: decode_key("blind_index_key", &settings.blind_index_key)?,
        })
    }

    /// Hex HMAC-SHA256 of `domain` and `value` (the domain keeps indexes of different kinds of
    /// value apart).
    pub fn compute(&self, domain: &str, value: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// 256 random bits, base64url: refresh tokens, nonces.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 digest (how opaque tokens are stored).
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bound_to_associated_data_and_key() {
        let cipher = FieldCipher::new(&CryptoSettings::default()).unwrap();
        let sealed = cipher.encrypt(b"13812345678", "member:1:phone");
        assert!(sealed.starts_with("v1.dev."));
        assert!(
            !sealed.contains("1381234"),
            "no plaintext digits in the envelope"
        );
        assert_eq!(
            cipher.decrypt(&sealed, "member:1:phone").unwrap(),
            b"13812345678"
        );
        assert_eq!(
            cipher.decrypt(&sealed, "member:2:phone"),
            Err(CryptoError::Unauthentic)
        );
        let mut tampered = sealed.clone();
        tampered.push('A');
        assert!(cipher.decrypt(&tampered, "member:1:phone").is_err());
        assert_eq!(
            cipher.decrypt("v1.other.AAAA", "x"),
            Err(CryptoError::UnknownKey)
        );
        assert_eq!(cipher.decrypt("plain", "x"), Err(CryptoError::Malformed));
        // two encryptions of one value differ (random nonce)
        assert_ne!(sealed, cipher.encrypt(b"13812345678", "member:1:phone"));
    }

    #[test]
    fn rotation_keeps_old_rows_readable() {
        let old = FieldCipher::new(&CryptoSettings::default()).unwrap();
        let sealed = old.encrypt(b"secret", "aad");
        let mut settings = CryptoSettings::default();
        settings
            .field_keys
            .insert("k2".into(), SecretString::from(STANDARD.encode([7_u8; 32])));
        settings.active_field_key = "k2".into();
        let new = FieldCipher::new(&settings).unwrap();
        assert_eq!(new.decrypt(&sealed, "aad").unwrap(), b"secret");
        assert!(new.encrypt(b"x", "aad").starts_with("v1.k2."));
    }

    #[test]
    fn blind_index_is_keyed_and_domain_separated() {
        let index = BlindIndex::new(&CryptoSettings::default()).unwrap();
        let a = index.compute("phone", "13812345678");
        assert_eq!(a, index.compute("phone", "13812345678"));
        assert_ne!(a, index.compute("email", "13812345678"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("13812345678"));
    }
}
