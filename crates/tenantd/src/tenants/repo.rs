//! [`TenantRepo`] on [`Db`], one implementation for both engines, and the
//! registry helpers every registry writer shares (tenants, keys, imports).
//!
//! The registry is the explicitly cross-tenant path: every statement runs
//! on the administrative path ([`Db::admin_write`], [`Db::admin_read`]),
//! which PostgreSQL's row-level security does not confine.
//!
//! Locking. SQLite runs one writer at a time (`BEGIN IMMEDIATE`), which is
//! the registry lock there. PostgreSQL runs these transactions
//! concurrently: every statement that changes `tenants` or `api_keys`
//! bumps the single `registry_version` row (a statement trigger), and
//! holds that row lock until commit, so registry writers are serialised
//! from their first change on anyway. [`lock_registry`] takes that lock
//! *first*, before any tenant or key row, in every registry writer (here,
//! in keys, in imports): one lock order, so two writers cannot deadlock
//! (one holding the version row and waiting for a tenant row the other
//! locked before its own bump), and existence checks (retired ids, taken
//! ids, live key counts) cannot race an insert. Reads (`get`, `list`,
//! `registry_version`, `load_directory`) take no lock.
//!
//! Ids and cursors compare byte by byte (`COLLATE "C"`) whatever the
//! database's collation, so pages are the same on both engines. The spec
//! is a JSON document in a text column; the two statements that look
//! inside it are the only ones written per engine (SQLite's `json_extract`
//! against PostgreSQL's `jsonb` operators).

use async_trait::async_trait;
use tenancy::TenantId;

use super::model::{TenantRow, TenantSpec, TenantState};
use super::oidc::{self, PairKey};
use super::{DeletedCounts, DirectoryRow, Inserted, TenantFilter, TenantRepo};
use crate::keys::{KeyInsert, insert_key_row};
use crate::store::{Conn, Db, Dialect, Row, Sql, StoreError, sql};

const COLUMNS: &str = "id, name, email, plan, status, source, spec, created_at, updated_at";

/// PostgreSQL's registry lock (see [`lock_registry`]).
pub(super) const LOCK_REGISTRY_SQL: &str =
    "SELECT version FROM registry_version WHERE only_row = 1 FOR UPDATE";

/// A row when `$1` is a retired id (see [`is_retired`]).
pub(super) const RETIRED_SQL: &str = "SELECT 1 FROM deleted_tenants WHERE id = $1";

/// Every stored OIDC binding: id, issuer, client id (see
/// [`oidc_bindings`]); the spec's JSON is read per engine.
pub(super) fn oidc_bindings_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "SELECT id, json_extract(spec, '$.oidc.issuer'), json_extract(spec, '$.oidc.client_id') \
             FROM tenants WHERE json_extract(spec, '$.oidc.issuer') IS NOT NULL"
        }
        Dialect::Postgres => {
            "SELECT id, spec::jsonb #>> '{oidc,issuer}', spec::jsonb #>> '{oidc,client_id}' \
             FROM tenants WHERE spec::jsonb #>> '{oidc,issuer}' IS NOT NULL"
        }
    }
}

/// Takes the registry lock for the rest of the transaction. Every
/// transaction that writes `tenants` or `api_keys` calls this before
/// touching either (see the module documentation).
pub(crate) async fn lock_registry(conn: &mut Conn) -> Result<(), StoreError> {
    match conn.dialect() {
        // The write transaction's `BEGIN IMMEDIATE` already holds the
        // database's one write lock.
        Dialect::Sqlite => Ok(()),
        Dialect::Postgres => {
            conn.execute(sql(LOCK_REGISTRY_SQL)).await?;
            Ok(())
        }
    }
}

/// Whether `id` belonged to a deleted tenant (its audit trail and usage
/// are kept, so the id is never given out again). Every path that makes a
/// tenant row (create, static configuration, import) asks this after
/// [`lock_registry`], in the transaction that writes the row: a concurrent
/// delete of this id has then either committed (and is seen) or not
/// started.
pub(crate) async fn is_retired(conn: &mut Conn, id: &TenantId) -> Result<bool, StoreError> {
    let deleted: Option<i32> = conn.scalar_optional(sql(RETIRED_SQL).bind(id)).await?;
    Ok(deleted.is_some())
}

