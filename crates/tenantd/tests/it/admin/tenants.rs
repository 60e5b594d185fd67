//! `/admin/tenants`: auth, create, list, show, update, suspend, delete.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{ADMIN_KEY, App, admin_config, assert_error, config};

#[backends]
async fn the_admin_key_is_required_and_compared_exactly() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, config(dir.path(), |_| {})).await;
    let resp = app
        .client
        .get(format!("{}/admin/tenants", app.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 401, "unauthorized").await;
    assert!(detail.contains("TENANTD_ADMIN_KEY"), "{detail}");
    app.finish().await;

    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    for auth in [None, Some("wrong"), Some(&ADMIN_KEY[..ADMIN_KEY.len() - 1])] {
        let mut req = app.client.get(format!("{}/admin/tenants", app.base));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        let resp = req.send().await.expect("get");
        assert!(resp.headers().contains_key("www-authenticate"));
        let detail = assert_error(resp, 401, "unauthorized").await;
        assert!(!detail.contains(ADMIN_KEY));
    }
    let resp = app
        .client
        .get(format!("{}/admin/tenants", app.base))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    app.finish().await;
}

#[backends]
async fn create_show_list_update_delete() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (acme, key) = app
        .create_tenant(json!({
            "id": "acme", "name": "Acme", "email": "ops@acme.test", "plan": "pro",
            "limits": {"requests_per_minute": 600}, "quotas": {"max_records": 10},
            "features": {"beta": true}, "security": {"allowed_ips": ["0.0.0.0/0", "::/0"]},
            "oidc": {"issuer": "https://login.acme.test", "client_id": "c",
                     "client_secret": "oidc-secret-value", "redirect_url": "https://api.test/cb"}
        }))
        .await;
    assert_eq!(acme["status"], "active");
    assert_eq!(acme["oidc"]["scopes"], "openid profile email");
    assert_eq!(acme["oidc"]["client_secret_set"], true);
    assert!(
        !acme.to_string().contains("oidc-secret-value"),
        "write-only secret"
    );
    assert!(key.starts_with("acme_sk_") && key.len() >= "acme_sk_".len() + 32);
    app.create_tenant(json!({"id": "globex", "name": "Globex"}))
        .await;
    app.create_tenant(
        json!({"id": "initech", "name": "Initech", "plan": "pro", "status": "suspended"}),
    )
    .await;

    let dup = app
        .admin(Method::POST, "/admin/tenants")
        .json(&json!({"id": "acme", "name": "Again"}))
        .send()
        .await
        .expect("post");
    assert_error(dup, 409, "conflict").await;

    let (status, shown) = get(&app, "/admin/tenants/acme").await;
    assert_eq!(status, 200);
    assert_eq!(shown["limits"]["requests_per_minute"], 600);
    assert_eq!(shown["usage"]["api_keys"], 1);
    assert!(!shown.to_string().contains(&key[8..]), "no key material");

    let (_, page) = get(&app, "/admin/tenants?plan=pro").await;
    assert_eq!(ids(&page), ["acme", "initech"]);
    let (_, page) = get(&app, "/admin/tenants?status=suspended").await;
    assert_eq!(ids(&page), ["initech"]);
    let (_, page) = get(&app, "/admin/tenants?limit=2").await;
    assert_eq!(ids(&page), ["acme", "globex"]);
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, page) = get(&app, &format!("/admin/tenants?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page), ["initech"]);
    assert!(page["next_cursor"].is_null());

    let resp = app
        .admin(Method::PATCH, "/admin/tenants/globex")
        .json(&json!({"plan": "enterprise", "quotas": {"max_api_keys": 3}, "email": "it@globex.test"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let patched: Value = resp.json().await.expect("json");
    assert_eq!(patched["plan"], "enterprise");
    assert_eq!(patched["quotas"]["max_api_keys"], 3);
    assert_eq!(patched["name"], "Globex", "untouched fields stay");
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/globex")
        .json(&json!({"email": null}))
        .send()
        .await
        .expect("patch");
    let patched: Value = resp.json().await.expect("json");
    assert!(patched["email"].is_null());

    // Delete removes the tenant and all its data, with counts.
    app.record_with_key(&key, "one").await;
    app.record_with_key(&key, "two").await;
    let resp = app
        .with_key(Method::POST, &key, "/detect/submit")
        .json(&json!({"repository_url": "https://example.invalid/r.git"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let resp = app
        .admin(Method::DELETE, "/admin/tenants/acme")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.expect("json");
    assert_eq!(
        out,
        json!({"deleted": "acme", "removed": {"records": 2, "detection_jobs": 1, "api_keys": 1}})
    );
    let resp = app
        .with_key(Method::GET, &key, "/records")
        .send()
        .await
        .expect("get");
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .admin(Method::GET, "/admin/tenants/acme")
        .send()
        .await
        .expect("get");
    assert_error(resp, 404, "not_found").await;
    let resp = app
        .admin(Method::DELETE, "/admin/tenants/acme")
        .send()
        .await
        .expect("del");
    assert_error(resp, 404, "not_found").await;
    // The id is not handed to a new tenant: it would inherit the deleted
    // one's audit trail and usage.
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .json(&json!({"id": "acme", "name": "Someone else"}))
        .send()
        .await
        .expect("create");
    let detail = assert_error(resp, 409, "conflict").await;
    assert!(detail.contains("deleted tenant"), "{detail}");
    app.finish().await;
}

#[backends]
async fn invalid_tenants_are_422_with_every_problem() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .json(&json!({"id": "bad id!", "name": "", "plan": "Gold",
                      "security": {"allowed_ips": ["10.0.0.0/33", "not-an-ip"]},
                      "oidc": {"issuer": "https://i.test", "client_id": "", "redirect_url": "x"}}))
        .send()
        .await
        .expect("post");
    let detail = assert_error(resp, 422, "validation_failed").await;
    for field in [
        "id:",
        "name:",
        "plan:",
        "security.allowed_ips[0]",
        "security.allowed_ips[1]",
        "oidc.client_id",
        "oidc.client_secret",
        "oidc.redirect_url",
    ] {
        assert!(detail.contains(field), "{field} missing from {detail}");
    }
    for (body, status, code) in [
        (
            json!({"id": "a", "name": "A", "colour": "red"}),
            422,
            "validation_failed",
        ),
        (json!({"id": "a"}), 422, "validation_failed"),
        (
            json!({"id": "a", "name": "A", "status": "deleted"}),
            422,
            "validation_failed",
        ),
    ] {
        let resp = app
            .admin(Method::POST, "/admin/tenants")
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_error(resp, status, code).await;
    }
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_error(resp, 400, "bad_request").await;
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/nobody")
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .expect("patch");
    assert_error(resp, 404, "not_found").await;
    let (_, page) = get(&app, "/admin/tenants").await;
    assert_eq!(page["tenants"], json!([]), "nothing was created");
    app.finish().await;
}

#[backends]
async fn registry_refuses_unknown_suspended_and_outside_addresses() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.trusted_proxies = vec!["127.0.0.1/32".into()];
        }),
    )
    .await;
    // Empty registry: header-only access, as on a trusted network.
    let (status, _) = app.get_json("anyone", "/records").await;
    assert_eq!(status, 200);

    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "office", "name": "Office",
                             "security": {"allowed_ips": ["10.0.0.0/8"]}}))
        .await;
    let resp = app
        .req(Method::GET, "anyone", "/records")
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 404, "tenant_not_found").await;
    assert_eq!(detail, "Tenant 'anyone' not found");

    let resp = app
        .admin(Method::PATCH, "/admin/tenants/acme")
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let resp = app
        .req(Method::GET, "acme", "/records")
        .send()
        .await
        .expect("get");
    assert_error(resp, 403, "tenant_suspended").await;
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/acme")
        .json(&json!({"status": "active"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let (status, _) = app.get_json("acme", "/records").await;
    assert_eq!(status, 200);

    // 127.0.0.1 is not in 10/8; through the trusted proxy (127.0.0.1 here)
    // the forwarded address counts.
    let resp = app
        .req(Method::GET, "office", "/records")
        .send()
        .await
        .expect("get");
    assert_error(resp, 403, "ip_not_allowed").await;
    let resp = app
        .req(Method::GET, "office", "/records")
        .header("x-forwarded-for", "10.20.30.40")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    app.finish().await;

    // Without trusted proxies, X-Forwarded-For is ignored.
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let resp = app
        .req(Method::GET, "office", "/records")
        .header("x-forwarded-for", "10.20.30.40")
        .send()
        .await
        .expect("get");
    assert_error(resp, 403, "ip_not_allowed").await;
    app.finish().await;
}

async fn get(app: &App, path: &str) -> (u16, Value) {
    let resp = app.admin(Method::GET, path).send().await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

fn ids(page: &Value) -> Vec<String> {
    page["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}
