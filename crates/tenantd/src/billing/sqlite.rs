//! [`BillingRepo`] for SQLite. Writes are serialised by the store's write
//! transaction (`BEGIN IMMEDIATE`).

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;

use super::rows::{COLUMNS, decode, status_after_failure};
use super::{BillingEvent, BillingRepo, NewBillingEvent};
use crate::clock::{now_rfc3339, rfc3339_from_ms};
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError};

fn event(row: &SqliteRow) -> Result<BillingEvent, StoreError> {
    decode(row).map_err(map_sqlx)
}

#[async_trait]
impl BillingRepo for SqliteStore {
    async fn month_closed(&self, month: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM billing_months WHERE month = ?1")
                .bind(month)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
        Ok(found.is_some())
    }

    async fn close_month(
        &self,
        month: &str,
        events: &[NewBillingEvent],
        now_ms: i64,
        mark_closed: bool,
    ) -> Result<u64, StoreError> {
        let created_at = rfc3339_from_ms(now_ms);
        let mut tx = self.write_tx().await?;
        let mut created = 0;
        for e in events {
            let done = sqlx::query(
                "INSERT OR IGNORE INTO billing_events \
                 (tenant_id, month, id, payload, status, attempts, next_attempt_ms, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6)",
            )
            .bind(e.tenant.as_str())
            .bind(month)
            .bind(&e.id)
            .bind(&e.payload)
            .bind(now_ms)
            .bind(&created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            created += done.rows_affected();
        }
        if mark_closed {
            sqlx::query("INSERT OR IGNORE INTO billing_months (month, closed_at) VALUES (?1, ?2)")
                .bind(month)
                .bind(&created_at)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
        self.commit(tx).await?;
        Ok(created)
    }

    async fn due_events(&self, now_ms: i64, limit: u32) -> Result<Vec<BillingEvent>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM billing_events \
             WHERE status = 'pending' AND next_attempt_ms <= ?1 \
             ORDER BY next_attempt_ms, id LIMIT ?2"
        )))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(event).collect()
    }

    async fn mark_delivered(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE billing_events SET status = 'delivered', attempts = ?2, \
             last_error = NULL, delivered_at = ?3 WHERE tenant_id = ?4 AND id = ?1",
        )
        .bind(id)
        .bind(i64::from(attempts))
        .bind(now_rfc3339())
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn mark_attempt_failed(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
        next_attempt_ms: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let status = status_after_failure(next_attempt_ms);
        sqlx::query(
            "UPDATE billing_events SET status = ?2, attempts = ?3, \
             next_attempt_ms = COALESCE(?4, next_attempt_ms), last_error = ?5 WHERE tenant_id = ?6 AND id = ?1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(i64::from(attempts))
        .bind(next_attempt_ms)
        .bind(error)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn list_billing_events(
        &self,
        month: Option<&str>,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        // The payload stays out of listings (it is not shown).
        let rows = sqlx::query(
            "SELECT id, tenant_id, month, status, attempts, next_attempt_ms, last_error, \
             created_at, delivered_at, '' AS payload FROM billing_events \
             WHERE ?1 IS NULL OR month = ?1 ORDER BY month, tenant_id",
        )
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(event).collect()
    }

    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(next_attempt_ms) FROM billing_events WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(map_sqlx)
    }
}
