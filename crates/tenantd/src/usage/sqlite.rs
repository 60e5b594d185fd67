//! [`UsageRepo`] for SQLite.

use async_trait::async_trait;
use sqlx::{Row, Sqlite, Transaction};
use tenancy::TenantId;

use super::{DayStats, UsageBatch, UsageRepo, as_i64, as_u64, merged_latency, parse_latency};
use crate::clock::{month_of_ms, now_ms};
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError};

const ADD_COUNTER: &str = "INSERT INTO usage_counters (tenant_id, month, metric, value) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (tenant_id, month, metric) DO UPDATE SET value = value + excluded.value";

/// Adds `by` to this month's `metric` of `tenant`, inside a write's own
/// transaction (the figure a quota reads is the figure billed).
pub(crate) async fn count_in_tx(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    metric: &str,
    by: u64,
) -> Result<(), StoreError> {
    sqlx::query(ADD_COUNTER)
        .bind(tenant.as_str())
        .bind(month_of_ms(now_ms()))
        .bind(metric)
        .bind(as_i64(by))
        .execute(&mut **tx)
        .await
        .map_err(map_sqlx)?;
    Ok(())
}

#[async_trait]
impl UsageRepo for SqliteStore {
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for (tenant, month, metric, n) in &batch.counters {
            sqlx::query(ADD_COUNTER)
                .bind(tenant.as_str())
                .bind(month)
                .bind(metric)
                .bind(as_i64(*n))
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
        for (tenant, day, stats) in &batch.days {
            let old: Option<String> = sqlx::query_scalar(
                "SELECT latency FROM usage_daily WHERE tenant_id = ?1 AND day = ?2",
            )
            .bind(tenant.as_str())
            .bind(day)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            let latency = merged_latency(old.as_deref(), &stats.latency)?;
            sqlx::query(
                "INSERT INTO usage_daily (tenant_id, day, requests, client_errors, server_errors, latency) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (tenant_id, day) DO UPDATE SET requests = requests + excluded.requests, \
                 client_errors = client_errors + excluded.client_errors, \
                 server_errors = server_errors + excluded.server_errors, latency = excluded.latency",
            )
            .bind(tenant.as_str())
            .bind(day)
            .bind(as_i64(stats.requests))
            .bind(as_i64(stats.client_errors))
            .bind(as_i64(stats.server_errors))
            .bind(latency)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn month_counters(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT metric, value FROM usage_counters WHERE tenant_id = ?1 AND month = ?2 ORDER BY metric",
        )
        .bind(tenant.as_str())
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(rows.into_iter().map(|(m, v)| (m, as_u64(v))).collect())
    }

    async fn current_size(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = ?1")
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
        Ok(row.map_or((0, 0), |(r, b)| (as_u64(r), as_u64(b))))
    }

    async fn daily(
        &self,
        tenant: &TenantId,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, DayStats)>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, requests, client_errors, server_errors, latency FROM usage_daily \
             WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day",
        )
        .bind(tenant.as_str())
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let latency: String = row.try_get(4).map_err(map_sqlx)?;
            out.push((
                row.try_get(0).map_err(map_sqlx)?,
                DayStats {
                    requests: as_u64(row.try_get(1).map_err(map_sqlx)?),
                    client_errors: as_u64(row.try_get(2).map_err(map_sqlx)?),
                    server_errors: as_u64(row.try_get(3).map_err(map_sqlx)?),
                    latency: parse_latency(&latency)?,
                },
            ));
        }
        Ok(out)
    }

    async fn tenants_with_usage(&self, month: &str) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT tenant_id FROM usage_counters WHERE month = ?1 ORDER BY tenant_id",
        )
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::new(&id).ok())
            .collect())
    }
}
