//! [`KeyRepo`] on [`Db`], one implementation for both engines.
//!
//! Keys are administrative rows: every statement runs on the
//! administrative path ([`Db::admin_write`], [`Db::admin_read`]) and names
//! its tenant explicitly.
//!
//! Locking: every transaction that changes keys first takes the registry
//! lock ([`crate::tenants::lock_registry`]), the one lock order of all
//! registry writers, so they cannot deadlock on the `registry_version` row
//! their PostgreSQL triggers bump (on SQLite the write transaction's
//! `BEGIN IMMEDIATE` is that lock). Issuing a key then locks the tenant
//! row, so the `max_api_keys` count and the insert see the same keys under
//! concurrency. Times are RFC 3339 text compared byte by byte
//! (`COLLATE "C"`), whatever the database's collation.

use async_trait::async_trait;
use tenancy::{KeyHash, TenantId};

use super::{ApiKeyInfo, KeyInsert, KeyRepo, KeyRow};
use crate::clock::parse_ms;
use crate::limits::QuotaExceeded;
use crate::store::{Conn, Db, Row, Sql, StoreError, sql};
use crate::tenants::lock_registry;
use crate::tenants::model::Limits;

/// Live keys of a tenant (`$1`): not revoked and not expired at `$2`.
const LIVE_KEYS: &str = "SELECT count(*) FROM api_keys WHERE tenant_id = $1 \
     AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $2) \
     AND (expires_at IS NULL OR expires_at COLLATE \"C\" > $2)";

fn live_keys(tenant: &TenantId, now: String) -> Sql {
    sql(LIVE_KEYS).bind(tenant).bind(now)
}

