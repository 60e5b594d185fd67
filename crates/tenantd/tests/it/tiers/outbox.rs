//! Audit events parked with their writes: in the shared database for a
//! shared tenant, in the tenant's own file for a dedicated one; taken out
//! when chained; and chained by the sweep when a crash left them behind.

use crate::support::{TestApp, TestStorage};
use std::path::Path;
use std::time::{Duration, Instant};
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};

use super::{App, support, tier_config};

fn dedicated() -> Option<Value> {
    Some(json!({"isolation": "dedicated"}))
}

/// Runs `sql` with `binds` (text) on the shared database under `dir`;
/// `$N` placeholders serve both backends.
async fn on_shared(dir: &Path, sql: &str, binds: &[&str]) -> i64 {
    if support::on_postgres() {
        let db = support::postgres::db_for(dir);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.superuser_url())
            .await
            .expect("connect");
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()));
        for b in binds {
            q = q.bind(*b);
        }
        q.fetch_optional(&mut conn).await.expect(sql).unwrap_or(0)
    } else {
        on_file(&dir.join("tenantd.db"), sql, binds).await
    }
}

async fn on_file(file: &Path, sql: &str, binds: &[&str]) -> i64 {
    let url = format!("sqlite://{}", file.display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open");
    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()));
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_optional(&mut conn).await.expect(sql).unwrap_or(0)
}

const PARKED: &str = "SELECT count(*) FROM audit_outbox WHERE tenant_id = $1";

/// What a crash between a write and its event's chaining leaves: an
/// outbox row from a minute ago.
const LEFT_BEHIND: &str = "INSERT INTO audit_outbox (tenant_id, id, at, at_ms, actor, action, \
     target, request_id, ip, user_agent, status, duration_ms, params) \
     VALUES ($1, $2, '2026-01-01T00:00:00Z', CAST($3 AS BIGINT), 'anonymous', 'records.create', \
     '/records', NULL, NULL, NULL, 0, 3, '{}') RETURNING CAST(1 AS BIGINT)";

async fn chain(app: &App, tenant: &str) -> Vec<Value> {
    let resp = app
        .admin(
            Method::GET,
            &format!("/admin/audit?tenant={tenant}&limit=1000"),
        )
        .send()
        .await
        .expect("audit");
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.expect("json");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[backends]
async fn a_write_parks_its_event_where_it_writes_and_the_chain_takes_it_out() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    app.tenant("vault", dedicated()).await;
    app.tenant("plain", None).await;
    assert_eq!(app.put_record("vault", "v0").await.status(), 201);
    assert_eq!(app.put_record("plain", "p0").await.status(), 201);

    for tenant in ["vault", "plain"] {
        let events = chain(&app, tenant).await;
        let create = events
            .iter()
            .find(|e| e["action"] == "records.create")
            .unwrap_or_else(|| panic!("{tenant}: no records.create event in {events:?}"));
        assert_eq!(create["status"], 201, "chained with the response's status");
    }
    // Chained, so taken out of both outboxes.
    let vault_file = dir.path().join("tenants").join("vault.db");
    assert_eq!(on_file(&vault_file, PARKED, &["vault"]).await, 0);
    assert_eq!(on_shared(dir.path(), PARKED, &["plain"]).await, 0);
    app.finish().await;
}

#[backends]
async fn events_a_crash_left_in_an_outbox_are_chained_by_the_sweep() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        tier_config(dir.path(), |c| {
            c.server.request_timeout_secs = 1;
        }),
    )
    .await;
    app.tenant("vault", dedicated()).await;
    app.tenant("plain", None).await;
    // Opens the dedicated file (a sweep drains the open ones).
    assert_eq!(app.put_record("vault", "v0").await.status(), 201);
    assert_eq!(app.put_record("plain", "p0").await.status(), 201);

    let a_minute_ago = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 60_000)
        .to_string();
    let vault_file = dir.path().join("tenants").join("vault.db");
    let vault_id = "01JLEFTBEHINDVAULT000000000";
    let plain_id = "01JLEFTBEHINDPLAIN000000000";
    on_file(
        &vault_file,
        LEFT_BEHIND,
        &["vault", vault_id, &a_minute_ago],
    )
    .await;
    on_shared(dir.path(), LEFT_BEHIND, &["plain", plain_id, &a_minute_ago]).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    for (tenant, id) in [("vault", vault_id), ("plain", plain_id)] {
        loop {
            let events = chain(&app, tenant).await;
            if let Some(event) = events.iter().find(|e| e["id"] == id) {
                assert_eq!(event["status"], 0, "an unanswered write's status");
                assert_eq!(event["action"], "records.create");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant}: the parked event was not chained: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Chained once, and taken out.
    for _ in 0..50 {
        if on_file(&vault_file, PARKED, &["vault"]).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(on_file(&vault_file, PARKED, &["vault"]).await, 0);
    assert_eq!(on_shared(dir.path(), PARKED, &["plain"]).await, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (tenant, id) in [("vault", vault_id), ("plain", plain_id)] {
        let n = chain(&app, tenant)
            .await
            .iter()
            .filter(|e| e["id"] == id)
            .count();
        assert_eq!(n, 1, "{tenant}: chained exactly once");
    }
    app.finish().await;
}