/// Every stored OIDC binding. Called after [`lock_registry`], so no
/// binding can be added between this read and the caller's write.
async fn oidc_bindings(conn: &mut Conn) -> Result<Vec<oidc::Stored>, StoreError> {
    let text = oidc_bindings_sql(conn.dialect());
    let rows = conn.fetch_all(sql(text)).await?;
    rows.iter()
        .map(|row| stored_binding(row.get(0)?, row.get(1)?, row.get(2)?))
        .collect()
}

/// A row of [`oidc_bindings_sql`] as the OIDC rule compares it.
pub(super) fn stored_binding(
    id: String,
    issuer: String,
    client: Option<String>,
) -> Result<oidc::Stored, StoreError> {
    let id = TenantId::new(&id).map_err(|_| corrupt("id"))?;
    Ok((id, issuer, client.unwrap_or_default()))
}

/// Refuses ([`StoreError::Conflict`] with [`oidc::TAKEN`]) writing `want`
/// as `me`'s binding when another tenant holds it; see [`oidc::holder`]
/// for `keep_own`. Call after [`lock_registry`] in the transaction that
/// writes it.
pub(crate) async fn refuse_taken_oidc(
    conn: &mut Conn,
    me: &TenantId,
    want: Option<&PairKey>,
    keep_own: bool,
) -> Result<(), StoreError> {
    let Some(want) = want else { return Ok(()) };
    refuse_held(me, want, &oidc_bindings(conn).await?, keep_own)
}

/// [`StoreError::Conflict`] with [`oidc::TAKEN`] when another tenant than
/// `me` holds `want` among `stored`.
pub(super) fn refuse_held(
    me: &TenantId,
    want: &PairKey,
    stored: &[oidc::Stored],
    keep_own: bool,
) -> Result<(), StoreError> {
    match oidc::holder(me, want, stored, keep_own) {
        Some(_) => Err(StoreError::Conflict(oidc::TAKEN.to_owned().into())),
        None => Ok(()),
    }
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt tenants row: {what}").into())
}

fn decode(row: &Row) -> Result<TenantRow, StoreError> {
    let id: String = row.get(0)?;
    let status: String = row.get(4)?;
    let spec: String = row.get(6)?;
    Ok(TenantRow {
        id: TenantId::new(&id).map_err(|_| corrupt("id"))?,
        name: row.get(1)?,
        email: row.get(2)?,
        plan: row.get(3)?,
        status: TenantState::parse(&status).ok_or_else(|| corrupt("status"))?,
        source: row.get(5)?,
        spec: serde_json::from_str::<TenantSpec>(&spec).map_err(|_| corrupt("spec"))?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

fn spec_json(spec: &TenantSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string().into()))
}

/// Inserts `row`; with `upsert`, a row already there is updated instead
/// (its creation time kept: the update never sets `created_at`). Without,
/// returns whether the row was new (a taken id writes nothing and leaves
/// the transaction usable).
async fn write_row(conn: &mut Conn, row: &TenantRow, upsert: bool) -> Result<bool, StoreError> {
    let text = if upsert {
        "INSERT INTO tenants (id, name, email, plan, status, source, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, \
         plan = excluded.plan, status = excluded.status, source = excluded.source, \
         spec = excluded.spec, updated_at = excluded.updated_at"
    } else {
        "INSERT INTO tenants (id, name, email, plan, status, source, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING"
    };
    let written = conn
        .execute(
            sql(text)
                .bind(&row.id)
                .bind(&row.name)
                .bind(row.email.as_deref())
                .bind(&row.plan)
                .bind(row.status.as_str())
                .bind(&row.source)
                .bind(spec_json(&row.spec)?)
                .bind(&row.created_at)
                .bind(&row.updated_at),
        )
        .await?;
    Ok(written == 1)
}

/// What the request path reads of every tenant: the spec's parts as
/// SQLite's `json_extract` gives them (JSON text for arrays and objects,
/// the value for strings, NULL when absent or JSON null), which the
/// PostgreSQL text reproduces.
fn directory_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "SELECT id, status, json_extract(spec, '$.security.allowed_ips'), \
             json_extract(spec, '$.oidc.issuer'), json_extract(spec, '$.oidc.client_id'), plan, \
             json_extract(spec, '$.limits'), json_extract(spec, '$.quotas'), \
             json_extract(spec, '$.storage'), json_extract(spec, '$.moving_until_ms'), \
             coalesce(json_extract(spec, '$.security.header_access'), 0) FROM tenants \
             WHERE ($1 IS NULL OR id = $1)"
        }
        Dialect::Postgres => {
            "SELECT id, status, \
             nullif(spec::jsonb #> '{security,allowed_ips}', 'null'::jsonb)::text, \
             spec::jsonb #>> '{oidc,issuer}', spec::jsonb #>> '{oidc,client_id}', plan, \
             nullif(spec::jsonb -> 'limits', 'null'::jsonb)::text, \
             nullif(spec::jsonb -> 'quotas', 'null'::jsonb)::text, \
             nullif(spec::jsonb -> 'storage', 'null'::jsonb)::text, \
             (spec::jsonb ->> 'moving_until_ms')::bigint, \
             coalesce((spec::jsonb #>> '{security,header_access}')::boolean, false)::int::bigint \
             FROM tenants WHERE ($1::text IS NULL OR id = $1)"
        }
    }
}

