//! [`UsageRepo`] on [`Db`], for both engines, and the counter helpers
//! other features' writes use inside their own transactions
//! ([`count_in`], [`counter_in`]).
//!
//! **Isolation.** The repository is administrative (the recorder writes
//! many tenants at once, reports and billing read any tenant): it runs on
//! the administrative path ([`Db::admin_write`], [`Db::admin_read`]), with
//! the tenant named first in every statement that concerns one. The
//! helpers run inside the caller's transaction, a tenant transaction of
//! the same tenant, so on PostgreSQL row-level security binds them.
//!
//! **Locking.** On PostgreSQL writers run concurrently (SQLite's write
//! transactions are serialised by `BEGIN IMMEDIATE`, so the locks below
//! are no-ops there). A quota-limited counter is read with its row locked
//! ([`counter_in`]) until the write that adds to it commits, so two
//! writers cannot both pass the same last unit of quota. A batch sums
//! what it holds per row first, then touches the rows in one order
//! (tenant, then month and metric or day, byte order), so batches written
//! concurrently by several nodes cannot deadlock; a day's latency
//! histogram is merged from the row read under that lock, so no
//! concurrent merge is lost.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tenancy::TenantId;

use super::{DayStats, UsageBatch, UsageRepo, as_i64, as_u64, merged_latency, parse_latency};
use crate::clock::{Clock, month_of_ms};
use crate::store::{Conn, Db, Sql, StoreError, execute_rows, rows_per_statement, sql, values_list};

/// One counter increment: tenant, month, metric, how much.
type Increment<'a> = (&'a str, &'a str, &'a str, u64);

/// Adds `by` to this month's `metric` of `tenant`, inside a write's own
/// transaction (the figure a quota reads is the figure billed). On
/// PostgreSQL the counter row stays locked until that transaction ends.
pub async fn count_in(
    conn: &mut Conn,
    clock: &Clock,
    tenant: &TenantId,
    metric: &str,
    by: u64,
) -> Result<(), StoreError> {
    let month = month_of_ms(clock.now_ms());
    add_counters(conn, &[(tenant.as_str(), month.as_str(), metric, by)]).await
}

/// This month's `metric` of `tenant`, read inside a write's transaction
/// with the counter row locked (created at 0 when missing) until that
/// transaction ends: concurrent quota-checked writes of the tenant queue
/// here, and each reads the count the previous one committed. A write
/// refused by its quota rolls back, the row created here with it.
pub async fn counter_in(
    conn: &mut Conn,
    clock: &Clock,
    tenant: &TenantId,
    metric: &str,
) -> Result<u64, StoreError> {
    let month = month_of_ms(clock.now_ms());
    conn.execute(
        sql(
            "INSERT INTO usage_counters (tenant_id, month, metric, value) \
             VALUES ($1, $2, $3, 0) ON CONFLICT (tenant_id, month, metric) DO NOTHING",
        )
        .bind(tenant)
        .bind(&month)
        .bind(metric),
    )
    .await?;
    let text = format!(
        "SELECT value FROM usage_counters WHERE tenant_id = $1 AND month = $2 AND metric = $3{}",
        conn.dialect().lock_rows()
    );
    let value: i64 = conn
        .scalar(Sql::owned(text).bind(tenant).bind(&month).bind(metric))
        .await?;
    Ok(as_u64(value))
}

