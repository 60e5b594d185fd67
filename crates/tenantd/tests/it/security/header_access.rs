//! A tenant that holds credentials is reached only with one, unless the
//! operator opted it into header access; local repository paths are off by
//! default.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::json;
use tenantd_testing::backends;

use super::{admin_config, assert_error, config};

#[backends]
async fn a_header_does_not_reach_a_tenant_with_keys() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme", "security": {"header_access": false}}))
        .await;
    app.create_tenant(json!({
        "id": "open", "name": "Open", "issue_key": false,
        "security": {"header_access": false}
    }))
    .await;
    app.create_tenant(json!({
        "id": "gateway", "name": "Behind a gateway",
        "security": {"header_access": true}
    }))
    .await;

    let by_header = |tenant: &str, path: &str| app.req(Method::GET, tenant, path).send();
    for path in ["/records", "/tenant", "/audit"] {
        assert_error(
            by_header("acme", path).await.expect("get"),
            401,
            "unauthorized",
        )
        .await;
    }
    let query = app
        .client
        .get(format!("{}/records?tenant_id=acme", app.base))
        .send()
        .await
        .expect("get");
    assert_error(query, 401, "unauthorized").await;
    let body = app
        .client
        .post(format!("{}/records", app.base))
        .json(&json!({"name": "n", "kind": "k", "url": "https://x", "tenant_id": "acme"}))
        .send()
        .await
        .expect("post");
    assert_error(body, 401, "unauthorized").await;
    let with_key = app
        .with_key(Method::GET, &key, "/records")
        .send()
        .await
        .expect("get");
    assert_eq!(with_key.status(), 200);
    // Without credentials, or opted in: the header still works.
    assert_eq!(
        by_header("open", "/records").await.expect("get").status(),
        200
    );
    assert_eq!(
        by_header("gateway", "/records")
            .await
            .expect("get")
            .status(),
        200
    );

    // Revoking acme's only key makes it a header tenant again.
    let keys: serde_json::Value = app
        .admin(Method::GET, "/admin/tenants/acme/api-keys")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let key_id = keys["keys"][0]["id"]
        .as_str()
        .or_else(|| keys[0]["id"].as_str())
        .expect("key id")
        .to_owned();
    let resp = app
        .admin(
            Method::DELETE,
            &format!("/admin/tenants/acme/api-keys/{key_id}"),
        )
        .send()
        .await
        .expect("revoke");
    assert!(resp.status().is_success());
    assert_eq!(
        by_header("acme", "/records").await.expect("get").status(),
        200
    );

    // An identity provider is a credential too.
    app.create_tenant(json!({
        "id": "sso", "name": "SSO", "issue_key": false,
        "security": {"header_access": false},
        "oidc": {"issuer": "https://idp.sso.test", "client_id": "sso-app",
                 "client_secret": "sso-client-secret-0123456789",
                 "redirect_url": "https://app.sso.test/cb"}
    }))
    .await;
    assert_error(
        by_header("sso", "/records").await.expect("get"),
        401,
        "unauthorized",
    )
    .await;
    app.finish().await;
}

#[backends]
async fn local_repository_paths_are_refused_by_default() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        config(dir.path(), |c| {
            c.jobs.allow_local_paths = tenantd::Config::default().jobs.allow_local_paths;
        }),
    )
    .await;
    for url in ["/etc", "file:///srv/git/other-team.git"] {
        let resp = app
            .req(Method::POST, "acme", "/detect/submit")
            .json(&json!({"repository_url": url}))
            .send()
            .await
            .expect("submit");
        let detail = assert_error(resp, 400, "bad_request").await;
        assert!(detail.contains("Invalid repository URL"), "{detail}");
    }
    app.finish().await;
}

#[backends]
async fn a_retired_id_is_not_reachable_by_header_even_with_no_tenant_left() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "issue_key": false}))
        .await;
    let resp = app
        .req(Method::POST, "acme", "/records")
        .json(&json!({"name": "kept", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let resp = app
        .admin(Method::DELETE, "/admin/tenants/acme")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    // No tenant is left, but the registry stays on: the retired id's kept
    // trail is the operator's, not anyone's who writes a header.
    let resp = app
        .req(Method::GET, "acme", "/audit")
        .send()
        .await
        .expect("get");
    assert_error(resp, 404, "tenant_not_found").await;
    app.finish().await;
    // The same after a restart (the registry is loaded from storage).
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let resp = app
        .req(Method::GET, "acme", "/audit")
        .send()
        .await
        .expect("get");
    assert_error(resp, 404, "tenant_not_found").await;
    app.finish().await;
}
