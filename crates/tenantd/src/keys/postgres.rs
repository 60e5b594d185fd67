//! [`KeyRepo`] for PostgreSQL.
//!
//! Keys are administrative rows: every statement runs on the admin role's
//! pool ([`PgStore::admin_pool`]) and names its tenant explicitly.
//!
//! Locking: every transaction that changes keys first takes the registry
//! lock ([`crate::tenants::pg_lock_registry`]), the one lock order of all
//! registry writers, so they cannot deadlock on the `registry_version` row
//! their triggers bump. Issuing a key then locks the tenant row
//! (`FOR UPDATE`), so the `max_api_keys` count and the insert see the same
//! keys under concurrency. Times are RFC 3339 text compared byte by byte
//! (`COLLATE "C"`), as SQLite does, whatever the database's collation.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tenancy::{KeyHash, TenantId};

use super::{ApiKeyInfo, KeyInsert, KeyRepo, KeyRow};
use crate::clock::{now_rfc3339, parse_ms};
use crate::limits::QuotaExceeded;
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError};
use crate::tenants::model::Limits;
use crate::tenants::pg_lock_registry;

/// Live keys of a tenant: not revoked and not expired at `$2`.
const LIVE_KEYS: &str = "SELECT count(*) FROM api_keys WHERE tenant_id = $1 \
     AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $2) \
     AND (expires_at IS NULL OR expires_at COLLATE \"C\" > $2)";

const INFO: &str =
    "tenant_id, id, name, prefix, scopes, created_at, expires_at, revoked_at, last_used_at, limits";

fn decode_limits(text: Option<String>) -> Result<Limits, StoreError> {
    match text {
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("limits")),
        None => Ok(Limits::default()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt api_keys row: {what}"))
}

fn decode_info(row: &PgRow) -> Result<ApiKeyInfo, StoreError> {
    let tenant: String = row.try_get(0).map_err(map_pg)?;
    let scopes: String = row.try_get(4).map_err(map_pg)?;
    Ok(ApiKeyInfo {
        tenant_id: TenantId::new(&tenant).map_err(|_| corrupt("tenant_id"))?,
        id: row.try_get(1).map_err(map_pg)?,
        name: row.try_get(2).map_err(map_pg)?,
        prefix: row.try_get(3).map_err(map_pg)?,
        scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
        created_at: row.try_get(5).map_err(map_pg)?,
        expires_at: row.try_get(6).map_err(map_pg)?,
        revoked_at: row.try_get(7).map_err(map_pg)?,
        last_used_at: row.try_get(8).map_err(map_pg)?,
        limits: decode_limits(row.try_get(9).map_err(map_pg)?)?,
    })
}

/// Inserts `key` for `tenant` inside the caller's transaction (which holds
/// the registry lock); a taken id or hash is [`StoreError::Conflict`] and
/// aborts the transaction.
pub(crate) async fn pg_insert(
    conn: &mut PgConnection,
    tenant: &TenantId,
    key: &KeyInsert,
) -> Result<ApiKeyInfo, StoreError> {
    let now = now_rfc3339();
    let scopes =
        serde_json::to_string(&key.scopes).map_err(|e| StoreError::Internal(e.to_string()))?;
    let limits = if key.limits.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&key.limits).map_err(|e| StoreError::Internal(e.to_string()))?)
    };
    sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, name, prefix, hash, scopes, created_at, expires_at, limits) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant.as_str())
    .bind(&key.id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.hash.0[..])
    .bind(&scopes)
    .bind(&now)
    .bind(key.expires_at.as_deref())
    .bind(limits)
    .execute(&mut *conn)
    .await
    .map_err(map_pg)?;
    Ok(ApiKeyInfo {
        id: key.id.clone(),
        tenant_id: tenant.clone(),
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        scopes: key.scopes.clone(),
        created_at: now,
        expires_at: key.expires_at.clone(),
        revoked_at: None,
        last_used_at: None,
        limits: key.limits.clone(),
    })
}

