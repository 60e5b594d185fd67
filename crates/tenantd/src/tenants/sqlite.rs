//! [`TenantRepo`] for SQLite.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tenancy::TenantId;

use super::model::{TenantRow, TenantSpec, TenantState};
use super::oidc::{self, PairKey};
use super::{DeletedCounts, DirectoryRow, Inserted, TenantFilter, TenantRepo};
use crate::keys::KeyInsert;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError};

const COLUMNS: &str = "id, name, email, plan, status, source, spec, created_at, updated_at";

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt tenants row: {what}"))
}

fn decode(row: &SqliteRow) -> Result<TenantRow, StoreError> {
    let id: String = row.try_get(0).map_err(map_sqlx)?;
    let status: String = row.try_get(4).map_err(map_sqlx)?;
    let spec: String = row.try_get(6).map_err(map_sqlx)?;
    Ok(TenantRow {
        id: TenantId::new(&id).map_err(|_| corrupt("id"))?,
        name: row.try_get(1).map_err(map_sqlx)?,
        email: row.try_get(2).map_err(map_sqlx)?,
        plan: row.try_get(3).map_err(map_sqlx)?,
        status: TenantState::parse(&status).ok_or_else(|| corrupt("status"))?,
        source: row.try_get(5).map_err(map_sqlx)?,
        spec: serde_json::from_str::<TenantSpec>(&spec).map_err(|_| corrupt("spec"))?,
        created_at: row.try_get(7).map_err(map_sqlx)?,
        updated_at: row.try_get(8).map_err(map_sqlx)?,
    })
}

fn spec_json(spec: &TenantSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Internal(e.to_string()))
}

async fn write_row(
    conn: &mut sqlx::SqliteConnection,
    row: &TenantRow,
    upsert: bool,
) -> Result<(), StoreError> {
    let sql = if upsert {
        "INSERT INTO tenants (id, name, email, plan, status, source, spec, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, \
         plan = excluded.plan, status = excluded.status, source = excluded.source, \
         spec = excluded.spec, updated_at = excluded.updated_at"
    } else {
        "INSERT INTO tenants (id, name, email, plan, status, source, spec, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    };
    sqlx::query(sql)
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
        .map_err(map_sqlx)?;
    Ok(())
}

/// Whether `id` belonged to a deleted tenant (its audit trail and usage
/// are kept, so the id is never given out again). Every path that makes a
/// tenant row (create, static configuration, import) asks this inside the
/// transaction that writes the row.
pub(crate) async fn sqlite_is_retired(
    conn: &mut sqlx::SqliteConnection,
    id: &TenantId,
) -> Result<bool, StoreError> {
    let deleted: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deleted_tenants WHERE id = ?1")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    Ok(deleted.is_some())
}

/// Every stored OIDC binding. Called inside a write transaction
/// (`BEGIN IMMEDIATE`: the only writer), so no binding can be added between
/// this read and the caller's write.
async fn oidc_bindings(conn: &mut sqlx::SqliteConnection) -> Result<Vec<oidc::Stored>, StoreError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, json_extract(spec, '$.oidc.issuer'), json_extract(spec, '$.oidc.client_id') \
         FROM tenants WHERE json_extract(spec, '$.oidc.issuer') IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    rows.into_iter()
        .map(|(id, issuer, client)| {
            let id = TenantId::new(&id).map_err(|_| corrupt("id"))?;
            Ok((id, issuer, client.unwrap_or_default()))
        })
        .collect()
}

