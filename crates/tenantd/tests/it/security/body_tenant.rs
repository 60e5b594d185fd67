//! A tenant named only by the JSON body, or the default tenant, is limited,
//! metered and audited as that tenant, exactly like one named by a header.

use crate::support::{TestApp, TestStorage};
use std::sync::Arc;
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};
use tenancy::ratelimit::ManualClock;

use super::{App, admin_config, assert_error};

/// A minute-aligned instant.
const T0: u64 = 1_800_000_000_000;

fn limited(dir: &std::path::Path, tweak: impl FnOnce(&mut tenantd::Config)) -> tenantd::Config {
    admin_config(dir, |c| {
        c.limits.enabled = true;
        c.usage.flush_ms = 50;
        tweak(c);
    })
}

async fn search_by_body(app: &App, tenant: &str) -> u16 {
    app.client
        .post(format!("{}/records/search", app.base))
        .json(&json!({"query": "x", "tenant_id": tenant}))
        .send()
        .await
        .expect("search")
        .status()
        .as_u16()
}

fn actions(audit: &Value) -> Vec<String> {
    audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[backends]
async fn a_body_tenant_is_rate_limited_metered_and_audited() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let app = TestApp::start_with_clock(&dir, limited(dir.path(), |_| {}), clock).await;
    app.create_tenant(json!({
        "id": "acme", "name": "Acme", "issue_key": false,
        "limits": {"requests_per_minute": 3}
    }))
    .await;

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(search_by_body(&app, "acme").await);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);

    // Every one of them is in acme's usage; the refused ones apart.
    let usage = app.admin_get("/admin/tenants/acme/usage").await;
    assert_eq!(usage["api_calls"]["total"], 6, "{usage}");
    assert_eq!(usage["api_calls"]["billable"], 3, "{usage}");
    app.finish().await;
}

#[backends]
async fn a_body_tenant_write_is_audited_and_counted() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, limited(dir.path(), |c| c.limits.enabled = false)).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "issue_key": false}))
        .await;
    let resp = app
        .client
        .post(format!("{}/records", app.base))
        .json(&json!({"name": "n", "kind": "k", "url": "https://x", "tenant_id": "acme"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let audit = app.admin_get("/admin/audit?tenant=acme").await;
    assert!(
        actions(&audit).contains(&"records.create".to_owned()),
        "{audit}"
    );
    let event = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "records.create")
        .cloned()
        .expect("event");
    assert!(
        event["params"]
            .to_string()
            .contains("\\\"name\\\":\\\"n\\\"")
            || event["params"].to_string().contains("\"name\":\"n\""),
        "the body the handler read is in the event: {event}"
    );
    let usage = app.admin_get("/admin/tenants/acme/usage").await;
    assert_eq!(usage["api_calls"]["total"], 1, "{usage}");
    app.finish().await;
}

#[backends]
async fn the_default_tenant_is_limited_and_audited_too() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let config = limited(dir.path(), |c| {
        c.tenant.tenant_required = false;
        c.limits.requests_per_minute = Some(2);
    });
    let app = TestApp::start_with_clock(&dir, config, clock).await;
    app.create_tenant(json!({"id": "default", "name": "Default", "issue_key": false}))
        .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = app
            .client
            .post(format!("{}/records", app.base))
            .json(&json!({"name": format!("n{i}"), "kind": "k", "url": "https://x"}))
            .send()
            .await
            .expect("post");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 429, 429]);
    let audit = app.admin_get("/admin/audit?tenant=default").await;
    let creates = actions(&audit)
        .iter()
        .filter(|a| *a == "records.create")
        .count();
    assert_eq!(creates, 2, "{audit}");
    app.finish().await;
}

#[backends]
async fn body_and_head_must_agree_and_a_key_wins() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, limited(dir.path(), |c| c.limits.enabled = false)).await;
    let (_, acme_key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta", "issue_key": false}))
        .await;
    let body = json!({"name": "n", "kind": "k", "url": "https://x", "tenant_id": "acme"});
    let resp = app
        .req(Method::POST, "beta", "/records")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_error(resp, 400, "tenant_conflict").await;
    // acme's key with a body naming beta: the credential's tenant wins and
    // the body may only agree with it.
    let body = json!({"name": "n", "kind": "k", "url": "https://x", "tenant_id": "beta"});
    let resp = app
        .with_key(Method::POST, &acme_key, "/records")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_error(resp, 403, "tenant_mismatch").await;
    // A tenant_id that is not a string is refused before anything runs.
    let resp = app
        .client
        .post(format!("{}/records/search", app.base))
        .json(&json!({"query": "x", "tenant_id": 7}))
        .send()
        .await
        .expect("post");
    assert_error(resp, 400, "invalid_tenant_id").await;
    // Nothing was written to beta.
    let (status, page) = app.get_json("beta", "/records").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 0, "{page}");
    app.finish().await;
}