#[async_trait]
impl KeyRepo for PgStore {
    async fn insert_key(
        &self,
        tenant: &TenantId,
        key: &KeyInsert,
        max_live: Option<u64>,
    ) -> Result<Option<ApiKeyInfo>, StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        // The tenant row stays locked to the end: a concurrent delete
        // waits, and the count below is the one the insert commits with.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_pg)?;
        if exists.is_none() {
            return Ok(None);
        }
        if let Some(limit) = max_live {
            let live: i64 = sqlx::query_scalar(LIVE_KEYS)
                .bind(tenant.as_str())
                .bind(now_rfc3339())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_pg)?;
            if u64::try_from(live).unwrap_or(0) >= limit {
                return Err(StoreError::QuotaExceeded(QuotaExceeded {
                    quota: "max_api_keys",
                    limit,
                }));
            }
        }
        let info = pg_insert(&mut tx, tenant, key).await?;
        self.commit(tx, None).await?;
        Ok(Some(info))
    }

    async fn list_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let sql = format!(
            "SELECT {INFO} FROM api_keys WHERE tenant_id = $1 \
             AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $2) ORDER BY id COLLATE \"C\""
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(now_rfc3339())
            .fetch_all(self.admin_pool())
            .await
            .map_err(map_pg)?;
        rows.iter().map(decode_info).collect()
    }

    async fn count_live_keys(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(LIVE_KEYS)
            .bind(tenant.as_str())
            .bind(now_rfc3339())
            .fetch_one(self.admin_pool())
            .await
            .map_err(map_pg)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn revoke_key(&self, tenant: &TenantId, id: &str, at: &str) -> Result<bool, StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 \
             AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $3)",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        let exists = if done == 0 {
            sqlx::query_scalar::<_, i32>(
                "SELECT 1 FROM api_keys WHERE tenant_id = $1 AND id = $2 \
                 AND revoked_at COLLATE \"C\" > $3",
            )
            .bind(tenant.as_str())
            .bind(id)
            .bind(now_rfc3339())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?
            .is_some()
        } else {
            true
        };
        self.commit(tx, None).await?;
        Ok(exists)
    }

    async fn rotate_key(
        &self,
        tenant: &TenantId,
        old_id: &str,
        old_until: &str,
        new: &KeyInsert,
    ) -> Result<Option<ApiKeyInfo>, StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        pg_lock_registry(&mut tx).await?;
        let changed = sqlx::query(
            // LEAST(): rotating a key already inside a grace period never
            // extends it.
            "UPDATE api_keys SET revoked_at = LEAST(coalesce(revoked_at, $3), $3 COLLATE \"C\") \
             WHERE tenant_id = $1 AND id = $2 \
             AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $4)",
        )
        .bind(tenant.as_str())
        .bind(old_id)
        .bind(old_until)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        let info = pg_insert(&mut tx, tenant, new).await?;
        self.commit(tx, None).await?;
        Ok(Some(info))
    }

    async fn load_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, id, hash, scopes, expires_at, revoked_at, limits FROM api_keys \
             WHERE ($1::text IS NULL OR tenant_id = $1) \
             AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $2)",
        )
        .bind(tenant.map(TenantId::as_str))
        .bind(now_rfc3339())
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let tenant: String = row.try_get(0).map_err(map_pg)?;
            let hash: Vec<u8> = row.try_get(2).map_err(map_pg)?;
            let scopes: String = row.try_get(3).map_err(map_pg)?;
            let expires: Option<String> = row.try_get(4).map_err(map_pg)?;
            let revoked: Option<String> = row.try_get(5).map_err(map_pg)?;
            out.push(KeyRow {
                tenant_id: TenantId::new(&tenant).map_err(|_| corrupt("tenant_id"))?,
                id: row.try_get(1).map_err(map_pg)?,
                hash: KeyHash(hash.try_into().map_err(|_| corrupt("hash"))?),
                scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
                expires_ms: expires.as_deref().and_then(parse_ms),
                revoked_ms: revoked.as_deref().and_then(parse_ms),
                limits: decode_limits(row.try_get(6).map_err(map_pg)?)?,
            });
        }
        Ok(out)
    }

    async fn touch_keys(&self, uses: &[(TenantId, String, String)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // `last_used_at` fires no registry trigger, so no registry lock;
        // rows are locked in (tenant, id) byte order, the order
        // `delete_tenant` locks a tenant's keys in, so two writers of the
        // same keys cannot deadlock.
        let mut batch: Vec<&(TenantId, String, String)> = uses.iter().collect();
        batch.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        for (tenant, id, at) in batch {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2 \
                 AND (last_used_at IS NULL OR last_used_at COLLATE \"C\" < $3)",
            )
            .bind(tenant.as_str())
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        }
        tx.commit().await.map_err(map_pg)?;
        Ok(())
    }
}
