//! The audit log: what is recorded, redaction, tenant scoping, filters,
//! pages, NDJSON export, and tamper detection by `tenantd audit verify`.

use crate::support::{TestApp, TestStorage};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};

use super::{App, admin_config, assert_error};

async fn events(app: &App, tenant: &str, query: &str) -> Value {
    let (status, page) = app.get_json(tenant, &format!("/audit{query}")).await;
    assert_eq!(status, 200, "{page}");
    page
}

fn list(page: &Value) -> &Vec<Value> {
    page["events"].as_array().expect("events")
}

#[backends]
async fn mutations_and_admin_actions_are_recorded_with_actor_and_secrets_redacted() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, first_key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/api-keys")
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .expect("issue");
    let issued: Value = resp.json().await.expect("json");
    let second_key = issued["key"].as_str().expect("key").to_owned();
    let key_id = issued["id"].as_str().expect("id").to_owned();

    let resp = app
        .with_key(Method::POST, &second_key, "/records")
        .header("user-agent", "audit-test/1.0")
        .json(
            &json!({"name": "r1", "kind": "k", "url": "https://example.com",
                      "fields": {"password": "hunter2", "note": "visible"}}),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    // Reads and searches are not audited; a refused write is.
    app.with_key(Method::GET, &second_key, "/records")
        .send()
        .await
        .expect("get");
    app.with_key(Method::POST, &second_key, "/records/search")
        .json(&json!({"query": "r1"}))
        .send()
        .await
        .expect("search");
    let resp = app
        .with_key(Method::POST, &second_key, "/records")
        .json(&json!({"name": "x", "token": "tok-secret-value"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 422);

    // Without the admin key nothing is written in a tenant's chain: no
    // forged "admin" events. A wrong key is a failed authentication, written
    // to the operator's chain (and bounded by the lockout).
    let resp = app
        .client
        .put(format!("{}/admin/tenants/acme", app.base))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 405);
    let resp = app
        .client
        .delete(format!("{}/admin/tenants/acme", app.base))
        .bearer_auth("not-the-admin-key-0123456789")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 401);

    let page = app.admin_json("/admin/audit?tenant=acme").await;
    let all = list(&page);
    let actions: Vec<&str> = all
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "tenants.create",
            "api_keys.issue",
            "records.create",
            "records.create"
        ],
        "{page}"
    );
    let create = &all[0];
    assert_eq!(create["actor"], "admin");
    assert_eq!(create["status"], 201);
    assert_eq!(create["tenant_id"], "acme");
    assert_eq!(create["params"]["body"]["name"], "Acme");
    let write = &all[2];
    assert_eq!(write["actor"], format!("key:{key_id}"));
    assert_eq!(write["target"], "/records");
    assert_eq!(write["request_id"], request_id);
    assert_eq!(write["user_agent"], "audit-test/1.0");
    assert_eq!(write["ip"], "127.0.0.1");
    assert_eq!(write["params"]["body"]["fields"]["note"], "visible");
    assert_eq!(all[3]["status"], 422);
    // Hash links.
    assert_eq!(all[1]["prev_hash"], all[0]["hash"]);
    assert_eq!(all[0]["seq"], 1);

    let system = app.admin_json("/admin/audit").await;
    let system = list(&system);
    assert_eq!(
        system.len(),
        2,
        "the failed authentication and the admin's own read: {system:?}"
    );
    assert_eq!(system[0]["action"], "admin.auth_failed");
    assert_eq!(system[0]["actor"], "anonymous");
    assert_eq!(system[0]["status"], 401);
    assert_eq!(system[1]["action"], "audit.read");
    assert_eq!(system[1]["actor"], "admin");

    let text = page.to_string();
    for secret in ["hunter2", "tok-secret-value", &first_key, &second_key] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    app.finish().await;
}