fn decode_limits(text: Option<String>) -> Result<Limits, StoreError> {
    match text {
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("limits")),
        None => Ok(Limits::default()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt api_keys row: {what}").into())
}

fn decode_info(row: &Row) -> Result<ApiKeyInfo, StoreError> {
    let tenant: String = row.get(0)?;
    let scopes: String = row.get(4)?;
    Ok(ApiKeyInfo {
        tenant_id: TenantId::new(&tenant).map_err(|_| corrupt("tenant_id"))?,
        id: row.get(1)?,
        name: row.get(2)?,
        prefix: row.get(3)?,
        scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        last_used_at: row.get(8)?,
        limits: decode_limits(row.get(9)?)?,
    })
}

fn decode_key(row: &Row) -> Result<KeyRow, StoreError> {
    let tenant: String = row.get(0)?;
    let hash: Vec<u8> = row.get(2)?;
    let scopes: String = row.get(3)?;
    let expires: Option<String> = row.get(4)?;
    let revoked: Option<String> = row.get(5)?;
    Ok(KeyRow {
        tenant_id: TenantId::new(&tenant).map_err(|_| corrupt("tenant_id"))?,
        id: row.get(1)?,
        hash: KeyHash(hash.try_into().map_err(|_| corrupt("hash"))?),
        scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
        expires_ms: expires.as_deref().and_then(parse_ms),
        revoked_ms: revoked.as_deref().and_then(parse_ms),
        limits: decode_limits(row.get(6)?)?,
    })
}

/// Inserts `key` for `tenant`, created at `now`, inside the caller's
/// write transaction (which holds the registry lock): issuing, rotating,
/// and a new tenant's first key. A taken id or hash is
/// [`StoreError::Conflict`] and aborts the transaction.
pub(crate) async fn insert_key_row(
    conn: &mut Conn,
    tenant: &TenantId,
    key: &KeyInsert,
    now: String,
) -> Result<ApiKeyInfo, StoreError> {
    let scopes = serde_json::to_string(&key.scopes)
        .map_err(|e| StoreError::Internal(e.to_string().into()))?;
    let limits = if key.limits.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&key.limits)
                .map_err(|e| StoreError::Internal(e.to_string().into()))?,
        )
    };
    conn.execute(
        sql(
            "INSERT INTO api_keys (tenant_id, id, name, prefix, hash, scopes, created_at, \
             expires_at, limits) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.hash.0[..])
        .bind(scopes)
        .bind(&now)
        .bind(key.expires_at.as_deref())
        .bind(limits),
    )
    .await?;
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
impl KeyRepo for Db {
    async fn insert_key(
        &self,
        tenant: &TenantId,
        key: &KeyInsert,
        max_live: Option<u64>,
    ) -> Result<Option<ApiKeyInfo>, StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        // The tenant row stays locked to the end: a concurrent delete
        // waits, and the count below is the one the insert commits with.
        let exists: Option<i32> = conn
            .scalar_optional(
                Sql::owned(format!(
                    "SELECT 1 FROM tenants WHERE id = $1{}",
                    conn.dialect().lock_rows()
                ))
                .bind(tenant),
            )
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        if let Some(limit) = max_live {
            let live: i64 = conn.scalar(live_keys(tenant, self.now())).await?;
            if u64::try_from(live).unwrap_or(0) >= limit {
                return Err(StoreError::QuotaExceeded(QuotaExceeded {
                    quota: "max_api_keys",
                    limit,
                }));
            }
        }
        let info = insert_key_row(&mut conn, tenant, key, self.now()).await?;
        conn.commit().await?;
        Ok(Some(info))
    }

    async fn list_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = self
            .admin_read()
            .await?
            .fetch_all(
                sql(
                    "SELECT tenant_id, id, name, prefix, scopes, created_at, expires_at, \
                     revoked_at, last_used_at, limits FROM api_keys WHERE tenant_id = $1 \
                     AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $2) \
                     ORDER BY id COLLATE \"C\"",
                )
                .bind(tenant)
                .bind(self.now()),
            )
            .await?;
        rows.iter().map(decode_info).collect()
    }

    async fn count_live_keys(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let n: i64 = self
            .admin_read()
            .await?
            .scalar(live_keys(tenant, self.now()))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn revoke_key(&self, tenant: &TenantId, id: &str, at: &str) -> Result<bool, StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        let done = conn
            .execute(
                sql(
                    "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 \
                     AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $3)",
                )
                .bind(tenant)
                .bind(id)
                .bind(at),
            )
            .await?;
        // Nothing changed: the key is absent, or already revoked at or
        // before `at` (still "found" while that time is ahead).
        let exists = done > 0
            || conn
                .scalar_optional::<i32>(
                    sql("SELECT 1 FROM api_keys WHERE tenant_id = $1 AND id = $2 \
                         AND revoked_at COLLATE \"C\" > $3")
                    .bind(tenant)
                    .bind(id)
                    .bind(self.now()),
                )
                .await?
                .is_some();
        conn.commit().await?;
        Ok(exists)
    }

    async fn rotate_key(
        &self,
        tenant: &TenantId,
        old_id: &str,
        old_until: &str,
        new: &KeyInsert,
    ) -> Result<Option<ApiKeyInfo>, StoreError> {
        let mut conn = self.admin_write().await?;
        lock_registry(&mut conn).await?;
        // The earlier of the two ends: rotating a key already inside a
        // grace period never extends it (a CASE, which both engines spell
        // alike, where they name the two-argument minimum differently).
        let changed = conn
            .execute(
                sql(
                    "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NOT NULL \
                     AND revoked_at COLLATE \"C\" < $3 THEN revoked_at ELSE $3 END \
                     WHERE tenant_id = $1 AND id = $2 \
                     AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $4)",
                )
                .bind(tenant)
                .bind(old_id)
                .bind(old_until)
                .bind(self.now()),
            )
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        let info = insert_key_row(&mut conn, tenant, new, self.now()).await?;
        conn.commit().await?;
        Ok(Some(info))
    }

    async fn load_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRow>, StoreError> {
        let rows = self
            .admin_read()
            .await?
            .fetch_all(
                sql(
                    "SELECT tenant_id, id, hash, scopes, expires_at, revoked_at, limits \
                     FROM api_keys WHERE (CAST($1 AS TEXT) IS NULL OR tenant_id = $1) \
                     AND (revoked_at IS NULL OR revoked_at COLLATE \"C\" > $2)",
                )
                .bind(tenant.map(TenantId::as_str))
                .bind(self.now()),
            )
            .await?;
        rows.iter().map(decode_key).collect()
    }

    async fn touch_keys(&self, uses: &[(TenantId, String, String)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // `last_used_at` fires no registry trigger, so no registry lock;
        // rows are locked in (tenant, id) byte order, the order
        // `delete_tenant` locks a tenant's keys in, so two writers of the
        // same keys cannot deadlock on PostgreSQL.
        let mut batch: Vec<&(TenantId, String, String)> = uses.iter().collect();
        batch.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        let mut conn = self.admin_write().await?;
        for (tenant, id, at) in batch {
            conn.execute(
                sql(
                    "UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2 \
                     AND (last_used_at IS NULL OR last_used_at COLLATE \"C\" < $3)",
                )
                .bind(tenant)
                .bind(id)
                .bind(at),
            )
            .await?;
        }
        // Called from the registry's background flush, outside any
        // request: there is no audit event to park.
        conn.commit().await
    }
}
