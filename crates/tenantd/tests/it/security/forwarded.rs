//! `X-Forwarded-For` from a trusted proxy: the client is the right-most
//! address that is not a trusted proxy; junk in the part the proxies wrote
//! is a refusal, never a fallback to the proxy's own address.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::json;
use tenantd_testing::backends;

use super::{App, admin_config, assert_error};

async fn post_as(app: &App, forwarded: &str) -> reqwest::Response {
    app.req(Method::POST, "acme", "/records")
        .header("x-forwarded-for", forwarded)
        .json(&json!({"name": format!("r{}", ulid::Ulid::new()).to_lowercase(), "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post")
}

#[backends]
async fn junk_hops_never_make_the_client_the_proxy() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
        }),
    )
    .await;
    app.create_tenant(json!({
        "id": "acme", "name": "Acme", "issue_key": false,
        "security": {"allowed_ips": ["127.0.0.1/32"]}
    }))
    .await;

    // The proxy itself (no header) is allowed; a forwarded client is not.
    assert_eq!(post_as(&app, "127.0.0.1").await.status(), 201);
    assert_error(post_as(&app, "203.0.113.9").await, 403, "ip_not_allowed").await;
    // Junk the client prepended is ignored: the proxy's entry decides.
    assert_error(
        post_as(&app, "junk, 203.0.113.9").await,
        403,
        "ip_not_allowed",
    )
    .await;
    assert_error(
        post_as(&app, "127.0.0.1, 203.0.113.9").await,
        403,
        "ip_not_allowed",
    )
    .await;
    // Junk where only trusted proxies write is a refusal.
    for chain in [
        "203.0.113.9, junk",
        "junk",
        "203.0.113.9,,",
        "127.0.0.1, junk",
    ] {
        assert_error(post_as(&app, chain).await, 400, "invalid_forwarded_for").await;
    }
    // The audit records the forwarded client's address, not the proxy's.
    let audit = app.admin_get("/admin/audit?tenant=acme").await;
    let ips: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "records.create")
        .filter_map(|e| e["ip"].as_str())
        .collect();
    assert_eq!(ips, ["127.0.0.1"], "{audit}");
    app.finish().await;
}
