//! [`BillingRepo`] for PostgreSQL.
//!
//! The outbox is administrative (a month close concerns every tenant), so
//! every statement runs on the admin role's pool
//! ([`PgStore::admin_pool`]).
//!
//! Several instances may share the database, and PostgreSQL runs their
//! transactions concurrently:
//!
//! - a close inserts with `ON CONFLICT DO NOTHING`, so two closes of one
//!   month still write one event per tenant; a page goes in as one
//!   statement, in tenant order, so two concurrent closes take the
//!   conflicting rows' locks in the same order;
//! - [`BillingRepo::due_events`] *claims* what it returns: it locks the
//!   due rows with `FOR UPDATE SKIP LOCKED` (a concurrent claim passes
//!   them by instead of waiting) and pushes their `next_attempt_ms`
//!   forward as a lease, so another instance does not pick them up while
//!   this one attempts them. The worker attempts a batch one event at a
//!   time, so the lease grows with the event's place in the batch
//!   ([`LEASE_MS`] + [`LEASE_STEP_MS`] per event before it). The outcome
//!   of the attempt ends the lease (a retry time, or a final status). A
//!   lease is short on purpose: events an instance claimed but never
//!   attempted (it stopped, or died) are due again within seconds. An
//!   attempt that outlasts its lease may be repeated by another instance,
//!   which the event's `Idempotency-Key` makes harmless to the receiver;
//! - a failed attempt is recorded only on a pending event, so a late
//!   failure never re-opens an event another instance has delivered.

use async_trait::async_trait;
use sqlx::postgres::PgRow;

use super::rows::{decode, status_after_failure};
use super::{BillingEvent, BillingRepo, NewBillingEvent};
use crate::clock::{now_rfc3339, rfc3339_from_ms};
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError};

/// How long a claimed event stays with its claimer before another
/// instance may attempt it (the first event of a batch).
const LEASE_MS: i64 = 5_000;

/// Added to the lease per event ahead in the same batch.
const LEASE_STEP_MS: i64 = 1_000;

fn event(row: &PgRow) -> Result<BillingEvent, StoreError> {
    decode(row).map_err(map_pg)
}

#[async_trait]
impl BillingRepo for PgStore {
    async fn month_closed(&self, month: &str) -> Result<bool, StoreError> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM billing_months WHERE month = $1")
                .bind(month)
                .fetch_optional(self.admin_pool())
                .await
                .map_err(map_pg)?;
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
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        let mut created = 0;
        if !events.is_empty() {
            let tenants: Vec<&str> = events.iter().map(|e| e.tenant.as_str()).collect();
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
            let done = sqlx::query(
                "INSERT INTO billing_events \
                 (tenant_id, month, id, payload, status, attempts, next_attempt_ms, created_at) \
                 SELECT e.tenant_id, $1, e.id, e.payload, 'pending', 0, $5, $6 \
                 FROM UNNEST($2::text[], $3::text[], $4::text[]) AS e(tenant_id, id, payload) \
                 ORDER BY e.tenant_id COLLATE \"C\" \
                 ON CONFLICT DO NOTHING",
            )
            .bind(month)
            .bind(tenants)
            .bind(ids)
            .bind(payloads)
            .bind(now_ms)
            .bind(&created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
            created = done.rows_affected();
        }
        if mark_closed {
            sqlx::query(
                "INSERT INTO billing_months (month, closed_at) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(month)
            .bind(&created_at)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        }
        self.commit(tx, None).await?;
        Ok(created)
    }

    async fn due_events(&self, now_ms: i64, limit: u32) -> Result<Vec<BillingEvent>, StoreError> {
        // The scan is the partial index of pending events (tenant first,
        // as every index of a tenant table; the due time is its second
        // column). The events come back with the due time they had, not
        // their lease.
        let rows = sqlx::query(
            "WITH picked AS ( \
                 SELECT tenant_id, month, id, next_attempt_ms FROM billing_events \
                 WHERE status = 'pending' AND next_attempt_ms <= $1 \
                 ORDER BY next_attempt_ms, id COLLATE \"C\" LIMIT $2 \
                 FOR UPDATE SKIP LOCKED \
             ), ranked AS ( \
                 SELECT tenant_id, month, next_attempt_ms, \
                        row_number() OVER (ORDER BY next_attempt_ms, id COLLATE \"C\") - 1 AS ahead \
                 FROM picked \
             ) \
             UPDATE billing_events AS b SET next_attempt_ms = $1 + $3 + ranked.ahead * $4 \
             FROM ranked WHERE b.tenant_id = ranked.tenant_id AND b.month = ranked.month \
             RETURNING b.id, b.tenant_id, b.month, b.status, b.attempts, \
                       ranked.next_attempt_ms, b.last_error, b.created_at, b.delivered_at, \
                       b.payload",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(LEASE_MS)
        .bind(LEASE_STEP_MS)
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        let mut due = rows.iter().map(event).collect::<Result<Vec<_>, _>>()?;
        // Oldest first, as SQLite returns them (RETURNING has no order).
        due.sort_by(|a, b| {
            (a.next_attempt_ms, a.id.as_str()).cmp(&(b.next_attempt_ms, b.id.as_str()))
        });
        Ok(due)
    }

    async fn mark_delivered(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        // With the tenant: a point lookup on (tenant_id, id).
        sqlx::query(
            "UPDATE billing_events SET status = 'delivered', attempts = $2, \
             last_error = NULL, delivered_at = $3 WHERE tenant_id = $4 AND id = $1",
        )
        .bind(id)
        .bind(i64::from(attempts))
        .bind(now_rfc3339())
        .bind(tenant)
        .execute(self.admin_pool())
        .await
        .map(|_| ())
        .map_err(map_pg)
    }

    async fn mark_attempt_failed(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
        next_attempt_ms: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE billing_events SET status = $2, attempts = $3, \
             next_attempt_ms = COALESCE($4, next_attempt_ms), last_error = $5 \
             WHERE tenant_id = $6 AND id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status_after_failure(next_attempt_ms).as_str())
        .bind(i64::from(attempts))
        .bind(next_attempt_ms)
        .bind(error)
        .bind(tenant)
        .execute(self.admin_pool())
        .await
        .map(|_| ())
        .map_err(map_pg)
    }

    async fn list_billing_events(
        &self,
        month: Option<&str>,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        // The payload stays out of listings (it is not shown). Byte order,
        // as SQLite sorts, whatever the database's collation.
        let rows = sqlx::query(
            "SELECT id, tenant_id, month, status, attempts, next_attempt_ms, last_error, \
             created_at, delivered_at, ''::text AS payload FROM billing_events \
             WHERE $1::text IS NULL OR month = $1 \
             ORDER BY month COLLATE \"C\", tenant_id COLLATE \"C\"",
        )
        .bind(month)
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)?;
        rows.iter().map(event).collect()
    }

    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(next_attempt_ms) FROM billing_events WHERE status = 'pending'",
        )
        .fetch_one(self.admin_pool())
        .await
        .map_err(map_pg)
    }
}
