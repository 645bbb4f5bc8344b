//! Read-through caching: a small in-process cache (moka) in front of Redis, in front of MySQL.
//! Redis failures are misses (see [`crate::redis`]), so an outage only costs the cache.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::DomainResult;
use crate::redis::Redis;

/// Cache settings (`[cache]`, `RUIZHU_CACHE__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Turns every cache layer off (reads go straight to MySQL). For measurements and tests.
    pub enabled: bool,
    /// Time to live of entries in Redis, in seconds.
    pub ttl_secs: u64,
    /// Time to live of entries in the in-process cache, in milliseconds. Kept short: another
    /// replica's write invalidates Redis at once but this copy only when it expires.
    pub local_ttl_ms: u64,
    /// Maximum entries held in the in-process cache.
    pub local_max_entries: u64,
    /// Whole answers of catalog-only queries cached in process (see
    /// [`crate::response_cache`]); off also when `enabled` is false.
    pub responses: bool,
    /// Time to live of a cached answer, in milliseconds: the bound on staleness for catalog
    /// changes this process hears of by no event (as `local_ttl_ms` for the data).
    pub response_ttl_ms: u64,
    /// Most bytes of cached answers held in process.
    pub response_max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 300,
            local_ttl_ms: 5_000,
            local_max_entries: 50_000,
            responses: true,
            response_ttl_ms: 5_000,
            response_max_bytes: 64 * 1024 * 1024,
        }
    }
}

type AnyValue = Arc<dyn Any + Send + Sync>;

/// The read-through cache shared by every context.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    redis: Redis,
    local: moka::future::Cache<String, AnyValue>,
    settings: CacheSettings,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

fn count(ns: &'static str, layer: &'static str, result: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("ruizhu_cache_requests_total", "cache" => ns, "layer" => layer, "result" => result)
            .increment(n as u64);
    }
}

impl Cache {
    /// Builds the cache over `redis`.
    pub fn new(redis: Redis, settings: &CacheSettings) -> anyhow::Result<Self> {
        let local = moka::future::Cache::builder()
            .max_capacity(settings.local_max_entries)
            .time_to_live(Duration::from_millis(settings.local_ttl_ms))
            .build();
        Ok(Self {
            inner: Arc::new(CacheInner {
                redis,
                local,
                settings: settings.clone(),
            }),
        })
    }

    fn key(&self, ns: &str, id: &str) -> String {
        self.inner.redis.key(&format!("{ns}:{id}"))
    }

    /// Reads `ids` of namespace `ns` through the cache layers; `load` is called once with every
    /// id found in neither layer and returns the values that exist (absent ids are cached as
    /// absent too, so unknown ids do not reach MySQL on every request).
    pub async fn get_many<V, F, Fut>(
        &self,
        ns: &'static str,
        ids: &[u64],
        load: F,
    ) -> DomainResult<HashMap<u64, Arc<V>>>
    where
        V: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce(Vec<u64>) -> Fut,
        Fut: Future<Output = DomainResult<HashMap<u64, V>>>,
    {
        if !self.inner.settings.enabled {
            let loaded = load(ids.to_vec()).await?;
            return Ok(loaded.into_iter().map(|(k, v)| (k, Arc::new(v))).collect());
        }
        let mut found: HashMap<u64, Arc<V>> = HashMap::with_capacity(ids.len());
        let mut missing: Vec<(u64, String)> = Vec::new();
        for &id in ids {
            let key = self.key(ns, &id.to_string());
            match self.inner.local.get(&key).await {
                Some(any) => {
                    if let Some(Some(v)) = any.downcast_ref::<Option<Arc<V>>>() {
                        found.insert(id, v.clone());
                    }
                }
                None => missing.push((id, key)),
            }
        }
        count(ns, "local", "hit", ids.len() - missing.len());
        count(ns, "local", "miss", missing.len());
        if missing.is_empty() {
            return Ok(found);
        }

        // Second layer: one MGET for everything the process did not have.
        let keys: Vec<String> = missing.iter().map(|(_, k)| k.clone()).collect();
        let from_redis: Option<Vec<Option<Vec<u8>>>> = self
            .inner
            .redis
            .call("mget", |mut c| async move { c.mget(keys).await })
            .await;
        let mut still_missing: Vec<(u64, String)> = Vec::new();
        match from_redis {
            Some(values) if values.len() == missing.len() => {
                for ((id, key), raw) in missing.into_iter().zip(values) {
                    match raw.and_then(|b| serde_json::from_slice::<Option<V>>(&b).ok()) {
                        Some(value) => {
                            let value = value.map(Arc::new);
                            if let Some(v) = &value {
                                found.insert(id, v.clone());
                            }
                            self.inner
                                .local
                                .insert(key, Arc::new(value) as AnyValue)
                                .await;
                        }
                        None => still_missing.push((id, key)),
                    }
                }
            }
            _ => still_missing = missing,
        }
        count(ns, "redis", "miss", still_missing.len());
        if still_missing.is_empty() {
            return Ok(found);
        }

        // Last layer: the source of truth, in one batch.
        let mut loaded = load(still_missing.iter().map(|(id, _)| *id).collect()).await?;
        let mut to_store: Vec<(String, Vec<u8>)> = Vec::with_capacity(still_missing.len());
        for (id, key) in still_missing {
            let value = loaded.remove(&id).map(Arc::new);
            if let Ok(bytes) = serde_json::to_vec(&value.as_deref()) {
                to_store.push((key.clone(), bytes));
            }
            if let Some(v) = &value {
                found.insert(id, v.clone());
            }
            self.inner
                .local
                .insert(key, Arc::new(value) as AnyValue)
                .await;
        }
        let ttl = self.inner.settings.ttl_secs;
        self.inner
            .redis
            .call("set", |mut c| async move {
                let mut pipe = redis::pipe();
                for (key, bytes) in &to_store {
                    pipe.set_ex(key, bytes, ttl).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        Ok(found)
    }

    /// Reads one value (e.g. the whole category tree) through the cache layers.
    pub async fn get_one<V, F, Fut>(&self, ns: &'static str, load: F) -> DomainResult<Arc<V>>
    where
        V: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = DomainResult<V>>,
    {
        let mut all = self
            .get_many(ns, &[0], |_| async move {
                Ok(HashMap::from([(0, load().await?)]))
            })
            .await?;
        all.remove(&0)
            .ok_or_else(|| crate::DomainError::Internal(format!("{ns} missing")))
    }

    /// Forgets `ids` of `ns` in both layers. Catalog writes call this after they commit.
    pub async fn invalidate(&self, ns: &'static str, ids: &[u64]) {
        let keys: Vec<String> = ids.iter().map(|id| self.key(ns, &id.to_string())).collect();
        for key in &keys {
            self.inner.local.invalidate(key).await;
        }
        if !self.inner.settings.enabled || keys.is_empty() {
            return;
        }
        self.inner
            .redis
            .call("del", |mut c| async move { c.del::<_, ()>(keys).await })
            .await;
    }
}