#[backends]
async fn a_tenant_reads_only_its_own_events_with_filters_pages_and_ndjson() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    for i in 0..5 {
        app.create_record("acme", &format!("a{i}")).await;
    }
    app.create_record("beta", "b").await;

    let beta = events(&app, "beta", "").await;
    assert!(
        list(&beta).iter().all(|e| e["tenant_id"] == "beta"),
        "{beta}"
    );
    assert_eq!(
        list(&beta).len(),
        2,
        "tenants.create + records.create: {beta}"
    );
    assert!(!beta.to_string().contains("\"a0\""));

    let writes = events(&app, "acme", "?action=records.create").await;
    assert_eq!(list(&writes).len(), 5);
    let by_admin = events(&app, "acme", "?actor=admin").await;
    assert_eq!(list(&by_admin).len(), 1);
    let future = events(&app, "acme", "?since=2999-01-01T00:00:00Z").await;
    assert!(list(&future).is_empty());

    // Pages of 2 walk all 6 events once each.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = events(&app, "acme", &format!("?limit=2{cursor}")).await;
        seen.extend(list(&page).iter().map(|e| e["seq"].as_u64().expect("seq")));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);

    let resp = app
        .req(Method::GET, "acme", "/audit")
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let body = resp.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|e| e["tenant_id"] == "acme"));

    for bad in [
        "?limit=0",
        "?limit=5000",
        "?since=yesterday",
        "?cursor=abc",
        "?tenant=beta",
    ] {
        let resp = app
            .req(Method::GET, "acme", &format!("/audit{bad}"))
            .send()
            .await
            .expect("get");
        assert!(
            resp.status() == 422 || resp.status() == 400,
            "{bad}: {}",
            resp.status()
        );
    }
    // The admin route needs the admin key.
    let resp = app
        .req(Method::GET, "acme", "/admin/audit?tenant=beta")
        .send()
        .await
        .expect("get");
    assert_error(resp, 401, "unauthorized").await;
    app.finish().await;
}

/// Writes events for acme (4) and beta (2) in `dir`, then stops.
async fn seed(dir: &Arc<TestStorage>) {
    let app = TestApp::start(dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    for i in 0..3 {
        app.create_record("acme", &format!("a{i}")).await;
    }
    app.create_record("beta", "b").await;
    app.finish().await;
}

fn verify(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("TENANTD_CONFIG")
        .envs(crate::support::backend_env(dir))
        .output()
        .expect("run tenantd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn tamper(dir: &Path, statements: &[&str]) {
    if crate::support::on_postgres() {
        // A superuser can switch the append-only trigger off.
        let db = crate::support::postgres::db_for(dir);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.superuser_url())
            .await
            .expect("connect");
        for sql in ["ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"]
            .iter()
            .chain(statements)
        {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .expect(sql);
        }
        return;
    }
    let url = format!("sqlite://{}", dir.join("tenantd.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open db");
    // An attacker with file access can drop the append-only triggers.
    for sql in [
        "DROP TRIGGER audit_events_no_update",
        "DROP TRIGGER audit_events_no_delete",
    ]
    .iter()
    .chain(statements)
    {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .expect(sql);
    }
    pool.close().await;
}

#[backends]
async fn verify_detects_a_modified_removed_or_reordered_event() {
    let intact = TestStorage::new();
    seed(&intact).await;
    let (ok, stdout, _) = verify(intact.path(), &[]);
    assert!(ok, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("json report");
    assert_eq!(report["intact"], true);

    let cases: [(&str, &[&str]); 4] = [
        (
            "modified",
            &[
                "UPDATE audit_events SET actor = 'someone-else' WHERE tenant_id = 'acme' AND seq = 2",
            ],
        ),
        (
            "removed",
            &["DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 2"],
        ),
        (
            "reordered",
            &[
                "UPDATE audit_events SET seq = 100 WHERE tenant_id = 'acme' AND seq = 2",
                "UPDATE audit_events SET seq = 2 WHERE tenant_id = 'acme' AND seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE tenant_id = 'acme' AND seq = 100",
            ],
        ),
        (
            "newest removed",
            &["DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 4"],
        ),
    ];
    for (name, statements) in cases {
        let dir = TestStorage::new();
        seed(&dir).await;
        tamper(dir.path(), statements).await;
        let (ok, stdout, stderr) = verify(dir.path(), &[]);
        assert!(!ok, "{name}: tampering not detected\n{stdout}");
        assert!(stderr.contains("acme"), "{name}: {stderr}");
        let report: Value = serde_json::from_str(&stdout).expect("json report");
        assert_eq!(report["intact"], false);
        // beta's chain is untouched, and checking it alone passes.
        let (ok, _, _) = verify(dir.path(), &["--tenant", "beta"]);
        assert!(ok, "{name}: beta's chain reported broken");
        let (ok, _, _) = verify(dir.path(), &["--tenant", "acme"]);
        assert!(!ok, "{name}: --tenant acme passed");
    }
}
