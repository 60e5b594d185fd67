//! [`TenantRepo`] for PostgreSQL.
//!
//! The registry is the explicitly cross-tenant path: every statement runs
//! on the admin role's pool ([`PgStore::admin_pool`]), which bypasses
//! row-level security.
//!
//! SQLite runs one writer at a time (`BEGIN IMMEDIATE`); PostgreSQL runs
//! these transactions concurrently. Every statement that changes `tenants`
//! or `api_keys` bumps the single `registry_version` row (a statement
//! trigger), and holds that row lock until commit, so registry writers are
//! serialised from their first change on anyway. [`pg_lock_registry`] takes
//! that lock *first*, before any tenant or key row, in every registry
//! writer (here, in keys, in imports): one lock order, so two writers
//! cannot deadlock (one holding the version row and waiting for a tenant
//! row the other locked before its own bump), and existence checks
//! (retired ids, taken ids, live key counts) cannot race an insert.
//! Reads (`get`, `list`, `registry_version`, `load_directory`) take no
//! lock.
//!
//! Ids and cursors compare byte by byte (`COLLATE "C"`), as in SQLite,
//! whatever the database's collation, so pages are the same on both.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tenancy::TenantId;

use super::model::{TenantRow, TenantSpec, TenantState};
use super::oidc::{self, PairKey};
use super::{DeletedCounts, DirectoryRow, Inserted, TenantFilter, TenantRepo};
use crate::keys::KeyInsert;
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError};

const COLUMNS: &str = "id, name, email, plan, status, source, spec, created_at, updated_at";

/// Takes the registry lock (the `registry_version` row) for the rest of
/// the transaction. Every transaction that writes `tenants` or `api_keys`
/// calls this before touching either (see the module documentation).
pub(crate) async fn pg_lock_registry(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT version FROM registry_version WHERE only_row = 1 FOR UPDATE")
        .execute(&mut *conn)
        .await
        .map_err(map_pg)?;
    Ok(())
}

/// Whether `id` belonged to a deleted tenant (its audit trail and usage
/// are kept, so the id is never given out again). Every path that makes a
/// tenant row (create, static configuration, import) asks this after
/// [`pg_lock_registry`], in the transaction that writes the row: a
/// concurrent delete of this id has then either committed (and is seen)
/// or not started.
pub(crate) async fn pg_is_retired(
    conn: &mut PgConnection,
    id: &TenantId,
) -> Result<bool, StoreError> {
    let deleted: Option<i32> = sqlx::query_scalar("SELECT 1 FROM deleted_tenants WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_pg)?;
    Ok(deleted.is_some())
}

/// Every stored OIDC binding. Called after [`pg_lock_registry`], so no
/// binding can be added between this read and the caller's write.
async fn oidc_bindings(conn: &mut PgConnection) -> Result<Vec<oidc::Stored>, StoreError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, spec::jsonb #>> '{oidc,issuer}', spec::jsonb #>> '{oidc,client_id}' \
         FROM tenants WHERE spec::jsonb #>> '{oidc,issuer}' IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(map_pg)?;
    rows.into_iter()
        .map(|(id, issuer, client)| {
            let id = TenantId::new(&id).map_err(|_| corrupt("id"))?;
            Ok((id, issuer, client.unwrap_or_default()))
        })
        .collect()
}

