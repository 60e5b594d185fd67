//! A connection URL's credentials (userinfo and any query parameter that
//! can carry one) never reach the audit log, admin views,
//! `/health/tenants`, a move's report or its error.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{App, admin_config, assert_error};

/// The issue's request.
const VAULT_URL: &str = "postgres://db/v?user=vault&password=S3cretPw";
/// Every other place a credential can sit in a connection URL, on an
/// address that refuses connections at once.
const UNREACHABLE_URL: &str = "postgres://vaultuser:UserPw3z@127.0.0.1:1/v?sslmode=disable&password=S3cretPw&sslpassword=SslPw9x&pass=PassPw7q#FragPw5k";
const SECRETS: &[&str] = &["S3cretPw", "UserPw3z", "SslPw9x", "PassPw7q", "FragPw5k"];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

async fn text(resp: reqwest::RequestBuilder) -> String {
    let resp = resp.send().await.expect("send");
    assert_eq!(resp.status(), 200, "{:?}", resp.url().path());
    resp.text().await.expect("text")
}

/// The tenant's own log (through its key, as JSON and as NDJSON) and the
/// operator's view of it.
async fn audit_views(app: &App, tenant: &str, key: &str) -> Vec<(String, String)> {
    vec![
        (
            "GET /audit".to_owned(),
            text(app.with_key(Method::GET, key, "/audit")).await,
        ),
        (
            "GET /audit (NDJSON)".to_owned(),
            text(
                app.with_key(Method::GET, key, "/audit")
                    .header("accept", "application/x-ndjson"),
            )
            .await,
        ),
        (
            format!("GET /admin/audit?tenant={tenant}"),
            text(app.admin(Method::GET, &format!("/admin/audit?tenant={tenant}"))).await,
        ),
    ]
}

#[backends]
async fn a_database_password_reaches_no_audit_log_and_no_admin_view() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, vault_key) = app
        .create_tenant(json!({"id": "vault", "name": "Vault",
            "storage": {"isolation": "dedicated", "url": VAULT_URL}}))
        .await;
    let (_, other_key) = app
        .create_tenant(json!({"id": "other", "name": "Other",
            "storage": {"isolation": "dedicated", "url": UNREACHABLE_URL}}))
        .await;
    // A refused change of binding (only a move changes it) is audited too.
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/vault")
        .json(&json!({"storage": {"isolation": "dedicated", "url": UNREACHABLE_URL}}))
        .send()
        .await
        .expect("patch");
    let detail = assert_error(resp, 422, "validation_failed").await;
    assert_no_secret("the 422", &detail);
    // A failed write opens (and fails to open) the other's database.
    let failed = app
        .with_key(Method::POST, &other_key, "/records")
        .json(&json!({"name": "r", "kind": "k", "url": "https://e/r"}))
        .send()
        .await
        .expect("post");
    let detail = assert_error(failed, 503, "unavailable").await;
    assert_no_secret("the 503", &detail);

    let mut views = audit_views(&app, "vault", &vault_key).await;
    views.extend(audit_views(&app, "other", &other_key).await);
    for path in ["/admin/tenants?limit=10", "/health/tenants", "/admin/audit"] {
        views.push((path.to_owned(), text(app.admin(Method::GET, path)).await));
    }
    for (what, shown) in &views {
        assert_no_secret(what, shown);
    }
    // The events are there (in whichever chain), their URLs redacted to
    // their shape.
    let mut urls = Vec::new();
    for chain in ["/admin/audit?tenant=vault", "/admin/audit"] {
        let log: Value = app
            .admin(Method::GET, chain)
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("json");
        for event in log["events"].as_array().expect("events") {
            let about_vault = event["params"]["body"]["id"] == "vault"
                || event["target"] == "/admin/tenants/vault";
            if let Some(url) = event["params"]["body"]["storage"]["url"].as_str()
                && about_vault
            {
                urls.push(url.to_owned());
            }
        }
    }
    urls.sort();
    assert_eq!(
        urls,
        [
            "postgres://***@127.0.0.1:1/v?sslmode=disable&password=***&sslpassword=***&pass=***#***",
            "postgres://db/v?user=***&password=***",
        ],
        "the create and the refused change of vault"
    );
    let health: Value = app
        .admin(Method::GET, "/health/tenants")
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    let other = health["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant_id"] == "other")
        .expect("other listed");
    assert_eq!(other["status"], "error", "{other}");
    assert!(
        other["storage"]
            .as_str()
            .expect("storage")
            .starts_with("postgres://***@127.0.0.1:1/v?sslmode=disable&password=***"),
        "{other}"
    );
    app.finish().await;
}

#[backends]
async fn a_move_url_is_redacted_in_its_error_its_report_and_the_audit_log() {
    // Moves are one at a time per process (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.auth.registry_poll_ms = 200;
        }),
    )
    .await;
    let (_, key) = app
        .create_tenant(json!({"id": "mover", "name": "Mover"}))
        .await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/mover/move")
        .json(&json!({"to": "dedicated", "url": UNREACHABLE_URL}))
        .send()
        .await
        .expect("move");
    let detail = assert_error(resp, 503, "unavailable").await;
    assert_no_secret("the move's error", &detail);

    // A move that succeeds reports its target redacted too (PostgreSQL
    // only: a dedicated database there needs a server).
    // The tenant's own database outlives the `if`: the tenant lives there
    // until the server stops.
    let own =
        super::support::postgres::superuser_url().map(|_| super::support::postgres::create_db());
    if let Some(own) = &own {
        // The test roles authenticate without a password: one in the URL
        // is sent and ignored, and must still not be shown.
        let url = format!(
            "{}?password=S3cretPw&application_name=mover",
            own.owner_url()
        );
        let resp = app
            .admin(Method::POST, "/admin/tenants/mover/move")
            .json(&json!({"to": "dedicated", "url": url}))
            .send()
            .await
            .expect("move");
        assert_eq!(resp.status(), 200);
        let report = resp.text().await.expect("report");
        assert_no_secret("the move's report", &report);
        assert!(
            report.contains("password=***&application_name=mover"),
            "{report}"
        );
        let shown = text(app.admin(Method::GET, "/admin/tenants/mover")).await;
        assert_no_secret("the admin view", &shown);
        let shown = text(app.admin(Method::GET, "/health/tenants")).await;
        assert_no_secret("/health/tenants", &shown);
    }

    let mut views = audit_views(&app, "mover", &key).await;
    views.push((
        "GET /admin/audit".to_owned(),
        text(app.admin(Method::GET, "/admin/audit")).await,
    ));
    for (what, shown) in &views {
        assert_no_secret(what, shown);
    }
    assert!(
        views
            .iter()
            .any(|(_, shown)| shown.contains("password=***")),
        "the move is audited: {views:?}"
    );
    app.finish().await;
}
