//! [`UsageRepo`] for PostgreSQL, and the counter helpers other features'
//! PostgreSQL transactions use ([`count_in_tx`]).
//!
//! **Isolation.** The repository is administrative (the recorder writes
//! many tenants at once, reports and billing read any tenant): it runs on
//! the admin role's pool ([`PgStore::admin_pool`]), with the tenant named
//! first in every statement that concerns one. The helpers run inside the
//! caller's transaction, a tenant transaction of the same tenant, so row
//! level security binds them.
//!
//! **Locking.** Writers run concurrently. A quota-limited counter is read
//! with its row locked until the write that adds to it
//! commits, so two writers cannot both pass the same last unit of quota. A
//! batch sums what it holds per row first, then touches the rows in one
//! order (tenant, then month and metric or day, byte order), so batches
//! written concurrently by several nodes cannot deadlock; a day's latency
//! histogram is merged from the row read under that lock, so no
//! concurrent merge is lost.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};
use tenancy::TenantId;

use super::{DayStats, UsageBatch, UsageRepo, as_i64, as_u64, merged_latency, parse_latency};
use crate::clock::{month_of_ms, now_ms};
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError};

/// Adds `$4` to counter (`$1`, `$2`, `$3`).
const ADD_COUNTER: &str = "INSERT INTO usage_counters AS u (tenant_id, month, metric, value) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (tenant_id, month, metric) DO UPDATE SET value = u.value + excluded.value";

/// Adds `by` to this month's `metric` of `tenant`, inside a write's own
/// transaction (the figure a quota reads is the figure billed). The
/// counter row stays locked until that transaction ends.
pub(crate) async fn count_in_tx(
    tx: &mut Transaction<'static, Postgres>,
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
        .map_err(map_pg)?;
    Ok(())
}

#[async_trait]
impl UsageRepo for PgStore {
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let counters = sum_counters(batch);
        let days = merge_days(batch);
        // Counters, then days, in one transaction.
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        if !counters.is_empty() {
            add_counters_in_tx(&mut tx, &counters).await?;
        }
        if !days.is_empty() {
            add_days_in_tx(&mut tx, &days).await?;
        }
        tx.commit().await.map_err(map_pg)
    }

    async fn month_counters(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT metric, value FROM usage_counters WHERE tenant_id = $1 AND month = $2 \
             ORDER BY metric COLLATE \"C\"",
        )
        .bind(tenant.as_str())
        .bind(month)
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        Ok(rows.into_iter().map(|(m, v)| (m, as_u64(v))).collect())
    }

    async fn current_size(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.admin_pool())
                .await
                .map_err(map_pg)?;
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
             WHERE tenant_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(tenant.as_str())
        .bind(start)
        .bind(end)
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let latency: String = row.try_get(4).map_err(map_pg)?;
            out.push((
                row.try_get(0).map_err(map_pg)?,
                DayStats {
                    requests: as_u64(row.try_get(1).map_err(map_pg)?),
                    client_errors: as_u64(row.try_get(2).map_err(map_pg)?),
                    server_errors: as_u64(row.try_get(3).map_err(map_pg)?),
                    latency: parse_latency(&latency)?,
                },
            ));
        }
        Ok(out)
    }

    async fn tenants_with_usage(&self, month: &str) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT tenant_id FROM usage_counters WHERE month = $1 \
             GROUP BY tenant_id ORDER BY tenant_id COLLATE \"C\"",
        )
        .bind(month)
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TenantId::new(&id).ok())
            .collect())
    }
}

/// The batch's counter increments summed per row, in byte order
/// (BTreeMap of &str): the order every batch locks rows in.
fn sum_counters(batch: &UsageBatch) -> BTreeMap<(&str, &str, &str), u64> {
    let mut counters: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (tenant, month, metric, n) in &batch.counters {
        let sum = counters
            .entry((tenant.as_str(), month.as_str(), metric.as_str()))
            .or_default();
        *sum = sum.saturating_add(*n);
    }
    counters
}

