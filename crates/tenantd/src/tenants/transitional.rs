//! TRANSITIONAL: what code not yet written once on
//! [`Db`](crate::store::Db) still calls.
//! Delete this file once nothing uses it:
//!
//! - `tenants/moves.rs` calls `AdminStore::tenants()` (use `admin.db()`
//!   with [`super::TenantRepo`] imported) and `Target::of` (use
//!   [`super::placement::target`]);
//! - the per-engine `portable` backends call the per-engine registry
//!   helpers below (use [`super::lock_registry`], [`super::is_retired`],
//!   [`super::refuse_taken_oidc`] on a `Conn`).
//!
//! Each helper runs the statement text of its one implementation in
//! [`super::repo`].

use std::path::Path;

use sqlx::{PgConnection, SqliteConnection};
use tenancy::TenantId;

use super::TenantRepo;
use super::model::StorageBinding;
use super::oidc::PairKey;
use super::repo::{LOCK_REGISTRY_SQL, RETIRED_SQL, oidc_bindings_sql, refuse_held, stored_binding};
use crate::store::pg_support::map_pg;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{AdminStore, Dialect, StoreError, Target};

impl AdminStore {
    /// Tenant rows (transitional: `admin.db()` with `TenantRepo`).
    pub(crate) fn tenants(&self) -> &dyn TenantRepo {
        self.db()
    }
}

impl Target {
    /// Transitional: [`super::placement::target`].
    pub(crate) fn of(
        data_dir: &Path,
        tenant: &TenantId,
        binding: Option<&StorageBinding>,
    ) -> Option<Self> {
        super::placement::target(data_dir, tenant, binding)
    }
}

/// [`super::lock_registry`] on a raw PostgreSQL transaction.
pub(crate) async fn pg_lock_registry(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(LOCK_REGISTRY_SQL)
        .execute(&mut *conn)
        .await
        .map_err(map_pg)?;
    Ok(())
}

/// [`super::is_retired`] on a raw PostgreSQL transaction.
pub(crate) async fn pg_is_retired(
    conn: &mut PgConnection,
    id: &TenantId,
) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar(RETIRED_SQL)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_pg)?;
    Ok(found.is_some())
}

/// [`super::is_retired`] on a raw SQLite transaction.
pub(crate) async fn sqlite_is_retired(
    conn: &mut SqliteConnection,
    id: &TenantId,
) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar(RETIRED_SQL)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    Ok(found.is_some())
}

/// What [`super::refuse_taken_oidc`] decides, on the bindings a raw
/// transaction read.
fn refuse_in(
    rows: Vec<(String, String, Option<String>)>,
    me: &TenantId,
    want: &PairKey,
    keep_own: bool,
) -> Result<(), StoreError> {
    let stored = rows
        .into_iter()
        .map(|(id, issuer, client)| stored_binding(id, issuer, client))
        .collect::<Result<Vec<_>, _>>()?;
    refuse_held(me, want, &stored, keep_own)
}

/// [`super::refuse_taken_oidc`] on a raw PostgreSQL transaction.
pub(crate) async fn pg_refuse_taken_oidc(
    conn: &mut PgConnection,
    me: &TenantId,
    want: Option<&PairKey>,
    keep_own: bool,
) -> Result<(), StoreError> {
    let Some(want) = want else { return Ok(()) };
    let query = sqlx::query_as(oidc_bindings_sql(Dialect::Postgres));
    let rows = query.fetch_all(&mut *conn).await.map_err(map_pg)?;
    refuse_in(rows, me, want, keep_own)
}

/// [`super::refuse_taken_oidc`] on a raw SQLite transaction.
pub(crate) async fn sqlite_refuse_taken_oidc(
    conn: &mut SqliteConnection,
    me: &TenantId,
    want: Option<&PairKey>,
    keep_own: bool,
) -> Result<(), StoreError> {
    let Some(want) = want else { return Ok(()) };
    let query = sqlx::query_as(oidc_bindings_sql(Dialect::Sqlite));
    let rows = query.fetch_all(&mut *conn).await.map_err(map_sqlx)?;
    refuse_in(rows, me, want, keep_own)
}
