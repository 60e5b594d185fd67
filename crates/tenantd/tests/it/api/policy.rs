//! Tenant policy over HTTP: the policy step and the registry check of
//! `docs/architecture.md`, "Deciding the tenant".

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::json;
use tenantd_testing::backends;

use super::{assert_error, config, ids, urlencode};

fn tid(s: &str) -> tenancy::TenantId {
    s.parse().expect("tenant id")
}

#[backends]
async fn a_missing_tenant_is_400_with_the_documented_text_or_the_default() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let resp = app
        .client
        .get(format!("{}/records", app.base))
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 400, "tenant_required").await;
    assert_eq!(
        detail,
        "Tenant ID required. Use header 'X-Tenant-ID' or query parameter 'tenant_id'"
    );
    app.finish().await;

    let app = TestApp::start(
        &data,
        config(data.path(), |c| {
            c.tenant.tenant_required = false;
            c.tenant.default_tenant = tid("fallback");
        }),
    )
    .await;
    let resp = app
        .client
        .post(format!("{}/records", app.base))
        .json(&json!({"name": "n", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let rec: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(rec["tenant_id"], "fallback");
    app.finish().await;
}

#[backends]
async fn the_allow_list_applies_to_every_source() {
    let data = TestStorage::new();
    let app = TestApp::start(
        &data,
        config(data.path(), |c| {
            c.tenant.allowed_tenants = vec![tid("acme")];
            c.tenant.tenant_required = false;
            c.tenant.default_tenant = tid("acme");
        }),
    )
    .await;
    let header = app
        .req(Method::GET, "evil", "/records")
        .send()
        .await
        .expect("get");
    let detail = assert_error(header, 403, "tenant_not_allowed").await;
    assert_eq!(detail, "Tenant 'evil' not authorized");
    assert!(!detail.contains("acme"), "the list is not disclosed");

    let query = app
        .client
        .get(format!("{}/records?tenant_id=evil", app.base))
        .send()
        .await
        .expect("get");
    assert_error(query, 403, "tenant_not_allowed").await;

    // A tenant named in the body goes through the allow-list like any other.
    let body = app
        .client
        .post(format!("{}/records", app.base))
        .json(&json!({"name": "n", "kind": "k", "url": "https://x", "tenant_id": "evil"}))
        .send()
        .await
        .expect("post");
    assert_error(body, 403, "tenant_not_allowed").await;
    let search = app
        .client
        .post(format!("{}/records/search", app.base))
        .json(&json!({"query": "x", "tenant_id": "evil"}))
        .send()
        .await
        .expect("post");
    assert_error(search, 403, "tenant_not_allowed").await;

    let (_, page) = app.get_json("acme", "/records").await;
    assert_eq!(page["total"], 0, "nothing was written by refused requests");
    app.finish().await;
}

#[backends]
async fn sources_that_disagree_are_a_conflict_and_blank_ones_are_skipped() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let resp = app
        .req(Method::GET, "acme", "/records?tenant_id=globex")
        .send()
        .await
        .expect("get");
    assert_error(resp, 400, "tenant_conflict").await;

    // Agreeing sources are fine.
    let resp = app
        .req(Method::GET, "acme", "/records?tenant_id=acme")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);

    // A whitespace-only header is absent and the query is still read.
    app.create("globex", "one", "d").await;
    let resp = app
        .client
        .get(format!("{}/records?tenant_id=globex", app.base))
        .header("X-Tenant-ID", "   ")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let page: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(page["total"], 1);

    // Values are trimmed.
    let (status, page) = app.get_json("  globex ", "/records").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 1);
    app.finish().await;
}

#[backends]
async fn invalid_tenant_ids_are_400_without_echo() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let long = "a".repeat(64);
    for bad in [
        "../etc/passwd",
        "a b",
        "' OR 1=1 --",
        "-leading-dash",
        "_x",
        long.as_str(),
        "tenant;DROP TABLE records",
        "é",
    ] {
        let resp = app
            .client
            .get(format!("{}/records?tenant_id={}", app.base, urlencode(bad)))
            .send()
            .await
            .expect("get");
        let detail = assert_error(resp, 400, "invalid_tenant_id").await;
        assert!(!detail.contains(bad), "{detail} echoes {bad}");
    }
    let resp = app
        .req(Method::GET, "x/../y", "/records")
        .send()
        .await
        .expect("get");
    assert_error(resp, 400, "invalid_tenant_id").await;
    app.finish().await;
}

#[backends]
async fn a_custom_header_name_is_matched_case_insensitively() {
    let data = TestStorage::new();
    let app = TestApp::start(
        &data,
        config(data.path(), |c| {
            c.tenant.tenant_header = "X-Org".to_owned();
        }),
    )
    .await;
    let resp = app
        .client
        .get(format!("{}/records", app.base))
        .header("x-org", "acme")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .get(format!("{}/records", app.base))
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 400, "tenant_required").await;
    assert!(detail.contains("'X-Org'"), "{detail}");
    app.finish().await;
}

#[backends]
async fn disabled_puts_every_request_in_the_default_tenant() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |c| c.tenant.enabled = false)).await;
    let a = app.create("acme", "shared", "one namespace").await;
    assert_eq!(a["tenant_id"], "default");
    let (_, page) = app.get_json("globex", "/records").await;
    assert_eq!(ids(&page), vec![a["id"].as_str().expect("id")]);
    let resp = app
        .client
        .get(format!("{}/records", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    app.finish().await;

    // Turning it on later: the data written so far belongs to the default
    // tenant, with no migration step.
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let (_, page) = app.get_json("default", "/records").await;
    assert_eq!(page["total"], 1);
    let (_, page) = app.get_json("acme", "/records").await;
    assert_eq!(page["total"], 0);
    app.finish().await;
}
