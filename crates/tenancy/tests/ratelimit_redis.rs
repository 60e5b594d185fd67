//! `RedisStore` against a real Redis (`TENANTD_TEST_REDIS_URL`, e.g.
//! `redis://127.0.0.1:6379`; the tests fail when it is unset): the same
//! decisions as `MemoryStore`, atomic windows, one budget shared by several
//! instances, exact bursts, namespaced keys with a TTL. A Redis that goes
//! away is in `ratelimit_redis_outage.rs`.
//!
//! Every test uses its own random namespace, so tests never share keys
//! (in parallel, or with earlier runs), and removes its keys when it passes.
//!
//! Built only with the `redis` feature (a `[[test]]` entry with
//! `required-features` in tenancy's Cargo.toml).

#[path = "redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use tokio::task::JoinHandle;
use tower_tenancy::ratelimit::{
    Bucket, Clock, ManualClock, MemoryStore, OnStoreError, Outcome, RateLimiter, RedisStore, Window,
};

use redis_support::*;

/// A tiny deterministic generator (no seed handling needed across runs).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn decides_exactly_like_the_memory_store() {
    let ns = namespace();
    let clock = Arc::new(ManualClock::new(DAY_START - 3 * 3_600_000 - 17_250));
    let redis = RateLimiter::new(Arc::new(store(&ns)), clock.clone(), OnStoreError::Deny);
    let memory = RateLimiter::new(
        Arc::new(MemoryStore::new()),
        clock.clone(),
        OnStoreError::Deny,
    );
    let tenant_windows = [
        Window::per_minute(20),
        Window::per_hour(150),
        Window::per_day(500),
    ];
    // Requests of acme with API key k1 (its own, smaller minute window),
    // requests of acme without a key, and requests of another tenant.
    let with_key = [
        Bucket::tenant(tenant_windows),
        Bucket::key("k1", [Window::per_minute(8)]),
    ];
    let tenant_only = [Bucket::tenant(tenant_windows)];
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut rng = Lcg(0x5eed);
    let (mut allowed, mut refused) = (0u32, 0u32);
    // Which window had nothing left when a request was refused.
    let mut bound = BTreeSet::new();
    // Phases of 5 to 60 requests, a few ms, seconds or tens of seconds
    // apart, separated by pauses of seconds to hours (now and then into the
    // next day).
    let (mut left_in_phase, mut gap) = (0, 0);
    for step in 0..6_000 {
        let pause = if left_in_phase == 0 {
            left_in_phase = 5 + rng.below(56);
            gap = [200, 3_000, 30_000][usize::try_from(rng.below(3)).expect("small")];
            match rng.below(10) {
                0..=5 => rng.below(300_000),
                6..=8 => rng.below(3_600_000),
                _ => rng.below(12 * 3_600_000),
            }
        } else {
            left_in_phase -= 1;
            rng.below(gap)
        };
        clock.advance(Duration::from_millis(pause));
        let now = clock.now_ms();
        let (who, buckets) = match rng.below(5) {
            0 | 1 => (&acme, &with_key[..]),
            2 | 3 => (&acme, &tenant_only[..]),
            _ => (&globex, &tenant_only[..]),
        };
        let expected = memory.check(who, buckets).await;
        let got = redis.check(who, buckets).await;
        assert_eq!(
            got, expected,
            "step {step} ({who}) at now_ms {now}: Redis decided differently from memory"
        );
        match got {
            Outcome::Allowed(_) => allowed += 1,
            Outcome::Limited(d) => {
                refused += 1;
                for w in d.windows.iter().filter(|w| w.remaining == 0) {
                    bound.insert((w.subject.storage_label(), w.window.period_secs));
                }
                assert!(
                    d.retry_after_secs >= 1,
                    "step {step}: refused without Retry-After"
                );
            }
            Outcome::Unavailable { .. } => unreachable!("compared with memory above"),
        }
    }
    let elapsed_h = (clock.now_ms() - (DAY_START - 3 * 3_600_000)) / 3_600_000;
    eprintln!("{allowed} allowed, {refused} refused over ~{elapsed_h} h; full windows: {bound:?}");
    assert!(
        allowed > 1_000 && refused > 500,
        "{allowed} allowed, {refused} refused"
    );
    for expected in [
        ("t".to_owned(), 60),
        ("t".to_owned(), 3_600),
        ("t".to_owned(), 86_400),
        ("k.k1".to_owned(), 60),
    ] {
        assert!(
            bound.contains(&expected),
            "no refusal by {expected:?}: {bound:?}"
        );
    }
    cleanup(&ns).await;
}

