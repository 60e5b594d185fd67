//! Transitional: the record upsert on an engine's own sqlx transaction,
//! for the job completion path that still holds one. The statements are
//! [`super::repo`]'s; delete this module once that path writes through a
//! [`crate::store::Conn`] with [`super::upsert_in`].

use sqlx::{Postgres, Sqlite, Transaction};
use tenancy::TenantId;

use super::model::{NewRecord, Record, RecordId, check_quota, json_text};
use super::repo::{SIZE_BY_NAME_SQL, UPSERT_SQL, decode};
use super::search::{INDEX_SQL, UNINDEX_SQL, fts_columns};
use crate::clock::now_rfc3339;
use crate::limits::QuotaLimits;
use crate::store::pg_support::map_pg;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{Row, StoreError};
use crate::usage::metric;

/// Binds [`UPSERT_SQL`]'s arguments to a query of either engine.
macro_rules! bind_upsert {
    ($query:expr, $tenant:expr, $new:expr) => {
        $query
            .bind($tenant.as_str())
            .bind(RecordId::generate().as_str())
            .bind(&$new.kind)
            .bind(&$new.name)
            .bind(&$new.url)
            .bind($new.description.as_deref())
            .bind(json_text(&$new.tags)?)
            .bind(json_text(&$new.fields)?)
            .bind($new.size_bytes())
            .bind(now_rfc3339())
    };
}

/// The `(records, bytes)` change of writing `new` over a record of `old`
/// bytes (or none).
fn added(old: Option<i64>, new: &NewRecord) -> (i64, i64) {
    match old {
        Some(old) => (0, new.size_bytes() - old),
        None => (1, new.size_bytes()),
    }
}

/// [`super::upsert_in`] on a SQLite write transaction (`BEGIN IMMEDIATE`:
/// the only writer, so the stats need no lock).
pub(crate) async fn upsert_in_tx(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    new: &NewRecord,
    quotas: &QuotaLimits,
) -> Result<Record, StoreError> {
    let used: (i64, i64) =
        sqlx::query_as("SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_sqlx)?
            .unwrap_or((0, 0));
    let old: Option<i64> = sqlx::query_scalar(SIZE_BY_NAME_SQL)
        .bind(tenant.as_str())
        .bind(&new.kind)
        .bind(&new.name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_sqlx)?;
    let (records, bytes) = added(old, new);
    check_quota(quotas, used, records, bytes)?;
    crate::usage::sqlite_support::count_in_tx(tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
    let row = Row::Sqlite(
        bind_upsert!(sqlx::query(UPSERT_SQL), tenant, new)
            .fetch_one(&mut **tx)
            .await
            .map_err(map_sqlx)?,
    );
    let seq: i64 = row.get(10)?;
    sqlx::query(UNINDEX_SQL)
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map_err(map_sqlx)?;
    let mut index = sqlx::query(INDEX_SQL).bind(seq);
    for column in fts_columns(tenant, new) {
        index = index.bind(column);
    }
    index.execute(&mut **tx).await.map_err(map_sqlx)?;
    decode(&row)
}

/// [`super::upsert_in`] on a PostgreSQL tenant transaction of `tenant`
/// (the stats row locked first: the lock order of every record write).
pub(crate) async fn pg_upsert_in_tx(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    new: &NewRecord,
    quotas: &QuotaLimits,
) -> Result<Record, StoreError> {
    sqlx::query(
        "INSERT INTO tenant_stats (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await
    .map_err(map_pg)?;
    let used: (i64, i64) = sqlx::query_as(
        "SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut **tx)
    .await
    .map_err(map_pg)?;
    let old: Option<i64> = sqlx::query_scalar(SIZE_BY_NAME_SQL)
        .bind(tenant.as_str())
        .bind(&new.kind)
        .bind(&new.name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_pg)?;
    let (records, bytes) = added(old, new);
    check_quota(quotas, used, records, bytes)?;
    crate::usage::pg_support::count_in_tx(tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
    let row = bind_upsert!(sqlx::query(UPSERT_SQL), tenant, new)
        .fetch_one(&mut **tx)
        .await
        .map_err(map_pg)?;
    decode(&Row::Postgres(row))
}
