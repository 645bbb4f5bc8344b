//! Read-through caching: a small in-process cache (moka) in front of Redis, in front of MySQL.
//!
//! Redis is an optimisation, never a dependency: every Redis call has a short timeout, and after
//! a failure a breaker skips Redis for a while, so a dead or frozen Redis costs at most one
//! timeout per breaker period and requests are served from MySQL. The outage is logged once on
//! the way down and once on recovery, and counted in `ruizhu_cache_errors_total`.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::DomainResult;

/// Redis settings (`[redis]`, `RUIZHU_REDIS__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`. May hold a password, so it never prints.
    pub url: SecretString,
    /// Prepended to every key this process writes, so several deployments (or tests) can share
    /// one Redis.
    pub key_prefix: String,
    /// Upper bound on one Redis round trip (and on opening a connection), in milliseconds.
    pub timeout_ms: u64,
    /// After a Redis failure, how long to serve without Redis before trying again, in ms.
    pub retry_after_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            key_prefix: "ruizhu:".to_owned(),
            timeout_ms: 100,
            retry_after_ms: 1_000,
        }
    }
}

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
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 300,
            local_ttl_ms: 5_000,
            local_max_entries: 50_000,
        }
    }
}

/// A Redis connection that is allowed to be down.
struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    retry_after: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    open_until_ms: AtomicU64,
    down: AtomicBool,
}

impl Redis {
    fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.expose_secret())?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(settings.retry_after_ms));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            timeout,
            retry_after: Duration::from_millis(settings.retry_after_ms),
            started: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one Redis operation unless the breaker is open; `None` means "act as a miss".
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.open_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = tokio::time::timeout(self.timeout, f(self.conn.clone())).await;
        match outcome {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "ruizhu::cache", "redis is reachable again");
                    metrics::gauge!("ruizhu_redis_up").set(1.0);
                }
                Some(value)
            }
            failure => {
                let reason = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                metrics::counter!("ruizhu_cache_errors_total", "op" => op).increment(1);
                let retry_ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
                self.open_until_ms
                    .store(self.now_ms().saturating_add(retry_ms), Ordering::Relaxed);
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: "ruizhu::cache", op, %reason,
                        "redis unavailable; serving from MySQL until it returns");
                    metrics::gauge!("ruizhu_redis_up").set(0.0);
                }
                None
            }
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
    prefix: String,
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
    /// Builds the cache; no Redis connection is opened until it is first needed.
    pub fn new(redis: &RedisSettings, settings: &CacheSettings) -> anyhow::Result<Self> {
        let local = moka::future::Cache::builder()
            .max_capacity(settings.local_max_entries)
            .time_to_live(Duration::from_millis(settings.local_ttl_ms))
            .build();
        Ok(Self {
            inner: Arc::new(CacheInner {
                redis: Redis::new(redis)?,
                prefix: redis.key_prefix.clone(),
                local,
                settings: settings.clone(),
            }),
        })
    }

    fn key(&self, ns: &str, id: &str) -> String {
        format!("{}{ns}:{id}", self.inner.prefix)
    }

    /// Whether Redis answers a PING (for `/readyz`).
    pub async fn redis_ping(&self) -> bool {
        self.inner
            .redis
            .call("ping", |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await
            .is_some()
    }

    /// Whether Redis is currently believed to be down (breaker open).
    pub fn redis_down(&self) -> bool {
        self.inner.redis.down.load(Ordering::Relaxed)
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
