//! API keys: issue, list, revoke, rotate (with grace), expiry, last use.

use crate::support::{TestApp, TestStorage};
use std::time::Duration;
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};

use super::{App, admin_config, assert_error};

async fn status_with(app: &App, key: &str) -> u16 {
    app.with_key(Method::GET, key, "/records")
        .send()
        .await
        .expect("get")
        .status()
        .as_u16()
}

#[backends]
async fn issue_list_revoke() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, first) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/api-keys")
        .json(&json!({"name": "ci", "scopes": ["records:read"]}))
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 201);
    let issued: Value = resp.json().await.expect("json");
    let second = issued["key"].as_str().expect("key").to_owned();
    assert_eq!(issued["name"], "ci");
    assert!(
        issued["prefix"]
            .as_str()
            .expect("prefix")
            .starts_with("acme_sk_")
    );

    // Both work; the bearer form too.
    assert_eq!(status_with(&app, &first).await, 200);
    let resp = app
        .client
        .get(format!("{}/records", app.base))
        .bearer_auth(&second)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);

    let resp = app
        .admin(Method::GET, "/admin/tenants/acme/api-keys")
        .send()
        .await
        .expect("list");
    let text = resp.text().await.expect("text");
    assert!(
        !text.contains(&first[8..]) && !text.contains(&second[8..]),
        "no secrets: {text}"
    );
    assert!(!text.contains("hash"));
    let keys: Vec<Value> = serde_json::from_str(&text).expect("json");
    assert_eq!(keys.len(), 2);
    let id = issued["id"].as_str().expect("id").to_owned();

    let resp = app
        .admin(
            Method::DELETE,
            &format!("/admin/tenants/acme/api-keys/{id}"),
        )
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 204);
    let resp = app
        .with_key(Method::GET, &second, "/records")
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 401, "unauthorized").await;
    assert_eq!(detail, "Invalid API key");
    assert_eq!(
        status_with(&app, &first).await,
        200,
        "other keys unaffected"
    );

    // Revoking again, another tenant's key, or a key of an unknown tenant: 404.
    for path in [
        format!("/admin/tenants/acme/api-keys/{id}"),
        "/admin/tenants/acme/api-keys/key_nope".to_owned(),
        format!("/admin/tenants/ghost/api-keys/{id}"),
    ] {
        let resp = app.admin(Method::DELETE, &path).send().await.expect("del");
        assert_error(resp, 404, "not_found").await;
    }
    let resp = app
        .admin(Method::POST, "/admin/tenants/ghost/api-keys")
        .json(&json!({}))
        .send()
        .await
        .expect("issue");
    assert_error(resp, 404, "not_found").await;
    for body in [
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"expires_at": "tomorrow"}),
        json!({"scopes": ["has space"]}),
        json!({"secret": "x"}),
    ] {
        let resp = app
            .admin(Method::POST, "/admin/tenants/acme/api-keys")
            .json(&body)
            .send()
            .await
            .expect("issue");
        assert_error(resp, 422, "validation_failed").await;
    }
    app.finish().await;
}

#[backends]
async fn rotation_keeps_the_old_key_for_the_grace_period_only() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, old) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .admin(Method::GET, "/admin/tenants/acme/api-keys")
        .send()
        .await
        .expect("list");
    let keys: Vec<Value> = resp.json().await.expect("json");
    let old_id = keys[0]["id"].as_str().expect("id").to_owned();

    let resp = app
        .admin(
            Method::POST,
            &format!("/admin/tenants/acme/api-keys/{old_id}/rotate"),
        )
        .json(&json!({"grace_seconds": 2}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(resp.status(), 201);
    let new: Value = resp.json().await.expect("json");
    let new_key = new["key"].as_str().expect("key").to_owned();
    assert_ne!(new_key, old);
    assert_eq!(status_with(&app, &new_key).await, 200);
    assert_eq!(
        status_with(&app, &old).await,
        200,
        "inside the grace period"
    );
    // Rotating the old key again cannot extend its grace period.
    let resp = app
        .admin(
            Method::POST,
            &format!("/admin/tenants/acme/api-keys/{old_id}/rotate"),
        )
        .json(&json!({"grace_seconds": 3600}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(resp.status(), 201);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status_with(&app, &old).await, 401, "after the grace period");
    assert_eq!(status_with(&app, &new_key).await, 200);

    // Rotating without a grace period (no body) stops the old key at once;
    // a key past its grace cannot be rotated again.
    let new_id = new["id"].as_str().expect("id").to_owned();
    let resp = app
        .admin(
            Method::POST,
            &format!("/admin/tenants/acme/api-keys/{new_id}/rotate"),
        )
        .send()
        .await
        .expect("rotate");
    assert_eq!(resp.status(), 201);
    assert_eq!(status_with(&app, &new_key).await, 401);
    let resp = app
        .admin(
            Method::POST,
            &format!("/admin/tenants/acme/api-keys/{old_id}/rotate"),
        )
        .send()
        .await
        .expect("rotate");
    assert_error(resp, 404, "not_found").await;
    app.finish().await;
}

#[backends]
async fn expired_keys_are_refused_with_their_own_message() {
    let dir = TestStorage::new();
    let start = time::OffsetDateTime::now_utc();
    let start_ms = u64::try_from(start.unix_timestamp_nanos() / 1_000_000).expect("after 1970");
    let clock = std::sync::Arc::new(tenancy::ratelimit::ManualClock::new(start_ms));
    let app =
        TestApp::start_with_clock(&dir, admin_config(dir.path(), |_| {}), clock.clone()).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let soon = start + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/api-keys")
        .json(&json!({"expires_at": soon}))
        .send()
        .await
        .expect("issue");
    let issued: Value = resp.json().await.expect("json");
    let key = issued["key"].as_str().expect("key").to_owned();
    assert_eq!(status_with(&app, &key).await, 200);
    clock.advance(Duration::from_millis(2500));
    let resp = app
        .with_key(Method::GET, &key, "/records")
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 401, "unauthorized").await;
    assert_eq!(detail, "API key has expired");
    app.finish().await;
}

#[backends]
async fn last_use_is_recorded_in_batches_and_flushed_on_shutdown() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let list = |app: &App| {
        let req = app.admin(Method::GET, "/admin/tenants/acme/api-keys");
        async move {
            let keys: Vec<Value> = req.send().await.expect("list").json().await.expect("json");
            keys[0]["last_used_at"].clone()
        }
    };
    assert!(list(&app).await.is_null());
    assert_eq!(status_with(&app, &key).await, 200);
    // Not written per request (the flush interval is an hour here)...
    assert!(list(&app).await.is_null());
    app.finish().await;
    // ...but not lost at shutdown.
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    assert!(list(&app).await.is_string());
    app.finish().await;
}