#[async_trait]
impl UsageRepo for Db {
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let counters = sum_counters(batch);
        let days = merge_days(batch);
        // Counters, then days, in one transaction.
        let mut conn = self.admin_write().await?;
        add_counters(&mut conn, &counters).await?;
        add_days(&mut conn, &days).await?;
        // The flush writes every tenant's counters, not the request's data.
        conn.commit_unattributed().await
    }

    async fn month_counters(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.admin_read().await?;
        let rows = conn
            .fetch_all(
                sql(
                    "SELECT metric, value FROM usage_counters WHERE tenant_id = $1 \
                     AND month = $2 ORDER BY metric COLLATE \"C\"",
                )
                .bind(tenant)
                .bind(month),
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.get(0)?, as_u64(row.get(1)?))))
            .collect()
    }

    async fn current_size(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        let mut conn = self.admin_read().await?;
        let row = conn
            .fetch_optional(
                sql("SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = $1")
                    .bind(tenant),
            )
            .await?;
        match row {
            None => Ok((0, 0)),
            Some(row) => Ok((as_u64(row.get(0)?), as_u64(row.get(1)?))),
        }
    }

    async fn daily(
        &self,
        tenant: &TenantId,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, DayStats)>, StoreError> {
        let mut conn = self.admin_read().await?;
        let rows = conn
            .fetch_all(
                sql(
                    "SELECT day, requests, client_errors, server_errors, latency \
                     FROM usage_daily WHERE tenant_id = $1 AND day >= $2 AND day <= $3 \
                     ORDER BY day",
                )
                .bind(tenant)
                .bind(start)
                .bind(end),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let latency: String = row.get(4)?;
                Ok((
                    row.get(0)?,
                    DayStats {
                        requests: as_u64(row.get(1)?),
                        client_errors: as_u64(row.get(2)?),
                        server_errors: as_u64(row.get(3)?),
                        latency: parse_latency(&latency)?,
                    },
                ))
            })
            .collect()
    }

    async fn tenants_with_usage(&self, month: &str) -> Result<Vec<TenantId>, StoreError> {
        let mut conn = self.admin_read().await?;
        let rows = conn
            .fetch_all(
                sql("SELECT tenant_id FROM usage_counters WHERE month = $1 \
                     GROUP BY tenant_id ORDER BY tenant_id COLLATE \"C\"")
                .bind(month),
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.get(0)?;
            ids.extend(TenantId::new(&id).ok());
        }
        Ok(ids)
    }
}

/// The batch's counter increments summed per row, in byte order
/// (BTreeMap of &str): the order every batch locks rows in.
fn sum_counters(batch: &UsageBatch) -> Vec<Increment<'_>> {
    let mut counters: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (tenant, month, metric, n) in &batch.counters {
        let sum = counters
            .entry((tenant.as_str(), month.as_str(), metric.as_str()))
            .or_default();
        *sum = sum.saturating_add(*n);
    }
    counters
        .into_iter()
        .map(|((tenant, month, metric), n)| (tenant, month, metric, n))
        .collect()
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