#[tokio::test]
async fn a_request_refused_by_one_window_is_counted_in_none() {
    let ns = namespace();
    let redis = store(&ns);
    let memory = MemoryStore::new();
    let buckets = [Bucket::tenant([
        Window::per_minute(3),
        Window::per_hour(10),
    ])];
    let acme = tenant("acme");
    let now = DAY_START + 5 * 60_000;
    for i in 0..10u64 {
        let d = check(&redis, &acme, &buckets, now + i).await;
        assert_eq!(d, check(&memory, &acme, &buckets, now + i).await);
        assert_eq!(d.allowed, i < 3, "request {i}");
        // The hour window lost only the three admitted requests.
        assert_eq!(
            d.windows[1].remaining,
            10 - (i + 1).min(3),
            "hour remaining after request {i}: {d:?}"
        );
    }
    let hour_key = format!("{ns}:{{acme}}:rl:t:3600:{}", now / 3_600_000);
    let minute_key = format!("{ns}:{{acme}}:rl:t:60:{}", now / 60_000);
    let mut conn = raw().await;
    assert_eq!(get(&mut conn, &hour_key).await, Some(3), "hour counter");
    assert_eq!(get(&mut conn, &minute_key).await, Some(3), "minute counter");

    // Two minutes on the minute window is empty; the hour still counts.
    let later = now + 120_000;
    let d = check(&redis, &acme, &buckets, later).await;
    assert_eq!(d, check(&memory, &acme, &buckets, later).await);
    assert!(d.allowed);
    assert_eq!((d.windows[0].remaining, d.windows[1].remaining), (2, 6));
    assert_eq!(get(&mut conn, &hour_key).await, Some(4));

    // A request refused by the key's bucket does not count in the tenant's.
    let with_key = [
        Bucket::tenant([Window::per_hour(10)]),
        Bucket::key("k1", [Window::per_minute(1)]),
    ];
    let at = later + 1_000;
    let first = check(&redis, &acme, &with_key, at).await;
    let second = check(&redis, &acme, &with_key, at).await;
    assert!(first.allowed && !second.allowed, "{first:?} / {second:?}");
    assert_eq!(first.windows[0].remaining, 5);
    assert_eq!(
        second.windows[0].remaining, 5,
        "the refused request used the hour"
    );
    assert_eq!(get(&mut conn, &hour_key).await, Some(5));
    cleanup(&ns).await;
}

