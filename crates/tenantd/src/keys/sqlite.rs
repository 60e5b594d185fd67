//! [`KeyRepo`] for SQLite.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tenancy::{KeyHash, TenantId};

use super::{ApiKeyInfo, KeyInsert, KeyRepo, KeyRow};
use crate::clock::{now_rfc3339, parse_ms};
use crate::limits::QuotaExceeded;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError};
use crate::tenants::model::Limits;

/// Live keys of a tenant: not revoked and not expired at `?2`.
const LIVE_KEYS: &str = "SELECT count(*) FROM api_keys WHERE tenant_id = ?1 \
     AND (revoked_at IS NULL OR revoked_at > ?2) AND (expires_at IS NULL OR expires_at > ?2)";

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

fn decode_info(row: &SqliteRow) -> Result<ApiKeyInfo, StoreError> {
    let tenant: String = row.try_get(0).map_err(map_sqlx)?;
    let scopes: String = row.try_get(4).map_err(map_sqlx)?;
    Ok(ApiKeyInfo {
        tenant_id: TenantId::new(&tenant).map_err(|_| corrupt("tenant_id"))?,
        id: row.try_get(1).map_err(map_sqlx)?,
        name: row.try_get(2).map_err(map_sqlx)?,
        prefix: row.try_get(3).map_err(map_sqlx)?,
        scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
        created_at: row.try_get(5).map_err(map_sqlx)?,
        expires_at: row.try_get(6).map_err(map_sqlx)?,
        revoked_at: row.try_get(7).map_err(map_sqlx)?,
        last_used_at: row.try_get(8).map_err(map_sqlx)?,
        limits: decode_limits(row.try_get(9).map_err(map_sqlx)?)?,
    })
}

pub(crate) async fn sqlite_insert(
    conn: &mut sqlx::SqliteConnection,
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
    .map_err(map_sqlx)?;
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
impl KeyRepo for SqliteStore {
    async fn insert_key(
        &self,
        tenant: &TenantId,
        key: &KeyInsert,
        max_live: Option<u64>,
    ) -> Result<Option<ApiKeyInfo>, StoreError> {
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if exists.is_none() {
            return Ok(None);
        }
        if let Some(limit) = max_live {
            let live: i64 = sqlx::query_scalar(LIVE_KEYS)
                .bind(tenant.as_str())
                .bind(now_rfc3339())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            if u64::try_from(live).unwrap_or(0) >= limit {
                return Err(StoreError::QuotaExceeded(QuotaExceeded {
                    quota: "max_api_keys",
                    limit,
                }));
            }
        }
        let info = sqlite_insert(&mut tx, tenant, key).await?;
        self.commit(tx).await?;
        Ok(Some(info))
    }

    async fn list_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let sql = format!(
            "SELECT {INFO} FROM api_keys WHERE tenant_id = ?1 \
             AND (revoked_at IS NULL OR revoked_at > ?2) ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(now_rfc3339())
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(decode_info).collect()
    }

    async fn count_live_keys(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let now = now_rfc3339();
        let n: i64 = sqlx::query_scalar(LIVE_KEYS)
            .bind(tenant.as_str())
            .bind(&now)
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn revoke_key(&self, tenant: &TenantId, id: &str, at: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?3 WHERE tenant_id = ?1 AND id = ?2 \
             AND (revoked_at IS NULL OR revoked_at > ?3)",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        let exists = if done == 0 {
            sqlx::query_scalar::<_, i64>(
                "SELECT 1 FROM api_keys WHERE tenant_id = ?1 AND id = ?2 AND revoked_at > ?3",
            )
            .bind(tenant.as_str())
            .bind(id)
            .bind(now_rfc3339())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .is_some()
        } else {
            true
        };
        self.commit(tx).await?;
        Ok(exists)
    }

    async fn rotate_key(
        &self,
        tenant: &TenantId,
        old_id: &str,
        old_until: &str,
        new: &KeyInsert,
    ) -> Result<Option<ApiKeyInfo>, StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            // min(): rotating a key already inside a grace period never
            // extends it.
            "UPDATE api_keys SET revoked_at = min(coalesce(revoked_at, ?3), ?3) \
             WHERE tenant_id = ?1 AND id = ?2 AND (revoked_at IS NULL OR revoked_at > ?4)",
        )
        .bind(tenant.as_str())
        .bind(old_id)
        .bind(old_until)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        let info = sqlite_insert(&mut tx, tenant, new).await?;
        self.commit(tx).await?;
        Ok(Some(info))
    }

    async fn load_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRow>, StoreError> {
        let now = now_rfc3339();
        let rows = sqlx::query(
            "SELECT tenant_id, id, hash, scopes, expires_at, revoked_at, limits FROM api_keys \
             WHERE (?1 IS NULL OR tenant_id = ?1) AND (revoked_at IS NULL OR revoked_at > ?2)",
        )
        .bind(tenant.map(TenantId::as_str))
        .bind(&now)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let tenant: String = row.try_get(0).map_err(map_sqlx)?;
            let hash: Vec<u8> = row.try_get(2).map_err(map_sqlx)?;
            let scopes: String = row.try_get(3).map_err(map_sqlx)?;
            let expires: Option<String> = row.try_get(4).map_err(map_sqlx)?;
            let revoked: Option<String> = row.try_get(5).map_err(map_sqlx)?;
            out.push(KeyRow {
                tenant_id: TenantId::new(&tenant).map_err(|_| corrupt("tenant_id"))?,
                id: row.try_get(1).map_err(map_sqlx)?,
                hash: KeyHash(hash.try_into().map_err(|_| corrupt("hash"))?),
                scopes: serde_json::from_str(&scopes).map_err(|_| corrupt("scopes"))?,
                expires_ms: expires.as_deref().and_then(parse_ms),
                revoked_ms: revoked.as_deref().and_then(parse_ms),
                limits: decode_limits(row.try_get(6).map_err(map_sqlx)?)?,
            });
        }
        Ok(out)
    }

    async fn touch_keys(&self, uses: &[(TenantId, String, String)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (tenant, id, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = ?3 WHERE tenant_id = ?1 AND id = ?2 \
                 AND (last_used_at IS NULL OR last_used_at < ?3)",
            )
            .bind(tenant.as_str())
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(())
    }
}