/// Refuses ([`StoreError::Conflict`] with [`oidc::TAKEN`]) writing `want`
/// as `me`'s binding when another tenant holds it; see [`oidc::holder`]
/// for `keep_own`. Call after [`pg_lock_registry`] in the transaction that
/// writes it.
pub(crate) async fn pg_refuse_taken_oidc(
    conn: &mut PgConnection,
    me: &TenantId,
    want: Option<&PairKey>,
    keep_own: bool,
) -> Result<(), StoreError> {
    let Some(want) = want else { return Ok(()) };
    match oidc::holder(me, want, &oidc_bindings(conn).await?, keep_own) {
        Some(_) => Err(StoreError::Conflict(oidc::TAKEN.to_owned())),
        None => Ok(()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt tenants row: {what}"))
}

fn decode(row: &PgRow) -> Result<TenantRow, StoreError> {
    let id: String = row.try_get(0).map_err(map_pg)?;
    let status: String = row.try_get(4).map_err(map_pg)?;
    let spec: String = row.try_get(6).map_err(map_pg)?;
    Ok(TenantRow {
        id: TenantId::new(&id).map_err(|_| corrupt("id"))?,
        name: row.try_get(1).map_err(map_pg)?,
        email: row.try_get(2).map_err(map_pg)?,
        plan: row.try_get(3).map_err(map_pg)?,
        status: TenantState::parse(&status).ok_or_else(|| corrupt("status"))?,
        source: row.try_get(5).map_err(map_pg)?,
        spec: serde_json::from_str::<TenantSpec>(&spec).map_err(|_| corrupt("spec"))?,
        created_at: row.try_get(7).map_err(map_pg)?,
        updated_at: row.try_get(8).map_err(map_pg)?,
    })
}

fn spec_json(spec: &TenantSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Inserts `row`; with `upsert`, a row already there is updated instead
/// (its creation time kept). Without, returns whether the row was new (a
/// taken id writes nothing and leaves the transaction usable).
async fn write_row(
    conn: &mut PgConnection,
    row: &TenantRow,
    upsert: bool,
) -> Result<bool, StoreError> {
    let sql = if upsert {
        "INSERT INTO tenants (id, name, email, plan, status, source, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, \
         plan = excluded.plan, status = excluded.status, source = excluded.source, \
         spec = excluded.spec, updated_at = excluded.updated_at"
    } else {
        "INSERT INTO tenants (id, name, email, plan, status, source, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING"
    };
    let written = sqlx::query(sql)
        .bind(row.id.as_str())
        .bind(&row.name)
        .bind(row.email.as_deref())
        .bind(&row.plan)
        .bind(row.status.as_str())
        .bind(&row.source)
        .bind(spec_json(&row.spec)?)
        .bind(&row.created_at)
        .bind(&row.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(map_pg)?
        .rows_affected();
    Ok(written == 1)
}

#[async_trait]
impl TenantRepo for PgStore {
    async fn insert_tenant(
        &self,
        row: &TenantRow,
        first_key: Option<&KeyInsert>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        if pg_is_retired(&mut tx, &row.id).await? {
            return Ok(Inserted::Retired);
        }
        if let Some(oidc) = &row.spec.oidc
            && oidc::holder(
                &row.id,
                &PairKey::of(oidc),
                &oidc_bindings(&mut tx).await?,
                false,
            )
            .is_some()
        {
            return Ok(Inserted::OidcTaken);
        }
        // ON CONFLICT DO NOTHING: a taken id (also one inserted by a
        // concurrent transaction, once it commits) is a Conflict, not an
        // aborted transaction.
        if !write_row(&mut tx, row, false).await? {
            return Err(StoreError::Conflict(format!(
                "tenant {} already exists",
                row.id
            )));
        }
        let key = match first_key {
            Some(key) => Some(crate::keys::pg_insert(&mut tx, &row.id, key).await?),
            None => None,
        };
        self.commit(tx, None).await?;
        Ok(Inserted::Created(key.map(Box::new)))
    }

    async fn upsert_static_tenants(&self, rows: &[TenantRow]) -> Result<(), StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        let mut retired = Vec::new();
        for row in rows {
            if pg_is_retired(&mut tx, &row.id).await? {
                retired.push(row.id.to_string());
            }
        }
        if !retired.is_empty() {
            return Err(StoreError::Conflict(super::statics::retired(&retired)));
        }
        let clashes = oidc::static_clashes(rows, &oidc_bindings(&mut tx).await?);
        if !clashes.is_empty() {
            return Err(StoreError::Conflict(clashes.join("; ")));
        }
        for row in rows {
            // The upsert never changes created_at: a tenant seen before
            // keeps its original creation time.
            write_row(&mut tx, row, true).await?;
        }
        self.commit(tx, None).await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(self.admin_pool())
            .await
            .map_err(map_pg)?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<TenantRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tenants WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::text IS NULL OR plan = $2) \
             AND ($3::text IS NULL OR id COLLATE \"C\" > $3) \
             ORDER BY id COLLATE \"C\" LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(TenantState::as_str))
            .bind(filter.plan.as_deref())
            .bind(filter.after.as_ref().map(TenantId::as_str))
            .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
            .fetch_all(self.admin_pool())
            .await
            .map_err(map_pg)?;
        rows.iter().map(decode).collect()
    }

    async fn update_tenant(&self, row: &TenantRow) -> Result<bool, StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        let want = row.spec.oidc.as_ref().map(PairKey::of);
        pg_refuse_taken_oidc(&mut tx, &row.id, want.as_ref(), true).await?;
        let changed = sqlx::query(
            "UPDATE tenants SET name = $2, email = $3, plan = $4, status = $5, spec = $6, \
             updated_at = $7 WHERE id = $1",
        )
        .bind(row.id.as_str())
        .bind(&row.name)
        .bind(row.email.as_deref())
        .bind(&row.plan)
        .bind(row.status.as_str())
        .bind(spec_json(&row.spec)?)
        .bind(&row.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        self.commit(tx, None).await?;
        Ok(changed == 1)
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<Option<DeletedCounts>, StoreError> {
        let tenant = id.as_str();
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_pg)?;
        if exists.is_none() {
            return Ok(None);
        }
        let run = |sql: &'static str| sqlx::query(sql).bind(tenant);
        // The records trigger keeps tenant_stats exact (down to zero); the
        // search column goes with its row.
        let records = run("DELETE FROM records WHERE tenant_id = $1")
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?
            .rows_affected();
        let jobs = run("DELETE FROM detection_jobs WHERE tenant_id = $1")
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?
            .rows_affected();
        run("DELETE FROM job_turns WHERE tenant_id = $1")
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        // Keys locked in the order touch_keys locks them (see there).
        run("SELECT 1 FROM api_keys WHERE tenant_id = $1 ORDER BY id COLLATE \"C\" FOR UPDATE")
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        let api_keys = run("DELETE FROM api_keys WHERE tenant_id = $1")
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?
            .rows_affected();
        run("DELETE FROM tenants WHERE id = $1")
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        // Usage, audit events and billing events are kept (audit events
        // cannot be deleted at all); the id is retired so no new tenant
        // inherits them.
        sqlx::query(
            "INSERT INTO deleted_tenants (id, deleted_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
        )
        .bind(tenant)
        .bind(crate::clock::now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        self.commit(tx, None).await?;
        Ok(Some(DeletedCounts {
            records,
            detection_jobs: jobs,
            api_keys,
        }))
    }

    async fn registry_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT version FROM registry_version WHERE only_row = 1")
            .fetch_one(self.admin_pool())
            .await
            .map_err(map_pg)
    }

    async fn retired_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM deleted_tenants")
            .fetch_one(self.admin_pool())
            .await
            .map_err(map_pg)
    }

    async fn load_directory(&self, id: Option<&TenantId>) -> Result<Vec<DirectoryRow>, StoreError> {
        // The spec parts as SQLite's json_extract gives them: JSON text
        // for arrays and objects, the value for strings, NULL when absent
        // or JSON null.
        let rows = sqlx::query(
            "SELECT id, status, \
             nullif(spec::jsonb #> '{security,allowed_ips}', 'null'::jsonb)::text, \
             spec::jsonb #>> '{oidc,issuer}', spec::jsonb #>> '{oidc,client_id}', plan, \
             nullif(spec::jsonb -> 'limits', 'null'::jsonb)::text, \
             nullif(spec::jsonb -> 'quotas', 'null'::jsonb)::text, \
             nullif(spec::jsonb -> 'storage', 'null'::jsonb)::text, \
             (spec::jsonb ->> 'moving_until_ms')::bigint, \
             coalesce((spec::jsonb #>> '{security,header_access}')::boolean, false) FROM tenants \
             WHERE ($1::text IS NULL OR id = $1)",
        )
        .bind(id.map(TenantId::as_str))
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0).map_err(map_pg)?;
            let status: String = row.try_get(1).map_err(map_pg)?;
            let ips: Option<String> = row.try_get(2).map_err(map_pg)?;
            let allowed_ips: Vec<String> = match ips {
                Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("allowed_ips"))?,
                None => Vec::new(),
            };
            let issuer: Option<String> = row.try_get(3).map_err(map_pg)?;
            let client_id: Option<String> = row.try_get(4).map_err(map_pg)?;
            let limits: Option<String> = row.try_get(6).map_err(map_pg)?;
            let quotas: Option<String> = row.try_get(7).map_err(map_pg)?;
            let storage: Option<String> = row.try_get(8).map_err(map_pg)?;
            out.push(DirectoryRow {
                storage: match storage {
                    Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("storage"))?,
                    None => None,
                },
                moving_until_ms: row.try_get(9).map_err(map_pg)?,
                header_access: row.try_get(10).map_err(map_pg)?,
                id: TenantId::new(&id).map_err(|_| corrupt("id"))?,
                status: TenantState::parse(&status).ok_or_else(|| corrupt("status"))?,
                allowed_ips,
                oidc: issuer.zip(client_id),
                plan: row.try_get(5).map_err(map_pg)?,
                limits: match limits {
                    Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("limits"))?,
                    None => Default::default(),
                },
                quotas: match quotas {
                    Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("quotas"))?,
                    None => Default::default(),
                },
            });
        }
        Ok(out)
    }
}
