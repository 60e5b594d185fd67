//! Tenants bound to a database of their own.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::json;
use tenantd_testing::backends;

use super::{rows_in_file, rows_in_shared, tier_config};

fn dedicated() -> Option<serde_json::Value> {
    Some(json!({"isolation": "dedicated"}))
}

#[backends]
async fn a_dedicated_tenants_records_live_in_its_own_file_and_stay_isolated() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    app.tenant("vault", dedicated()).await;
    app.tenant("plain", None).await;
    for i in 0..3 {
        assert_eq!(
            app.put_record("vault", &format!("v{i}")).await.status(),
            201
        );
    }
    let plain = app.put_record("plain", "p0").await;
    assert_eq!(plain.status(), 201);

    assert_eq!(rows_in_file(dir.path(), "vault").await, 3);
    assert_eq!(
        rows_in_shared(dir.path(), "vault").await,
        0,
        "nothing in the shared database"
    );
    assert_eq!(rows_in_shared(dir.path(), "plain").await, 1);
    assert_eq!(app.names("vault").await, ["v0", "v1", "v2"]);
    assert_eq!(app.names("plain").await, ["p0"]);

    // Another tenant cannot read, search, change or delete them (404, as
    // for an absent id), and the dedicated tenant cannot reach "plain".
    let created: serde_json::Value = app
        .put_record("vault", "secret")
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let theirs = app
        .req(Method::GET, "plain", &format!("/records/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(theirs.status(), 404);
    let del = app
        .req(Method::DELETE, "plain", &format!("/records/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 404);
    let put = app
        .req(Method::PUT, "plain", &format!("/records/{id}"))
        .json(&json!({"name": "x", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 404);
    let found = app
        .req(Method::POST, "plain", "/records/search")
        .json(&json!({"query": "secret"}))
        .send()
        .await
        .expect("search");
    let found: serde_json::Value = found.json().await.expect("json");
    assert_eq!(found["total"], 0);
    assert_eq!(app.names("vault").await.len(), 4, "nothing changed");

    let health = app.tenant_health().await;
    let vault = health
        .iter()
        .find(|t| t["tenant_id"] == "vault")
        .expect("vault");
    assert_eq!(vault["isolation"], "dedicated");
    assert_eq!(vault["status"], "ok");
    let plain = health
        .iter()
        .find(|t| t["tenant_id"] == "plain")
        .expect("plain");
    assert_eq!(plain["isolation"], "shared");
    assert_eq!(plain["status"], "ok");

    // Deleting the tenant deletes the records in its own database too.
    let deleted: serde_json::Value = app
        .admin(Method::DELETE, "/admin/tenants/vault")
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(deleted["removed"]["records"], 4, "{deleted}");
    assert_eq!(rows_in_file(dir.path(), "vault").await, 0);
    app.finish().await;
}

#[backends]
async fn health_tenants_is_admin_only_paginated_and_reports_each_state() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        tier_config(dir.path(), |c| {
            c.storage.max_open_tenant_pools = 2;
        }),
    )
    .await;
    let anonymous = app
        .client
        .get(format!("{}/health/tenants", app.base))
        .send()
        .await
        .expect("get");
    super::assert_error(anonymous, 401, "unauthorized").await;

    for t in ["d1", "d2", "d3"] {
        app.tenant(t, dedicated()).await;
    }
    // A database that cannot be reached.
    app.tenant(
        "broken",
        Some(json!({"isolation": "dedicated", "url": "postgres://nobody:s3cret@127.0.0.1:1/none"})),
    )
    .await;
    let all = app.tenant_health().await;
    assert_eq!(all.len(), 4);
    assert!(
        all.iter().all(|t| t["status"] == "not_open"),
        "nothing opened yet: {all:?}"
    );

    for t in ["d1", "d2", "d3"] {
        assert_eq!(app.put_record(t, "r").await.status(), 201);
    }
    let failed = app.put_record("broken", "r").await;
    super::assert_error(failed, 503, "unavailable").await;

    let all = app.tenant_health().await;
    let status = |id: &str| {
        all.iter()
            .find(|t| t["tenant_id"] == id)
            .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
            .expect("listed")
    };
    // The bound is 2: d1, the least recently used, was closed for d3.
    assert_eq!(status("d1"), "not_open");
    assert_eq!(status("d2"), "ok");
    assert_eq!(status("d3"), "ok");
    assert_eq!(status("broken"), "error");
    let broken = all
        .iter()
        .find(|t| t["tenant_id"] == "broken")
        .expect("broken");
    assert!(!broken["reason"].as_str().unwrap_or_default().is_empty());
    assert!(
        !broken["storage"]
            .as_str()
            .unwrap_or_default()
            .contains("s3cret"),
        "no credentials shown"
    );
    // (GET /admin/tenants/broken answers 503: its usage lives in the
    // database that cannot be reached. The listing shows the binding.)
    let shown = app
        .admin(Method::GET, "/admin/tenants?limit=10")
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        !shown.contains("s3cret") && shown.contains("***@127.0.0.1:1"),
        "{shown}"
    );

    // Pages of one, in id order, cover everything once.
    let first: serde_json::Value = app
        .admin(Method::GET, "/health/tenants?limit=1")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(first["tenants"][0]["tenant_id"], "broken");
    assert_eq!(first["next_cursor"], "broken");
    assert_eq!(first["max_open_pools"], 2);
    assert!(first["open_pools"].as_u64().expect("open") <= 2);
    let bad = app
        .admin(Method::GET, "/health/tenants?limit=0")
        .send()
        .await
        .expect("get");
    super::assert_error(bad, 422, "validation_failed").await;

    // d1 reopens on use, with its data.
    assert_eq!(app.names("d1").await, ["r"]);
    app.finish().await;
}

/// 10,000 dedicated tenants with at most 64 pools open: every tenant is
/// written and read back, pools are reopened after eviction, and the
/// bound holds throughout.
#[backends]
async fn ten_thousand_dedicated_tenants_work_with_64_open_pools() {
    const TENANTS: usize = 10_000;
    let dir = TestStorage::new();
    let configs: Vec<serde_json::Value> = (0..TENANTS)
        .map(|i| {
            json!({
                "tenant_id": format!("t{i:05}"),
                "name": format!("Tenant {i}"),
                "mongo_uri": "sqlite:",
                "mongo_database": format!("t{i:05}"),
                "redis_addr": "127.0.0.1:6379",
                "redis_db": 0
            })
        })
        .collect();
    let mut cfg = tier_config(dir.path(), |c| c.storage.max_open_tenant_pools = 64);
    cfg.tenants =
        serde_json::from_value(serde_json::Value::Array(configs)).expect("static tenants");
    let app = TestApp::start(&dir, cfg).await;
    let app = std::sync::Arc::new(app);

    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..TENANTS).step_by(8) {
                let t = format!("t{i:05}");
                let resp = app.put_record(&t, &format!("only-{t}")).await;
                assert_eq!(resp.status(), 201, "{t}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    // Read a spread of them back (each reopens an evicted pool).
    for i in (0..TENANTS).step_by(97) {
        let t = format!("t{i:05}");
        assert_eq!(app.names(&t).await, [format!("only-{t}")]);
    }
    let page: serde_json::Value = app
        .admin(Method::GET, "/health/tenants?limit=1")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(page["open_pools"].as_u64().expect("open") <= 64, "{page}");
    let files = std::fs::read_dir(dir.path().join("tenants"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .count();
    assert_eq!(
        files,
        TENANTS + 1,
        "a database file per tenant plus the template"
    );
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("writers still hold the app"),
    }
}

/// `storage.eager: true` opens every dedicated tenant's pool at startup
/// and says so per tenant (`Initializing tenant: X`, then
/// `Storage pool created for tenant: X`).
#[backends]
async fn eager_startup_opens_each_dedicated_pool_and_logs_it() {
    let dir = TestStorage::new();
    let configs = serde_json::json!([
        {"tenant_id": "acme_corp", "name": "Acme", "mongo_uri": "mongodb://acme-mongo:27017",
         "mongo_database": "acme_corp_db", "redis_addr": "acme-redis:6379", "redis_db": 0},
        {"tenant_id": "globex", "name": "Globex", "mongo_uri": "mongodb://globex-mongo:27017",
         "mongo_database": "globex_db", "redis_addr": "globex-redis:6379", "redis_db": 1},
        {"tenant_id": "shared_one", "name": "Shared"}
    ])
    .to_string();
    let proc = super::support::Proc::start(
        dir.path(),
        &[
            ("TENANTD_TENANT_CONFIGS", configs.as_str()),
            ("TENANTD_STORAGE_EAGER", "true"),
            ("TENANTD_TENANT_ENABLED", "true"),
        ],
        &[],
    )
    .await;
    let (ok, log) = proc.stop();
    assert!(ok, "{log}");
    for tenant in ["acme_corp", "globex"] {
        assert!(
            log.contains(&format!("Initializing tenant: {tenant}")),
            "{log}"
        );
        assert!(
            log.contains(&format!("Storage pool created for tenant: {tenant}")),
            "{log}"
        );
        assert!(
            dir.path()
                .join("tenants")
                .join(format!("{tenant}.db"))
                .exists()
        );
    }
    assert!(
        !log.contains("Storage pool created for tenant: shared_one"),
        "a shared tenant has no pool of its own"
    );
}

/// An export of a dedicated tenant carries the records of its own
/// database; the import lands it, whole, in the importing deployment's
/// shared tier.
#[backends]
async fn export_of_a_dedicated_tenant_carries_its_records_and_imports_shared() {
    let from = TestStorage::new();
    let to = TestStorage::new();
    let app = TestApp::start(&from, tier_config(from.path(), |_| {})).await;
    app.tenant("vault", dedicated()).await;
    for i in 0..5 {
        assert_eq!(
            app.put_record("vault", &format!("v{i}")).await.status(),
            201
        );
    }
    app.finish().await;
    let dump = from.path().join("vault.ndjson");
    let run = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env_remove("TENANTD_CONFIG")
            .envs(super::support::backend_env(dir))
            .output()
            .expect("run tenantd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dump_text = dump.to_str().expect("utf-8 path");
    run(
        from.path(),
        &[
            "tenants",
            "export",
            "vault",
            "--output",
            dump_text,
            "--unsigned",
        ],
    );
    let text = std::fs::read_to_string(&dump).expect("dump");
    assert_eq!(
        text.matches("\"table\":\"records\"").count(),
        5,
        "the dedicated records"
    );
    run(to.path(), &["tenants", "import", dump_text, "--unsigned"]);
    let app = TestApp::start(&to, tier_config(to.path(), |_| {})).await;
    assert_eq!(app.names("vault").await, ["v0", "v1", "v2", "v3", "v4"]);
    assert_eq!(super::rows_in_shared(to.path(), "vault").await, 5);
    app.finish().await;
}

/// A tenant bound to a PostgreSQL database of its own: tenantd migrates
/// it, the tenant's records live there, and a move brings every one of them
/// back to the shared tier (the move reads the database through its one
/// role, which must see the rows: it owns them).
#[backends]
async fn a_tenant_with_its_own_postgresql_database() {
    // Moves are one at a time per process (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    if super::support::postgres::superuser_url().is_none() {
        eprintln!(
            "SKIPPED tiers::a_tenant_with_its_own_postgresql_database: {} is not set (CI always sets it)",
            super::support::postgres::URL_VAR
        );
        return;
    }
    let dir = TestStorage::new();
    // A second database, the tenant's own, owned by its one role.
    let own = super::support::postgres::create_db();
    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    app.tenant(
        "solo",
        Some(json!({"isolation": "dedicated", "url": own.owner_url()})),
    )
    .await;
    for i in 0..3 {
        assert_eq!(app.put_record("solo", &format!("s{i}")).await.status(), 201);
    }
    assert_eq!(app.names("solo").await, ["s0", "s1", "s2"]);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&own.superuser_url())
        .await
        .expect("connect");
    let there: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = 'solo'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(there, 3);
    assert_eq!(rows_in_shared(dir.path(), "solo").await, 0);

    let resp = app
        .admin(Method::POST, "/admin/tenants/solo/move")
        .json(&json!({"to": "shared"}))
        .send()
        .await
        .expect("move");
    assert_eq!(resp.status(), 200);
    assert_eq!(rows_in_shared(dir.path(), "solo").await, 3);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = 'solo'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(left, 0);
    assert_eq!(app.names("solo").await, ["s0", "s1", "s2"]);
    app.finish().await;
}
