//! `MemoryStore` under a concurrent burst: exactly `limit` admitted.

use std::sync::Arc;

use tower_tenancy::TenantId;
use tower_tenancy::ratelimit::{Bucket, MemoryStore, RateLimitStore, Window};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_admits_exactly_the_limit() {
    const LIMIT: u64 = 500;
    const TASKS: u64 = 64;
    const REQUESTS: u64 = 10 * LIMIT;
    let store = Arc::new(MemoryStore::new());
    let buckets = Arc::new([Bucket::tenant([
        Window::per_minute(LIMIT),
        Window::per_hour(100 * LIMIT),
    ])]);
    // 2026-01-01T00:12:31.337Z: one instant inside one fixed window.
    let now = 1_767_225_600_000 + 12 * 60_000 + 31_337;
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = store.clone();
            let buckets = buckets.clone();
            let n = REQUESTS / TASKS + u64::from(i < REQUESTS % TASKS);
            tokio::spawn(async move {
                let acme = TenantId::new("acme").expect("valid tenant id");
                let mut remaining = Vec::new();
                for _ in 0..n {
                    let d = store
                        .check(&acme, &buckets[..], now)
                        .await
                        .expect("memory never fails");
                    if d.allowed {
                        remaining.push((d.windows[0].remaining, d.windows[1].remaining));
                    }
                    // Interleave the tasks on each worker thread too.
                    tokio::task::yield_now().await;
                }
                remaining
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.expect("task"));
    }
    let admitted = u64::try_from(seen.len()).expect("small");
    assert_eq!(
        admitted, LIMIT,
        "{TASKS} concurrent tasks sent {REQUESTS} requests (10x the limit) at one instant: \
         {admitted} admitted, expected exactly {LIMIT}"
    );
    // Every admitted request saw a different count, and the hour counted
    // only the admitted ones.
    seen.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..LIMIT).map(|i| (i, 100 * LIMIT - LIMIT + i)).collect();
    assert_eq!(seen, expected);
    let after = store
        .check(
            &TenantId::new("acme").expect("valid"),
            &buckets[..],
            now + 1,
        )
        .await
        .expect("memory never fails");
    assert!(!after.allowed);
    assert_eq!(after.windows[1].remaining, 100 * LIMIT - LIMIT);
}
