//! Shared by the Redis test binaries: the test Redis, namespaces, raw
//! access to its keys. Included with `#[path]`; each binary uses a subset.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeSet;
use std::time::Duration;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use tower_tenancy::TenantId;
use tower_tenancy::ratelimit::{Bucket, Decision, RateLimitStore, RedisStore};

/// 2026-01-01T00:00:00Z: a minute, hour and day boundary.
pub const DAY_START: u64 = 1_767_225_600_000;
/// Generous per-check timeout for the tests that do not test failures (a
/// loaded CI machine must not turn into a flaky "unavailable").
pub const SLOW_OK: Duration = Duration::from_secs(5);

pub fn redis_url() -> String {
    match std::env::var("TENANTD_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "TENANTD_TEST_REDIS_URL is not set: these tests need a Redis \
             (e.g. TENANTD_TEST_REDIS_URL=redis://127.0.0.1:6379); CI always sets it"
        ),
    }
}

/// A namespace no other test (or earlier run) uses.
pub fn namespace() -> String {
    format!("test-{:016x}", rand::random::<u64>())
}

pub fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

pub fn store(namespace: &str) -> RedisStore {
    RedisStore::connect(&redis_url(), namespace, SLOW_OK).expect("valid Redis URL")
}

pub async fn raw() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to TENANTD_TEST_REDIS_URL")
}

pub async fn keys(conn: &mut MultiplexedConnection, pattern: &str) -> BTreeSet<String> {
    let keys: RedisResult<Vec<String>> = redis::cmd("KEYS").arg(pattern).query_async(conn).await;
    keys.expect("KEYS").into_iter().collect()
}

pub async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<u64> {
    let value: RedisResult<Option<u64>> = redis::cmd("GET").arg(key).query_async(conn).await;
    value.expect("GET")
}

/// Removes every key of `namespace` (at the end of a passing test; a
/// failing one leaves them to their TTL, for inspection).
pub async fn cleanup(namespace: &str) {
    let mut conn = raw().await;
    let all = keys(&mut conn, &format!("{namespace}:*")).await;
    if !all.is_empty() {
        let deleted: RedisResult<u64> = redis::cmd("DEL")
            .arg(Vec::from_iter(all))
            .query_async(&mut conn)
            .await;
        deleted.expect("DEL");
    }
}

pub async fn check(
    store: &dyn RateLimitStore,
    t: &TenantId,
    buckets: &[Bucket],
    now: u64,
) -> Decision {
    store.check(t, buckets, now).await.expect("Redis answers")
}
