//! Rate limits: windows, headers, 429, per-key budgets, the authenticated
//! tenant, Redis shared by two servers, Redis down.

use crate::support::{TestApp, TestStorage};
use std::sync::Arc;
use std::time::Duration;
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};
use tenancy::ratelimit::{ManualClock, OnStoreError};
use tenantd::config::LimitStoreKind;

use super::{App, admin_config, redis_url, unique};

/// A minute- and hour-aligned instant (2027-01-15T08:00:00Z).
const T0: u64 = 1_800_000_000_000;

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn get(app: &App, tenant: &str) -> reqwest::Response {
    app.req(Method::GET, tenant, "/records")
        .send()
        .await
        .expect("get")
}

/// Asserts a 429 in the documented shape; returns its detail.
async fn assert_limited(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = header(&resp, "retry-after").parse().expect("Retry-After");
    assert!(retry_after >= 1);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert_eq!(body["retry_after"], retry_after, "{body}");
    body["detail"].as_str().expect("detail").to_owned()
}

fn limited_config(dir: &std::path::Path, minute: u64, hour: u64) -> tenantd::Config {
    admin_config(dir, |c| {
        c.limits.enabled = true;
        c.limits.requests_per_minute = Some(minute);
        c.limits.requests_per_hour = Some(hour);
    })
}

#[backends]
async fn windows_per_minute_and_hour_with_headers_and_429() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let app =
        TestApp::start_with_clock(&dir, limited_config(dir.path(), 3, 5), clock.clone()).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;

    for remaining in [2, 1, 0] {
        let resp = get(&app, "acme").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit"), "3");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            remaining.to_string()
        );
        assert_eq!(
            header(&resp, "x-ratelimit-reset"),
            (T0 / 1000 + 60).to_string(),
            "reset is the end of the minute (epoch seconds)"
        );
        let policy = header(&resp, "ratelimit-policy");
        assert!(policy.contains("\"minute\";q=3;w=60"), "{policy}");
        assert!(policy.contains("\"hour\";q=5;w=3600"), "{policy}");
        assert_eq!(
            header(&resp, "ratelimit"),
            format!("\"minute\";r={remaining};t=60")
        );
    }
    // Over the minute window: refused, and (atomically) not counted in the
    // hour window.
    for _ in 0..3 {
        let detail = assert_limited(get(&app, "acme").await).await;
        assert!(detail.contains("3 requests per minute"), "{detail}");
    }
    // A refused write is neither served nor audited.
    let resp = app.create_record("acme", "refused").await;
    assert_limited(resp).await;
    // Another tenant has its own budget.
    assert_eq!(get(&app, "beta").await.status(), 200);

    // Two minutes later the minute window is free; the hour has 5 - 3 = 2
    // left, because the refused requests were not counted.
    clock.advance(Duration::from_secs(120));
    for _ in 0..2 {
        assert_eq!(get(&app, "acme").await.status(), 200);
    }
    let detail = assert_limited(get(&app, "acme").await).await;
    assert!(detail.contains("5 requests per hour"), "{detail}");

    // One hour on, the sliding hour still weighs the previous hour's 5
    // requests (5 x 58/60 of them); two hours on, it is empty.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(get(&app, "acme").await.status(), 429);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(get(&app, "acme").await.status(), 200);

    // Usage shows the refusals apart, and they are not billable.
    let usage = app.admin_json("/admin/tenants/acme/usage").await;
    assert_eq!(usage["api_calls"]["total"], 12, "{usage}");
    assert_eq!(usage["api_calls"]["billable"], 6, "{usage}");
    assert_eq!(
        usage["api_calls"]["by_class"]["records"]["429"], 6,
        "{usage}"
    );
    let audit = app.admin_json("/admin/audit?tenant=acme").await;
    let writes: Vec<&Value> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "records.create")
        .collect();
    assert!(
        writes.is_empty(),
        "a rate-limited write was audited: {writes:?}"
    );
    app.finish().await;
}

#[backends]
async fn retry_after_points_at_the_first_admissible_second() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0 + 50_000));
    let app =
        TestApp::start_with_clock(&dir, limited_config(dir.path(), 1, 1000), clock.clone()).await;
    assert_eq!(get(&app, "acme").await.status(), 200);
    let resp = get(&app, "acme").await;
    let retry: u64 = header(&resp, "retry-after").parse().expect("retry");
    assert_limited(resp).await;
    // Waiting `retry` seconds is enough (the estimate says so), one less
    // is not.
    clock.advance(Duration::from_secs(retry - 1));
    assert_eq!(get(&app, "acme").await.status(), 429);
    clock.advance(Duration::from_secs(1));
    assert_eq!(get(&app, "acme").await.status(), 200);
    app.finish().await;
}

