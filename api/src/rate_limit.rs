//! Fair sharing of the API between tenants: a token bucket per tenant (and per costly action) kept in
//! Redis, so every API instance draws from the same bucket, and a cap on the event streams a tenant
//! holds open on one instance. Over a limit: 429 `rate_limited` with `Retry-After`.

use moetune_types::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

/// `[rate_limits]` in `api/config.default.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimits {
    /// Requests per second a tenant may make on average, all routes together (0: no limit).
    pub requests_per_second: f64,
    /// Requests a tenant may make at once after being idle.
    pub burst: f64,
    /// Webhook redeliveries a tenant may ask for per minute.
    pub redeliveries_per_minute: f64,
    /// Event streams (`events?stream=true`) one tenant may hold open on one API instance.
    pub streams_per_tenant: usize,
}

/// Takes `cost` tokens from the bucket in KEYS[1] holding at most ARGV[2], refilled at ARGV[1] per
/// second; returns 0, or the milliseconds until that many tokens are there. Redis' clock is the one
/// clock all API instances share.
const TOKEN_BUCKET: &str = r"
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens < cost then
  wait = math.ceil((cost - tokens) * 1000 / rate)
else
  tokens = tokens - cost
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
";

/// The script, hashed once: every authenticated request runs it.
static TOKEN_BUCKET_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TOKEN_BUCKET));

/// What a bucket is for.
#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    Requests,
    Redeliveries,
}

/// 429 with `Retry-After` when the tenant's bucket is empty. If Redis cannot be asked, the request
/// goes through: the limit protects the service's fairness, and refusing everything while Redis is
/// away would be an outage of its own.
pub async fn take(state: &AppState, tenant: TenantId, bucket: Bucket) -> Result<(), ApiError> {
    let limits = &state.config.rate_limits;
    let (rate, burst, name, what) = match bucket {
        Bucket::Requests => (limits.requests_per_second, limits.burst, "requests", "requests"),
        Bucket::Redeliveries => (limits.redeliveries_per_minute / 60.0, limits.redeliveries_per_minute.max(1.0), "redeliveries", "webhook redeliveries"),
    };
    if rate <= 0.0 {
        return Ok(());
    }
    let key = format!("{}:ratelimit:{tenant}:{name}", state.queue.keys().prefix());
    let mut redis = state.queue.connection();
    let waited: redis::RedisResult<u64> = TOKEN_BUCKET_SCRIPT.key(key).arg(rate).arg(burst).arg(1).invoke_async(&mut redis).await;
    match waited {
        Ok(0) => Ok(()),
        Ok(wait_ms) => {
            let seconds = wait_ms.div_ceil(1000).max(1);
            Err(ApiError::rate_limited(format!("Too many {what} from your organization; retry in {seconds} s."), seconds))
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
            Ok(())
        }
    }
}

/// Open event streams per tenant on this instance.
#[derive(Default, Clone)]
pub struct StreamSlots(Arc<Mutex<HashMap<TenantId, usize>>>);

/// One held stream slot; dropping it (the stream ended or the client went away) frees it.
pub struct StreamSlot {
    slots: StreamSlots,
    tenant: TenantId,
}

impl StreamSlots {
    pub fn acquire(&self, tenant: TenantId, max: usize) -> Result<StreamSlot, ApiError> {
        let mut open = self.0.lock().expect("stream slots lock");
        let held = open.entry(tenant).or_default();
        if *held >= max {
            return Err(ApiError::rate_limited(
                format!("Your organization already has {held} event streams open on this server (the limit is {max}); close one, or poll the events instead."),
                5,
            ));
        }
        *held += 1;
        Ok(StreamSlot { slots: self.clone(), tenant })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().expect("stream slots lock");
        if let Some(held) = open.get_mut(&self.tenant) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}