/// The batch's daily stats merged per (tenant, day), in byte order.
fn merge_days(batch: &UsageBatch) -> BTreeMap<(&str, &str), DayStats> {
    let mut days: BTreeMap<(&str, &str), DayStats> = BTreeMap::new();
    for (tenant, day, stats) in &batch.days {
        days.entry((tenant.as_str(), day.as_str()))
            .or_default()
            .merge(stats);
    }
    days
}

/// Adds the summed counters to `usage_counters` in one statement.
async fn add_counters_in_tx(
    tx: &mut Transaction<'static, Postgres>,
    counters: &BTreeMap<(&str, &str, &str), u64>,
) -> Result<(), StoreError> {
    let (mut tenants, mut months, mut metrics, mut values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((tenant, month, metric), n) in counters {
        tenants.push(*tenant);
        months.push(*month);
        metrics.push(*metric);
        values.push(as_i64(*n));
    }
    // unnest returns the rows in array order: they are inserted
    // (and locked) in that order.
    sqlx::query(
        "INSERT INTO usage_counters AS u (tenant_id, month, metric, value) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
         ON CONFLICT (tenant_id, month, metric) DO UPDATE SET value = u.value + excluded.value",
    )
    .bind(tenants)
    .bind(months)
    .bind(metrics)
    .bind(values)
    .execute(&mut **tx)
    .await
    .map_err(map_pg)?;
    Ok(())
}

/// Adds the merged daily stats to `usage_daily`: creates missing rows,
/// locks them all, then writes counts and merged latency histograms.
async fn add_days_in_tx(
    tx: &mut Transaction<'static, Postgres>,
    days: &BTreeMap<(&str, &str), DayStats>,
) -> Result<(), StoreError> {
    let tenants: Vec<&str> = days.keys().map(|(tenant, _)| *tenant).collect();
    let dates: Vec<&str> = days.keys().map(|(_, day)| *day).collect();
    // Every row exists, then every row is locked (same order), so
    // the histograms merged below are the committed ones.
    sqlx::query(
        "INSERT INTO usage_daily (tenant_id, day) \
         SELECT * FROM unnest($1::text[], $2::text[]) \
         ON CONFLICT (tenant_id, day) DO NOTHING",
    )
    .bind(&tenants)
    .bind(&dates)
    .execute(&mut **tx)
    .await
    .map_err(map_pg)?;
    let stored: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT d.tenant_id, d.day, d.latency FROM usage_daily d \
         JOIN unnest($1::text[], $2::text[]) AS k (tenant_id, day) \
         ON d.tenant_id = k.tenant_id AND d.day = k.day \
         ORDER BY d.tenant_id COLLATE \"C\", d.day COLLATE \"C\" FOR UPDATE OF d",
    )
    .bind(&tenants)
    .bind(&dates)
    .fetch_all(&mut **tx)
    .await
    .map_err(map_pg)?;
    let stored: BTreeMap<(&str, &str), &str> = stored
        .iter()
        .map(|(tenant, day, latency)| ((tenant.as_str(), day.as_str()), latency.as_str()))
        .collect();
    let (mut requests, mut client_errors, mut server_errors, mut latencies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, stats) in days {
        requests.push(as_i64(stats.requests));
        client_errors.push(as_i64(stats.client_errors));
        server_errors.push(as_i64(stats.server_errors));
        latencies.push(merged_latency(stored.get(key).copied(), &stats.latency)?);
    }
    sqlx::query(
        "UPDATE usage_daily AS d SET requests = d.requests + n.requests, \
         client_errors = d.client_errors + n.client_errors, \
         server_errors = d.server_errors + n.server_errors, latency = n.latency \
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                     $6::text[]) \
              AS n (tenant_id, day, requests, client_errors, server_errors, latency) \
         WHERE d.tenant_id = n.tenant_id AND d.day = n.day",
    )
    .bind(&tenants)
    .bind(&dates)
    .bind(requests)
    .bind(client_errors)
    .bind(server_errors)
    .bind(latencies)
    .execute(&mut **tx)
    .await
    .map_err(map_pg)?;
    Ok(())
}