#[backends]
async fn plan_and_tenant_overrides_decide_the_windows() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let app = TestApp::start_with_clock(
        &dir,
        admin_config(dir.path(), |c| {
            c.limits.enabled = true;
            c.limits.requests_per_minute = Some(100);
            let mut pro = tenantd::config::PlanConfig::default();
            pro.limits.requests_per_minute = Some(4);
            c.plans.insert("pro".to_owned(), pro);
        }),
        clock,
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "plan": "pro"}))
        .await;
    app.create_tenant(
        json!({"id": "beta", "name": "Beta", "plan": "pro", "limits": {"requests_per_minute": 2}}),
    )
    .await;
    let resp = get(&app, "acme").await;
    assert_eq!(header(&resp, "x-ratelimit-limit"), "4", "the plan's window");
    let resp = get(&app, "beta").await;
    assert_eq!(
        header(&resp, "x-ratelimit-limit"),
        "2",
        "the tenant's override"
    );
    app.create_tenant(json!({"id": "gamma", "name": "Gamma"}))
        .await;
    let resp = get(&app, "gamma").await;
    assert_eq!(
        header(&resp, "x-ratelimit-limit"),
        "100",
        "the global default"
    );

    // An override changed through the admin API applies at once.
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/acme")
        .json(&json!({"limits": {"requests_per_minute": 1}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    assert_eq!(get(&app, "acme").await.status(), 429, "1 already used");
    app.finish().await;
}

#[backends]
async fn an_api_key_with_its_own_limits_has_its_own_budget_inside_the_tenants() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let app = TestApp::start_with_clock(&dir, limited_config(dir.path(), 10, 100), clock).await;
    let (_, open_key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/api-keys")
        .json(&json!({"name": "tight", "limits": {"requests_per_minute": 2}}))
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 201);
    let issued: Value = resp.json().await.expect("json");
    let tight = issued["key"].as_str().expect("key").to_owned();
    assert_eq!(issued["limits"]["requests_per_minute"], 2);

    for _ in 0..2 {
        let resp = app
            .with_key(Method::GET, &tight, "/records")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
    }
    let resp = app
        .with_key(Method::GET, &tight, "/records")
        .send()
        .await
        .expect("get");
    let detail = assert_limited(resp).await;
    assert!(detail.contains("for this API key"), "{detail}");
    // The tenant's other key is not held back by it; the tight key's
    // admitted requests did count in the tenant's budget (2 of 10).
    let resp = app
        .with_key(Method::GET, &open_key, "/records")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "7");
    app.finish().await;
}

#[backends]
async fn the_limit_follows_the_authenticated_tenant_not_a_header() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let app = TestApp::start_with_clock(&dir, limited_config(dir.path(), 2, 100), clock).await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "other", "name": "Other"}))
        .await;
    for _ in 0..2 {
        let resp = app
            .with_key(Method::GET, &key, "/records")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
    }
    // Naming another tenant in a header does not move the key to a fresh
    // budget: the request is either refused as conflicting or limited as
    // acme's, never served.
    let resp = app
        .with_key(Method::GET, &key, "/records")
        .header("X-Tenant-ID", "other")
        .send()
        .await
        .expect("get");
    assert_ne!(resp.status(), 200);
    assert!(resp.status().is_client_error());
    let resp = app
        .with_key(Method::GET, &key, "/records")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 429);
    app.finish().await;
}

fn redis_config(
    dir: &std::path::Path,
    namespace: &str,
    url: String,
    minute: u64,
) -> tenantd::Config {
    admin_config(dir, |c| {
        c.limits.enabled = true;
        c.limits.store = LimitStoreKind::Redis;
        c.limits.redis_url = Some(url);
        c.limits.redis_namespace = namespace.to_owned();
        c.limits.redis_timeout_ms = 300;
        c.limits.requests_per_minute = Some(minute);
    })
}

#[backends]
async fn two_servers_share_one_redis_budget() {
    let namespace = unique("shared");
    let (d1, d2) = (TestStorage::new(), TestStorage::new());
    // Both read the same fixed clock, as NTP-synced instances would.
    let clock = Arc::new(ManualClock::new(T0));
    let a = TestApp::start_with_clock(
        &d1,
        redis_config(d1.path(), &namespace, redis_url(), 7),
        clock.clone(),
    )
    .await;
    let b = TestApp::start_with_clock(
        &d2,
        redis_config(d2.path(), &namespace, redis_url(), 7),
        clock.clone(),
    )
    .await;
    let mut admitted = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let resp = get(app, "acme").await;
        match resp.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 7, "one budget across both instances");
    // Another tenant on the same Redis is untouched.
    assert_eq!(get(&b, "beta").await.status(), 200);
    a.finish().await;
    b.finish().await;
}

