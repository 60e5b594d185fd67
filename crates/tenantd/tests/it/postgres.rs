//! PostgreSQL isolation enforced by the database itself: the startup check
//! refuses every way RLS could be weakened, and a deliberately unscoped
//! statement run by the app role inside a tenant transaction sees, changes
//! and deletes only that tenant's rows.
//!
//! Needs `TENANTD_TEST_POSTGRES_URL` (a superuser URL; `.ci/run` sets it).
//! Without it every test here says it was skipped and passes, so a laptop
//! without PostgreSQL can still run `cargo test`; CI never skips them.

use crate::support;

use serde_json::Map;
use sqlx::{Connection as _, Executor as _};
use support::postgres::{self as pg, TestDb};
use tenancy::{TenantContext, TenantId, TenantSource};
use tenantd::config::RlsCheck;
use tenantd::records::NewRecord;
use tenantd::store::{PgOptions, Store, check_isolation, open_postgres};

/// A fresh database, or `None` (and a loud note) without PostgreSQL.
fn database(test: &str) -> Option<(tempfile::TempDir, pg::DbGuard)> {
    if pg::superuser_url().is_none() {
        eprintln!(
            "SKIPPED postgres::{test}: {} is not set (CI always sets it)",
            pg::URL_VAR
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = pg::create_db();
    Some((dir, db))
}

fn options(db: &TestDb, check: RlsCheck) -> PgOptions {
    PgOptions {
        url: db.app_url(),
        admin_url: db.admin_url(),
        migrate_url: Some(db.owner_url()),
        max_connections: 2,
        rls_check: check,
        single_role: false,
    }
}

/// Runs `sql` as the superuser on the test database.
async fn as_superuser(db: &TestDb, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&db.superuser_url())
        .await
        .expect("superuser");
    conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn refused(options: &PgOptions) -> String {
    match open_postgres(options).await {
        Ok(_) => panic!("started despite broken isolation"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_correct_schema_and_roles_pass_the_isolation_check() {
    let Some((_dir, db)) = database("a_correct_schema_and_roles_pass_the_isolation_check") else {
        return;
    };
    let store = open_postgres(&options(&db, RlsCheck::Refuse))
        .await
        .expect("opens");
    let problems = check_isolation(store.app_pool()).await.expect("check");
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn startup_refuses_a_tenant_table_without_forced_rls_and_warn_starts_anyway() {
    let Some((_dir, db)) = database("startup_refuses_a_tenant_table_without_forced_rls") else {
        return;
    };
    open_postgres(&options(&db, RlsCheck::Refuse))
        .await
        .expect("migrates");
    as_superuser(&db, "ALTER TABLE records NO FORCE ROW LEVEL SECURITY").await;
    as_superuser(&db, "ALTER TABLE audit_events DISABLE ROW LEVEL SECURITY").await;
    let why = refused(&options(&db, RlsCheck::Refuse)).await;
    assert!(
        why.contains("records: row-level security is not forced"),
        "{why}"
    );
    assert!(
        why.contains("audit_events: row-level security is not enabled"),
        "{why}"
    );
    // `warn` starts, and the check still reports the problems.
    let store = open_postgres(&options(&db, RlsCheck::Warn))
        .await
        .expect("warn starts");
    let problems = check_isolation(store.app_pool()).await.expect("check");
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[tokio::test]
async fn startup_refuses_a_new_tenant_table_without_a_policy() {
    let Some((_dir, db)) = database("startup_refuses_a_new_tenant_table_without_a_policy") else {
        return;
    };
    open_postgres(&options(&db, RlsCheck::Refuse))
        .await
        .expect("migrates");
    // A later table that forgot the pattern is caught by its tenant_id.
    // Created by the owner, as a later migration would be.
    let mut owner = sqlx::PgConnection::connect(&db.owner_url())
        .await
        .expect("owner");
    owner
        .execute("CREATE TABLE notes (tenant_id TEXT NOT NULL, body TEXT, PRIMARY KEY (tenant_id, body))")
        .await
        .expect("create");
    let why = refused(&options(&db, RlsCheck::Refuse)).await;
    assert!(
        why.contains("notes: row-level security is not enabled"),
        "{why}"
    );
    assert!(
        why.contains("notes: has no row-level security policy"),
        "{why}"
    );
}

#[tokio::test]
async fn startup_refuses_an_index_that_does_not_lead_with_tenant_id() {
    let Some((_dir, db)) = database("startup_refuses_an_index_not_led_by_tenant_id") else {
        return;
    };
    open_postgres(&options(&db, RlsCheck::Refuse))
        .await
        .expect("migrates");
    as_superuser(&db, "CREATE INDEX records_by_name ON records (name)").await;
    let why = refused(&options(&db, RlsCheck::Refuse)).await;
    assert!(
        why.contains("records: index records_by_name does not lead with tenant_id"),
        "{why}"
    );
}

#[tokio::test]
async fn startup_refuses_an_app_role_that_owns_tables_or_bypasses_rls() {
    let Some((_dir, db)) = database("startup_refuses_an_app_role_that_owns_or_bypasses") else {
        return;
    };
    open_postgres(&options(&db, RlsCheck::Refuse))
        .await
        .expect("migrates");
    // The owner as the app role: it owns every table.
    let mut owner_as_app = options(&db, RlsCheck::Refuse);
    owner_as_app.url = db.owner_url();
    let why = refused(&owner_as_app).await;
    assert!(
        why.contains("owns (or is a member of the owner of) tables"),
        "{why}"
    );
    // The admin role (BYPASSRLS) as the app role.
    let mut admin_as_app = options(&db, RlsCheck::Refuse);
    admin_as_app.url = db.admin_url();
    let why = refused(&admin_as_app).await;
    assert!(why.contains("has BYPASSRLS"), "{why}");
    // A superuser as the app role.
    let mut super_as_app = options(&db, RlsCheck::Refuse);
    super_as_app.url = db.superuser_url();
    let why = refused(&super_as_app).await;
    assert!(why.contains("is a superuser"), "{why}");
}

fn ctx(tenant: &str) -> TenantContext {
    TenantContext::for_testing(TenantId::new(tenant).expect("valid"), TenantSource::Static)
}

fn record(name: &str) -> NewRecord {
    NewRecord {
        kind: "doc".to_owned(),
        name: name.to_owned(),
        url: format!("https://example.com/{name}"),
        description: Some(format!("{name} shared words")),
        tags: vec!["shared".to_owned()],
        fields: Map::new(),
    }
}

/// The database, not our WHERE clauses, confines the app role: every
/// unscoped statement inside a transaction for acme touches acme's rows
/// only, an insert for another tenant is refused, and without a tenant
/// (or on the next transaction of the same pooled connection) nothing is
/// visible at all.
#[tokio::test]
async fn unscoped_sql_inside_a_tenant_transaction_sees_only_that_tenant() {
    let Some((_dir, db)) = database("unscoped_sql_inside_a_tenant_transaction") else {
        return;
    };
    let pg = open_postgres(&options(&db, RlsCheck::Refuse))
        .await
        .expect("opens");
    let app_pool = pg.app_pool().clone();
    let store = Store::new(tenantd::store::Db::postgres(
        pg,
        tenantd::clock::Clock::system(),
    ));
    for (tenant, n) in [("acme", 3), ("globex", 5)] {
        let scoped = store.scoped(&ctx(tenant));
        for i in 0..n {
            scoped
                .create_record(record(&format!("{tenant}-{i}")))
                .await
                .expect("create");
        }
    }

    // One connection, so the "next transaction" below reuses it.
    let mut conn = app_pool.acquire().await.expect("conn");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('app.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    let tenants: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM records")
        .fetch_all(&mut *tx)
        .await
        .expect("select");
    assert_eq!(tenants, ["acme"]);
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM records WHERE search @@ to_tsquery('simple', 'shared')",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("search");
    assert_eq!(found, 3, "full-text search sees acme's rows only");
    let stats: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM tenant_stats")
        .fetch_all(&mut *tx)
        .await
        .expect("stats");
    assert_eq!(stats, ["acme"]);
    let updated = sqlx::query("UPDATE records SET description = 'touched'")
        .execute(&mut *tx)
        .await
        .expect("update")
        .rows_affected();
    assert_eq!(updated, 3, "an unscoped UPDATE reaches acme's rows only");
    let sneaked = sqlx::query(
        "INSERT INTO records (tenant_id, id, kind, name, url, created_at, updated_at) \
         VALUES ('globex', 'rec_sneaky', 'doc', 'sneaky', 'u', 'now', 'now')",
    )
    .execute(&mut *tx)
    .await;
    let err = sneaked.expect_err("an insert for another tenant is refused");
    assert!(
        err.to_string().contains("row-level security"),
        "refused by the policy: {err}"
    );
    tx.rollback().await.expect("rollback");

    let mut tx = conn.begin().await.expect("begin");
    let deleted = sqlx::query("DELETE FROM records")
        .execute(&mut *tx)
        .await
        .expect("delete")
        .rows_affected();
    assert_eq!(
        deleted, 0,
        "the tenant was transaction-local: the pooled connection carries none"
    );
    sqlx::query("SELECT set_config('app.tenant_id', 'globex', true)")
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    let deleted = sqlx::query("DELETE FROM records")
        .execute(&mut *tx)
        .await
        .expect("delete")
        .rows_affected();
    assert_eq!(deleted, 5, "an unscoped DELETE reaches globex's rows only");
    tx.rollback().await.expect("rollback");
    drop(conn);

    // Audit events cannot be changed even by the admin role.
    let admin = sqlx::PgPool::connect(&db.admin_url()).await.expect("admin");
    let changed = sqlx::query("UPDATE audit_events SET actor = 'x'")
        .execute(&admin)
        .await;
    assert!(changed.is_err(), "audit events are append-only");

    // The app role parks audit events and nothing else: a tenant's path
    // can neither read the outbox nor take back what it parked.
    let app = sqlx::PgPool::connect(&db.app_url()).await.expect("app");
    for sql in [
        "SELECT count(*) FROM audit_outbox",
        "DELETE FROM audit_outbox",
        "UPDATE audit_outbox SET status = 1",
    ] {
        let refused = sqlx::query(sql).execute(&app).await;
        let Err(sqlx::Error::Database(e)) = refused else {
            panic!("{sql}: allowed to the app role");
        };
        assert_eq!(e.code().as_deref(), Some("42501"), "{sql}: {e}");
    }

    // Nothing above leaked into the stores' view: acme still has 3, globex 5.
    for (tenant, n) in [("acme", 3usize), ("globex", 5)] {
        let page = store
            .scoped(&ctx(tenant))
            .search_records(&tenantd::records::SearchQuery {
                text: String::new(),
                kind: None,
                tags: vec![],
                limit: 100,
                offset: 0,
            })
            .await
            .expect("search");
        assert_eq!(page.results.len(), n, "{tenant}");
    }
}
