//! Quotas: enforced on the write that would cross them (403
//! quota_exceeded, nothing written), exactly at the limit, under
//! concurrency, and visible with their use.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{App, admin_config, assert_error};

async fn record_count(app: &App, tenant: &str) -> usize {
    let (status, page) = app.get_json(tenant, "/records?limit=100").await;
    assert_eq!(status, 200);
    page["total"].as_u64().expect("total") as usize
}

#[backends]
async fn max_records_exactly_at_the_limit_then_one_over() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "quotas": {"max_records": 3}}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    for i in 0..3 {
        assert_eq!(
            app.create_record("acme", &format!("r{i}")).await.status(),
            201
        );
    }
    let detail = assert_error(app.create_record("acme", "r3").await, 403, "quota_exceeded").await;
    assert!(detail.contains("max_records"), "{detail}");
    assert!(detail.contains('3'), "{detail}");
    assert_eq!(record_count(&app, "acme").await, 3, "nothing written");
    // Replacing an existing record does not add one: still allowed.
    let (_, page) = app.get_json("acme", "/records?limit=1").await;
    let id = page["results"][0]["id"].as_str().expect("id").to_owned();
    let resp = app
        .req(Method::PUT, "acme", &format!("/records/{id}"))
        .json(&json!({"name": "renamed", "kind": "k", "url": "https://example.com"}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);
    // Deleting one frees a slot.
    let resp = app
        .req(Method::DELETE, "acme", &format!("/records/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    assert_eq!(app.create_record("acme", "again").await.status(), 201);
    // Another tenant is not limited by acme's quota.
    for i in 0..5 {
        assert_eq!(
            app.create_record("beta", &format!("b{i}")).await.status(),
            201
        );
    }
    app.finish().await;
}

#[backends]
async fn concurrent_writes_racing_a_quota_never_overshoot() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "quotas": {"max_records": 5}}))
        .await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = app.client.clone();
        let url = format!("{}/records", app.base);
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("X-Tenant-ID", "acme")
                .json(&json!({"name": format!("r{i}"), "kind": "k", "url": "https://example.com"}))
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("join") {
            201 => created += 1,
            403 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, refused), (5, 35));
    assert_eq!(record_count(&app, "acme").await, 5);
    app.finish().await;
}

#[backends]
async fn max_storage_mb_counts_stored_bytes() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "quotas": {"max_storage_mb": 1}}))
        .await;
    let blob = "x".repeat(300 * 1024);
    let mut created = 0;
    loop {
        let resp = app
            .req(Method::POST, "acme", "/records")
            .json(&json!({"name": format!("big{created}"), "kind": "k", "url": "https://example.com", "fields": {"blob": blob}}))
            .send()
            .await
            .expect("post");
        if resp.status() == 201 {
            created += 1;
            assert!(created < 10, "the quota never applied");
            continue;
        }
        let detail = assert_error(resp, 403, "quota_exceeded").await;
        assert!(detail.contains("max_storage_mb"), "{detail}");
        break;
    }
    // 1 MiB holds three 300 KiB records, not four.
    assert_eq!(created, 3);
    let me = app.get_json("acme", "/tenant").await.1;
    let used = me["quotas"]["max_storage_mb"]["used"]
        .as_u64()
        .expect("used");
    assert!(used > 3 * 300 * 1024 && used <= 1024 * 1024, "{used}");
    app.finish().await;
}

#[backends]
async fn max_api_keys_and_max_detections_per_month() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |c| c.jobs.workers = Some(0))).await;
    app.create_tenant(json!({
        "id": "acme", "name": "Acme",
        "quotas": {"max_api_keys": 2, "max_detections_per_month": 2}
    }))
    .await;
    // The first key came with the tenant; one more fits.
    let issue = || {
        app.admin(Method::POST, "/admin/tenants/acme/api-keys")
            .json(&json!({"name": "k"}))
            .send()
    };
    assert_eq!(issue().await.expect("issue").status(), 201);
    let detail = assert_error(issue().await.expect("issue"), 403, "quota_exceeded").await;
    assert!(detail.contains("max_api_keys"), "{detail}");

    let submit = || {
        app.req(Method::POST, "acme", "/detect/submit")
            .json(&json!({"repository_url": "https://example.com/repo.git"}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(submit().await.expect("submit").status(), 202);
    }
    let detail = assert_error(submit().await.expect("submit"), 403, "quota_exceeded").await;
    assert!(detail.contains("max_detections_per_month"), "{detail}");
    let (_, jobs) = app.get_json("acme", "/detect").await;
    assert_eq!(jobs["total"], 2, "{jobs}");
    app.finish().await;
}

#[backends]
async fn get_tenant_shows_own_plan_quotas_and_use_only() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.quotas.max_records = Some(100);
            let mut pro = tenantd::config::PlanConfig::default();
            pro.quotas.max_records = Some(1000);
            pro.limits.requests_per_minute = Some(600);
            c.plans.insert("pro".to_owned(), pro);
        }),
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "plan": "pro"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta", "quotas": {"max_records": 7}}))
        .await;
    for i in 0..4 {
        app.create_record("acme", &format!("a{i}")).await;
    }
    app.create_record("beta", "b").await;

    let (status, me) = app.get_json("acme", "/tenant").await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], "acme");
    assert_eq!(me["plan"], "pro");
    assert_eq!(
        me["quotas"]["max_records"],
        json!({"limit": 1000, "used": 4})
    );
    assert_eq!(me["limits"], json!([{"window": "minute", "limit": 600}]));
    assert_eq!(me["usage"]["records"], 4);
    let (_, beta) = app.get_json("beta", "/tenant").await;
    assert_eq!(
        beta["quotas"]["max_records"],
        json!({"limit": 7, "used": 1})
    );
    assert!(!beta.to_string().contains("acme"), "{beta}");

    let admin: Value = app.admin_json("/admin/tenants/acme").await;
    assert_eq!(admin["usage"]["records"], 4);
    assert_eq!(admin["usage"]["api_keys"], 1);
    assert_eq!(admin["effective_quotas"]["max_records"]["limit"], 1000);
    let admin: Value = app.admin_json("/admin/tenants/beta").await;
    assert_eq!(admin["usage"]["records"], 1);
    app.finish().await;
}
