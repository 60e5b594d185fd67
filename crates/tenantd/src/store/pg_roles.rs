//! The PostgreSQL roles and the isolation they must give: the grants the
//! owner makes after each migration, the single-role (dedicated database)
//! variant, and the startup check that refuses a schema or an app role
//! through which one tenant could see another's rows.

use sqlx::{Executor as _, PgPool};

use super::postgres::ident;

/// Grants the app role row access to the tenant tables only and the
/// admin role to every table; neither may change or delete audit events
/// or touch the migration history. Idempotent; runs after every migration
/// so tables added later are covered the same way.
pub(super) async fn grant(owner: &PgPool, app: &str, admin: &str) -> Result<(), sqlx::Error> {
    let (app, admin) = (ident(app), ident(admin));
    let tenant_tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.table_name::text FROM information_schema.columns c \
         JOIN information_schema.tables t USING (table_schema, table_name) \
         WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' \
         AND t.table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(owner)
    .await?;
    let mut statements = vec![
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {admin}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {admin}, {app}"),
        format!("REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM {admin}"),
        format!("GRANT SELECT ON _sqlx_migrations TO {admin}, {app}"),
    ];
    for table in &tenant_tables {
        statements.push(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {app}",
            ident(table)
        ));
    }
    statements.push(format!(
        "REVOKE UPDATE, DELETE ON audit_events FROM {admin}, {app}"
    ));
    // The app role parks events and nothing else: a tenant's path cannot
    // read, change or take back what it parked.
    statements.push(format!(
        "REVOKE SELECT, UPDATE, DELETE ON audit_outbox FROM {app}"
    ));
    statements.push(format!("REVOKE UPDATE ON audit_outbox FROM {admin}"));
    let mut tx = owner.begin().await?;
    for statement in statements {
        tx.execute(sqlx::AssertSqlSafe(statement)).await?;
    }
    tx.commit().await
}

/// `NO FORCE ROW LEVEL SECURITY` on every tenant table (a dedicated,
/// single-role database; see [`PgOptions::single_role`]).
pub(super) async fn unforce(owner: &PgPool) -> Result<(), sqlx::Error> {
    let forced: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relforcerowsecurity",
    )
    .fetch_all(owner)
    .await?;
    for table in forced {
        let sql = format!("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY", ident(&table));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(owner).await?;
    }
    Ok(())
}

/// Every way the schema or the app role could let one tenant see
/// another's rows, described one per line (empty: all is well).
///
/// A *tenant table* is any table with a `tenant_id` column. For each: RLS
/// enabled **and forced**, at least one policy, and every index leading
/// with `tenant_id`. For the role: not a superuser, no `BYPASSRLS`, and
/// owner of no table in the schema.
pub async fn check_isolation(app: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let mut problems = Vec::new();
    let role: (String, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(app)
    .await?;
    if role.1 {
        problems.push(format!(
            "the app role {} is a superuser (superusers bypass row-level security)",
            role.0
        ));
    }
    if role.2 {
        problems.push(format!("the app role {} has BYPASSRLS", role.0));
    }
    let owned: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
         AND pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY 1",
    )
    .fetch_all(app)
    .await?;
    if !owned.is_empty() {
        problems.push(format!(
            "the app role {} owns (or is a member of the owner of) tables: {} \
             (owners can disable row-level security)",
            role.0,
            owned.join(", ")
        ));
    }
    let tables: Vec<(String, bool, bool, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
         AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                     AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
         ORDER BY 1",
    )
    .fetch_all(app)
    .await?;
    for (table, enabled, forced, policies) in &tables {
        if !enabled {
            problems.push(format!(
                "tenant table {table}: row-level security is not enabled"
            ));
        } else if !forced {
            problems.push(format!(
                "tenant table {table}: row-level security is not forced"
            ));
        }
        if *policies == 0 {
            problems.push(format!(
                "tenant table {table}: has no row-level security policy"
            ));
        }
    }
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() \
         AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid \
                     AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
         AND (x.indkey[0] = 0 OR (SELECT a.attname FROM pg_attribute a \
              WHERE a.attrelid = t.oid AND a.attnum = x.indkey[0]) <> 'tenant_id') \
         ORDER BY 1, 2",
    )
    .fetch_all(app)
    .await?;
    for (table, index) in indexes {
        problems.push(format!(
            "tenant table {table}: index {index} does not lead with tenant_id"
        ));
    }
    Ok(problems)
}
