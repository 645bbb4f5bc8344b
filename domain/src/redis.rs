//! The shared Redis connection. Redis is an optimisation, never a dependency: every call has a
//! short timeout, and after a failure a breaker skips Redis for a while, so a dead or frozen
//! Redis costs at most one timeout per breaker period and callers fall back (to MySQL, or to an
//! in-process equivalent). The outage is logged once on the way down and once on recovery, and
//! counted in `ruizhu_cache_errors_total`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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

/// A Redis connection that is allowed to be down. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<RedisInner>,
}

struct RedisInner {
    prefix: String,
    conn: ConnectionManager,
    timeout: Duration,
    retry_after: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    open_until_ms: AtomicU64,
    down: AtomicBool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl Redis {
    /// Connects lazily: nothing is opened until the first call.
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.expose_secret())?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(settings.retry_after_ms));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        // believed up until a call fails (the gauge then follows every change), so the series
        // exists from the start and "Redis down" is a value, not a missing series
        metrics::gauge!("ruizhu_redis_up").set(1.0);
        Ok(Self {
            inner: Arc::new(RedisInner {
                prefix: settings.key_prefix.clone(),
                conn,
                timeout,
                retry_after: Duration::from_millis(settings.retry_after_ms),
                started: Instant::now(),
                open_until_ms: AtomicU64::new(0),
                down: AtomicBool::new(false),
            }),
        })
    }

    /// `key` with this deployment's prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Whether Redis answers a PING (for `/readyz`).
    pub async fn ping(&self) -> bool {
        self.call("ping", |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .is_some()
    }

    /// Whether Redis is currently believed to be down (breaker open).
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one Redis operation unless the breaker is open; `None` means Redis could not
    /// answer (breaker open, error or timeout) and the caller falls back.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.inner.open_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = tokio::time::timeout(self.inner.timeout, f(self.inner.conn.clone())).await;
        match outcome {
            Ok(Ok(value)) => {
                if self.inner.down.swap(false, Ordering::Relaxed) {
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
                let retry_ms =
                    u64::try_from(self.inner.retry_after.as_millis()).unwrap_or(u64::MAX);
                self.inner
                    .open_until_ms
                    .store(self.now_ms().saturating_add(retry_ms), Ordering::Relaxed);
                if !self.inner.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: "ruizhu::cache", op, %reason,
                        "redis unavailable; serving from MySQL until it returns");
                    metrics::gauge!("ruizhu_redis_up").set(0.0);
                }
                None
            }
        }
    }
}

/// Counters over a fixed window (failed logins, rate limits), shared by every replica through
/// Redis; while Redis is down each process counts on its own, so limits stay in force (per
/// process) instead of failing open or closed.
#[derive(Clone)]
pub struct WindowCounter {
    redis: Redis,
    name: &'static str,
    window: Duration,
    local: moka::future::Cache<String, Arc<AtomicU64>>,
}

impl std::fmt::Debug for WindowCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowCounter")
            .field("name", &self.name)
            .finish()
    }
}

impl WindowCounter {
    /// Counters named `name` (part of the Redis key) that reset `window` after their first hit.
    pub fn new(redis: Redis, name: &'static str, window: Duration) -> Self {
        let local = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(window)
            .build();
        Self {
            redis,
            name,
            window,
            local,
        }
    }

    fn key(&self, id: &str) -> String {
        self.redis.key(&format!("{}:{id}", self.name))
    }

    /// Current count for `id` and the seconds until it resets.
    pub async fn get(&self, id: &str) -> (u64, u64) {
        let key = self.key(id);
        let shared: Option<(Option<u64>, i64)> = self
            .redis
            .call("get", |mut c| async move {
                redis::pipe().get(&key).ttl(&key).query_async(&mut c).await
            })
            .await;
        match shared {
            Some((count, ttl)) => (count.unwrap_or(0), u64::try_from(ttl).unwrap_or(0)),
            None => {
                let local = self
                    .local
                    .get(id)
                    .await
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                (local, self.window.as_secs())
            }
        }
    }

    /// Adds one hit for `id`; returns the new count.
    pub async fn hit(&self, id: &str) -> u64 {
        let key = self.key(id);
        let window = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        let shared: Option<(u64, i64)> = self
            .redis
            .call("incr", |mut c| async move {
                redis::pipe()
                    .incr(&key, 1)
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(window)
                    .arg("NX")
                    .query_async(&mut c)
                    .await
            })
            .await;
        let local = self
            .local
            .get_with(id.to_owned(), async { Arc::new(AtomicU64::new(0)) })
            .await;
        let local = local.fetch_add(1, Ordering::Relaxed) + 1;
        shared.map_or(local, |(count, _)| count)
    }

    /// Forgets the count for `id`.
    pub async fn reset(&self, id: &str) {
        self.local.invalidate(id).await;
        let key = self.key(id);
        self.redis
            .call("del", |mut c| async move {
                redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await
            })
            .await;
    }
}