#[tokio::test]
async fn two_instances_share_one_budget() {
    let ns = namespace();
    // Two stores, two connection managers: two servers behind one balancer.
    let a = store(&ns);
    let b = store(&ns);
    let buckets = [Bucket::tenant([Window::per_minute(10)])];
    let acme = tenant("acme");
    let now = DAY_START + 30_000;
    let (mut by_a, mut by_b) = (0, 0);
    for i in 0..40u64 {
        let (server, admitted) = if i % 2 == 0 {
            (&a, &mut by_a)
        } else {
            (&b, &mut by_b)
        };
        let d = check(server, &acme, &buckets, now + i).await;
        if d.allowed {
            *admitted += 1;
        }
        // Each instance sees the other's requests.
        assert_eq!(
            d.windows[0].remaining,
            10u64.saturating_sub((i + 1).min(10)),
            "request {i}"
        );
    }
    assert_eq!(
        by_a + by_b,
        10,
        "admitted in total by two instances (a {by_a}, b {by_b})"
    );
    assert_eq!((by_a, by_b), (5, 5));

    // An instance with another namespace has a budget of its own.
    let other_ns = namespace();
    let c = store(&other_ns);
    let d = check(&c, &acme, &buckets, now + 50).await;
    assert!(d.allowed);
    assert_eq!(d.windows[0].remaining, 9);
    cleanup(&ns).await;
    cleanup(&other_ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_admits_exactly_the_limit() {
    const LIMIT: u64 = 500;
    const TASKS: u64 = 64;
    const REQUESTS: u64 = 10 * LIMIT;
    let ns = namespace();
    // Four instances (connections), 16 tasks on each.
    let stores: Vec<RedisStore> = (0..4).map(|_| store(&ns)).collect();
    let buckets = Arc::new([Bucket::tenant([
        Window::per_minute(LIMIT),
        Window::per_hour(100 * LIMIT),
    ])]);
    let now = DAY_START + 12 * 60_000 + 31_337;
    let per_task = REQUESTS / TASKS;
    let extra = REQUESTS % TASKS;
    let tasks: Vec<JoinHandle<Vec<u64>>> = (0..TASKS)
        .map(|i| {
            let store = stores[usize::try_from(i % 4).expect("small")].clone();
            let buckets = buckets.clone();
            let n = per_task + u64::from(i < extra);
            tokio::spawn(async move {
                let acme = tenant("acme");
                let mut remaining = Vec::new();
                for _ in 0..n {
                    let d = check(&store, &acme, &buckets[..], now).await;
                    if d.allowed {
                        remaining.push(d.windows[0].remaining);
                    }
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
    // Every admitted request saw a different count: the checks were serialised.
    seen.sort_unstable();
    assert_eq!(seen, (0..LIMIT).collect::<Vec<_>>());
    let mut conn = raw().await;
    let minute = format!("{ns}:{{acme}}:rl:t:60:{}", now / 60_000);
    let hour = format!("{ns}:{{acme}}:rl:t:3600:{}", now / 3_600_000);
    assert_eq!(get(&mut conn, &minute).await, Some(LIMIT));
    assert_eq!(
        get(&mut conn, &hour).await,
        Some(LIMIT),
        "refused requests were counted in the hour"
    );
    cleanup(&ns).await;
}

#[tokio::test]
async fn keys_are_under_the_tenant_prefix_and_expire() {
    let ns = namespace();
    let redis = store(&ns);
    let buckets = [
        Bucket::tenant([
            Window::per_minute(5),
            Window::per_hour(50),
            Window::per_day(500),
        ]),
        Bucket::key("k1", [Window::per_minute(2)]),
    ];
    let now = DAY_START + 7 * 3_600_000 + 123_456;
    assert!(check(&redis, &tenant("acme"), &buckets, now).await.allowed);
    assert!(
        check(&redis, &tenant("acme-2"), &buckets[..1], now)
            .await
            .allowed
    );

    let mut conn = raw().await;
    let acme = keys(&mut conn, &format!("{ns}:{{acme}}:*")).await;
    let expected: BTreeSet<String> = [("t", 60), ("t", 3_600), ("t", 86_400), ("k.k1", 60)]
        .into_iter()
        .map(|(label, secs)| format!("{ns}:{{acme}}:rl:{label}:{secs}:{}", now / (secs * 1_000)))
        .collect();
    assert_eq!(acme, expected, "keys of tenant acme");
    let other = keys(&mut conn, &format!("{ns}:{{acme-2}}:*")).await;
    assert_eq!(other.len(), 3, "{other:?}");
    assert!(
        other
            .iter()
            .all(|k| k.starts_with(&format!("{ns}:{{acme-2}}:rl:t:"))),
        "{other:?}"
    );
    // Nothing else was written in the namespace.
    let all = keys(&mut conn, &format!("{ns}:*")).await;
    assert_eq!(all, acme.union(&other).cloned().collect());

    for key in &all {
        let ttl: RedisResult<i64> = redis::cmd("PTTL").arg(key).query_async(&mut conn).await;
        let ttl = ttl.expect("PTTL");
        let secs: i64 = key
            .rsplit(':')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("period in the key");
        assert!(
            ttl > 0 && ttl <= 2 * secs * 1_000,
            "{key}: PTTL {ttl} ms (period {secs} s)"
        );
    }
    cleanup(&ns).await;
}

#[tokio::test]
async fn tenants_do_not_share_counters() {
    let ns = namespace();
    let redis = store(&ns);
    let buckets = [
        Bucket::tenant([Window::per_minute(5)]),
        Bucket::key("same-key-id", [Window::per_minute(100)]),
    ];
    let now = DAY_START + 45_000;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    for i in 0..5 {
        assert!(
            check(&redis, &a, &buckets, now).await.allowed,
            "a, request {i}"
        );
    }
    let refused = check(&redis, &a, &buckets, now).await;
    assert!(!refused.allowed);
    let d = check(&redis, &b, &buckets, now).await;
    assert!(d.allowed, "tenant-b limited by tenant-a's requests: {d:?}");
    assert_eq!(d.windows[0].remaining, 4, "tenant-b's own minute window");
    assert_eq!(
        d.windows[1].remaining, 99,
        "tenant-b's key bucket (same key id as tenant-a's)"
    );
    cleanup(&ns).await;
}

// --- Redis going away -------------------------------------------------------

/// The first window after the epoch has no previous window: its count must
/// not be read twice (it once was, as the "previous" key was the current).
#[tokio::test]
async fn the_first_window_after_the_epoch_counts_once() {
    let ns = namespace();
    let redis = store(&ns);
    let memory = MemoryStore::new();
    let buckets = [Bucket::tenant([Window::per_minute(3)])];
    let t = tenant("acme");
    for now in [1_000, 2_000, 3_000, 4_000] {
        let r = check(&redis, &t, &buckets, now).await;
        let m = check(&memory, &t, &buckets, now).await;
        assert_eq!(r, m, "at {now} ms");
    }
    cleanup(&ns).await;
}