/// Adds `counters` (one per row, in lock order) to `usage_counters`.
async fn add_counters(conn: &mut Conn, counters: &[Increment<'_>]) -> Result<(), StoreError> {
    execute_rows(
        conn,
        0,
        counters,
        4,
        |values| {
            Sql::owned(format!(
                "INSERT INTO usage_counters (tenant_id, month, metric, value) VALUES {values} \
                 ON CONFLICT (tenant_id, month, metric) \
                 DO UPDATE SET value = usage_counters.value + excluded.value"
            ))
        },
        |q, (tenant, month, metric, n)| q.bind(*tenant).bind(*month).bind(*metric).bind(as_i64(*n)),
    )
    .await?;
    Ok(())
}

/// Adds the merged daily stats to `usage_daily`: creates missing rows,
/// locks them all (in key order) and reads their histograms, then writes
/// counts and merged histograms.
async fn add_days(
    conn: &mut Conn,
    days: &BTreeMap<(&str, &str), DayStats>,
) -> Result<(), StoreError> {
    let keys: Vec<(&str, &str)> = days.keys().copied().collect();
    execute_rows(
        conn,
        0,
        &keys,
        2,
        |values| {
            Sql::owned(format!(
                "INSERT INTO usage_daily (tenant_id, day) VALUES {values} \
                 ON CONFLICT (tenant_id, day) DO NOTHING"
            ))
        },
        |q, (tenant, day)| q.bind(*tenant).bind(*day),
    )
    .await?;
    let stored = lock_days(conn, &keys).await?;
    let mut rows = Vec::with_capacity(days.len());
    for ((tenant, day), stats) in days {
        let stored = stored
            .get(&((*tenant).to_owned(), (*day).to_owned()))
            .map(String::as_str);
        rows.push((
            *tenant,
            *day,
            stats,
            merged_latency(stored, &stats.latency)?,
        ));
    }
    // Every row exists and is locked: the upsert only updates.
    execute_rows(
        conn,
        0,
        &rows,
        6,
        |values| {
            Sql::owned(format!(
                "INSERT INTO usage_daily \
                 (tenant_id, day, requests, client_errors, server_errors, latency) \
                 VALUES {values} ON CONFLICT (tenant_id, day) DO UPDATE SET \
                 requests = usage_daily.requests + excluded.requests, \
                 client_errors = usage_daily.client_errors + excluded.client_errors, \
                 server_errors = usage_daily.server_errors + excluded.server_errors, \
                 latency = excluded.latency"
            ))
        },
        |q, (tenant, day, stats, latency)| {
            q.bind(*tenant)
                .bind(*day)
                .bind(as_i64(stats.requests))
                .bind(as_i64(stats.client_errors))
                .bind(as_i64(stats.server_errors))
                .bind(latency)
        },
    )
    .await?;
    Ok(())
}

/// Locks the `usage_daily` rows of `keys` (sorted, so in that order) and
/// returns their stored latency histograms.
async fn lock_days(
    conn: &mut Conn,
    keys: &[(&str, &str)],
) -> Result<BTreeMap<(String, String), String>, StoreError> {
    let mut stored = BTreeMap::new();
    for chunk in keys.chunks(rows_per_statement(2)) {
        let text = format!(
            "SELECT tenant_id, day, latency FROM usage_daily \
             WHERE (tenant_id, day) IN (VALUES {}) \
             ORDER BY tenant_id COLLATE \"C\", day COLLATE \"C\"{}",
            values_list(1, chunk.len(), 2),
            conn.dialect().lock_rows()
        );
        let mut q = Sql::owned(text);
        for (tenant, day) in chunk {
            q = q.bind(*tenant).bind(*day);
        }
        for row in conn.fetch_all(q).await? {
            stored.insert((row.get(0)?, row.get(1)?), row.get(2)?);
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use tenancy::TenantId;

    use super::{count_in, counter_in};
    use crate::clock::{Clock, month_of_ms};
    use crate::store::{Db, open_sqlite};
    use crate::usage::{DayStats, UsageBatch, UsageRepo};

    fn id(s: &str) -> TenantId {
        TenantId::new(s).expect("tenant id")
    }

    fn day(requests: u64, client_errors: u64) -> DayStats {
        DayStats {
            requests,
            client_errors,
            ..DayStats::default()
        }
    }

    #[tokio::test]
    async fn batches_add_up_per_row_and_quota_counters_read_what_writes_added() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::sqlite(
            open_sqlite(dir.path(), 2).await.expect("opens"),
            Clock::system(),
        );
        let (a, b) = (id("acme"), id("beta"));
        let m = "2026-01".to_owned();
        let batch = UsageBatch {
            counters: vec![
                (b.clone(), m.clone(), "x".into(), 1),
                (a.clone(), m.clone(), "y".into(), 2),
                (a.clone(), m.clone(), "Y".into(), 3),
                (a.clone(), m.clone(), "y".into(), 4),
            ],
            days: vec![
                (a.clone(), "2026-01-02".into(), day(2, 1)),
                (a.clone(), "2026-01-01".into(), day(1, 0)),
                (a.clone(), "2026-01-02".into(), day(3, 0)),
            ],
        };
        db.add_usage(&batch).await.expect("first");
        db.add_usage(&batch).await.expect("second");
        let counters = db.month_counters(&a, &m).await.expect("counters");
        assert_eq!(counters, [("Y".to_owned(), 6), ("y".to_owned(), 12)]);
        let days = db
            .daily(&a, "2026-01-01", "2026-01-31")
            .await
            .expect("daily");
        assert_eq!(days.len(), 2);
        assert_eq!(days[1].0, "2026-01-02");
        assert_eq!((days[1].1.requests, days[1].1.client_errors), (10, 2));
        let with_usage = db.tenants_with_usage(&m).await.expect("tenants");
        assert_eq!(with_usage, [a.clone(), b.clone()]);

        let clock = db.clock().clone();
        let mut conn = db.write_for(&a).await.expect("tx");
        assert_eq!(
            counter_in(&mut conn, &clock, &a, "q").await.expect("read"),
            0
        );
        count_in(&mut conn, &clock, &a, "q", 5)
            .await
            .expect("count");
        conn.commit().await.expect("commit");
        let mut conn = db.write_for(&a).await.expect("tx");
        assert_eq!(
            counter_in(&mut conn, &clock, &a, "q").await.expect("read"),
            5
        );
        conn.rollback().await.expect("rollback");
        let month = month_of_ms(clock.now_ms());
        let counters = db.month_counters(&a, &month).await.expect("counters");
        assert!(counters.contains(&("q".to_owned(), 5)));
    }
}
