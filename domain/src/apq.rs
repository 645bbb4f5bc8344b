//! Automatic persisted queries (Apollo APQ) for `/graphql`: the mini-program sends a query's
//! SHA-256 instead of its text once the server has seen it. Texts are shared by every replica
//! through Redis, with an in-process front; Redis down only means more "not found" answers,
//! which clients resolve by sending the text again.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::redis::Redis;

/// How long a registered query is kept in Redis after its last registration.
const REDIS_TTL_SECS: u64 = 30 * 24 * 3600;

/// The store of persisted query texts by hash.
#[derive(Clone, Debug)]
pub struct PersistedQueries {
    local: moka::future::Cache<String, Arc<str>>,
    redis: Redis,
}

/// The lowercase hex SHA-256 of a query text.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `hash` looks like a SHA-256 in lowercase hex.
pub fn is_sha256_hex(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PersistedQueries {
    /// A store over `redis` with an in-process front of `capacity` texts.
    pub fn new(redis: Redis, capacity: u64) -> Self {
        Self {
            local: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            redis,
        }
    }

    /// The text registered under `hash`, if any replica has seen it.
    pub async fn get(&self, hash: &str) -> Option<Arc<str>> {
        if let Some(text) = self.local.get(hash).await {
            metrics::counter!("ruizhu_apq_lookups_total", "outcome" => "local").increment(1);
            return Some(text);
        }
        let key = self.redis.key(&format!("apq:{hash}"));
        let found: Option<Option<String>> = self
            .redis
            .call("get", |mut c| async move {
                redis::cmd("GET").arg(&key).query_async(&mut c).await
            })
            .await;
        match found.flatten() {
            Some(text) if sha256_hex(&text) == hash => {
                metrics::counter!("ruizhu_apq_lookups_total", "outcome" => "redis").increment(1);
                let text: Arc<str> = text.into();
                self.local.insert(hash.to_owned(), text.clone()).await;
                Some(text)
            }
            _ => {
                metrics::counter!("ruizhu_apq_lookups_total", "outcome" => "miss").increment(1);
                None
            }
        }
    }

    /// Registers `text` under its hash (the caller checked they match).
    pub async fn put(&self, hash: &str, text: &str) {
        self.local.insert(hash.to_owned(), text.into()).await;
        let key = self.redis.key(&format!("apq:{hash}"));
        let value = text.to_owned();
        self.redis
            .call("set", |mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(REDIS_TTL_SECS)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        let h = sha256_hex("{ __typename }");
        assert!(is_sha256_hex(&h));
        assert_eq!(
            h,
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
        assert!(!is_sha256_hex(&h.to_uppercase()));
        assert!(!is_sha256_hex("abc"));
    }
}