/// Refuses ([`StoreError::Conflict`] with [`oidc::TAKEN`]) writing `want`
/// as `me`'s binding when another tenant holds it; see [`oidc::holder`]
/// for `keep_own`. Call inside the write transaction that writes it.
pub(crate) async fn sqlite_refuse_taken_oidc(
    conn: &mut sqlx::SqliteConnection,
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

#[async_trait]
impl TenantRepo for SqliteStore {
    async fn insert_tenant(
        &self,
        row: &TenantRow,
        first_key: Option<&KeyInsert>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.write_tx().await?;
        if sqlite_is_retired(&mut tx, &row.id).await? {
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
        write_row(&mut tx, row, false).await?;
        let key = match first_key {
            Some(key) => Some(crate::keys::sqlite_insert(&mut tx, &row.id, key).await?),
            None => None,
        };
        self.commit(tx).await?;
        Ok(Inserted::Created(key.map(Box::new)))
    }

    async fn upsert_static_tenants(&self, rows: &[TenantRow]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let mut retired = Vec::new();
        for row in rows {
            if sqlite_is_retired(&mut tx, &row.id).await? {
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
            // Keep the original creation time of a tenant seen before.
            let created: Option<String> =
                sqlx::query_scalar("SELECT created_at FROM tenants WHERE id = ?1")
                    .bind(row.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            let mut row = row.clone();
            if let Some(created) = created {
                row.created_at = created;
            }
            write_row(&mut tx, &row, true).await?;
        }
        self.commit(tx).await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<TenantRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tenants WHERE (?1 IS NULL OR status = ?1) \
             AND (?2 IS NULL OR plan = ?2) AND (?3 IS NULL OR id > ?3) ORDER BY id LIMIT ?4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(TenantState::as_str))
            .bind(filter.plan.as_deref())
            .bind(filter.after.as_ref().map(TenantId::as_str))
            .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(decode).collect()
    }

    async fn update_tenant(&self, row: &TenantRow) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let want = row.spec.oidc.as_ref().map(PairKey::of);
        sqlite_refuse_taken_oidc(&mut tx, &row.id, want.as_ref(), true).await?;
        let changed = sqlx::query(
            "UPDATE tenants SET name = ?2, email = ?3, plan = ?4, status = ?5, spec = ?6, \
             updated_at = ?7 WHERE id = ?1",
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
        .map_err(map_sqlx)?
        .rows_affected();
        self.commit(tx).await?;
        Ok(changed == 1)
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<Option<DeletedCounts>, StoreError> {
        let tenant = id.as_str();
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if exists.is_none() {
            return Ok(None);
        }
        let run = |sql: &'static str| sqlx::query(sql).bind(tenant);
        run(
            "DELETE FROM records_fts WHERE rowid IN (SELECT seq FROM records WHERE tenant_id = ?1)",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let records = run("DELETE FROM records WHERE tenant_id = ?1")
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        let jobs = run("DELETE FROM detection_jobs WHERE tenant_id = ?1")
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        run("DELETE FROM job_turns WHERE tenant_id = ?1")
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        let api_keys = run("DELETE FROM api_keys WHERE tenant_id = ?1")
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        run("DELETE FROM tenants WHERE id = ?1")
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        sqlx::query("INSERT OR REPLACE INTO deleted_tenants (id, deleted_at) VALUES (?1, ?2)")
            .bind(tenant)
            .bind(crate::clock::now_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        self.commit(tx).await?;
        Ok(Some(DeletedCounts {
            records,
            detection_jobs: jobs,
            api_keys,
        }))
    }

    async fn registry_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT version FROM registry_version WHERE only_row = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)
    }

    async fn retired_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM deleted_tenants")
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)
    }

    async fn load_directory(&self, id: Option<&TenantId>) -> Result<Vec<DirectoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, status, json_extract(spec, '$.security.allowed_ips'), \
             json_extract(spec, '$.oidc.issuer'), json_extract(spec, '$.oidc.client_id'), plan, \
             json_extract(spec, '$.limits'), json_extract(spec, '$.quotas'), \
             json_extract(spec, '$.storage'), json_extract(spec, '$.moving_until_ms'), \
             coalesce(json_extract(spec, '$.security.header_access'), 0) FROM tenants \
             WHERE (?1 IS NULL OR id = ?1)",
        )
        .bind(id.map(TenantId::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0).map_err(map_sqlx)?;
            let status: String = row.try_get(1).map_err(map_sqlx)?;
            let ips: Option<String> = row.try_get(2).map_err(map_sqlx)?;
            let allowed_ips: Vec<String> = match ips {
                Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("allowed_ips"))?,
                None => Vec::new(),
            };
            let issuer: Option<String> = row.try_get(3).map_err(map_sqlx)?;
            let client_id: Option<String> = row.try_get(4).map_err(map_sqlx)?;
            let limits: Option<String> = row.try_get(6).map_err(map_sqlx)?;
            let quotas: Option<String> = row.try_get(7).map_err(map_sqlx)?;
            let storage: Option<String> = row.try_get(8).map_err(map_sqlx)?;
            out.push(DirectoryRow {
                storage: match storage {
                    Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("storage"))?,
                    None => None,
                },
                moving_until_ms: row.try_get(9).map_err(map_sqlx)?,
                header_access: row.try_get::<i64, _>(10).map_err(map_sqlx)? != 0,
                id: TenantId::new(&id).map_err(|_| corrupt("id"))?,
                status: TenantState::parse(&status).ok_or_else(|| corrupt("status"))?,
                allowed_ips,
                oidc: issuer.zip(client_id),
                plan: row.try_get(5).map_err(map_sqlx)?,
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
