//! The response cache: whole answers to hot read-only requests (the catalog's), kept in process
//! by a key the transport derives from the request and the caller's scope.
//!
//! Correctness rests on a generation number: every entry remembers the generation it was computed
//! under, and an entry whose generation is not the current one is never served. The catalog bumps
//! its generation after every invalidation of its data-level cache (see
//! [`crate::catalog::Catalog::generation`]), so an answer computed before a catalog change is
//! stale the moment the change is known here. A short time to live bounds what this process
//! cannot know (another replica's change that reaches it by no event), as the in-process data
//! cache's does.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::cache::CacheSettings;

/// A key: SHA-256 over the parts that decide an answer (document, operation, variables, scope).
pub type ResponseKey = [u8; 32];

/// Derives a key from its parts; each part is length-prefixed so no two lists of parts collide.
pub fn response_key(parts: &[&[u8]]) -> ResponseKey {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

struct Entry<V> {
    generation: u64,
    value: V,
}

/// Whole responses by key. Off (every lookup a miss, nothing stored) when `cache.enabled` or
/// `cache.responses` is false.
#[derive(Clone)]
pub struct ResponseCache<V> {
    local: Option<moka::future::Cache<ResponseKey, Arc<Entry<V>>>>,
}

impl<V> std::fmt::Debug for ResponseCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("enabled", &self.local.is_some())
            .finish()
    }
}

fn count(result: &'static str) {
    metrics::counter!("ruizhu_response_cache_requests_total", "result" => result).increment(1);
}

impl<V: Clone + Send + Sync + 'static> ResponseCache<V> {
    /// A cache sized by `weight` (bytes of a value) up to `cache.response_max_bytes`.
    pub fn new(settings: &CacheSettings, weight: fn(&V) -> u32) -> Self {
        let local = (settings.enabled && settings.responses).then(|| {
            moka::future::Cache::builder()
                .max_capacity(settings.response_max_bytes)
                .weigher(move |_: &ResponseKey, e: &Arc<Entry<V>>| {
                    weight(&e.value).saturating_add(64)
                })
                .time_to_live(Duration::from_millis(settings.response_ttl_ms))
                .build()
        });
        Self { local }
    }

    /// Whether answers are cached at all.
    pub fn enabled(&self) -> bool {
        self.local.is_some()
    }

    /// The answer stored under `key` when it was computed under `generation`.
    pub async fn get(&self, key: &ResponseKey, generation: u64) -> Option<V> {
        let local = self.local.as_ref()?;
        match local.get(key).await {
            Some(entry) if entry.generation == generation => {
                count("hit");
                Some(entry.value.clone())
            }
            Some(_) => {
                local.invalidate(key).await;
                count("stale");
                None
            }
            None => {
                count("miss");
                None
            }
        }
    }

    /// Stores an answer computed under `generation` (read before the request ran: a change
    /// during the request leaves the entry stale at once).
    pub async fn put(&self, key: ResponseKey, generation: u64, value: V) {
        if let Some(local) = &self.local {
            local
                .insert(key, Arc::new(Entry { generation, value }))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CacheSettings {
        CacheSettings::default()
    }

    #[tokio::test]
    async fn entries_of_an_older_generation_are_never_served() {
        let cache: ResponseCache<Arc<str>> = ResponseCache::new(&settings(), |v| v.len() as u32);
        let key = response_key(&[b"doc", b"op", b"{}", b"anonymous"]);
        cache.put(key, 7, Arc::from("answer")).await;
        assert_eq!(cache.get(&key, 7).await.as_deref(), Some("answer"));
        assert_eq!(cache.get(&key, 8).await, None);
        assert_eq!(cache.get(&key, 7).await, None, "dropped once seen stale");
    }

    #[test]
    fn parts_are_delimited() {
        assert_ne!(response_key(&[b"ab", b"c"]), response_key(&[b"a", b"bc"]));
    }

    #[tokio::test]
    async fn off_when_the_cache_is_off() {
        let mut s = settings();
        s.responses = false;
        let cache: ResponseCache<Arc<str>> = ResponseCache::new(&s, |v| v.len() as u32);
        assert!(!cache.enabled());
        let key = response_key(&[b"x"]);
        cache.put(key, 0, Arc::from("answer")).await;
        assert_eq!(cache.get(&key, 0).await, None);
    }
}
