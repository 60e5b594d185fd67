//! [`RedisStore`]: counters in Redis, one budget shared by every instance.
//!
//! # Atomicity
//!
//! One check is one Lua script (`EVALSHA`, loaded on first use): it reads
//! the current and previous fixed-window count of every window, decides
//! with the same integer arithmetic as [`super::window`], and only when
//! every window admits does it `INCR` each current count. Redis runs a
//! script without interleaving any other command, so concurrent checks from
//! several instances can neither overshoot a window nor count a refused
//! request.
//!
//! # Keys
//!
//! `{namespace}:{{tenant}}:rl:{subject}:{period_secs}:{index}`, e.g.
//! `myapp:{acme}:rl:t:60:29512345`: every key of a tenant sits under its
//! own prefix (a separate namespace per tenant), the braces make the
//! tenant the Redis Cluster hash tag (one check's keys share a slot, as a
//! multi-key script requires), and each key expires two periods after its
//! window starts, so idle tenants cost nothing.
//!
//! # Failure
//!
//! The connection is made lazily and re-made after a failure; every check
//! is bounded by `timeout`. An unreachable or slow Redis yields
//! [`StoreUnavailable`], and the limiter's `on_store_error` decides.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::decision::Slot;
use super::window::Counts;
use super::{Bucket, Decision, RateLimitStore, StoreUnavailable};
use crate::id::TenantId;

/// KEYS: per window, its current then its previous fixed-window key.
/// ARGV: now_ms, then per window: period_ms, limit.
/// Returns `{allowed (0/1), curr1, prev1, curr2, prev2, ...}`: counts as read
/// before this request. A key listed twice (the same window twice in one
/// bucket) is counted once.
const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local n = #KEYS / 2
local counts = {}
local allowed = 1
for i = 1, n do
  local period = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  local curr = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  counts[2 * i - 1] = curr
  counts[2 * i] = prev
  local elapsed = now % period
  if prev * (period - elapsed) + (curr + 1) * period > limit * period then
    allowed = 0
  end
end
if allowed == 1 then
  local seen = {}
  for i = 1, n do
    local key = KEYS[2 * i - 1]
    if not seen[key] then
      seen[key] = true
      -- A key's first count sets its expiry; later counts leave it.
      if redis.call('INCR', key) == 1 then
        redis.call('PEXPIRE', key, 2 * tonumber(ARGV[2 * i]))
      end
    end
  end
end
local out = {allowed}
for i = 1, 2 * n do
  out[i + 1] = counts[i]
end
return out
"#;

/// Lua numbers are doubles: `limit × period_ms` is exact up to 2^53, so a
/// larger limit is treated as `2^53 / period_ms` (about 104 million per day,
/// 2.5 billion per hour), far above any useful limit.
const MAX_EXACT: u64 = 1 << 53;

/// Rate-limit counters in Redis (see the module documentation).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    script: redis::Script,
    namespace: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    // The URL may hold a password, so it is never kept nor printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[:password@]host:port[/db]`)
    /// whose keys start with `namespace:`. It does not connect yet, so a
    /// server starts even while Redis is down; each check waits at most
    /// `timeout` for Redis.
    ///
    /// # Errors
    ///
    /// The URL cannot be parsed. The message never repeats the URL.
    pub fn connect(
        url: &str,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, StoreUnavailable> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreUnavailable(format!("invalid Redis URL ({})", e.kind_name())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreUnavailable(format!("Redis: {}", e.kind_name())))?;
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
            namespace: namespace.to_owned(),
            timeout,
        })
    }

    fn key(&self, tenant: &TenantId, label: &str, period_secs: u64, index: u64) -> String {
        format!(
            "{}:{{{tenant}}}:rl:{label}:{period_secs}:{index}",
            self.namespace
        )
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    /// The error's category and code, without details that could quote a
    /// URL.
    fn kind_name(&self) -> String {
        match self.code() {
            Some(code) => format!("{:?} {code}", self.kind()),
            None => format!("{:?}", self.kind()),
        }
    }
}

#[async_trait::async_trait]
impl RateLimitStore for RedisStore {
    async fn check(
        &self,
        tenant: &TenantId,
        buckets: &[Bucket],
        now_ms: u64,
    ) -> Result<Decision, StoreUnavailable> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now_ms);
        let mut slots = Vec::new();
        for bucket in buckets {
            let label = bucket.subject.storage_label();
            for window in &bucket.windows {
                let index = window.index(now_ms);
                let secs = window.period_ms() / 1_000;
                // The first window after the epoch has no previous one: a
                // key that is never counted stands in for it.
                let previous = match index.checked_sub(1) {
                    Some(p) => self.key(tenant, &label, secs, p),
                    None => format!("{}:{{{tenant}}}:rl:{label}:{secs}:none", self.namespace),
                };
                invocation
                    .key(self.key(tenant, &label, secs, index))
                    .key(previous)
                    .arg(window.period_ms())
                    .arg(window.limit.min(MAX_EXACT / window.period_ms()));
                slots.push(Slot {
                    subject: bucket.subject.clone(),
                    window: *window,
                    counts: Counts { curr: 0, prev: 0 },
                });
            }
        }
        if slots.is_empty() {
            return Ok(Decision::build(slots, now_ms, true));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<u64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| StoreUnavailable("Redis did not answer in time".to_owned()))?
                .map_err(|e| StoreUnavailable(format!("Redis: {}", e.kind_name())))?;
        if reply.len() != 1 + 2 * slots.len() {
            return Err(StoreUnavailable(format!(
                "Redis script answered {} values for {} windows",
                reply.len(),
                slots.len()
            )));
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            slot.counts = Counts {
                curr: reply[1 + 2 * i],
                prev: reply[2 + 2 * i],
            };
        }
        Ok(Decision::build(slots, now_ms, reply[0] == 1))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
