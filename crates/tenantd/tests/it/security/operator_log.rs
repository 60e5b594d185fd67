//! Refusals of operator requests are audited in the operator's chain,
//! never in a tenant's; failed admin authentication is audited and locked
//! out per address.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{App, admin_config, assert_error, event_statuses};

async fn events(app: &App, query: &str) -> Vec<Value> {
    let page = app.admin_get(&format!("/admin/audit{query}")).await;
    page["events"].as_array().cloned().unwrap_or_default()
}

#[backends]
async fn a_refused_create_is_in_the_operator_chain_not_the_tenants() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .json(&json!({"id": "acme", "name": "Mallory's probe", "email": "m@evil.test"}))
        .send()
        .await
        .expect("dup");
    assert_error(resp, 409, "conflict").await;
    // A refused PATCH of acme too.
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/acme")
        .json(&json!({"security": {"allowed_ips": ["not-a-network"]}}))
        .send()
        .await
        .expect("patch");
    assert!(resp.status().is_client_error());

    // acme reads its own chain: its creation, nothing of the refusals.
    let own: Value = app
        .with_key(Method::GET, &key, "/audit")
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let text = own.to_string();
    assert!(!text.contains("Mallory"), "{own}");
    let statuses = event_statuses(&own);
    assert!(statuses.iter().all(|s| *s < 400), "{own}");
    assert!(
        own["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["action"] == "tenants.create"),
        "the successful create is in acme's chain: {own}"
    );
    // The operator's chain has both refusals.
    let system = events(&app, "").await;
    let refused: Vec<(String, u64)> = system
        .iter()
        .filter(|e| e["status"].as_u64().is_some_and(|s| s >= 400))
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        refused.contains(&("tenants.create".to_owned(), 409)),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|(a, _)| a == "tenants.update"),
        "{refused:?}"
    );
    app.finish().await;
}

#[backends]
async fn failed_admin_keys_are_audited_and_locked_out() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.admin.max_auth_failures_per_minute = 3;
        }),
    )
    .await;
    for guess in ["a", "b", "c"] {
        let resp = app
            .client
            .get(format!("{}/admin/tenants", app.base))
            .bearer_auth(guess)
            .send()
            .await
            .expect("guess");
        assert_error(resp, 401, "unauthorized").await;
    }
    // Locked: wrong keys from this address are refused unchecked (and not
    // audited) until the minute ends...
    let resp = app
        .client
        .get(format!("{}/admin/tenants", app.base))
        .bearer_auth("d")
        .send()
        .await
        .expect("locked");
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_error(resp, 429, "too_many_auth_failures").await;
    // ...while the operator's own key still works from it (anyone sharing
    // the operator's address could otherwise lock the operator out).
    let resp = app
        .admin(Method::GET, "/admin/tenants")
        .send()
        .await
        .expect("right key");
    assert_eq!(resp.status(), 200);
    app.finish().await;

    // The failures are in the operator's chain (read after the lockout
    // with a fresh server over the same data).
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let failed: Vec<Value> = events(&app, "?action=admin.auth_failed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|e| e["actor"] == "anonymous" && e["status"] == 401)
    );
    app.finish().await;
}