#[backends]
async fn redis_unreachable_applies_on_store_error() {
    // Nothing listens on port 1.
    let dead = "redis://127.0.0.1:1".to_owned();
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        redis_config(dir.path(), &unique("dead"), dead.clone(), 5),
    )
    .await;
    let resp = get(&app, "acme").await;
    assert_eq!(
        resp.status(),
        200,
        "allow (the default) serves without limits"
    );
    assert!(resp.headers().get("x-ratelimit-limit").is_none());
    app.finish().await;

    let dir = TestStorage::new();
    let mut config = redis_config(dir.path(), &unique("dead"), dead, 5);
    config.limits.on_store_error = OnStoreError::Deny;
    let app = TestApp::start(&dir, config).await;
    let resp = get(&app, "acme").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), "1");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "rate_limit_unavailable");
    // Health does not depend on the limiter.
    let resp = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), 200);
    app.finish().await;
}

/// A TCP proxy to Redis that can be cut and restored, standing in for a
/// Redis that dies and comes back.
struct Proxy {
    addr: std::net::SocketAddr,
    alive: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (flag, tasks) = (alive.clone(), links.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    // Dead: accept and drop, as a crashed host's RST would.
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().expect("lock").push(link);
            }
        });
        Proxy {
            addr,
            alive,
            links,
            accept,
        }
    }

    fn kill(&self) {
        self.alive.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }

    fn revive(&self) {
        self.alive.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        self.accept.abort();
    }
}

#[backends]
async fn redis_killed_mid_test_then_back() {
    let upstream = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = Proxy::start(upstream).await;
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let app = TestApp::start_with_clock(
        &dir,
        redis_config(
            dir.path(),
            &unique("killed"),
            format!("redis://{}", proxy.addr),
            3,
        ),
        clock,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(&app, "acme").await.status(), 200);
    }
    assert_eq!(get(&app, "acme").await.status(), 429);

    // Redis gone: on_store_error = allow serves, without limit headers.
    proxy.kill();
    for _ in 0..3 {
        let resp = get(&app, "acme").await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("x-ratelimit-limit").is_none());
    }
    let metrics = app
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape");
    let text = metrics.text().await.expect("text");
    let errors: f64 = text
        .lines()
        .find(|l| l.starts_with("tenantd_ratelimit_store_errors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("store error counter");
    assert!(errors >= 3.0, "{text}");

    // Redis back: the limiter reconnects by itself and the budget (still
    // spent, Redis kept it) applies again.
    proxy.revive();
    let status = super::eventually(10, || async {
        let s = get(&app, "acme").await.status().as_u16();
        (s != 200).then_some(s)
    })
    .await;
    assert_eq!(status, 429);
    app.finish().await;
}

/// Fires `total` requests for acme from 64 concurrent clients; returns how
/// many were admitted.
async fn burst(app: &App, total: usize) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (client, url, next) = (
            app.client.clone(),
            format!("{}/records", app.base),
            next.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut admitted = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                let resp = client
                    .get(&url)
                    .header("X-Tenant-ID", "acme")
                    .send()
                    .await
                    .expect("get");
                match resp.status().as_u16() {
                    200 => admitted += 1,
                    429 => {}
                    other => panic!("unexpected status {other}"),
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for c in clients {
        admitted += c.await.expect("join");
    }
    admitted
}

#[backends]
async fn a_ten_times_burst_from_64_clients_admits_exactly_the_limit() {
    const LIMIT: u64 = 150;
    let clock = Arc::new(ManualClock::new(T0 + 30_000));
    let dir = TestStorage::new();
    let app = TestApp::start_with_clock(
        &dir,
        limited_config(dir.path(), LIMIT, 1_000_000),
        clock.clone(),
    )
    .await;
    let admitted = burst(&app, 10 * LIMIT as usize).await;
    assert_eq!(
        admitted as u64, LIMIT,
        "memory store: admitted {admitted} of limit {LIMIT}"
    );
    app.finish().await;

    let dir = TestStorage::new();
    let app = TestApp::start_with_clock(
        &dir,
        redis_config(dir.path(), &unique("burst"), redis_url(), LIMIT),
        clock,
    )
    .await;
    let admitted = burst(&app, 10 * LIMIT as usize).await;
    assert_eq!(
        admitted as u64, LIMIT,
        "Redis store: admitted {admitted} of limit {LIMIT}"
    );
    app.finish().await;
}
