//! [`DataRows`]: a tenant's records as portable rows, the data that moves
//! with it between the shared database and a dedicated one
//! ([`crate::tenants::moves`]), written once on [`Db`].
//!
//! Administrative: the mover and tenant deletion act on a named tenant,
//! outside any request, so these run on the administrative path.

use async_trait::async_trait;
use tenancy::TenantId;

use super::search;
use crate::portable::rows::{insert_rows, read_tables};
use crate::portable::{DATA_TABLES, Row, data_tables, invalid};
use crate::store::{Conn, Db, StoreError, sql};

/// The rows that move with a tenant between tiers (its records), as
/// portable rows: what [`crate::tenants::moves`] copies and verifies.
#[async_trait]
pub trait DataRows: Send + Sync {
    /// Every record row of `tenant`.
    async fn data_rows(&self, tenant: &TenantId) -> Result<Vec<Row>, StoreError>;
    /// Replaces `tenant`'s record rows with `rows`, in one transaction
    /// (search index and counters rebuilt).
    async fn replace_data_rows(&self, tenant: &TenantId, rows: &[Row]) -> Result<(), StoreError>;
    /// Deletes `tenant`'s record rows; how many.
    async fn delete_data_rows(&self, tenant: &TenantId) -> Result<u64, StoreError>;
}

#[async_trait]
impl DataRows for Db {
    async fn data_rows(&self, tenant: &TenantId) -> Result<Vec<Row>, StoreError> {
        let mut conn = self.admin_snapshot().await?;
        let rows = read_tables(&mut conn, tenant, data_tables()).await?;
        conn.rollback().await?;
        Ok(rows)
    }

    async fn replace_data_rows(&self, tenant: &TenantId, rows: &[Row]) -> Result<(), StoreError> {
        if let Some((table, _)) = rows
            .iter()
            .find(|(t, _)| !DATA_TABLES.contains(&t.as_str()))
        {
            return Err(invalid(format!("{table} rows do not move between tiers")));
        }
        let mut conn = self.admin_write().await?;
        delete_data(&mut conn, tenant).await?;
        insert_rows(&mut conn, tenant, rows).await?;
        conn.commit().await
    }

    async fn delete_data_rows(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut conn = self.admin_write().await?;
        let n = delete_data(&mut conn, tenant).await?;
        conn.commit().await?;
        Ok(n)
    }
}

/// Deletes `tenant`'s data rows and their search entries.
async fn delete_data(conn: &mut Conn, tenant: &TenantId) -> Result<u64, StoreError> {
    search::unindex_tenant(conn, tenant).await?;
    conn.execute(sql("DELETE FROM records WHERE tenant_id = $1").bind(tenant))
        .await
}
