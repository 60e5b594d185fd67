//! [`PortableRepo`], written once for both engines on [`Db`]. Dumps are
//! administrative: both directions run on the administrative path, and
//! the rows go through [`super::rows`].

use async_trait::async_trait;
use tenancy::TenantId;

use super::rows::{insert_rows, read_tables};
use super::{Imported, PortableRepo, Row as DumpRow, SCHEMA, TABLES, any_row_sql};
use crate::store::{Conn, Db, Dialect, Sql, StoreError, sql};

// A dump's schema number means the same tables on both engines.
const _: () = assert!(crate::store::SCHEMA_VERSION == SCHEMA as i64);

#[async_trait]
impl PortableRepo for Db {
    fn schema_version(&self) -> u32 {
        SCHEMA
    }

    async fn export_rows(&self, tenant: &TenantId) -> Result<Vec<DumpRow>, StoreError> {
        let mut conn = self.admin_snapshot().await?;
        let rows = read_tables(&mut conn, tenant, TABLES.iter()).await?;
        conn.rollback().await?;
        Ok(rows)
    }

    async fn import_rows(
        &self,
        tenant: &TenantId,
        rows: &[DumpRow],
    ) -> Result<Imported, StoreError> {
        // The checks below hold until the rows are committed: SQLite's
        // write transaction is the only writer (BEGIN IMMEDIATE); on
        // PostgreSQL the registry lock comes first (see tenants), which
        // makes them final against a concurrent create, delete or import
        // of the same id.
        let mut conn = self.admin_write().await?;
        if let Some(refused) = refusal(&mut conn, tenant).await? {
            return Ok(refused);
        }
        let oidc = crate::tenants::oidc::in_dump(rows);
        registry::refuse_taken_oidc(&mut conn, tenant, oidc.as_ref()).await?;
        insert_rows(&mut conn, tenant, rows).await?;
        if conn.dialect() == Dialect::Postgres {
            rebuild_job_counts(&mut conn, tenant).await?;
        }
        conn.commit().await?;
        Ok(Imported::Written)
    }
}

/// Why nothing may be imported under `tenant`, if anything: the id is a
/// tenant, a retired id, or has rows in a tenant table. Takes the registry
/// lock first.
async fn refusal(conn: &mut Conn, tenant: &TenantId) -> Result<Option<Imported>, StoreError> {
    if registry::lock_and_check_retired(conn, tenant).await? {
        return Ok(Some(Imported::Retired));
    }
    for table in TABLES {
        let found: Option<i32> = conn
            .scalar_optional(Sql::owned(any_row_sql(table)).bind(tenant))
            .await?;
        if found.is_some() {
            return Ok(Some(match table.name {
                "tenants" => Imported::Exists,
                name => Imported::Occupied(name),
            }));
        }
    }
    Ok(None)
}

/// PostgreSQL's scheduler counts for the imported jobs (the derived
/// columns dumps leave out): a tenant with jobs has its `job_turns` row,
/// as if it had queued them here. The `job_turns_count` trigger has kept
/// them already; counting again keeps the import exact without relying on
/// it. (SQLite counts when it schedules, and has no such columns.)
async fn rebuild_job_counts(conn: &mut Conn, tenant: &TenantId) -> Result<(), StoreError> {
    conn.execute(
        sql("INSERT INTO job_turns (tenant_id, pending, running) \
             SELECT $1, count(*) FILTER (WHERE status = 'pending'), \
                    count(*) FILTER (WHERE status = 'running') \
             FROM detection_jobs WHERE tenant_id = $1 HAVING count(*) > 0 \
             ON CONFLICT (tenant_id) DO UPDATE SET pending = excluded.pending, \
                running = excluded.running")
        .bind(tenant),
    )
    .await?;
    Ok(())
}

/// The registry checks an import makes in its transaction.
mod registry {
    use super::{Conn, StoreError, TenantId};
    use crate::tenants::oidc::PairKey;

    /// Takes the registry lock and tells whether `tenant` is a retired id.
    pub(super) async fn lock_and_check_retired(
        conn: &mut Conn,
        tenant: &TenantId,
    ) -> Result<bool, StoreError> {
        crate::tenants::lock_registry(conn).await?;
        crate::tenants::is_retired(conn, tenant).await
    }

    /// Refuses an OIDC binding another tenant holds.
    pub(super) async fn refuse_taken_oidc(
        conn: &mut Conn,
        tenant: &TenantId,
        want: Option<&PairKey>,
    ) -> Result<(), StoreError> {
        crate::tenants::refuse_taken_oidc(conn, tenant, want, false).await
    }
}
