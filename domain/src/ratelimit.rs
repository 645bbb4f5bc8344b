//! Token-bucket rate limits shared by every replica through Redis (one Lua script, so a
//! check-and-take is atomic and uses Redis's clock, not the replicas'), with a per-process
//! fallback while Redis is down.
//!
//! The fallback is deliberate: failing open would let a Redis outage lift every limit (and
//! invite one), failing closed would turn it into a full outage for partners and checkout. Each
//! process instead keeps its own buckets with the same capacity and rate (governor's GCRA, the
//! same arithmetic as the script), so during an outage the effective budget is at most the
//! configured one times the number of replicas, and it returns to the shared budget as soon as
//! Redis answers again.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{Quota, RateLimiter as Gcra};
use serde::Deserialize;

use crate::redis::Redis;

/// Rate-limit settings (`[rate_limits]`, `RUIZHU_RATE_LIMITS__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Rate limits on or off (off only for load tests).
    pub enabled: bool,
    /// Mutations limited per member and per client address; each occurrence in a request
    /// (aliases included) takes one token from both buckets.
    pub mutations: Vec<String>,
    /// Tokens a member may spend at once, per listed mutation.
    pub member_burst: u32,
    /// Tokens a member gets back a minute, per listed mutation.
    pub member_per_minute: u32,
    /// Tokens a client address may spend at once, per listed mutation (carrier NAT puts many
    /// members behind one address, so this is well above the member's).
    pub ip_burst: u32,
    /// Tokens a client address gets back a minute, per listed mutation.
    pub ip_per_minute: u32,
    /// Cost a partner may spend at once, unless the partner has its own.
    pub partner_burst: u32,
    /// Cost a partner gets back a minute, unless the partner has its own.
    pub partner_per_minute: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            mutations: [
                "loginWithWeChat",
                "placeOrder",
                "createWeChatPayment",
                "sendConsultationMessage",
            ]
            .map(str::to_owned)
            .to_vec(),
            member_burst: 10,
            member_per_minute: 10,
            ip_burst: 60,
            ip_per_minute: 60,
            partner_burst: 20_000,
            partner_per_minute: 60_000,
        }
    }
}

impl RateLimitSettings {
    /// A member's bucket for one listed mutation.
    pub fn member(&self) -> Bucket {
        Bucket {
            burst: self.member_burst,
            per_minute: self.member_per_minute,
        }
    }

    /// A client address's bucket for one listed mutation.
    pub fn ip(&self) -> Bucket {
        Bucket {
            burst: self.ip_burst,
            per_minute: self.ip_per_minute,
        }
    }

    /// A partner's bucket: its own numbers, else these defaults.
    pub fn partner(&self, per_minute: Option<u32>, burst: Option<u32>) -> Bucket {
        Bucket {
            burst: burst.unwrap_or(self.partner_burst),
            per_minute: per_minute.unwrap_or(self.partner_per_minute),
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `per_minute` tokens a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Capacity (what an idle caller may spend at once).
    pub burst: u32,
    /// Refill rate, tokens per minute.
    pub per_minute: u32,
}

/// The outcome of taking tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Taken.
    Allowed,
    /// Not enough tokens; the same request may succeed after this long.
    Limited {
        /// Time until enough tokens have been refilled.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whole seconds to wait (at least 1), for `Retry-After` and `retryAfterSeconds`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Decision::Allowed => None,
            Decision::Limited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }
}

/// Refills the bucket for the time since its last use, then takes `cost` tokens when there
/// are enough. Returns {allowed, milliseconds until enough tokens}. State expires once the
/// bucket would be full again, so idle callers cost no memory.
const TAKE: &str = r"
local burst = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 60000
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * per_ms)
if tokens >= cost then
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / per_ms) + 1000)
  return {1, 0}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / per_ms) + 1000)
return {0, math.ceil((cost - tokens) / per_ms)}
";

type Local = Gcra<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

/// Named token buckets. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    script: Arc<redis::Script>,
    /// Fallback buckets by key and shape (a partner whose budget changes gets a fresh one).
    local: moka::future::Cache<(String, Bucket), Arc<Local>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Buckets in `redis` (under its key prefix), with in-process fallbacks.
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: Arc::new(redis::Script::new(TAKE)),
            local: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// Takes `cost` tokens from the bucket `key` (e.g. `partner:7`). A cost above the capacity
    /// is never allowed (callers decide whether to charge such requests the capacity instead).
    pub async fn take(&self, key: &str, bucket: Bucket, cost: u32) -> Decision {
        let bucket = Bucket {
            burst: bucket.burst.max(1),
            per_minute: bucket.per_minute.max(1),
        };
        let cost = cost.max(1);
        if cost > bucket.burst {
            let refill = Duration::from_secs(60) / bucket.per_minute * bucket.burst;
            return Decision::Limited {
                retry_after: refill,
            };
        }
        let redis_key = self.redis.key(&format!("rl:{key}"));
        let script = self.script.clone();
        let shared: Option<(i64, i64)> = self
            .redis
            .call("ratelimit", |mut c| async move {
                script
                    .key(&redis_key)
                    .arg(bucket.burst)
                    .arg(bucket.per_minute)
                    .arg(cost)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let (decision, backend) = match shared {
            Some((1, _)) => (Decision::Allowed, "redis"),
            Some((_, wait_ms)) => (
                Decision::Limited {
                    retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
                },
                "redis",
            ),
            None => (self.take_local(key, bucket, cost).await, "local"),
        };
        if let Decision::Limited { .. } = decision {
            let scope = key.split(':').next().unwrap_or("other").to_owned();
            metrics::counter!("ruizhu_rate_limit_hits_total", "scope" => scope, "backend" => backend)
                .increment(1);
        }
        decision
    }

    async fn take_local(&self, key: &str, bucket: Bucket, cost: u32) -> Decision {
        let limiter = self
            .local
            .get_with((key.to_owned(), bucket), async {
                Arc::new(local_bucket(bucket))
            })
            .await;
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(n) {
            Ok(Ok(())) => Decision::Allowed,
            // governor reports when all `cost` tokens are there
            Ok(Err(not_until)) => Decision::Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
            // cost is clamped to the capacity, so this cannot happen; refuse briefly if it does
            Err(_) => Decision::Limited {
                retry_after: Duration::from_secs(1),
            },
        }
    }
}

fn local_bucket(bucket: Bucket) -> Local {
    let period = Duration::from_secs(60) / bucket.per_minute;
    let burst = NonZeroU32::new(bucket.burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    Gcra::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_bucket_spends_its_burst_then_refills_at_the_rate() {
        let redis = Redis::new(&crate::redis::RedisSettings::default()).unwrap();
        let limiter = RateLimiter::new(redis);
        let bucket = Bucket {
            burst: 10,
            per_minute: 600, // one token per 100 ms
        };
        assert_eq!(limiter.take_local("t", bucket, 4).await, Decision::Allowed);
        assert_eq!(limiter.take_local("t", bucket, 6).await, Decision::Allowed);
        let Decision::Limited { retry_after } = limiter.take_local("t", bucket, 3).await else {
            panic!("the bucket is empty");
        };
        assert!(
            retry_after > Duration::from_millis(200) && retry_after <= Duration::from_millis(300),
            "{retry_after:?}"
        );
        tokio::time::sleep(Duration::from_millis(320)).await;
        assert_eq!(limiter.take_local("t", bucket, 3).await, Decision::Allowed);
        assert!(matches!(
            limiter.take_local("other", bucket, 10).await,
            Decision::Allowed
        ));
    }
}
