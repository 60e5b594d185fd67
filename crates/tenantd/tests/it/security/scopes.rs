//! API-key scopes are enforced on every tenant route, declared with the
//! route, and documented.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{App, admin_config, assert_error, event_statuses};

async fn issue(app: &App, tenant: &str, scopes: &[&str]) -> String {
    let resp = app
        .admin(Method::POST, &format!("/admin/tenants/{tenant}/api-keys"))
        .json(&json!({"name": "scoped", "scopes": scopes}))
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    body["key"].as_str().expect("key").to_owned()
}

async fn status(app: &App, key: &str, method: Method, path: &str, body: Option<Value>) -> u16 {
    let mut req = app.with_key(method, key, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("send").status().as_u16()
}

#[backends]
async fn a_read_only_key_reads_and_nothing_else() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, full) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let id = app.record_with(&full, "payments").await;
    let reader = issue(&app, "acme", &["records:read"]).await;
    let record = json!({"name": "n2", "kind": "k", "url": "https://x"});

    assert_eq!(
        status(&app, &reader, Method::GET, "/records", None).await,
        200
    );
    assert_eq!(
        status(&app, &reader, Method::GET, &format!("/records/{id}"), None).await,
        200
    );
    assert_eq!(
        status(
            &app,
            &reader,
            Method::POST,
            "/records/search",
            Some(json!({"query": "payments"}))
        )
        .await,
        200
    );
    let refused = [
        (
            Method::POST,
            "/records".to_owned(),
            Some(record.clone()),
            "records:write",
        ),
        (
            Method::PUT,
            format!("/records/{id}"),
            Some(record.clone()),
            "records:write",
        ),
        (
            Method::DELETE,
            format!("/records/{id}"),
            None,
            "records:write",
        ),
        (Method::GET, "/audit".to_owned(), None, "audit:read"),
        (Method::GET, "/tenant".to_owned(), None, "tenant:read"),
        (Method::GET, "/detect".to_owned(), None, "detections:read"),
        (
            Method::POST,
            "/detect/submit".to_owned(),
            Some(json!({"repository_url": "https://example.com/r.git"})),
            "detections:write",
        ),
    ];
    for (method, path, body, needed) in refused {
        let mut req = app.with_key(method.clone(), &reader, &path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let detail = assert_error(req.send().await.expect("send"), 403, "insufficient_scope").await;
        assert!(detail.contains(needed), "{method} {path}: {detail}");
    }
    // The record is still there.
    assert_eq!(
        status(&app, &full, Method::GET, &format!("/records/{id}"), None).await,
        200
    );
    // The refused write is the tenant's own call: metered and audited.
    let audit = app
        .admin_get("/admin/audit?tenant=acme&action=records.create")
        .await;
    let statuses = event_statuses(&audit);
    assert!(statuses.contains(&403), "{audit}");
    app.finish().await;
}

#[backends]
async fn write_includes_read_and_unscoped_keys_are_unrestricted() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, full) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let writer = issue(&app, "acme", &["records:write"]).await;
    let id = app.record_with(&writer, "w").await;
    assert_eq!(
        status(&app, &writer, Method::GET, &format!("/records/{id}"), None).await,
        200
    );
    assert_eq!(
        status(&app, &writer, Method::GET, "/detect", None).await,
        403
    );
    for path in ["/records", "/audit", "/tenant", "/detect"] {
        assert_eq!(
            status(&app, &full, Method::GET, path, None).await,
            200,
            "{path}"
        );
    }
    app.finish().await;
}

#[backends]
async fn unknown_scopes_are_refused_at_issue_and_documented() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/api-keys")
        .json(&json!({"scopes": ["records:admin"]}))
        .send()
        .await
        .expect("issue");
    let detail = assert_error(resp, 422, "validation_failed").await;
    assert!(
        detail.contains("records:read"),
        "lists the vocabulary: {detail}"
    );

    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let post = &doc["paths"]["/records"]["post"];
    assert_eq!(post["x-required-scope"], "records:write", "{post}");
    let get = &doc["paths"]["/records/{id}"]["get"];
    assert_eq!(get["x-required-scope"], "records:read", "{get}");
    let admin = &doc["paths"]["/admin/tenants"]["post"];
    assert!(admin.get("x-required-scope").is_none(), "{admin}");
    // Every documented operation states who may call it: a scope, the
    // admin key, or nobody in particular (the few public routes).
    let public = ["/health", "/health/ready"];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let declared = operation.get("x-required-scope").is_some()
                || operation.get("security").is_some()
                || public.contains(&path.as_str());
            assert!(declared, "{method} {path} has no declared access");
            // And its audit action, named with the route: `<resource>.<verb>`.
            let action = operation["x-audit-action"].as_str().unwrap_or_default();
            let named = action.split_once('.').is_some_and(|(r, v)| {
                !r.is_empty()
                    && !v.is_empty()
                    && action
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            });
            assert!(named, "{method} {path} has no audit action: {action:?}");
            let audited = operation["x-audited"].as_bool().expect("x-audited");
            let admin =
                operation.get("x-required-scope").is_none() && !public.contains(&path.as_str());
            let writes = operation["x-required-scope"]
                .as_str()
                .is_some_and(|s| s.ends_with(":write"));
            assert_eq!(
                audited,
                admin || writes,
                "{method} {path}: every admin route and every write is audited"
            );
        }
    }
    assert_eq!(
        doc["paths"]["/records"]["post"]["x-audit-action"],
        "records.create"
    );
    assert_eq!(
        doc["paths"]["/records/search"]["post"]["x-usage-class"],
        "search"
    );
    assert_eq!(
        doc["paths"]["/records/{id}"]["get"]["x-usage-class"],
        "records"
    );
    assert_eq!(doc["paths"]["/health/tenants"]["get"]["x-audited"], true);
    app.finish().await;
}

impl App {
    /// Creates a record with `key`; returns its id.
    async fn record_with(&self, key: &str, name: &str) -> String {
        let resp = self
            .with_key(Method::POST, key, "/records")
            .json(&json!({"name": name, "kind": "k", "url": "https://x"}))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 201);
        let rec: Value = resp.json().await.expect("json");
        rec["id"].as_str().expect("id").to_owned()
    }
}