/// A JSON part of the spec (`None` when absent).
fn json_part<T: serde::de::DeserializeOwned>(
    row: &Row,
    index: usize,
    what: &str,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| serde_json::from_str(&text).map_err(|_| corrupt(what)))
        .transpose()
}

fn decode_directory(row: &Row) -> Result<DirectoryRow, StoreError> {
    let id: String = row.get(0)?;
    let status: String = row.get(1)?;
    let issuer: Option<String> = row.get(3)?;
    let client_id: Option<String> = row.get(4)?;
    Ok(DirectoryRow {
        id: TenantId::new(&id).map_err(|_| corrupt("id"))?,
        status: TenantState::parse(&status).ok_or_else(|| corrupt("status"))?,
        allowed_ips: json_part(row, 2, "allowed_ips")?.unwrap_or_default(),
        oidc: issuer.zip(client_id),
        plan: row.get(5)?,
        limits: json_part(row, 6, "limits")?.unwrap_or_default(),
        quotas: json_part(row, 7, "quotas")?.unwrap_or_default(),
        storage: json_part(row, 8, "storage")?.flatten(),
        moving_until_ms: row.get(9)?,
        header_access: row.get::<i64>(10)? != 0,
    })
}

#[async_trait]
impl TenantRepo for Db {
    async fn insert_tenant(
        &self,
        row: &TenantRow,
        first_key: Option<&KeyInsert>,
    ) -> Result<Inserted, StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        if is_retired(&mut conn, &row.id).await? {
            return Ok(Inserted::Retired);
        }
        if let Some(oidc) = &row.spec.oidc
            && oidc::holder(
                &row.id,
                &PairKey::of(oidc),
                &oidc_bindings(&mut conn).await?,
                false,
            )
            .is_some()
        {
            return Ok(Inserted::OidcTaken);
        }
        // ON CONFLICT DO NOTHING: a taken id (also one inserted by a
        // concurrent transaction, once it commits) is a Conflict, not an
        // aborted transaction.
        if !write_row(&mut conn, row, false).await? {
            return Err(StoreError::Conflict(
                format!("tenant {} already exists", row.id).into(),
            ));
        }
        let key = match first_key {
            Some(key) => Some(insert_key_row(&mut conn, &row.id, key, self.now()).await?),
            None => None,
        };
        conn.commit().await?;
        Ok(Inserted::Created(key.map(Box::new)))
    }

    async fn upsert_static_tenants(&self, rows: &[TenantRow]) -> Result<(), StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        let mut retired = Vec::new();
        for row in rows {
            if is_retired(&mut conn, &row.id).await? {
                retired.push(row.id.to_string());
            }
        }
        if !retired.is_empty() {
            return Err(StoreError::Conflict(
                super::statics::retired(&retired).into(),
            ));
        }
        let clashes = oidc::static_clashes(rows, &oidc_bindings(&mut conn).await?);
        if !clashes.is_empty() {
            return Err(StoreError::Conflict(clashes.join("; ").into()));
        }
        for row in rows {
            // The upsert never changes created_at: a tenant seen before
            // keeps its original creation time.
            write_row(&mut conn, row, true).await?;
        }
        conn.commit().await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError> {
        let row = self
            .admin_read()
            .await?
            .fetch_optional(
                Sql::owned(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1")).bind(id),
            )
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<TenantRow>, StoreError> {
        let rows = self
            .admin_read()
            .await?
            .fetch_all(
                Sql::owned(format!(
                    "SELECT {COLUMNS} FROM tenants WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR plan = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR id COLLATE \"C\" > $3) \
                     ORDER BY id COLLATE \"C\" LIMIT $4"
                ))
                .bind(filter.status.map(TenantState::as_str))
                .bind(filter.plan.as_deref())
                .bind(filter.after.as_ref().map(TenantId::as_str))
                .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX)),
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn update_tenant(&self, row: &TenantRow) -> Result<bool, StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        let want = row.spec.oidc.as_ref().map(PairKey::of);
        refuse_taken_oidc(&mut conn, &row.id, want.as_ref(), true).await?;
        let changed = conn
            .execute(
                sql(
                    "UPDATE tenants SET name = $2, email = $3, plan = $4, status = $5, \
                     spec = $6, updated_at = $7 WHERE id = $1",
                )
                .bind(&row.id)
                .bind(&row.name)
                .bind(row.email.as_deref())
                .bind(&row.plan)
                .bind(row.status.as_str())
                .bind(spec_json(&row.spec)?)
                .bind(&row.updated_at),
            )
            .await?;
        conn.commit().await?;
        Ok(changed == 1)
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<Option<DeletedCounts>, StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        let lock = conn.dialect().lock_rows();
        let exists: Option<i32> = conn
            .scalar_optional(
                Sql::owned(format!("SELECT 1 FROM tenants WHERE id = $1{lock}")).bind(id),
            )
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let by_tenant = |text: &'static str| sql(text).bind(id);
        if conn.dialect() == Dialect::Sqlite {
            // SQLite's search index is an FTS5 table of its own (on
            // PostgreSQL the search column goes with its row).
            conn.execute(by_tenant(
                "DELETE FROM records_fts WHERE rowid IN \
                 (SELECT seq FROM records WHERE tenant_id = $1)",
            ))
            .await?;
        }
        // PostgreSQL's records trigger keeps tenant_stats exact (down to
        // zero).
        let records = conn
            .execute(by_tenant("DELETE FROM records WHERE tenant_id = $1"))
            .await?;
        let detection_jobs = conn
            .execute(by_tenant("DELETE FROM detection_jobs WHERE tenant_id = $1"))
            .await?;
        conn.execute(by_tenant("DELETE FROM job_turns WHERE tenant_id = $1"))
            .await?;
        // Keys locked in the order touch_keys locks them (see there).
        conn.execute(
            Sql::owned(format!(
                "SELECT 1 FROM api_keys WHERE tenant_id = $1 ORDER BY id COLLATE \"C\"{lock}"
            ))
            .bind(id),
        )
        .await?;
        let api_keys = conn
            .execute(by_tenant("DELETE FROM api_keys WHERE tenant_id = $1"))
            .await?;
        conn.execute(by_tenant("DELETE FROM tenants WHERE id = $1"))
            .await?;
        // Usage, audit events and billing events are kept (audit events
        // cannot be deleted at all); the id is retired so no new tenant
        // inherits them.
        conn.execute(
            sql(
                "INSERT INTO deleted_tenants (id, deleted_at) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
            )
            .bind(id)
            .bind(self.now()),
        )
        .await?;
        conn.commit().await?;
        Ok(Some(DeletedCounts {
            records,
            detection_jobs,
            api_keys,
        }))
    }

    async fn registry_version(&self) -> Result<i64, StoreError> {
        self.admin_read()
            .await?
            .scalar(sql(
                "SELECT version FROM registry_version WHERE only_row = 1",
            ))
            .await
    }

    async fn retired_count(&self) -> Result<i64, StoreError> {
        self.admin_read()
            .await?
            .scalar(sql("SELECT count(*) FROM deleted_tenants"))
            .await
    }

    async fn load_directory(&self, id: Option<&TenantId>) -> Result<Vec<DirectoryRow>, StoreError> {
        let mut conn = self.admin_read().await?;
        let text = directory_sql(conn.dialect());
        let rows = conn
            .fetch_all(sql(text).bind(id.map(TenantId::as_str)))
            .await?;
        rows.iter().map(decode_directory).collect()
    }
}
